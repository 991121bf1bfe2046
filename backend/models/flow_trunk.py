"""The part both flow DiTs share: embedders, shared AdaLN modulation, blocks, output head.

Mirrors the common body of TRELLIS.2 ``models/sparse_structure_flow.py`` and
``models/structured_latent_flow.py`` (``share_mod = true``; the released models use
``pe_mode = "rope"``, 3-D RoPE in self-attention; ``"ape"`` adds a sinusoidal embedding of the
voxel coordinates to the input tokens instead).
Precision, as the released checkpoints run: ``input_layer``, ``t_embedder``, ``adaLN_modulation``
and ``out_layer`` are fp32; the blocks run in the configured dtype (bfloat16 in the release).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import AttentionBackend
from .dit_blocks import AttentionContext, ModulatedCrossBlock
from .dit_layers import TimestepEmbedder

FINAL_NORM_EPS = 1e-5

BlockKV = tuple[tuple[torch.Tensor, torch.Tensor], ...]  # per block: cross-attention (K, V)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def parse_dtype(dtype: str | torch.dtype, use_fp16: bool = False) -> torch.dtype:
    """Map a config dtype string (``"bfloat16"``...) to a torch dtype; ``use_fp16`` forces float16."""
    if use_fp16:
        return torch.float16
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]


def tensor_version(t: torch.Tensor) -> int | None:
    """``t``'s in-place modification counter; None for inference-mode tensors, which keep none."""
    return None if t.is_inference() else t._version


