"""Shipped tuned sparse conv configs: table schema, lookup, and the keys matching Triton's autotuner.

The autotuner itself runs here on the CPU interpreter with a prune that keeps one candidate,
which is how Triton records a key without benchmarking (no GPU needed).
"""

from __future__ import annotations

import json
import logging
import math
import stat

import pytest
import torch
import triton

from backend.sparse.neighbors import build_neighbor_map
from kernels.sparse_conv import configs, kernel, ops
from kernels.sparse_conv.reference import subm_conv3d_reference
from scripts import tune_sparse_conv
from tests.sparse.helpers import random_coords

H200 = "NVIDIA H200"
KEY = "14,1024,4096,False,torch.float16,torch.float16,torch.float16,torch.int32,torch.float16"
CONFIG = {"BLOCK_N": 128, "BLOCK_CO": 64, "BLOCK_K": 64, "num_warps": 4, "num_stages": 3}


def _write(tmp_path, table, name="tuned_configs.json"):
    path = tmp_path / name
    path.write_text(json.dumps(table))
    return path


def test_shipped_table_is_valid():
    raw = json.loads(configs.TUNED_CONFIGS_PATH.read_text())
    assert configs.validate_table(raw, str(configs.TUNED_CONFIGS_PATH)) == raw
    for device, entries in raw.items():  # every config a launchable candidate shape
        for key, config in entries.items():
            assert config["BLOCK_K"] >= 16, (device, key)


def test_lookup_matches_device_and_key_else_falls_back(tmp_path):
    table = configs.load_tuned_table(_write(tmp_path, {H200: {KEY: CONFIG}}))
    assert configs.tuned_config(H200, KEY, table) == CONFIG
    assert configs.tuned_config("NVIDIA H100 80GB HBM3", KEY, table) is None  # other GPU: autotune
    other_bucket = KEY.replace("14,", "15,", 1)
    assert configs.tuned_config(H200, other_bucket, table) is None
    bf16 = KEY.replace("float16", "bfloat16")
    assert configs.tuned_config(H200, bf16, table) is None


def test_missing_file_is_an_empty_table_with_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="kernels.sparse_conv.configs"):
        assert configs.load_tuned_table(tmp_path / "absent.json") == {}
    assert "absent.json" in caplog.text


@pytest.mark.parametrize(("entry", "message"), [
    ({**CONFIG, "BLOCK_K": 48}, "BLOCK_K must be a power of two"),
    ({**CONFIG, "BLOCK_CO": 8}, "BLOCK_CO must be at least 16"),
    ({k: v for k, v in CONFIG.items() if k != "num_stages"}, "exactly the fields"),
    ({**CONFIG, "num_warps": True}, "num_warps must be a positive int"),
    ({**CONFIG, "num_stages": "3"}, "num_stages must be a positive int"),
])
def test_bad_config_names_file_and_key(tmp_path, entry, message):
    path = _write(tmp_path, {H200: {KEY: entry}}, name="bad_config.json")
    with pytest.raises(ValueError, match=message) as err:
        configs.load_tuned_table(path)
    assert "bad_config.json" in str(err.value) and KEY in str(err.value) and H200 in str(err.value)


@pytest.mark.parametrize("key", ["14,1024,4096,fp16", "14,1024,4096,0," + ",".join(["torch.float16"] * 5)])
def test_bad_key_names_file_and_key(tmp_path, key):
    path = _write(tmp_path, {H200: {key: CONFIG}}, name="bad_key.json")
    with pytest.raises(ValueError, match="LOGN,Ci,Co,FP32_IEEE") as err:
        configs.load_tuned_table(path)
    assert "bad_key.json" in str(err.value) and key in str(err.value)


def test_bad_json_and_bad_shape_name_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json: not valid JSON"):
        configs.load_tuned_table(path)
    with pytest.raises(ValueError, match="other.json: device 'NVIDIA H200' must map"):
        configs.load_tuned_table(_write(tmp_path, {H200: [CONFIG]}, name="other.json"))


def _one_candidate(cands, named_args, **kwargs):
    return cands[:1]  # one config left: Triton records the key and skips benchmarking


