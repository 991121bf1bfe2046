"""The VRAM budget (``Runtime.vram_budget_gib``, ``--vram-budget``): the eviction policy, the
residency bookkeeping and host copies on small networks, the store, the options that set it, a GPU
check of real placement and peak memory, and a generation with the bundled mini release that gives
the same result with and without a budget."""

from __future__ import annotations

import argparse
import json
import logging

import pytest
import torch
from torch import nn

from backend import protocol
from backend.__main__ import main
from backend.models.fp8 import FP8_DTYPE, convert_blocks_to_fp8
from backend.models.pipeline_config import parse_pipeline_config
from backend.models.tiny_checkpoint import pipeline_json
from backend.pipeline import cli_common, cli_generate
from backend.pipeline.api import ExportOptions, GenerateRequest, SamplerOverrides
from backend.pipeline.generator import Trellis2Generator
from backend.pipeline.residency import GIB, Residency, Transfers, plan_evictions
from backend.pipeline.runtime import ModelStore, Release, Runtime, compile_with_eager_fallback
from backend.pipeline.weights import ModelPaths
from backend.server.generators import LoadSpec, trellis2
from tests.fixtures import images
from tests.fixtures.structure import GivenStructure
from tests.pipeline.conftest import small_shell

SIDE = 128
NET_BYTES = SIDE * SIDE * 4  # one bias-free float32 SIDE x SIDE linear


def _net(seed: int) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(SIDE, SIDE, bias=False).requires_grad_(False)


def _nets(*names: str) -> dict[str, nn.Module]:
    return {name: _net(i) for i, name in enumerate(names)}


def _snapshot(module: nn.Module) -> list[torch.Tensor]:
    return [t.detach().clone() for t in module.state_dict().values()]


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


# --- the policy -----------------------------------------------------------------------------

def test_no_budget_evicts_nothing_however_full_the_device():
    assert plan_evictions({"a": 10, "b": 10}, incoming=100, needed={"c"}, budget=None) == []


def test_nothing_leaves_while_the_stage_fits():
    assert plan_evictions({"a": 10, "b": 10}, incoming=10, needed={"c"}, budget=30) == []


def test_least_recently_used_networks_leave_first_and_only_until_the_stage_fits():
    resident = {"old": 10, "middle": 20, "recent": 30}  # least recently used first
    assert plan_evictions(resident, incoming=25, needed={"new"}, budget=75) == ["old"]
    assert plan_evictions(resident, incoming=25, needed={"new"}, budget=60) == ["old", "middle"]


def test_the_stage_s_own_networks_are_never_evicted_even_when_least_recently_used():
    resident = {"needed": 50, "other": 10}
    assert plan_evictions(resident, incoming=20, needed={"needed", "new"}, budget=70) == ["other"]


def test_a_stage_larger_than_the_budget_evicts_everything_else_and_is_still_planned():
    resident = {"a": 10, "needed": 40, "b": 10}
    assert plan_evictions(resident, incoming=50, needed={"needed", "new"}, budget=30) == ["a", "b"]


# --- the residency on the CPU ---------------------------------------------------------------

def test_networks_leave_and_return_in_lru_order_within_the_budget():
    nets = _nets("a", "b", "c")
    residency = Residency("cpu", budget=2 * NET_BYTES)
    for name, net in nets.items():
        residency.track(name, net)
    assert residency.resident() == {"a": NET_BYTES, "b": NET_BYTES, "c": NET_BYTES}  # loaded = resident

    assert residency.place([nets["a"]]) == ["b"]  # a is the most recent now; b is the oldest other
    assert list(residency.resident()) == ["c", "a"]
    assert residency.place([nets["b"]]) == ["c"]
    assert list(residency.resident()) == ["a", "b"]
    assert residency.place([nets["a"]]) == []  # already there: nothing moves, a becomes the most recent
    assert residency.place([nets["c"]]) == ["b"]
    assert list(residency.resident()) == ["a", "c"] and residency.names() == ["b", "a", "c"]
    assert residency.moved == Transfers(to_device=2 * NET_BYTES, to_host=3 * NET_BYTES)