class CondKVCache:
    """The cross-attention keys and values of condition tokens, kept while the condition is unchanged.

    The K/V projections of the condition tokens are the same at every sampler step, so a sampler
    makes one cache for one ``sample()`` call (one model, one stage) and passes it to every
    forward (``cond_kv_cache=``); it is dropped with the call. An entry is keyed by the
    condition tensor object the forward received and how the forward laid it out, and it is
    rebuilt when the tensor was modified in place (its version counter moved) or another model
    asks. Holding the tensor keeps its ``id`` from being reused while the entry lives. A tensor
    made under ``torch.inference_mode`` (the image conditioner's output) keeps no version counter:
    for it an in-place change inside inference mode goes unseen, so such a condition must not be
    modified while a cache holds it (a sampler never modifies its conditions).

    Memory: per entry, ``2 * num_blocks * (tokens of the condition) * C`` values in the block
    dtype (release, 1024-px condition: 4,101 tokens x 1,536 x 30 blocks x 2 x bf16 ~ 0.76 GB a
    sample).
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[int, str], tuple[torch.Tensor, int | None, nn.Module, BlockKV]] = {}
        self.builds = 0  # how many entries were computed (tests count them)

    def get(self, model: FlowTrunk, cond: torch.Tensor, layout: str, cond_tokens: torch.Tensor) -> BlockKV:
        """Every block's (K, V) of ``cond`` as ``model`` lays it out (``layout`` names how;
        ``cond_tokens`` is that layout, what :meth:`FlowTrunk.run_trunk` receives)."""
        key = (id(cond), layout)
        entry = self._entries.get(key)
        if entry is not None and entry[0] is cond and entry[1] == tensor_version(cond) and entry[2] is model:
            return entry[3]
        kv = model.cond_kv(cond_tokens)
        self._entries[key] = (cond, tensor_version(cond), model, kv)
        self.builds += 1
        return kv


class FlowTrunk(nn.Module):
    """Timestep/condition handling, ``num_blocks`` modulated cross blocks and the final head.

    The constructor takes the release configs' arguments (``ckpts/*.json``), shared by both
    flow models.

    Args:
        resolution: latent grid size (16 for stage 1; nominal for the sparse models).
        in_channels: token input channels.
        model_channels: width C.
        cond_channels: condition token width (1024 for DINOv3-L).
        out_channels: token output channels.
        num_blocks: number of blocks.
        num_heads: heads; when None, ``C // num_head_channels``.
        num_head_channels: channels per head if ``num_heads`` is None.
        mlp_ratio: MLP hidden = ``int(C * mlp_ratio)``.
        pe_mode: ``"rope"`` (the released models) or ``"ape"`` (absolute sinusoidal embedding).
        rope_freq: ``(a, b)`` of the RoPE frequencies ``a / b^(j/F)``.
        dtype: block dtype name; ``use_fp16`` forces float16.
        share_mod: only True (the released models) is implemented.
        qk_rms_norm: QK-RMSNorm in self-attention.
        qk_rms_norm_cross: QK-RMSNorm in cross-attention.
        use_checkpoint: gradient checkpointing of every block (training mode with grad only);
            see :meth:`set_gradient_checkpointing`.
        initialization: training-only (the trainer initialises), accepted and ignored.
    """

    # Forwards accept ``cond_kv_cache=`` (a :class:`CondKVCache`); samplers look for this flag.
    takes_cond_kv_cache = True

    def __init__(
        self,
        resolution: int,
        in_channels: int,
        model_channels: int,
        cond_channels: int,
        out_channels: int,
        num_blocks: int,
        num_heads: int | None = None,
        num_head_channels: int = 64,
        mlp_ratio: float = 4.0,
        pe_mode: str = "rope",
        rope_freq: tuple[float, float] = (1.0, 10000.0),
        dtype: str | torch.dtype = "float32",
        use_fp16: bool = False,
        use_checkpoint: bool = False,
        share_mod: bool = True,
        initialization: str = "vanilla",
        qk_rms_norm: bool = False,
        qk_rms_norm_cross: bool = False,
    ) -> None:
        super().__init__()
        self.resolution = resolution
        self.in_channels = in_channels
        self.out_channels = out_channels
        num_heads = num_heads or model_channels // num_head_channels
        if model_channels % num_heads:
            raise ValueError(f"model_channels {model_channels} is not divisible by num_heads {num_heads}")
        if pe_mode not in ("rope", "ape"):
            raise ValueError(f"pe_mode must be 'rope' or 'ape', got {pe_mode!r}")
        if not share_mod:
            raise ValueError("share_mod=False is not implemented (the released models use share_mod=True)")
        head_dim = model_channels // num_heads
        if pe_mode == "rope" and (head_dim % 2 or head_dim // 2 // 3 < 1):
            raise ValueError(f"head_dim {head_dim} must be even and >= 6 for 3-D RoPE")
        block_dtype = parse_dtype(dtype, use_fp16)
        self.model_channels = model_channels
        self.pe_mode = pe_mode
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.rope_freq = (float(rope_freq[0]), float(rope_freq[1]))
        self.attention_backend = AttentionBackend.SDPA
        self.checkpointed_blocks = num_blocks if use_checkpoint else 0

        self.t_embedder = TimestepEmbedder(model_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(model_channels, 6 * model_channels))
        self.input_layer = nn.Linear(in_channels, model_channels)
        self.blocks = nn.ModuleList(
            ModulatedCrossBlock(model_channels, cond_channels, num_heads, mlp_ratio, qk_rms_norm,
                                qk_rms_norm_cross, block_dtype)
            for _ in range(num_blocks)
        )
        self.out_layer = nn.Linear(model_channels, out_channels)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the blocks compute in (that of their linear weights; an FP8 linear keeps the
        dtype its weights had as ``activation_dtype``)."""
        layer = self.blocks[0].mlp.mlp[0]
        return layer.weight.dtype if hasattr(layer, "weight") else layer.activation_dtype

    def set_gradient_checkpointing(self, enabled: bool = True, num_blocks: int | None = None) -> None:
        """Recompute blocks in backward instead of storing their activations.

        Takes effect only in training mode with grad enabled.

        Args:
            enabled: on or off.
            num_blocks: checkpoint only the first ``num_blocks`` blocks (the rest keep their
                activations, trading memory for speed); None means all.
        """
        n = len(self.blocks) if num_blocks is None else max(0, min(int(num_blocks), len(self.blocks)))
        self.checkpointed_blocks = n if enabled else 0

    def set_attention_backend(self, backend: AttentionBackend | str) -> None:
        """Choose the attention kernel for all later forwards of this model instance."""
        self.attention_backend = AttentionBackend.parse(backend)

    def cond_kv(self, cond: torch.Tensor) -> BlockKV:
        """Every block's cross-attention (K, V) of ``cond`` as :meth:`run_trunk` receives it."""
        cond = cond.to(self.dtype)
        return tuple(block.cross_attn.cond_kv(cond) for block in self.blocks)

    def run_trunk(
        self,
        tokens: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor,
        ctx: AttentionContext,
        sample_index: torch.Tensor | None = None,
        pos_emb: torch.Tensor | None = None,
        cond_kv: BlockKV | None = None,
    ) -> torch.Tensor:
        """Everything between the token tensor in and the token tensor out.

        Args:
            tokens: ``[B, L, Cin]`` (or packed ``[1, T, Cin]``).
            t: ``[B]`` timesteps (x1000).
            cond: ``[B, M, Cc]`` (or packed ``[1, B*M, Cc]``).
            ctx: attention settings (backend, RoPE, layouts).
            sample_index: for packed input, int64 ``[T]`` sample of each token; else None.
            pos_emb: ``pe_mode = "ape"``: fp32 ``[L, C]`` (or ``[T, C]``) added to the input
                layer's output; else None.
            cond_kv: :meth:`cond_kv` of this ``cond``, computed earlier (inference: the sampler's
                :class:`CondKVCache`), or None to project the condition here.

        Returns:
            fp32 ``[B, L, Cout]`` (the out layer's dtype).
        """
        dtype = self.dtype
        h = self.input_layer(tokens.to(self.input_layer.weight.dtype))  # [B, L, C]
        if pos_emb is not None:
            h = h + pos_emb.to(h.dtype)
        h = h.to(dtype)
        mod = self.adaLN_modulation(self.t_embedder(t)).to(dtype)  # [B, 6C]
        mod = mod[:, None] if sample_index is None else mod[sample_index][None]  # [B, 1, 6C] | [1, T, 6C]
        cond = cond.to(dtype)
        recompute = self.training and torch.is_grad_enabled()
        for i, block in enumerate(self.blocks):
            if recompute and i < self.checkpointed_blocks:
                h = checkpoint(block, h, mod, cond, ctx, use_reentrant=False)
            else:
                h = block(h, mod, cond, ctx, None if cond_kv is None else cond_kv[i])
        h = h.to(self.out_layer.weight.dtype)
        h = F.layer_norm(h, h.shape[-1:], eps=FINAL_NORM_EPS)
        return self.out_layer(h)
