"""``python -m backend ovoxel encode|decode``: mesh files <-> O-Voxel .npz files.

Results go to stdout (counts and timings); log messages go to stderr.

Encoding brings the mesh into the pipeline frame (Z-up; glTF/GLB/OBJ files are Y-up and
are rotated, see :mod:`backend.geometry.axes`), normalises it into the unit cube and stores
that source frame in the .npz; decoding undoes both, so ``encode`` then ``decode`` gives
the mesh back in the input's position, size and axes (as a Y-up GLB). Files without a
stored frame decode in the unit cube, as before.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="ovoxel_command", required=True, metavar="ACTION")
    enc = sub.add_parser("encode", help="mesh (GLB/glTF/OBJ/PLY) -> O-Voxel .npz")
    enc.add_argument("mesh", help="input mesh file")
    enc.add_argument("out", help="output .npz")
    enc.add_argument("--resolution", type=int, default=256, help="grid size, 64..2048 (default 256)")
    enc.add_argument("--no-attributes", action="store_true", help="skip the PBR attribute volume")
    enc.add_argument("--no-normalize", action="store_true",
                     help="the mesh is already in [-0.5, 0.5]^3 (default: normalise it into the cube)")
    enc.add_argument("--up-axis", choices=("auto", "y", "z"), default="auto",
                     help="up axis of the input's positions (default auto: y for GLB/glTF/OBJ, z for PLY)")
    dec = sub.add_parser("decode", help="O-Voxel .npz -> mesh .glb")
    dec.add_argument("npz", help="input .npz")
    dec.add_argument("out", help="output .glb (binary glTF, the only output format)")
    dec.add_argument("--device", default="cpu", help="torch device for contouring (default cpu)")
    dec.add_argument("--fill-holes", type=float, default=None, metavar="PERIMETER",
                     help="fill boundary loops shorter than this (unit-cube units, e.g. 0.03)")
    dec.add_argument("--orient", action="store_true", help="make face orientation consistent")


def _check_output(path: str, name: str, suffix: str | None = None) -> None:
    """Raise :class:`OVoxelError` (before any work) if ``path`` cannot be an output file: its folder
    does not exist, or it does not end in ``suffix``. ``name`` is the argument, for the message."""
    from .types import OVoxelError

    p = Path(path)
    if suffix is not None and p.suffix.lower() != suffix:
        raise OVoxelError(f"{name} {path!r}: the output is written as {suffix} only; "
                          f"give a file name ending in {suffix}")
    folder = p.parent
    if not folder.is_dir():
        raise OVoxelError(f"{name} {path!r}: the folder {str(folder)!r} does not exist")


def _write(path: str, write: Callable[[], object]) -> None:
    """Run ``write``; an :class:`OSError` becomes an :class:`OVoxelError` naming ``path``."""
    from .types import OVoxelError

    try:
        write()
    except OSError as exc:
        raise OVoxelError(f"cannot write {path!r}: {exc.strerror or exc}") from exc


def _report(steps: list[tuple[str, str, float]]) -> None:
    """One stdout line per step: its name, what it did and how many seconds it took."""
    sys.stdout.write("".join(f"{name:<9} {what}   {seconds:8.3f} s\n" for name, what, seconds in steps))


def _encode(args: argparse.Namespace) -> int:
    import numpy as np

    from backend.geometry.axes import file_up_axis, y_up_to_z_up
    from backend.meshio import read_mesh

    from .encode import mesh_to_ovoxel
    from .io import save_ovoxel
    from .normalize import Normalization, SourceFrame, normalize_to_unit_cube
    from .types import check_resolution

    check_resolution(args.resolution)
    _check_output(args.out, "OUT")
    t0 = time.perf_counter()
    mesh = read_mesh(args.mesh)
    up = file_up_axis(args.mesh) if args.up_axis == "auto" else args.up_axis
    if up == "y":
        mesh = y_up_to_z_up(mesh)
    if args.no_normalize:
        norm = Normalization(center=np.zeros(3), scale=1.0)
    else:
        mesh, norm = normalize_to_unit_cube(mesh)
    t1 = time.perf_counter()
    ov = mesh_to_ovoxel(mesh, args.resolution, attributes=not args.no_attributes)
    t2 = time.perf_counter()
    _write(args.out, lambda: save_ovoxel(args.out, ov, frame=SourceFrame(norm, up)))
    t3 = time.perf_counter()
    crossed = int(ov.intersected.sum())
    _report([("read", f"{mesh.num_vertices} vertices, {mesh.num_faces} triangles", t1 - t0),
             ("encode", f"{ov.num_voxels} voxels at {ov.resolution}^3 ({crossed} crossed edges)", t2 - t1),
             ("write", args.out, t3 - t2)])
    return 0


def _decode(args: argparse.Namespace) -> int:
    import numpy as np

    from backend.geometry import PbrMaterial, TriangleMesh
    from backend.meshio import write_glb, z_up_to_y_up

    from .decode import ovoxel_to_mesh
    from .io import read_ovoxel_file
    from .lookup import sample_attributes

    # GLB only: the project has no OBJ/PLY writer, and GLB carries the vertex colours and material.
    _check_output(args.out, "OUT", ".glb")
    t0 = time.perf_counter()
    ov, frame = read_ovoxel_file(args.npz)
    t1 = time.perf_counter()
    mesh = ovoxel_to_mesh(ov, device=args.device, orient=args.orient, fill_holes_perimeter=args.fill_holes)
    t2 = time.perf_counter()
    colors = None
    if ov.attributes is not None:
        a = sample_attributes(ov.coords, ov.attributes, ov.resolution, mesh.vertices,
                              origin=ov.aabb[0], voxel_size=ov.voxel_size)
        colors = np.concatenate([a[:, 0:3] ** 2.2, a[:, 5:6]], 1)  # sRGB-ish -> linear vertex colours
    out = TriangleMesh(mesh.vertices, mesh.faces, vertex_colors=colors,
                       materials=[PbrMaterial(name="ovoxel", double_sided=not args.orient)])
    if frame is not None:
        out = frame.restore(out)  # unit cube -> the source's position and size (Z-up)
    # glTF is Y-up: a Y-up source gets its own axes back
    _write(args.out, lambda: write_glb(args.out, z_up_to_y_up(out)))
    t3 = time.perf_counter()
    _report([("read", f"{ov.num_voxels} voxels at {ov.resolution}^3", t1 - t0),
             ("decode", f"{mesh.num_vertices} vertices, {mesh.num_faces} triangles", t2 - t1),
             ("write", args.out, t3 - t2)])
    return 0


def run(args: argparse.Namespace) -> int:
    from backend.geometry import MeshError

    from .types import OVoxelError

    try:
        return _encode(args) if args.ovoxel_command == "encode" else _decode(args)
    except (MeshError, OVoxelError) as exc:
        log.error("%s", exc)
        return 2
