"""Mesh and material types shared across the backend (numpy only)."""

from .mesh import MeshError, PbrMaterial, TriangleMesh

__all__ = ["MeshError", "PbrMaterial", "TriangleMesh"]
