"""Sparse voxel tensors (coords + feats) and the structures cached per coordinate set."""

from .tensor import SparseTensor

__all__ = ["SparseTensor"]
