"""A growable open-addressing hash map ``int64 voxel key -> dense int32 index`` for numba code.

The table is a pair of arrays (``keys`` with -1 for empty slots, ``vals``); the
caller keeps them and replaces them with what :func:`grow` returns. Indices are
handed out densely in insertion order, so per-voxel accumulators can be plain
arrays indexed by the value.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_MULT = np.uint64(0x9E3779B97F4A7C15)


@njit(cache=True, inline="always")
def slot_of(key: np.int64, mask: np.int64) -> np.int64:
    """First probe position of ``key`` in a table with ``mask + 1`` slots."""
    h = np.uint64(key) * _MULT
    return np.int64((h >> np.uint64(29)) ^ h) & mask


@njit(cache=True)
def new_table(capacity: int) -> tuple[np.ndarray, np.ndarray]:
    """An empty table; ``capacity`` is rounded up to a power of two."""
    cap = 1024
    while cap < capacity:
        cap *= 2
    return np.full(cap, -1, dtype=np.int64), np.zeros(cap, dtype=np.int32)


@njit(cache=True, inline="always")
def _probe(keys: np.ndarray, key: np.int64) -> np.int64:
    """The slot that holds ``key``, or the empty slot where it belongs (linear probing)."""
    mask = np.int64(keys.shape[0] - 1)
    s = slot_of(key, mask)
    while keys[s] != key and keys[s] != -1:
        s = (s + 1) & mask
    return s


@njit(cache=True)
def find(keys: np.ndarray, vals: np.ndarray, key: np.int64) -> np.int32:
    """Index stored for ``key``, or -1."""
    s = _probe(keys, key)
    return vals[s] if keys[s] == key else np.int32(-1)


@njit(cache=True)
def insert(keys: np.ndarray, vals: np.ndarray, key: np.int64, next_index: np.int32) -> np.int32:
    """Index of ``key``; stores ``next_index`` for it if absent (the caller then counts it)."""
    s = _probe(keys, key)
    if keys[s] == -1:
        keys[s] = key
        vals[s] = next_index
    return vals[s]


@njit(cache=True)
def grow(keys: np.ndarray, vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same mapping in a table twice as large."""
    nk, nv = new_table(keys.shape[0] * 2)
    for i in range(keys.shape[0]):
        if keys[i] != -1:
            insert(nk, nv, keys[i], vals[i])
    return nk, nv


@njit(cache=True)
def grow_rows(a: np.ndarray, rows: int) -> np.ndarray:
    """``a`` ([N, C]) copied into a zero array with ``rows`` rows."""
    out = np.zeros((rows, a.shape[1]), dtype=a.dtype)
    out[: a.shape[0]] = a
    return out
