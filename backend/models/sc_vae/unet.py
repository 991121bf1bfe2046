"""``SparseUnetVaeEncoder`` / ``SparseUnetVaeDecoder``: the SC-VAE trunks (spec 5.4-5.6).

Constructor arguments are the checkpoint JSON ``args``; ``initialization`` and ``dtype``
are accepted and ignored, ``use_checkpoint`` in ``block_args`` turns on gradient
checkpointing of the ConvNeXt blocks (also settable later: ``set_gradient_checkpointing``).
Storage is mixed precision like the official files: with ``use_fp16`` every conv and linear
inside ``blocks`` is fp16, LayerNorms and the entry/exit linears stay fp32.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from backend.sparse.conv import ConvBackend, SparseConv3d, set_conv_backend
from backend.sparse.spatial import S2CMap, s2c_map
from backend.sparse.tensor import SparseTensor

from .blocks import SparseConvNeXtBlock3d, SparseResBlockC2S3d, SparseResBlockS2C3d, block_class

NUM_LEVELS_TRAINING_ONLY = ("initialization", "dtype")


def _convert_blocks_to_fp16(blocks: nn.Module) -> None:
    """fp16 for conv and linear params inside ``blocks``; norms keep fp32."""
    for m in blocks.modules():
        if isinstance(m, nn.Linear | SparseConv3d):
            m.half()


def _blocks_dtype(blocks: nn.Module) -> torch.dtype:
    for m in blocks.modules():
        if isinstance(m, SparseConv3d):
            return m.weight.dtype
    return torch.float32


def _check_ignored(kwargs: dict, allowed: Sequence[str]) -> None:
    unknown = sorted(k for k in kwargs if k not in allowed)
    if unknown:
        raise TypeError(f"unexpected arguments: {unknown}")


class _ConvBackendMixin:
    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each ConvNeXt block in backward instead of storing its activations.

        Active only in training mode with grad enabled; the same switch as the
        ``use_checkpoint`` block argument of the configs.
        """
        for m in self.modules():
            if isinstance(m, SparseConvNeXtBlock3d):
                m.use_checkpoint = bool(enabled)

    def set_conv_backend(self, backend: ConvBackend | str | None) -> None:
        """Choose the sparse conv backend of every conv (None: per device at call time)."""
        set_conv_backend(self, backend)

    @property
    def dtype(self) -> torch.dtype:
        """Dtype the blocks compute in (fp16 with ``use_fp16``, unless cast afterwards)."""
        return _blocks_dtype(self.blocks)


