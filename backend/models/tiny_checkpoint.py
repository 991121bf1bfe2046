"""Write a tiny, randomly initialised TRELLIS.2 release folder in the official layout.

Used by tests and for pipeline development without the 16 GB download. The folder holds
``pipeline.json``, ``texturing_pipeline.json`` (official key sets, official sampler params and
normalisation constants), ``ckpts/NAME.{json,safetensors}`` for every network either pipeline
names (official file names, official class names and arg keys, stored dtypes as released:
bf16 DiT block linears, fp16 VAE blocks), and a tiny DINOv3 saved with ``transformers``.

Differences from the release, on purpose:
* widths/depths are tiny (table below); everything else (patch 16, 4 DINOv3 registers,
  latent 32 channels, SS latent 8 x 16^3, SS decoder output 64^3) is as released;
* the sparse-structure decoder is written into this folder and ``pipeline.json`` points to
  ``ckpts/ss_dec_conv3d_16l8_fp16``; the official file points to
  ``microsoft/TRELLIS-image-large/ckpts/ss_dec_conv3d_16l8_fp16`` (another repo);
* ``image_cond_model.args.model_name`` is the absolute path of the tiny DINOv3 folder.

Tiny configuration:

| network | config |
|---|---|
| flow DiTs | width 64, 2 blocks, 2 heads, MLP int(64 x 5.3334) = 341, cond 32 (see below) |
| SS decoder | channels [32, 16, 8], 1 res block per level, 1 middle block, latent 8 |
| SC-VAE decoders | channels [64, 32, 16, 16, 8], blocks [1, 1, 1, 1, 0] |
| SC-VAE encoders | channels [8, 16, 16, 32, 64], blocks [0, 1, 1, 1, 1] |
| DINOv3 | hidden 32, 2 layers, 2 heads, MLP 64, patch 16, 4 registers |

Head dim 32 keeps the RoPE structure of the release: ``32 // 2 // 3 = 5`` frequencies per axis,
3 x 5 = 15 rotated pairs + 1 identity pair (the release: 3 x 21 = 63 + 1 at head dim 128).
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from .registry import model_class

log = logging.getLogger(__name__)

TINY_COND_CHANNELS = 32  # = tiny DINOv3 hidden size

SHAPE_MEAN = [0.781296, 0.018091, -0.495192, -0.558457, 1.060530, 0.093252, 1.518149, -0.933218,
              -0.732996, 2.604095, -0.118341, -2.143904, 0.495076, -2.179512, -2.130751, -0.996944,
              0.261421, -2.217463, 1.260067, -0.150213, 3.790713, 1.481266, -1.046058, -1.523667,
              -0.059621, 2.220780, 1.621212, 0.877230, 0.567247, -3.175944, -3.186688, 1.578665]
SHAPE_STD = [5.972266, 4.706852, 5.445010, 5.209927, 5.320220, 4.547237, 5.020802, 5.444004,
             5.226681, 5.683095, 4.831436, 5.286469, 5.652043, 5.367606, 5.525084, 4.730578,
             4.805265, 5.124013, 5.530808, 5.619001, 5.103930, 5.417670, 5.269677, 5.547194,
             5.634698, 5.235274, 6.110351, 5.511298, 6.237273, 4.879207, 5.347008, 5.405691]
TEX_MEAN = [3.501659, 2.212398, 2.226094, 0.251093, -0.026248, -0.687364, 0.439898, -0.928075,
            0.029398, -0.339596, -0.869527, 1.038479, -0.972385, 0.126042, -1.129303, 0.455149,
            -1.209521, 2.069067, 0.544735, 2.569128, -0.323407, 2.293000, -1.925608, -1.217717,
            1.213905, 0.971588, -0.023631, 0.106750, 2.021786, 0.250524, -0.662387, -0.768862]
TEX_STD = [2.665652, 2.743913, 2.765121, 2.595319, 3.037293, 2.291316, 2.144656, 2.911822,
           2.969419, 2.501689, 2.154811, 3.163343, 2.621215, 2.381943, 3.186697, 3.021588,
           2.295916, 3.234985, 3.233086, 2.260140, 2.874801, 2.810596, 3.292720, 2.674999,
           2.680878, 2.372054, 2.451546, 2.353556, 2.995195, 2.379849, 2.786195, 2.775190]


def _sampler(strength: float, rescale: float, interval: list[float], rescale_t: float) -> dict:
    return {"name": "FlowEulerGuidanceIntervalSampler", "args": {"sigma_min": 1e-5},
            "params": {"steps": 12, "guidance_strength": strength, "guidance_rescale": rescale,
                       "guidance_interval": interval, "rescale_t": rescale_t}}


def _flow(resolution: int, in_channels: int, out_channels: int) -> dict:
    return {"resolution": resolution, "in_channels": in_channels, "model_channels": 64,
            "cond_channels": TINY_COND_CHANNELS, "out_channels": out_channels, "num_blocks": 2,
            "num_heads": 2,
            "mlp_ratio": 5.3334, "pe_mode": "rope", "share_mod": True, "initialization": "scaled",
            "qk_rms_norm": True, "qk_rms_norm_cross": True, "dtype": "bfloat16"}


_CONVNEXT, _S2C, _C2S = "SparseConvNeXtBlock3d", "SparseResBlockS2C3d", "SparseResBlockC2S3d"
_BLOCK_ARGS = [{"use_checkpoint": False}] * 5
_DEC = {"model_channels": [64, 32, 16, 16, 8], "latent_channels": 32, "num_blocks": [1, 1, 1, 1, 0],
        "block_type": [_CONVNEXT] * 5, "up_block_type": [_C2S] * 4, "block_args": _BLOCK_ARGS,
        "use_fp16": True}
_ENC = {"model_channels": [8, 16, 16, 32, 64], "latent_channels": 32, "num_blocks": [0, 1, 1, 1, 1],
        "block_type": [_CONVNEXT] * 5, "down_block_type": [_S2C] * 4, "block_args": _BLOCK_ARGS,
        "use_fp16": True}

# checkpoint stem -> (official class name, args)
TINY_MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "ss_flow_img_dit_1_3B_64_bf16": ("SparseStructureFlowModel", _flow(16, 8, 8)),
    "slat_flow_img2shape_dit_1_3B_512_bf16": ("SLatFlowModel", _flow(32, 32, 32)),
    "slat_flow_img2shape_dit_1_3B_1024_bf16": ("SLatFlowModel", _flow(64, 32, 32)),
    "slat_flow_imgshape2tex_dit_1_3B_512_bf16": ("SLatFlowModel", _flow(32, 64, 32)),
    "slat_flow_imgshape2tex_dit_1_3B_1024_bf16": ("SLatFlowModel", _flow(64, 64, 32)),
    "ss_dec_conv3d_16l8_fp16": ("SparseStructureDecoder", {
        "out_channels": 1, "latent_channels": 8, "num_res_blocks": 1, "num_res_blocks_middle": 1,
        "channels": [32, 16, 8], "use_fp16": True}),
    "shape_enc_next_dc_f16c32_fp16": ("FlexiDualGridVaeEncoder", dict(_ENC)),
    "shape_dec_next_dc_f16c32_fp16": ("FlexiDualGridVaeDecoder", {**_DEC, "resolution": 256}),
    "tex_enc_next_dc_f16c32_fp16": ("SparseUnetVaeEncoder", {"in_channels": 6, **_ENC}),
    "tex_dec_next_dc_f16c32_fp16": ("SparseUnetVaeDecoder",
                                    {"out_channels": 6, **_DEC, "pred_subdiv": False}),
}

# Buffers the official files do not carry (computed at construction).
_NOT_STORED = {"rope_phases"}


def pipeline_json(dinov3_path: str) -> dict:
    """The image->3D ``pipeline.json`` (official key set and sampler params)."""
    return {"name": "Trellis2ImageTo3DPipeline", "args": {
        "models": {
            "sparse_structure_flow_model": "ckpts/ss_flow_img_dit_1_3B_64_bf16",
            "sparse_structure_decoder": "ckpts/ss_dec_conv3d_16l8_fp16",
            "shape_slat_flow_model_512": "ckpts/slat_flow_img2shape_dit_1_3B_512_bf16",
            "shape_slat_flow_model_1024": "ckpts/slat_flow_img2shape_dit_1_3B_1024_bf16",
            "shape_slat_decoder": "ckpts/shape_dec_next_dc_f16c32_fp16",
            "tex_slat_flow_model_512": "ckpts/slat_flow_imgshape2tex_dit_1_3B_512_bf16",
            "tex_slat_flow_model_1024": "ckpts/slat_flow_imgshape2tex_dit_1_3B_1024_bf16",
            "tex_slat_decoder": "ckpts/tex_dec_next_dc_f16c32_fp16",
        },
        "sparse_structure_sampler": _sampler(7.5, 0.7, [0.6, 1.0], 5.0),
        "shape_slat_sampler": _sampler(7.5, 0.5, [0.6, 1.0], 3.0),
        "tex_slat_sampler": _sampler(1.0, 0.0, [0.6, 0.9], 3.0),
        "shape_slat_normalization": {"mean": SHAPE_MEAN, "std": SHAPE_STD},
        "tex_slat_normalization": {"mean": TEX_MEAN, "std": TEX_STD},
        "image_cond_model": {"name": "DinoV3FeatureExtractor", "args": {"model_name": dinov3_path}},
        "rembg_model": {"name": "BiRefNet", "args": {"model_name": "briaai/RMBG-2.0"}},
        "default_pipeline_type": "1024_cascade",
    }}


def texturing_pipeline_json(dinov3_path: str) -> dict:
    """``texturing_pipeline.json`` (official key set)."""
    full = pipeline_json(dinov3_path)["args"]
    return {"name": "Trellis2TexturingPipeline", "args": {
        "models": {
            "shape_slat_encoder": "ckpts/shape_enc_next_dc_f16c32_fp16",
            "tex_slat_decoder": full["models"]["tex_slat_decoder"],
            "tex_slat_flow_model_512": full["models"]["tex_slat_flow_model_512"],
            "tex_slat_flow_model_1024": full["models"]["tex_slat_flow_model_1024"],
        },
        **{k: full[k] for k in ("tex_slat_sampler", "shape_slat_normalization", "tex_slat_normalization",
                                "image_cond_model", "rembg_model")},
    }}


def write_dinov3(out: Path) -> None:
    """A tiny ``DINOv3ViTModel`` (patch 16, 4 registers, hidden 32) saved with ``save_pretrained``."""
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    config = DINOv3ViTConfig(hidden_size=TINY_COND_CHANNELS, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=2, patch_size=16, num_register_tokens=4, image_size=224)
    DINOv3ViTModel(config).eval().save_pretrained(out)


# Share of the 64^3 grid the tiny sparse-structure decoder marks occupied. Left as drawn,
# random weights occupy nearly every cell (32^3 = 32,768 tokens after pooling), which makes a
# CPU run of the tiny pipeline take minutes; a few hundred scattered cells keep it seconds.
TINY_SS_OCCUPANCY = 0.002


@torch.no_grad()
def _calibrate_occupancy(decoder: torch.nn.Module, fraction: float) -> None:
    """Shift the decoder's output bias so about ``fraction`` of cells decode as occupied.

    Calibrated on standard-normal latents (what stage 1 starts from); the weights stay random.
    """
    probe = copy.deepcopy(decoder).float()
    logits = probe(torch.randn(2, 8, 16, 16, 16)).flatten()  # [2 * 64^3]
    threshold = torch.quantile(logits[:: max(1, logits.numel() // 200_000)], 1.0 - fraction)
    decoder.out_layer[2].bias -= threshold.to(decoder.out_layer[2].bias.dtype)


def write_checkpoint(ckpts: Path, stem: str, class_name: str, args: dict[str, Any]) -> None:
    """Build ``class_name(**args)`` with random weights and write ``stem.json`` + ``stem.safetensors``."""
    model = model_class(class_name)(**args)
    if class_name == "SparseStructureDecoder":
        _calibrate_occupancy(model, TINY_SS_OCCUPANCY)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items() if k not in _NOT_STORED}
    save_file(state, str(ckpts / f"{stem}.safetensors"))
    (ckpts / f"{stem}.json").write_text(json.dumps({"name": class_name, "args": args}, indent=2))


def make_tiny_checkpoint(out: str | Path, seed: int = 0) -> Path:
    """Write the whole tiny release folder into ``out`` (created if needed); returns its path.

    The global torch RNG is left untouched (weights come from a forked, seeded stream).
    """
    out = Path(out).resolve()
    ckpts = out / "ckpts"
    ckpts.mkdir(parents=True, exist_ok=True)
    dinov3 = out / "dinov3_tiny"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for stem, (class_name, args) in TINY_MODELS.items():
            write_checkpoint(ckpts, stem, class_name, args)
        write_dinov3(dinov3)
    (out / "pipeline.json").write_text(json.dumps(pipeline_json(str(dinov3)), indent=2))
    (out / "texturing_pipeline.json").write_text(json.dumps(texturing_pipeline_json(str(dinov3)), indent=2))
    log.info("wrote tiny TRELLIS.2 checkpoint folder to %s", out)
    return out