def test_a_stage_over_the_budget_runs_alone_and_says_so_once(caplog):
    nets = {**_nets("a", "b"), "big": nn.Linear(2 * SIDE, SIDE, bias=False)}
    residency = Residency("cpu", budget=NET_BYTES)
    for name, net in nets.items():
        residency.track(name, net)
    with caplog.at_level(logging.INFO, logger="backend.pipeline.residency"):
        assert residency.place([nets["big"]]) == ["a", "b"]
        residency.place([nets["a"]])
        residency.place([nets["big"]])
    assert list(residency.resident()) == ["big"]
    assert [r.getMessage() for r in caplog.records].count(
        "the VRAM budget of 6.1e-05 GiB is below the 0.000122 GiB this stage's networks need (big): "
        "they run anyway, with every other network in host memory") == 1


def test_host_copies_are_made_once_and_reused_without_copying_again():
    nets = _nets("a", "b")
    weight = nets["a"].weight
    residency = Residency("cpu", budget=NET_BYTES)
    residency.track("a", nets["a"])
    residency.track("b", nets["b"])
    original = _snapshot(nets["a"])
    residency.place([nets["b"]])  # a leaves: its host copy is made
    host = _storage(weight)
    residency.place([nets["a"]])
    assert nets["a"].weight is weight and _storage(weight) != host  # same parameter, fresh storage
    assert all(torch.equal(x, y) for x, y in zip(original, _snapshot(nets["a"])))
    with torch.no_grad():
        weight.add_(1.0)  # weights never change in inference: a second eviction copies nothing back
    residency.place([nets["b"]])
    assert _storage(weight) == host and torch.equal(weight, original[0])


def test_tied_and_shared_weights_stay_shared_and_count_once():
    net = nn.Sequential(nn.Embedding(SIDE, SIDE), nn.Linear(SIDE, SIDE, bias=False))
    net[1].weight = net[0].weight  # tied: one parameter in two modules
    net.register_buffer("view", net[0].weight.data[:4])  # a buffer viewing the same storage
    other = _net(1)
    residency = Residency("cpu", budget=NET_BYTES)
    residency.track("tied", net)
    residency.track("other", other)
    assert residency.resident()["tied"] == NET_BYTES
    original = _snapshot(net)
    for _ in range(2):
        residency.place([other])
        residency.place([net])
    assert residency.resident() == {"tied": NET_BYTES}
    assert _storage(net[0].weight) == _storage(net[1].weight) == _storage(net.view)
    assert all(torch.equal(x, y) for x, y in zip(original, _snapshot(net)))


def test_fp8_blocks_make_the_round_trip_bit_for_bit():
    class Blocks(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(32, 32), nn.GELU(), nn.Linear(32, 32))])

    net = Blocks()
    convert_blocks_to_fp8(net)
    assert net.blocks[0][0].weight_fp8.dtype == FP8_DTYPE
    before = [t.clone().view(torch.uint8) for t in net.buffers()]
    residency = Residency("cpu", budget=1)
    residency.track("fp8", net)
    residency.place([_net(0)])
    assert residency.resident() == {"Linear#1": NET_BYTES}
    residency.place([net])
    assert all(torch.equal(x, y.view(torch.uint8)) for x, y in zip(before, net.buffers()))


@pytest.mark.slow
def test_a_compiled_module_gives_its_outputs_after_a_round_trip_without_recompiling():
    from torch._dynamo.utils import counters

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(16, 32), nn.Linear(32, 16)

        def forward(self, x):
            return self.b(torch.nn.functional.gelu(self.a(x))) + x

    torch.manual_seed(0)
    block, other, x = Block(), _net(1), torch.randn(4, 16)
    compile_with_eager_fallback(block)
    with torch.no_grad():
        want = block(x)
        frames = counters["frames"]["total"]
        residency = Residency("cpu", budget=NET_BYTES)
        residency.track("block", block)
        residency.place([other])
        assert "block" not in residency.resident()
        residency.place([block])
        assert torch.equal(block(x), want)
    assert counters["frames"]["total"] == frames


# --- the store ------------------------------------------------------------------------------

def _release() -> Release:
    return Release(parse_pipeline_config(pipeline_json("unused")))


def test_the_store_keeps_networks_that_fit_and_moves_least_recently_used_ones_out():
    nets = _nets("sparse_structure_flow_model", "shape_slat_flow_model_512", "tex_slat_flow_model_512")
    store = ModelStore(Runtime(model="unused", device="cpu", vram_budget_gib=2 * NET_BYTES / GIB), _release(),
                       models=nets)
    ss, shape, tex = nets.values()
    for stage in (ss, shape, tex):
        with store.on_device(stage):
            pass
    assert list(store.residency.resident()) == ["shape_slat_flow_model_512", "tex_slat_flow_model_512"]
    with store.on_device(ss, shape):
        assert list(store.residency.resident()) == ["sparse_structure_flow_model",
                                                    "shape_slat_flow_model_512"]
    assert store.transfers == Transfers(to_device=3 * NET_BYTES, to_host=4 * NET_BYTES)


