"""Mesh file I/O: read GLB/glTF/OBJ/PLY into :class:`TriangleMesh`, write GLB.

Readers keep the file's axes (glTF is Y-up); see :mod:`backend.geometry.axes` for conversions.
"""

from __future__ import annotations

import struct
from pathlib import Path

from backend.geometry import MeshError, TriangleMesh
from backend.geometry.axes import y_up_to_z_up, z_up_to_y_up

from .gltf_read import read_gltf
from .gltf_write import build_glb, write_glb
from .obj_ply import read_obj, read_ply

READERS = {".glb": read_gltf, ".gltf": read_gltf, ".obj": read_obj, ".ply": read_ply}


def read_mesh(path: str | Path) -> TriangleMesh:
    """Read any supported mesh file (chosen by extension).

    Raises:
        MeshError: unknown extension, unreadable file or unusable contents.
    """
    path = Path(path)
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise MeshError(f"{path}: unsupported mesh format {path.suffix!r} (use {', '.join(READERS)})")
    if not path.is_file():
        raise MeshError(f"{path}: no such file")
    try:
        return reader(path)
    except MeshError as exc:
        if str(path) in str(exc):
            raise
        raise MeshError(f"{path}: {exc}") from None
    except OSError as exc:
        raise MeshError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    except MemoryError:
        raise MeshError(f"{path}: the mesh is too large to read into memory") from None
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, OverflowError, RecursionError,
            struct.error) as exc:
        # A structure the reader's own checks did not anticipate: still the file's fault, and
        # the message says which value the reader tripped over.
        kind = path.suffix.lower().lstrip(".").upper()
        raise MeshError(f"{path}: malformed {kind} file ({type(exc).__name__}: {exc})") from None


__all__ = ["read_mesh", "read_gltf", "read_obj", "read_ply", "write_glb", "build_glb",
           "z_up_to_y_up", "y_up_to_z_up"]
