"""Attention backends agree with the fp32 reference; varlen equals per-sample attention.

Tolerances: fp32 on CPU 1e-5 (same math, different summation order); bf16 on GPU 2e-2 absolute
on unit-variance inputs (a few bf16 ulps of the output).
"""

from __future__ import annotations

import pytest
import torch

from backend.models.attention import (
    AttentionBackend,
    VarlenLayout,
    attention,
    dense_attention,
    flash_attn_available,
    reference_attention,
    varlen_attention,
)


def _qkv(B, Lq, Lk, H=2, D=32, dtype=torch.float32, device="cpu"):
    g = torch.Generator(device="cpu").manual_seed(0)
    q = torch.randn(B, Lq, H, D, generator=g).to(device, dtype)
    k = torch.randn(B, Lk, H, D, generator=g).to(device, dtype)
    v = torch.randn(B, Lk, H, D, generator=g).to(device, dtype)
    return q, k, v


def test_reference_attention_by_hand():
    # One query, two keys: weights softmax([0, s]) with s = q.k2 / sqrt(D).
    q = torch.tensor([[[[1.0, 0.0, 0.0, 0.0]]]])
    k = torch.tensor([[[[0.0, 0.0, 0.0, 0.0]], [[2.0, 0.0, 0.0, 0.0]]]])
    v = torch.tensor([[[[1.0, 0.0, 0.0, 0.0]], [[0.0, 1.0, 0.0, 0.0]]]])
    w = torch.softmax(torch.tensor([0.0, 2.0 / 2.0]), 0)
    out = reference_attention(q, k, v)
    assert torch.allclose(out[0, 0, 0, :2], w, atol=1e-6)


def test_sdpa_matches_reference_cpu():
    q, k, v = _qkv(2, 37, 53)
    ref = reference_attention(q, k, v)
    out = dense_attention(q, k, v, AttentionBackend.SDPA)
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-5)


def test_varlen_equals_per_sample_and_respects_boundaries():
    oq = [0, 5, 14, 17]  # query lengths 5, 9, 3
    ok = [0, 4, 11, 17]  # key lengths 4, 7, 6
    q, k, v = _qkv(1, 17, 17)
    layout = VarlenLayout.from_offsets(oq, ok, q.device)
    assert layout.max_seqlen_q == 9 and layout.max_seqlen_k == 7
    out = varlen_attention(q[0], k[0], v[0], layout, AttentionBackend.SDPA)
    for i in range(3):
        ref = reference_attention(q[:, oq[i] : oq[i + 1]], k[:, ok[i] : ok[i + 1]], v[:, ok[i] : ok[i + 1]])
        assert torch.allclose(out[oq[i] : oq[i + 1]], ref[0], atol=1e-5)
    packed = attention(q, k, v, AttentionBackend.REFERENCE, layout)
    assert torch.allclose(packed[0], out, atol=1e-5)


def _per_sample_reference(q, k, v, oq, ok):
    """Packed ``[T, H, D]`` attention computed sample by sample with the plain reference."""
    return torch.cat(
        [reference_attention(q[None, a:b], k[None, c:d], v[None, c:d])[0]
         for a, b, c, d in zip(oq, oq[1:], ok, ok[1:])]
    )


def test_varlen_gradients_match_per_sample_reference():
    oq, ok = [0, 6, 9], [0, 5, 12]
    q, k, v = (t[0].double().requires_grad_() for t in _qkv(1, 9, 12))
    layout = VarlenLayout.from_offsets(oq, ok, q.device)
    weight = torch.randn(9, 2, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    (varlen_attention(q, k, v, layout, AttentionBackend.SDPA) * weight).sum().backward()
    got = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    ref = _per_sample_reference(q, k, v, oq, ok)
    (ref * weight).sum().backward()
    for g, t in zip(got, (q, k, v)):
        assert torch.allclose(g, t.grad, atol=1e-10)


def test_backend_parse():
    assert AttentionBackend.parse("sdpa_cudnn") is AttentionBackend.SDPA_CUDNN
    assert AttentionBackend.parse(AttentionBackend.REFERENCE) is AttentionBackend.REFERENCE
    with pytest.raises(ValueError, match="unknown attention backend"):
        AttentionBackend.parse("xformers")


@pytest.mark.skipif(flash_attn_available(), reason="flash-attn is installed")
def test_flash_attn_backend_without_package_is_a_clear_error():
    q, k, v = _qkv(1, 4, 4)
    with pytest.raises(RuntimeError, match="flash-attn"):
        dense_attention(q, k, v, AttentionBackend.FLASH_ATTN)


GPU_BACKENDS = [AttentionBackend.SDPA, AttentionBackend.SDPA_CUDNN, AttentionBackend.SDPA_FLASH]


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_BACKENDS + [AttentionBackend.FLASH_ATTN])
@pytest.mark.parametrize("shape", [(1, 1000, 1000), (1, 777, 1029), (2, 256, 300)])
def test_gpu_backends_match_reference(backend, shape):
    if backend is AttentionBackend.FLASH_ATTN and not flash_attn_available():
        pytest.skip("flash-attn not installed")
    q, k, v = _qkv(*shape, H=12, D=128, dtype=torch.bfloat16, device="cuda")
    ref = reference_attention(q, k, v).float()
    out = dense_attention(q, k, v, backend).float()
    assert (out - ref).abs().max().item() < 2e-2


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_BACKENDS + [AttentionBackend.FLASH_ATTN])
def test_gpu_varlen_matches_reference(backend):
    if backend is AttentionBackend.FLASH_ATTN and not flash_attn_available():
        pytest.skip("flash-attn not installed")
    oq, ok = [0, 300, 1000], [0, 1029, 2058]
    q, _, _ = _qkv(1, 1000, 1, H=12, D=128, dtype=torch.bfloat16, device="cuda")
    _, k, v = _qkv(1, 1, 2058, H=12, D=128, dtype=torch.bfloat16, device="cuda")
    layout = VarlenLayout.from_offsets(oq, ok, q.device)
    out = varlen_attention(q[0], k[0], v[0], layout, backend).float()
    for i in range(2):
        ref = reference_attention(q[:, oq[i] : oq[i + 1]], k[:, ok[i] : ok[i + 1]], v[:, ok[i] : ok[i + 1]])
        assert (out[oq[i] : oq[i + 1]] - ref[0].float()).abs().max().item() < 2e-2


@pytest.mark.gpu
def test_gpu_packed_varlen_gradients_match_reference():
    # SDPA on CUDA runs the packed varlen kernel in training: its backward must be the loop's.
    oq, ok = [0, 300, 1000, 1001], [0, 1029, 2058, 3087]
    q, _, _ = _qkv(1, 1001, 1, H=4, D=64, dtype=torch.bfloat16, device="cuda")
    _, k, v = _qkv(1, 1, 3087, H=4, D=64, dtype=torch.bfloat16, device="cuda")
    q, k, v = (t[0].requires_grad_() for t in (q, k, v))
    layout = VarlenLayout.from_offsets(oq, ok, q.device)
    weight = torch.randn(1001, 4, 64, device="cuda")
    (varlen_attention(q, k, v, layout, AttentionBackend.SDPA).float() * weight).sum().backward()
    got = [t.grad.float() for t in (q, k, v)]
    qr, kr, vr = (t.detach().float().requires_grad_() for t in (q, k, v))
    ref = _per_sample_reference(qr, kr, vr, oq, ok)
    (ref * weight).sum().backward()
    for g, t in zip(got, (qr, kr, vr)):
        scale = t.grad.abs().max().item()
        assert (g - t.grad).abs().max().item() < 3e-2 * scale
