"""O-Voxel files: compressed ``.npz`` with a versioned, validated schema.

Schema (format version 1); all arrays have N rows, one per voxel, sorted or not:

    format          str      "ovoxel"
    version         int64    1
    resolution      int64    grid size R (64..2048)
    aabb            [2, 3]   float64 grid box (min, max), world units
    coords          [N, 3]   int32 voxel coordinates in [0, R)
    dual_vertices   [N, 3]   float32 voxel-local vertex offsets in [0, 1]
    intersected     [N]      uint8 bit mask of crossed +1,+1-corner edges (x=1, y=2, z=4)
    split_weight    [N]      float32 (optional) quad split weights
    attributes      [N, 6]   uint8 (optional) round(255 * value), channels attr_layout
    attr_layout     str      (with attributes) "base_color:0:3,metallic:3:4,roughness:4:5,alpha:5:6"
    source_center   [3]      float64 (optional) source frame: bounding-box centre, source units, Z-up
    source_scale    []       float64 (optional) source frame: normalized = (source - centre) * scale, > 0
    source_up       str      (optional) source frame: "y" or "z", the up axis of the source file

The three ``source_*`` keys come together or not at all (see :class:`SourceFrame`); they
let a decoder put the mesh back where the source was. They are optional additions to
version 1: files without them load as before (no frame), and readers that ignore them
still read the voxels correctly.

Writing goes to a temporary file in the target directory, then ``os.replace``.
"""

from __future__ import annotations

import io
import os
import zipfile
import zlib

import numpy as np

from backend.fileio import write_atomic

from .normalize import Normalization, SourceFrame
from .types import ATTR_LAYOUT, OVoxel, OVoxelError

FORMAT_NAME = "ovoxel"
FORMAT_VERSION = 1
_LAYOUT_STR = ",".join(f"{k}:{s.start}:{s.stop}" for k, s in ATTR_LAYOUT.items())
_BITS = np.array([1, 2, 4], dtype=np.uint8)
FRAME_KEYS = ("source_center", "source_scale", "source_up")


def save_ovoxel(path: str | os.PathLike, ov: OVoxel, *, compress: bool = True,
                frame: SourceFrame | None = None) -> None:
    """Write ``ov`` to ``path`` (.npz) atomically.

    ``compress=False`` writes a plain (uncompressed) ``.npz``: about 3x larger, but written and read
    several times faster, which matters for training sets read every step. ``frame``, if given, is
    stored as the ``source_*`` keys (how the source mesh was brought into the grid's unit cube).

    Raises:
        OVoxelError: ``ov`` or ``frame`` is malformed (nothing is written).
    """
    ov.validate()
    data = {
        "format": np.array(FORMAT_NAME),
        "version": np.array(FORMAT_VERSION, dtype=np.int64),
        "resolution": np.array(ov.resolution, dtype=np.int64),
        "aabb": ov.aabb.astype(np.float64),
        "coords": ov.coords.astype(np.int32),
        "dual_vertices": ov.dual_vertices.astype(np.float32),
        "intersected": (ov.intersected.astype(np.uint8) * _BITS).sum(axis=1).astype(np.uint8),
    }
    if ov.split_weight is not None:
        data["split_weight"] = ov.split_weight.astype(np.float32)
    if ov.attributes is not None:
        data["attributes"] = np.round(np.clip(ov.attributes, 0, 1) * 255).astype(np.uint8)
        data["attr_layout"] = np.array(_LAYOUT_STR)
    if frame is not None:
        data["source_center"] = np.asarray(frame.normalization.center, dtype=np.float64)
        data["source_scale"] = np.array(frame.normalization.scale, dtype=np.float64)
        data["source_up"] = np.array(frame.up_axis)
        _check_frame(data, f"{path}")
    save = np.savez_compressed if compress else np.savez
    # Built in memory first: zipfile writing straight into the file turns a full disk into
    # "seek of closed file" at close; a plain write fails with the real OSError (ENOSPC).
    buffer = io.BytesIO()
    save(buffer, **data)
    write_atomic(path, buffer.getvalue())