def test_a_budget_that_holds_every_network_moves_nothing_after_a_block():
    nets = _nets("sparse_structure_flow_model", "shape_slat_flow_model_512")
    store = ModelStore(Runtime(model="unused", device="cpu", vram_budget_gib=1.0), _release(), models=nets)
    storages = [_storage(n.weight) for n in nets.values()]
    for _ in range(2):
        for net in nets.values():
            with store.on_device(net):
                pass
    assert list(store.residency.resident()) == list(nets)
    assert store.transfers == Transfers() and [_storage(n.weight) for n in nets.values()] == storages


def test_without_a_budget_the_store_keeps_no_bookkeeping():
    store = ModelStore(Runtime(model="unused", device="cpu"), _release(), models=_nets("tex_slat_decoder"))
    with store.on_device(store.get("tex_slat_decoder")):
        pass
    assert store.residency is None and store.transfers == Transfers()


@pytest.mark.parametrize("gib", [0.0, -1.0, float("nan"), float("inf")])
def test_a_runtime_refuses_a_budget_that_is_not_a_positive_number(gib):
    with pytest.raises(ValueError, match="vram_budget_gib must be a number of GiB above 0"):
        Runtime(model="unused", device="cpu", vram_budget_gib=gib)


def test_a_runtime_refuses_a_budget_in_low_vram_mode():
    with pytest.raises(ValueError, match="vram_budget_gib and low_vram exclude each other"):
        Runtime(model="unused", device="cpu", low_vram=True, vram_budget_gib=4.0)


# --- the options that set it ----------------------------------------------------------------

@pytest.mark.parametrize("command", ["generate", "retexture"])
@pytest.mark.parametrize("value, words", [("0", "must be a number of GiB above 0, got 0.0"),
                                          ("-2", "must be a number of GiB above 0, got -2.0"),
                                          ("inf", "must be a number of GiB above 0, got inf"),
                                          ("twelve", "expected a number of GiB, got 'twelve'")])
def test_a_bad_budget_is_one_clear_error_naming_the_option(tmp_path, capsys, command, value, words):
    inputs = ["a.png"] if command == "generate" else ["m.glb", "a.png"]
    with pytest.raises(SystemExit) as exit_info:
        main([command, *inputs, "-o", str(tmp_path), "--vram-budget", value])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and f"argument --vram-budget: {words}" in err, err


def test_the_budget_and_low_vram_mode_together_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "a.png", "-o", str(tmp_path), "--low-vram", "--vram-budget", "8"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--vram-budget" in err and "--low-vram" in err, err


