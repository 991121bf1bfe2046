"""Training mode: every network backpropagates, and its gradients are the right ones.

Three kinds of reference:

* ``torch.autograd.gradcheck`` (float64, finite differences, ``eps 1e-6``, ``atol 1e-5``,
  ``rtol 1e-3``) for the building blocks: RMSNorm+RoPE, RoPE, LayerNorm32, the torch sparse
  conv, S2C / C2S, the ConvNeXt / S2C / C2S blocks, and a whole tiny VAE round trip;
* an independent plain-torch re-implementation (``_ref_forward`` of ``test_flow_models``: LN,
  cos/sin RoPE, softmax attention) run in float64, whose autograd gradients the fp32 flow
  models must match to ``1e-3`` of the largest gradient entry (fp32 rounding through two blocks);
* a float64 copy of the same model with ``AttentionBackend.REFERENCE`` attention and the
  torch conv path, for the fp32 models (same ``1e-3`` relative bound), and under CPU bf16
  autocast (cosine similarity of all gradients > 0.99: bf16 keeps ~3 significant digits).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from backend.models import AttentionBackend, SLatFlowModel, SparseStructureDecoder, SparseStructureFlowModel
from backend.models.dit_layers import apply_rope, layer_norm_fp32, rms_norm_rope, rope_phases
from backend.models.sc_vae import FlexiDualGridVaeDecoder, FlexiDualGridVaeEncoder, SparseUnetVaeDecoder
from backend.models.sc_vae.blocks import SparseConvNeXtBlock3d, SparseResBlockC2S3d, SparseResBlockS2C3d
from backend.models.ss_encoder import SparseStructureEncoder
from backend.sparse.conv import ConvBackend
from backend.sparse.neighbors import build_neighbor_map
from backend.sparse.spatial import build_s2c_map, channel_to_spatial, spatial_to_channel
from backend.sparse.tensor import SparseTensor
from kernels.sparse_conv.reference import subm_conv3d_reference
from tests.models.test_flow_models import TINY, _randomise, _ref_forward, _sparse_input
from tests.models.test_sc_vae_forward import _DEC, _ENC, _randomize
from tests.sparse.helpers import random_coords, shell_coords

F64 = torch.float64
GRADCHECK = dict(eps=1e-6, atol=1e-5, rtol=1e-3)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _assert_grads_close(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], rel: float = 1e-3):
    """Each gradient within ``rel`` x (its largest reference entry); none may be all zero."""
    assert got.keys() == want.keys()
    for name, w in want.items():
        g = got[name]
        assert g is not None, name
        scale = w.abs().max().item()
        assert scale > 0, f"{name}: reference gradient is zero (the test would prove nothing)"
        err = (g.double() - w.double()).abs().max().item()
        assert err <= rel * scale, f"{name}: max error {err:.3g} > {rel} x {scale:.3g}"


def _param_grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


# ----------------------------------------------------------------------- building blocks


def test_rms_norm_rope_gradcheck_and_matches_plain_rmsnorm_then_cos_sin_rope():
    """gradcheck (float64) and equality with a plain re-implementation, values and gradients."""
    g = _gen(0)
    x = torch.randn(2, 5, 3, 12, generator=g, dtype=F64, requires_grad=True)  # [B, L, H, D]
    gamma = (torch.rand(3, 12, generator=g, dtype=F64) + 0.5).requires_grad_()
    phases = rope_phases(torch.randint(0, 9, (5, 3), generator=g), 12)  # [L, 6] complex64
    rope = phases[None, :, None]  # [1, L, 1, D/2]
    assert torch.autograd.gradcheck(lambda a, b: rms_norm_rope(a, b, rope), (x, gamma), **GRADCHECK)

    def plain(a, b):
        y = a / a.norm(dim=-1, keepdim=True).clamp_min(1e-12) * b
        ang = torch.angle(phases).to(F64)[None, :, None]  # [1, L, 1, D/2]
        c, s = torch.cos(ang), torch.sin(ang)
        even, odd = y[..., 0::2], y[..., 1::2]
        return torch.stack([even * c - odd * s, even * s + odd * c], dim=-1).flatten(-2)

    w = torch.randn(2, 5, 3, 12, generator=g, dtype=F64)
    ours = torch.autograd.grad((rms_norm_rope(x, gamma, rope) * w).sum(), (x, gamma))
    ref = torch.autograd.grad((plain(x, gamma) * w).sum(), (x, gamma))
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)  # phases are complex64: ~1e-7


def test_rms_norm_rope_inference_path_equals_training_path():
    """The in-place (no-grad) and out-of-place (autograd) branches give identical values."""
    g = _gen(1)
    x = torch.randn(1, 7, 2, 2, 8, generator=g).to(torch.bfloat16)
    gamma = torch.rand(2, 2, 8, generator=g) + 0.5
    rope = rope_phases(torch.randint(0, 9, (7, 3), generator=g), 8)[None, :, None, None]
    with torch.no_grad():
        infer = rms_norm_rope(x, gamma, rope)
    train = rms_norm_rope(x, gamma.requires_grad_(), rope)
    assert train.requires_grad and torch.equal(infer, train.detach())


def test_apply_rope_and_layer_norm_gradcheck():
    g = _gen(2)
    x = torch.randn(1, 4, 2, 6, generator=g, dtype=F64, requires_grad=True)
    rope = rope_phases(torch.randint(0, 5, (4, 3), generator=g), 6)[None]  # [1, L, 3]
    assert torch.autograd.gradcheck(lambda a: apply_rope(a, rope), (x,), **GRADCHECK)
    h = torch.randn(6, 5, generator=g, dtype=F64, requires_grad=True)
    w = torch.randn(5, generator=g, dtype=F64, requires_grad=True)
    b = torch.randn(5, generator=g, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, c, d: layer_norm_fp32(a, 1e-6, c, d), (h, w, b), **GRADCHECK)


def test_reference_sparse_conv_gradcheck():
    coords = random_coords((4, 4, 4), batch=2, p=0.4, gen=_gen(3))
    nbr = build_neighbor_map(coords)
    g = _gen(4)
    feats = torch.randn(len(coords), 2, generator=g, dtype=F64, requires_grad=True)
    weight = torch.randn(3, 3, 3, 3, 2, generator=g, dtype=F64, requires_grad=True)
    bias = torch.randn(3, generator=g, dtype=F64, requires_grad=True)

    def conv(f, w, b):
        return subm_conv3d_reference(f, nbr, w, b, compute_dtype=None)

    assert torch.autograd.gradcheck(conv, (feats, weight, bias), **GRADCHECK)


def test_spatial_to_channel_and_back_gradcheck():
    coords = shell_coords(6, batch=2)
    m = build_s2c_map(coords)
    feats = torch.randn(len(coords), 2, generator=_gen(5), dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f: spatial_to_channel(SparseTensor(coords, f), m).feats,
                                    (feats,), **GRADCHECK)
    parents = torch.randn(len(m.parent_coords), 16, generator=_gen(6), dtype=F64, requires_grad=True)
    def up(p, **how):
        return channel_to_spatial(SparseTensor(m.parent_coords, p), **how)[0].feats

    assert torch.autograd.gradcheck(lambda p: up(p, mapping=m), (parents,), **GRADCHECK)
    mask = torch.rand(len(m.parent_coords), 8, generator=_gen(7)) > 0.5
    assert torch.autograd.gradcheck(lambda p: up(p, mask=mask), (parents,), **GRADCHECK)


@pytest.mark.parametrize("kind", ["convnext", "s2c", "c2s"])
def test_sc_vae_blocks_gradcheck(kind):
    """Input gradients of each SC-VAE block, float64, torch conv path."""
    coords = shell_coords(5)
    if kind == "convnext":
        block, channels = SparseConvNeXtBlock3d(4), 4
    elif kind == "s2c":
        block, channels = SparseResBlockS2C3d(4, 8), 4
    else:
        block, channels = SparseResBlockC2S3d(8, 4), 8
        coords = build_s2c_map(coords).parent_coords
    block = _randomize(block, seed=8).double().train()
    feats = torch.randn(len(coords), channels, generator=_gen(9), dtype=F64, requires_grad=True)

    def run(f):
        out = block(SparseTensor(coords, f))
        return out[0].feats if isinstance(out, tuple) else out.feats

    assert torch.autograd.gradcheck(run, (feats,), **GRADCHECK)


# ------------------------------------------------------------------------------ flow models


def _ref_grads(model, tokens_per_sample, t, cond, coords_per_sample, weights):
    """Grads of ``sum(out * w)`` through ``_ref_forward`` in float64 (params and tokens)."""
    sd = {k: v.detach().double().requires_grad_()
          for k, v in model.state_dict().items() if k not in ("rope_phases", "pos_emb")}
    toks = [tk.detach().double().requires_grad_() for tk in tokens_per_sample]
    loss = sum((_ref_forward(sd, tk, t[b].double(), cond[b].double(), coords_per_sample[b], model.num_heads,
                             pe_mode=model.pe_mode) * weights[b].double()).sum() for b, tk in enumerate(toks))
    loss.backward()
    return {k: v.grad for k, v in sd.items()}, [tk.grad for tk in toks]


@pytest.mark.parametrize("pe_mode", ["rope", "ape"])
def test_ss_flow_gradients_match_plain_float64_reference(pe_mode):
    model = SparseStructureFlowModel(resolution=3, in_channels=3, out_channels=3,
                                     **{**TINY, "pe_mode": pe_mode}).train()
    _randomise(model, 10)
    g = _gen(11)
    x = torch.randn(2, 3, 3, 3, 3, generator=g, requires_grad=True)
    t, cond = torch.tensor([20.0, 35.0]), torch.randn(2, 4, 24, generator=g)
    w = torch.randn(2, 3, 3, 3, 3, generator=g)
    (model(x, t, cond) * w).sum().backward()
    grid = torch.stack(torch.meshgrid(*[torch.arange(3)] * 3, indexing="ij"), -1).reshape(-1, 3)
    tokens = [x[b].reshape(3, -1).T for b in range(2)]
    weights = [w[b].reshape(3, -1).T for b in range(2)]
    ref, tok_grads = _ref_grads(model, tokens, t, cond, [grid, grid], weights)
    _assert_grads_close(_param_grads(model), ref)
    _assert_grads_close({"x": x.grad}, {"x": torch.stack([tg.T.reshape(3, 3, 3, 3) for tg in tok_grads])})


@pytest.mark.parametrize("sizes", [[23], [19, 11]], ids=["single", "packed"])
def test_slat_flow_gradients_match_plain_float64_reference(sizes):
    """B = 1 (dense path) and two packed samples (varlen path, per-sample modulation)."""
    model = SLatFlowModel(resolution=32, in_channels=8, out_channels=8, **TINY).train()
    _randomise(model, 12)
    x = _sparse_input(sizes, seed=13)
    feats = x.feats.clone().requires_grad_()
    g = _gen(14)
    t, cond = torch.tensor([40.0, 10.0][: len(sizes)]), torch.randn(len(sizes), 4, 24, generator=g)
    w = torch.randn(len(x), 8, generator=g)
    (model(x.replace(feats), t, cond).feats * w).sum().backward()
    rows = x.cu_seqlens.tolist()
    sl = [slice(a, b) for a, b in zip(rows[:-1], rows[1:])]
    ref, tok_grads = _ref_grads(model, [x.feats[s] for s in sl], t, cond,
                                [x.coords[s, 1:] for s in sl], [w[s] for s in sl])
    _assert_grads_close(_param_grads(model), ref)
    _assert_grads_close({"x": feats.grad}, {"x": torch.cat(tok_grads)})


def _grads_of(model, run):
    model.zero_grad(set_to_none=True)
    loss, inputs = run(model)
    loss.backward()
    out = _param_grads(model)
    out.update({f"input{i}": t.grad for i, t in enumerate(inputs)})
    return out


def _cosine(a: dict, b: dict) -> float:
    va = torch.cat([a[k].double().flatten() for k in sorted(a)])
    vb = torch.cat([b[k].double().flatten() for k in sorted(a)])
    return float(F.cosine_similarity(va, vb, dim=0))


def _slat_run(model, autocast=False):
    x = _sparse_input([15, 9], seed=15)
    dtype = model.input_layer.weight.dtype
    feats = x.feats.to(dtype).requires_grad_()
    g = _gen(16)
    # drawn in fp32 and then cast, so fp32 and fp64 models see the same numbers
    t, cond = torch.tensor([300.0, 700.0]), torch.randn(2, 4, 24, generator=g).to(dtype)
    w = torch.randn(len(x), 8, generator=g).to(dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = model(x.replace(feats), t, cond).feats
    return (out.to(dtype) * w).sum(), [feats]


def test_slat_flow_fp32_sdpa_matches_float64_reference_backend_and_bf16_autocast():
    model = SLatFlowModel(resolution=32, in_channels=8, out_channels=8, **TINY).train()
    _randomise(model, 17)
    ref = copy.deepcopy(model).double()
    ref.set_attention_backend(AttentionBackend.REFERENCE)
    want = _grads_of(ref, _slat_run)
    _assert_grads_close(_grads_of(model, _slat_run), want)
    amp = _grads_of(model, lambda m: _slat_run(m, autocast=True))
    assert all(torch.isfinite(v).all() for v in amp.values())
    assert _cosine(amp, want) > 0.99


# ------------------------------------------------------------------------------ VAEs


def _vae_run(enc, dec, tex, autocast=False):
    coords = shell_coords(8, batch=2)
    g = _gen(18)
    dtype = enc.input_layer.weight.dtype
    verts = SparseTensor(coords, torch.rand(len(coords), 3, generator=g).to(dtype).requires_grad_())
    inter = verts.replace(torch.rand(len(coords), 3, generator=g) > 0.5)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        mean, logvar, maps = enc.encode_posterior(verts, inter)
        noise = torch.randn(mean.feats.shape, generator=g).to(dtype)
        z = mean.replace(mean.feats + torch.exp(0.5 * logvar.feats) * noise)
        out, subs = dec(z, return_subs=True, s2c_maps=maps)
        rgb = tex(z, s2c_maps=maps)
    w = torch.randn(len(coords), 7 + 6, generator=g).to(dtype)
    loss = (out.offsets * w[:, :3]).sum() + (out.intersection_logits * w[:, 3:6]).sum() \
        + (out.split_weight * w[:, 6:7]).sum() + (rgb.feats.to(dtype) * w[:, 7:]).sum()
    for s in subs:
        target = torch.ones_like(s.feats, dtype=dtype)
        loss = loss + F.binary_cross_entropy_with_logits(s.feats.to(dtype), target)
    return loss, [verts.feats]


def _vaes():
    enc = _randomize(FlexiDualGridVaeEncoder(**_ENC), seed=19).train()
    dec = _randomize(FlexiDualGridVaeDecoder(**_DEC), seed=20).train()
    tex = _randomize(SparseUnetVaeDecoder(out_channels=6, pred_subdiv=False, **_DEC), seed=21).train()
    return torch.nn.ModuleDict({"enc": enc, "dec": dec, "tex": tex})


def test_sc_vaes_fp32_match_float64_copy_and_bf16_autocast():
    """Encoder posterior -> reparameterised sample -> teacher-forced shape and texture decoders."""
    models = _vaes()
    ref = copy.deepcopy(models).double()

    def run(m, autocast=False):
        return _vae_run(m["enc"], m["dec"], m["tex"], autocast)

    want = _grads_of(ref, run)
    _assert_grads_close(_grads_of(models, run), want)
    amp = _grads_of(models, lambda m: run(m, autocast=True))
    assert all(torch.isfinite(v).all() for v in amp.values())
    assert _cosine(amp, want) > 0.99


def test_sc_vae_round_trip_gradcheck_wrt_latent():
    """Teacher-forced shape decoder, float64 finite differences w.r.t. the latent features."""
    coords = shell_coords(8)
    enc = _randomize(FlexiDualGridVaeEncoder(**_ENC), seed=22).double()
    dec = _randomize(FlexiDualGridVaeDecoder(**_DEC), seed=23).double().train()
    verts = SparseTensor(coords, torch.rand(len(coords), 3, generator=_gen(24), dtype=F64))
    with torch.no_grad():
        latent, maps = enc(verts, verts.replace(verts.feats > 0.5), return_maps=True)
    feats = latent.feats.clone().requires_grad_()

    def run(f):
        out, subs = dec(latent.replace(f), return_subs=True, s2c_maps=maps)
        return out.offsets, out.intersection_logits, out.split_weight, subs[-1].feats

    # fast mode: random directional derivatives instead of the full Jacobian (keeps it ~1 s)
    assert torch.autograd.gradcheck(run, (feats,), fast_mode=True, **GRADCHECK)


def test_ss_decoder_and_encoder_fp32_match_float64_copy_and_gradcheck():
    dec = SparseStructureDecoder(1, 2, 1, [8, 8], num_res_blocks_middle=1, dtype="float32").train()
    enc = SparseStructureEncoder(1, 2, 1, [8, 8], num_res_blocks_middle=1, dtype="float32").train()
    for m, seed in ((dec, 25), (enc, 26)):
        _randomise(m, seed)
    models = torch.nn.ModuleDict({"enc": enc, "dec": dec})
    occ = (torch.rand(1, 1, 4, 4, 4, generator=_gen(27)) > 0.5).float()

    def run(m):
        dtype = m["enc"].input_layer.weight.dtype
        _, mean, logvar = m["enc"](occ.to(dtype), return_raw=True)
        return (m["dec"](mean).square().mean() + logvar.exp().mean()), []

    _assert_grads_close(_grads_of(models, run), _grads_of(copy.deepcopy(models).double(), run))
    dec64 = copy.deepcopy(dec).double()
    z = torch.randn(1, 2, 2, 2, 2, generator=_gen(28), dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(dec64, (z,), **GRADCHECK)


@pytest.mark.parametrize("name", ["ss_flow", "slat_flow", "sc_vae", "ss_decoder"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(name):
    if name == "ss_flow":
        model = SparseStructureFlowModel(resolution=3, in_channels=3, out_channels=3, **TINY)
        _randomise(model, 29)

        def run(m):
            x = torch.randn(2, 3, 3, 3, 3, generator=_gen(30), requires_grad=True)
            cond = torch.randn(2, 4, 24, generator=_gen(31))
            return m(x, torch.tensor([5.0, 9.0]), cond).square().sum(), [x]
    elif name == "slat_flow":
        model = SLatFlowModel(resolution=32, in_channels=8, out_channels=8, **TINY)
        _randomise(model, 32)
        run = _slat_run
    elif name == "sc_vae":
        model = _vaes()

        def run(m):
            return _vae_run(m["enc"], m["dec"], m["tex"])
    else:
        model = SparseStructureDecoder(1, 2, 1, [8, 4], dtype="float32")
        _randomise(model, 33)

        def run(m):
            z = torch.randn(1, 2, 2, 2, 2, generator=_gen(34), requires_grad=True)
            return m(z).square().sum(), [z]

    model.train()
    plain_loss = run(model)[0].item()
    plain = _grads_of(model, run)
    for m in model.modules() if name == "sc_vae" else [model]:
        if hasattr(m, "set_gradient_checkpointing") and m is not model or name != "sc_vae":
            m.set_gradient_checkpointing(True)
    ckpt_loss = run(model)[0].item()
    ckpt = _grads_of(model, run)
    assert ckpt_loss == pytest.approx(plain_loss, rel=1e-6)
    _assert_grads_close(ckpt, plain, rel=1e-5)


def test_checkpointing_is_really_used_and_only_in_training():
    """The flag switches recomputation on (fewer saved tensors) and is inert in eval / no-grad."""
    model = SLatFlowModel(resolution=32, in_channels=8, out_channels=8, **TINY).train()
    _randomise(model, 35)

    def saved(m):
        count = 0

        def pack(t):
            nonlocal count
            count += 1
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            _slat_run(m)
        return count

    before = saved(model)
    model.set_gradient_checkpointing(True)
    assert saved(model) < before / 2
    model.set_gradient_checkpointing(True, num_blocks=1)
    assert saved(model) < before
    model.eval()
    assert saved(model) == before


def test_triton_backend_trains_a_convnext_block_like_the_torch_backend():
    """SparseConv3d picks the differentiable Triton path when grads are needed (interpreter on CPU)."""
    block = _randomize(SparseConvNeXtBlock3d(8), seed=36).train()
    coords = shell_coords(5)
    feats = torch.randn(len(coords), 8, generator=_gen(37))
    grads = {}
    for backend in (ConvBackend.TORCH, ConvBackend.TRITON):
        block.conv.set_backend(backend)
        f = feats.clone().requires_grad_()
        block.zero_grad(set_to_none=True)
        block(SparseTensor(coords, f)).feats.square().sum().backward()
        grads[backend] = {**_param_grads(block), "x": f.grad}
    _assert_grads_close(grads[ConvBackend.TRITON], grads[ConvBackend.TORCH], rel=1e-4)