def _check_frame(z, where: str) -> SourceFrame | None:
    """The :class:`SourceFrame` in the ``source_*`` entries of ``z`` (a mapping), None if there are none.

    Raises:
        OVoxelError: some but not all keys present, or a value of the wrong shape, type or range.
    """
    present = [k for k in FRAME_KEYS if k in z]
    if not present:
        return None
    if len(present) != len(FRAME_KEYS):
        missing = sorted(set(FRAME_KEYS) - set(present))
        raise OVoxelError(f"{where}: source frame is incomplete, missing {missing} "
                          f"(give all of {FRAME_KEYS} or none)")
    center, scale, up = (np.asarray(z[k]) for k in FRAME_KEYS)
    if center.shape != (3,) or center.dtype.kind not in "fiu" or not np.isfinite(center).all():
        raise OVoxelError(f"{where}: source_center must be 3 finite numbers, got {center.tolist()!r}")
    if scale.shape != () or scale.dtype.kind not in "fiu" or not (np.isfinite(scale) and scale > 0):
        raise OVoxelError(f"{where}: source_scale must be one finite number > 0, got {scale.tolist()!r}")
    if up.shape != () or up.dtype.kind != "U" or str(up) not in ("y", "z"):
        raise OVoxelError(f"{where}: source_up must be 'y' or 'z', got {up.tolist()!r}")
    return SourceFrame(Normalization(center=center.astype(np.float64), scale=float(scale)), str(up))


def load_ovoxel(path: str | os.PathLike) -> OVoxel:
    """Read and validate an O-Voxel file written by :func:`save_ovoxel`.

    Raises:
        OVoxelError: not an O-Voxel file, unknown version, missing keys or inconsistent arrays.
    """
    return read_ovoxel_file(path)[0]


def read_ovoxel_file(path: str | os.PathLike) -> tuple[OVoxel, SourceFrame | None]:
    """Read and validate an O-Voxel file: the O-Voxel and its source frame (None if the file has none).

    Raises:
        OVoxelError: not an O-Voxel file, unknown version, missing keys, inconsistent arrays or
            a malformed source frame.
    """
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, NotImplementedError, zipfile.BadZipFile) as exc:
        raise OVoxelError(f"{path}: not a readable .npz file ({exc or type(exc).__name__})") from None
    try:
        with z:
            if any(info.flag_bits & 0x1 for info in z.zip.infolist()):  # zipfile would ask for a password
                raise OVoxelError(f"{path}: the .npz file has encrypted entries")
            return _read_npz(z, path)
    except OVoxelError:
        raise
    except (OSError, ValueError, TypeError, EOFError, KeyError, NotImplementedError, zipfile.BadZipFile,
            zlib.error) as exc:  # NotImplementedError: zip entries flagged encrypted or compressed oddly
        raise OVoxelError(f"{path}: the .npz file is damaged ({type(exc).__name__}: {exc})") from None


def _read_npz(z, path: str | os.PathLike) -> tuple[OVoxel, SourceFrame | None]:
    keys = set(z.files)
    if "format" not in keys or str(z["format"]) != FORMAT_NAME:
        raise OVoxelError(f"{path}: not an O-Voxel file (missing format={FORMAT_NAME!r})")
    version = int(z["version"]) if "version" in keys else -1
    if version != FORMAT_VERSION:
        raise OVoxelError(f"{path}: unsupported O-Voxel version {version} (expected {FORMAT_VERSION})")
    missing = {"resolution", "aabb", "coords", "dual_vertices", "intersected"} - keys
    if missing:
        raise OVoxelError(f"{path}: missing arrays {sorted(missing)}")
    attrs = None
    if "attributes" in keys:
        if "attr_layout" not in keys or str(z["attr_layout"]) != _LAYOUT_STR:
            raise OVoxelError(f"{path}: unknown attribute layout")
        a = z["attributes"]
        if a.dtype != np.uint8:
            raise OVoxelError(f"{path}: attributes must be uint8, got {a.dtype}")
        attrs = a.astype(np.float32) / 255.0
    flags = z["intersected"]
    if flags.ndim != 1:
        raise OVoxelError(f"{path}: intersected must be a [N] bit mask, got shape {flags.shape}")
    coords = z["coords"]
    if not np.issubdtype(coords.dtype, np.integer):
        raise OVoxelError(f"{path}: coords must be integers, got {coords.dtype}")
    resolution = int(z["resolution"])
    if coords.size and (coords.min() < 0 or coords.max() >= resolution):
        # checked before the int32 cast, which would wrap values such as 2**32 + 5 into range
        raise OVoxelError(f"{path}: coords must lie in [0, {resolution}), found "
                          f"[{int(coords.min())}, {int(coords.max())}]")
    ov = OVoxel(
        resolution=resolution,
        coords=coords.astype(np.int32),
        dual_vertices=z["dual_vertices"].astype(np.float32),
        intersected=(flags[:, None] & _BITS) != 0,
        split_weight=z["split_weight"].astype(np.float32) if "split_weight" in keys else None,
        attributes=attrs,
        aabb=z["aabb"],
    )
    frame = _check_frame(z, f"{path}")
    dv = ov.dual_vertices
    if dv.size and (dv.min() < 0 or dv.max() > 1):
        raise OVoxelError(f"{path}: dual_vertices must lie in [0, 1]")
    return ov.validate(), frame