class SparseUnetVaeEncoder(_ConvBackendMixin, nn.Module):
    """Sparse voxels ``[N, in_channels]`` -> latent ``[M, latent_channels]`` on the /16 grid.

    ``blocks[i]`` = ``num_blocks[i]`` x ``block_type[i]`` at width ``model_channels[i]``, then
    (for all but the last stage) a ``down_block_type[i]`` block to ``model_channels[i+1]``.
    """

    def __init__(
        self,
        in_channels: int,
        model_channels: Sequence[int],
        latent_channels: int,
        num_blocks: Sequence[int],
        block_type: Sequence[str],
        down_block_type: Sequence[str],
        block_args: Sequence[dict] | None = None,
        use_fp16: bool = False,
        **ignored,
    ) -> None:
        super().__init__()
        _check_ignored(ignored, NUM_LEVELS_TRAINING_ONLY)
        block_args = block_args or [{} for _ in num_blocks]
        self.in_channels = in_channels
        self.model_channels = list(model_channels)
        self.latent_channels = latent_channels
        self.num_blocks = list(num_blocks)
        self.use_fp16 = use_fp16
        self.input_layer = nn.Linear(in_channels, model_channels[0])
        self.to_latent = nn.Linear(model_channels[-1], 2 * latent_channels)
        self.blocks = nn.ModuleList()
        for i, n in enumerate(num_blocks):
            cls = block_class(block_type[i])
            stage = nn.ModuleList(cls(model_channels[i], **block_args[i]) for _ in range(n))
            if i < len(num_blocks) - 1:
                stage.append(block_class(down_block_type[i])(model_channels[i], model_channels[i + 1],
                                                             **block_args[i]))
            self.blocks.append(stage)
        if use_fp16:
            _convert_blocks_to_fp16(self.blocks)

    def _encode(self, x: SparseTensor) -> tuple[SparseTensor, list[S2CMap]]:
        """``to_latent`` output (feats ``[M, 2 latent]``: mean, then logvar) and the maps, decoding order."""
        h = x.replace(self.input_layer(x.feats.to(self.input_layer.weight.dtype)).to(self.dtype))  # [N, C0]
        maps: list[S2CMap] = []
        for stage in self.blocks:
            for block in stage:
                if isinstance(block, SparseResBlockS2C3d):
                    mapping = s2c_map(h)
                    maps.append(mapping)
                    h = block(h, mapping)
                else:
                    h = block(h)
        feats = F.layer_norm(h.feats.to(self.to_latent.weight.dtype), h.feats.shape[-1:])  # eps 1e-5
        raw = self.to_latent(feats)  # [M, 2 latent]
        return SparseTensor(h.coords, raw, h.batch_size), maps[::-1]

    def forward(self, x: SparseTensor, return_maps: bool = False):
        """Encode ``x.feats [N, in_channels]``.

        Returns:
            The mean latent (``SparseTensor``, feats ``[M, latent_channels]`` fp32, coords on the
            /16 grid, lexicographically sorted); with ``return_maps`` also the list of the S2C
            maps **in decoding order** (``maps[0]`` undoes the last downsampling), to give a
            decoder as ``s2c_maps`` so it lands exactly on ``x``'s voxels in ``x``'s order.
        """
        raw, maps = self._encode(x)
        latent = raw.replace(raw.feats[:, : self.latent_channels])  # [M, latent]
        return (latent, maps) if return_maps else latent

    def encode_posterior(self, x: SparseTensor) -> tuple[SparseTensor, SparseTensor, list[S2CMap]]:
        """Training view of the encoder: the Gaussian posterior and the S2C maps.

        Returns:
            ``(mean, logvar, maps)``: two ``SparseTensor`` on the latent coords with feats
            ``[M, latent_channels]`` each (``to_latent``'s first and second half), and the S2C
            maps in decoding order (as ``forward(..., return_maps=True)``), which teacher-force
            a decoder (``s2c_maps=maps``) onto ``x``'s voxels in ``x``'s order;
            ``maps[l].child_mask()`` is the ground-truth subdivision of decoder level ``l``.
        """
        raw, maps = self._encode(x)
        mean = raw.replace(raw.feats[:, : self.latent_channels])
        logvar = raw.replace(raw.feats[:, self.latent_channels:])
        return mean, logvar, maps


