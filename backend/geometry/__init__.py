"""Mesh and material types shared across the backend (numpy only).

Submodules: :mod:`.topology` (welding, edges, orientation, unreferenced vertices, normals) and
:mod:`.inspect` (the QA report and shell clean-ups).
"""

from .mesh import MeshError, PbrMaterial, TriangleMesh

__all__ = ["MeshError", "PbrMaterial", "TriangleMesh"]