@pytest.mark.parametrize(("dtype", "bias_dtype"), [
    (torch.float16, torch.float16),  # the decoders (fp16 blocks, fp16 bias)
    (torch.float16, None),  # no bias: the output stands in for it
    (torch.float16, torch.float32),  # SparseConv3d under autocast keeps its fp32 bias
    (torch.float32, torch.float32),
])
def test_keys_agree_with_triton_autotuner(dtype, bias_dtype):
    gen = torch.Generator().manual_seed(3)
    coords = random_coords((5, 4, 5), batch=1, p=0.5, gen=gen)
    nbr = build_neighbor_map(coords)
    n, ci, co = len(coords), 16, 32
    feats = torch.randn(n, ci, generator=gen).to(dtype)
    weight = (torch.randn(co, 27, ci, generator=gen) / math.sqrt(27 * ci)).to(dtype)
    bias = None if bias_dtype is None else torch.randn(co, generator=gen).to(bias_dtype)
    out = torch.empty(n, co, dtype=dtype)
    args, meta = ops.kernel_arguments(feats, nbr, weight, bias, out, allow_tf32=False)
    candidates = [triton.Config(dict(configs.INTERPRETER_CONFIG)),
                  triton.Config({"BLOCK_N": 16, "BLOCK_CO": 16, "BLOCK_K": 16})]
    tuner = kernel.tuned(candidates, _one_candidate)

    tuner[lambda m: (triton.cdiv(n, m["BLOCK_N"]), triton.cdiv(co, m["BLOCK_CO"]))](*args, **meta)

    assert [configs.table_key(k) for k in tuner.cache] == [ops.autotune_key(args, meta)]
    if bias_dtype is not None:  # the tuning script plans the same key for the same launch
        assert tune_sparse_conv.planned_key(n, ci, co, dtype, bias_dtype) == ops.autotune_key(args, meta)
    ref = subm_conv3d_reference(feats, nbr, weight, bias, out_dtype=torch.float32)
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)  # the launch itself ran


def test_planned_key_format_is_a_valid_table_key():
    key = tune_sparse_conv.planned_key(9585, 1024, 4096, torch.float16)
    assert key == "13,1024,4096,False,torch.float16,torch.float16,torch.float16,torch.int32,torch.float16"
    configs.validate_table({H200: {key: CONFIG}}, "test")


def test_config_entry_of_a_triton_config():
    config = triton.Config({"BLOCK_N": 64, "BLOCK_CO": 32, "BLOCK_K": 16}, num_warps=2, num_stages=4)
    assert tune_sparse_conv.config_entry(config) == {"BLOCK_N": 64, "BLOCK_CO": 32, "BLOCK_K": 16,
                                                     "num_warps": 2, "num_stages": 4}


def test_merge_keeps_other_devices_and_replaces_retuned_keys(tmp_path):
    path = _write(tmp_path, {"NVIDIA H100 80GB HBM3": {KEY: CONFIG}, H200: {KEY: CONFIG}})
    other = KEY.replace("14,", "12,", 1)
    new = {**CONFIG, "BLOCK_N": 64}
    tune_sparse_conv.merge_into_table(path, H200, {KEY: new, other: CONFIG})
    table = json.loads(path.read_text())
    assert table == {"NVIDIA H100 80GB HBM3": {KEY: CONFIG}, H200: {KEY: new, other: CONFIG}}
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


def test_merge_refuses_a_bad_entry_and_leaves_the_file(tmp_path):
    path = _write(tmp_path, {H200: {KEY: CONFIG}})
    before = path.read_text()
    with pytest.raises(ValueError, match="BLOCK_K"):
        tune_sparse_conv.merge_into_table(path, H200, {KEY: {**CONFIG, "BLOCK_K": 12}})
    assert path.read_text() == before


def test_decoder_conv_shapes_cover_the_release_decoders():
    shapes = {(s.level, s.ci, s.co) for s in tune_sparse_conv.decoder_conv_shapes()}
    # ConvNeXt convs at 1024..128 ch, C2S conv1 (C -> 8 C_out) and conv2 (C_out -> C_out) one level down
    assert shapes == {(0, 1024, 1024), (0, 1024, 4096), (1, 512, 512), (1, 512, 2048), (2, 256, 256),
                      (2, 256, 1024), (3, 128, 128), (3, 128, 512), (4, 64, 64)}


@pytest.mark.gpu
def test_table_config_is_launched_without_autotuning(monkeypatch):
    gen = torch.Generator().manual_seed(5)
    coords = random_coords((12, 12, 12), batch=1, p=0.3, gen=gen).cuda()
    nbr = build_neighbor_map(coords)
    n, ci, co = len(coords), 32, 48  # widths no other test tunes
    feats = torch.randn(n, ci, generator=gen).half().cuda()
    weight = (torch.randn(co, 3, 3, 3, ci, generator=gen) / math.sqrt(27 * ci)).half().cuda()
    bias = torch.randn(co, generator=gen).half().cuda()
    key = tune_sparse_conv.planned_key(n, ci, co, torch.float16)
    table = {torch.cuda.get_device_name(): {key: CONFIG}}
    monkeypatch.setattr(configs, "load_tuned_table", lambda: table)

    out = ops.subm_conv3d(feats, nbr, weight, bias)

    assert key not in {configs.table_key(k) for k in ops.autotuner().cache}  # the table's config ran
    ref = subm_conv3d_reference(feats, nbr, weight, bias, out_dtype=torch.float32)
    torch.testing.assert_close(out.float(), ref, rtol=1e-2, atol=1e-2)
