"""A batch of sparse voxel sets with per-voxel features.

``coords`` is an int32 ``[N, 4]`` tensor of ``(batch, x, y, z)`` rows whose
batch indices are non-decreasing, so each sample's rows are contiguous;
``feats`` is ``[N, C]``. The order of rows inside a sample is meaningful (the
decoders' subdivision masks are row-aligned to it) and is never changed here.

Anything derived only from the coordinates (neighbour maps, spatial-to-channel
mappings, attention packing) is stored in ``cache``. A tensor made with
:meth:`SparseTensor.replace` shares its coordinates *and* its cache, so such a
structure is built once per coordinate set and reused across every layer and
every sampler step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


class SparseTensor:
    """Sparse voxels: ``coords [N, 4]`` int32 (b, x, y, z) and ``feats [N, C]``."""

    __slots__ = ("coords", "feats", "batch_size", "cache")

    def __init__(
        self,
        coords: torch.Tensor,
        feats: torch.Tensor,
        batch_size: int | None = None,
        cache: dict[str, Any] | None = None,
    ) -> None:
        if coords.ndim != 2 or coords.shape[1] != 4:
            raise ValueError(f"coords must be [N, 4], got {tuple(coords.shape)}")
        if feats.shape[0] != coords.shape[0]:
            raise ValueError(f"feats has {feats.shape[0]} rows but coords has {coords.shape[0]}")
        if coords.dtype != torch.int32:
            coords = coords.to(torch.int32)
        if batch_size is None:
            batch_size = int(coords[:, 0].max().item()) + 1 if coords.shape[0] else 1
        self.coords = coords
        self.feats = feats
        self.batch_size = batch_size
        self.cache = {} if cache is None else cache

    # ----------------------------------------------------------------- structure
    @property
    def shape(self) -> tuple[int, ...]:
        return (self.batch_size, *self.feats.shape[1:])

    @property
    def device(self) -> torch.device:
        return self.feats.device

    @property
    def dtype(self) -> torch.dtype:
        return self.feats.dtype

    def __len__(self) -> int:
        return int(self.coords.shape[0])

    def cached(self, key: str, build: Callable[[], Any]) -> Any:
        """Return ``cache[key]``, building it with ``build()`` the first time."""
        if key not in self.cache:
            self.cache[key] = build()
        return self.cache[key]

    @property
    def seqlens(self) -> torch.Tensor:
        """Number of voxels per sample, int64 ``[B]`` (on the coords' device)."""
        return self.cached(
            "seqlens",
            lambda: torch.bincount(self.coords[:, 0].long(), minlength=self.batch_size),
        )

    @property
    def cu_seqlens(self) -> torch.Tensor:
        """Cumulative sample offsets, int32 ``[B + 1]``, as varlen attention wants them."""

        def build() -> torch.Tensor:
            out = torch.zeros(self.batch_size + 1, dtype=torch.int32, device=self.coords.device)
            out[1:] = torch.cumsum(self.seqlens, 0)
            return out

        return self.cached("cu_seqlens", build)

    @property
    def layout(self) -> list[slice]:
        """Row range of each sample."""

        def build() -> list[slice]:
            offsets = self.cu_seqlens.tolist()
            return [slice(offsets[i], offsets[i + 1]) for i in range(self.batch_size)]

        return self.cached("layout", build)

    @property
    def batch_index(self) -> torch.Tensor:
        """Sample index of each row, int64 ``[N]``."""
        return self.cached("batch_index", lambda: self.coords[:, 0].long())

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """Per-axis maximum coordinate + 1 (not the nominal grid size)."""
        if len(self) == 0:
            return (0, 0, 0)
        return tuple(int(v) + 1 for v in self.coords[:, 1:].max(dim=0).values.tolist())

    # ----------------------------------------------------------------- features
    def replace(self, feats: torch.Tensor) -> SparseTensor:
        """Same coordinates and cache, new features."""
        return SparseTensor(self.coords, feats, self.batch_size, self.cache)

    def to(self, *args, **kwargs) -> SparseTensor:
        """Move or cast the features (and move the coordinates with them).

        A device change starts a new cache, since cached maps live on a device.
        """
        feats = self.feats.to(*args, **kwargs)
        if feats.device == self.feats.device:
            return SparseTensor(self.coords, feats, self.batch_size, self.cache)
        return SparseTensor(self.coords.to(feats.device), feats, self.batch_size)

    def type(self, dtype: torch.dtype) -> SparseTensor:
        return self.replace(self.feats.to(dtype))

    def _operand(self, other: Any) -> Any:
        """Turn ``other`` into something that broadcasts against ``feats``."""
        if isinstance(other, SparseTensor):
            if other.coords is not self.coords and not torch.equal(other.coords, self.coords):
                raise ValueError("sparse tensors with different coordinates cannot be combined")
            return other.feats
        if isinstance(other, torch.Tensor) and other.ndim >= 2 and other.shape[0] == self.batch_size \
                and other.shape[0] != len(self):
            # A dense [B, C] operand: one row per sample, broadcast to that sample's voxels.
            return other[self.batch_index]
        if isinstance(other, torch.Tensor) and other.ndim >= 2 and other.shape[0] == 1:
            return other[0]
        return other

    def __neg__(self) -> SparseTensor:
        return self.replace(-self.feats)

    def __add__(self, other: Any) -> SparseTensor:
        return self.replace(self.feats + self._operand(other))

    __radd__ = __add__

    def __sub__(self, other: Any) -> SparseTensor:
        return self.replace(self.feats - self._operand(other))

    def __rsub__(self, other: Any) -> SparseTensor:
        return self.replace(self._operand(other) - self.feats)

    def __mul__(self, other: Any) -> SparseTensor:
        return self.replace(self.feats * self._operand(other))

    __rmul__ = __mul__

    def __truediv__(self, other: Any) -> SparseTensor:
        return self.replace(self.feats / self._operand(other))

    def __repr__(self) -> str:
        return (f"SparseTensor(n={len(self)}, batch={self.batch_size}, "
                f"feats={tuple(self.feats.shape)} {self.feats.dtype}, device={self.device})")

    @staticmethod
    def cat_samples(tensors: list[SparseTensor]) -> SparseTensor:
        """Stack single- or multi-sample tensors into one batch (batch ids renumbered)."""
        coords, feats, base = [], [], 0
        for t in tensors:
            c = t.coords.clone()
            c[:, 0] += base
            coords.append(c)
            feats.append(t.feats)
            base += t.batch_size
        return SparseTensor(torch.cat(coords), torch.cat(feats), batch_size=base)