def _generate_args(*extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli_generate.add_arguments(parser)
    return parser.parse_args(["a.png", "-o", "out", "--device", "cpu", *extra])


def test_the_budget_option_reaches_the_runtime():
    assert cli_common.runtime(_generate_args("--vram-budget", "11.5")).vram_budget_gib == 11.5
    assert cli_common.runtime(_generate_args()).vram_budget_gib is None


def test_the_server_s_generator_factory_passes_the_budget_on(tiny_checkpoint):
    generator = trellis2(LoadSpec(paths=ModelPaths(tiny_checkpoint), device="cpu", vram_budget_gib=3.0))
    assert generator.runtime.vram_budget_gib == 3.0 and generator.store.residency.budget == 3 * GIB


def _load_line(**fields) -> str:
    return json.dumps({"type": "load", "id": "l", "source": "x", **fields})


def test_the_server_takes_a_budget_on_its_load_request():
    assert protocol.decode_request(_load_line(vram_budget_gib=12)).vram_budget_gib == 12.0
    assert protocol.decode_request(_load_line()).vram_budget_gib is None


@pytest.mark.parametrize("fields, words", [({"vram_budget_gib": 0}, "vram_budget_gib must be a number"),
                                           ({"vram_budget_gib": 4, "low_vram": True},
                                            "vram_budget_gib cannot be combined with low_vram")])
def test_the_server_refuses_a_bad_budget_on_arrival(fields, words):
    with pytest.raises(protocol.ProtocolError, match=words) as error:
        protocol.decode_request(_load_line(**fields))
    assert error.value.code == "invalid_request"


# --- a generation with and without a budget --------------------------------------------------

@pytest.mark.slow
def test_the_mini_release_gives_the_same_result_with_and_without_a_budget(tmp_path, caplog):
    """Stage networks of the bundled mini release (all 1.1 to 11 MB) under a 10 MB budget: every
    job moves networks out and back, and the decoded meshes and PBR voxels are the same."""
    image = images.rgba_transparent(tmp_path / "object.png")
    steps = SamplerOverrides(steps=2)
    request = GenerateRequest(images=(image,), output_dir=tmp_path / "out", pipeline_type="512", seed=1,
                              sparse_structure=steps, shape=steps, texture=steps,
                              export=ExportOptions(texture_size=64, faces=800, bake_normal_map=False))

    def generator(*options: str) -> Trellis2Generator:
        runtime = cli_common.runtime(_generate_args("--model", "mini", "--offline", *options))
        return Trellis2Generator(runtime, structure=GivenStructure(lambda grid: small_shell(grid, 0.05)))

    plain, budgeted = generator(), generator("--vram-budget", str(10e6 / GIB))
    want = plain.decode(request)
    for job in range(2):
        moved = budgeted.store.transfers
        got = budgeted.decode(request)
        moved = budgeted.store.transfers - moved
        assert moved.to_host > 0 and (job == 0 or moved.to_device > 0), moved
        for a, b in zip(want, got, strict=True):
            assert (a.vertices == b.vertices).all() and (a.faces == b.faces).all()
            assert torch.equal(a.coords, b.coords) and torch.equal(a.attrs, b.attrs)
    with caplog.at_level(logging.INFO, logger="backend.pipeline.generator"):
        result = budgeted.generate(request)
    assert result.moved_to_device_bytes > 0 and result.moved_to_host_bytes > 0
    line = [r.getMessage() for r in caplog.records if r.getMessage().startswith("VRAM budget")]
    assert line == [f"VRAM budget {10e6 / GIB:.3g} GiB: {result.moved_to_device_bytes / GIB:.3g} GiB of "
                    f"networks moved to the device and {result.moved_to_host_bytes / GIB:.3g} GiB back to "
                    "host memory in this job"]


# --- on a GPU -------------------------------------------------------------------------------

@pytest.mark.gpu
def test_on_a_gpu_networks_move_within_the_budget_and_come_back_from_pinned_memory():
    side = 1024  # 4 MiB per network
    torch.manual_seed(0)
    nets = {f"net{i}": nn.Linear(side, side, bias=False).requires_grad_(False) for i in range(4)}
    size = side * side * 4
    reference = {name: net.weight.clone() for name, net in nets.items()}
    budget = 2 * size
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    store = ModelStore(Runtime(model="unused", device="cuda", vram_budget_gib=budget / GIB), _release(),
                       models=nets)
    x = torch.randn(8, side, device="cuda")
    order = ["net0", "net1", "net2", "net3", "net0", "net1", "net3", "net2", "net0"]
    hosts = {}
    for name in order:
        with store.on_device(nets[name]):
            assert nets[name].weight.is_cuda
            out = nets[name](x)
        assert torch.allclose(out.cpu(), x.cpu() @ reference[name].T, atol=1e-4, rtol=1e-4)
        for other, net in nets.items():
            if other not in store.residency.resident():
                assert not net.weight.is_cuda and net.weight.is_pinned()
                assert hosts.setdefault(other, _storage(net.weight)) == _storage(net.weight)
    torch.cuda.synchronize()
    activations = 3 * x.numel() * 4
    assert torch.cuda.max_memory_allocated() - base <= budget + activations + (1 << 20)
    assert len(store.residency.resident()) == 2
    assert all(torch.equal(net.weight.cpu(), reference[name]) for name, net in nets.items())

    roomy = ModelStore(Runtime(model="unused", device="cuda", vram_budget_gib=8 * size / GIB), _release(),
                       models=nets)
    for _ in range(2):
        before = roomy.transfers
        for net in nets.values():
            with roomy.on_device(net):
                net(x)
        moved = roomy.transfers - before
    assert moved == Transfers() and all(net.weight.is_cuda for net in nets.values())