class SparseUnetVaeDecoder(_ConvBackendMixin, nn.Module):
    """Latent ``[M, latent_channels]`` -> fine voxels ``[K, out_channels]`` (x16 upsampled).

    ``blocks[i]`` = ``num_blocks[i]`` x ``block_type[i]`` at ``model_channels[i]``, then (all
    but the last stage) an ``up_block_type[i]`` C2S block to ``model_channels[i+1]``.
    """

    def __init__(
        self,
        out_channels: int,
        model_channels: Sequence[int],
        latent_channels: int,
        num_blocks: Sequence[int],
        block_type: Sequence[str],
        up_block_type: Sequence[str],
        block_args: Sequence[dict] | None = None,
        use_fp16: bool = False,
        pred_subdiv: bool = True,
        **ignored,
    ) -> None:
        super().__init__()
        _check_ignored(ignored, NUM_LEVELS_TRAINING_ONLY)
        block_args = block_args or [{} for _ in num_blocks]
        self.out_channels = out_channels
        self.model_channels = list(model_channels)
        self.latent_channels = latent_channels
        self.num_blocks = list(num_blocks)
        self.use_fp16 = use_fp16
        self.pred_subdiv = pred_subdiv
        self.output_layer = nn.Linear(model_channels[-1], out_channels)
        self.from_latent = nn.Linear(latent_channels, model_channels[0])
        self.blocks = nn.ModuleList()
        for i, n in enumerate(num_blocks):
            cls = block_class(block_type[i])
            stage = nn.ModuleList(cls(model_channels[i], **block_args[i]) for _ in range(n))
            if i < len(num_blocks) - 1:
                stage.append(block_class(up_block_type[i])(model_channels[i], model_channels[i + 1],
                                                           pred_subdiv=pred_subdiv, **block_args[i]))
            self.blocks.append(stage)
        if use_fp16:
            _convert_blocks_to_fp16(self.blocks)

    def _trunk(self, x: SparseTensor, guide_subs, s2c_maps, stop_at: int | None = None):
        """Run ``from_latent`` and the stages (all, or the first ``stop_at``); collect subs."""
        h = x.replace(self.from_latent(x.feats.to(self.from_latent.weight.dtype)).to(self.dtype))  # [M, C0]
        subs: list[SparseTensor] = []
        level = 0
        for i, stage in enumerate(self.blocks):
            if stop_at is not None and i == stop_at:
                break
            for block in stage:
                if isinstance(block, SparseResBlockC2S3d):
                    guide = guide_subs[level] if guide_subs is not None else None
                    mapping = s2c_maps[level] if s2c_maps is not None else None
                    coarse = h
                    h, logits = block(h, guide=guide, mapping=mapping)
                    if logits is not None:
                        subs.append(SparseTensor(coarse.coords, logits, coarse.batch_size))
                    level += 1
                else:
                    h = block(h)
        return h, subs

    def forward(
        self,
        x: SparseTensor,
        guide_subs: Sequence[SparseTensor | torch.Tensor] | None = None,
        return_subs: bool = False,
        *,
        s2c_maps: Sequence[S2CMap] | None = None,
    ):
        """Decode a latent.

        Args:
            x: latent, feats ``[M, latent_channels]``.
            guide_subs: 4 subdivision logits (``> 0`` = child exists) or bool masks, coarse to
                fine, each row-aligned to that level's voxels (e.g. the shape decoder's subs).
            return_subs: also return the predicted subdivision logits (4 ``SparseTensor`` with
                feats ``[N_level, 8]``, coarse to fine); needs ``pred_subdiv``.
            s2c_maps: the encoder's maps in decoding order (``return_maps=True``); the output
                then has exactly the encoded voxels in the encoder's input order.

        Returns:
            ``SparseTensor`` with feats ``[K, out_channels]`` fp32 (and the subs if asked).
        """
        if return_subs and not self.pred_subdiv:
            raise ValueError("return_subs needs a decoder with pred_subdiv=True")
        h, subs = self._trunk(x, guide_subs, s2c_maps)
        feats = F.layer_norm(h.feats.to(self.output_layer.weight.dtype), h.feats.shape[-1:])  # eps 1e-5
        out = h.replace(self.output_layer(feats))  # [K, out_channels]
        return (out, subs) if return_subs else out

    @torch.no_grad()
    def upsample(self, x: SparseTensor, upsample_times: int) -> torch.Tensor:
        """Coords ``[K, 4]`` int32 reached after ``upsample_times`` predicted x2 subdivisions."""
        if not self.pred_subdiv:
            raise ValueError("upsample needs a decoder with pred_subdiv=True")
        if not 0 <= upsample_times < len(self.blocks):
            raise ValueError(f"upsample_times must be in [0, {len(self.blocks) - 1}]")
        h, _ = self._trunk(x, None, None, stop_at=upsample_times)
        return h.coords
