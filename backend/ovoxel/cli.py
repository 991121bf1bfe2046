"""``python -m backend ovoxel encode|decode``: mesh files <-> O-Voxel .npz files.

Results go to stdout (counts and timings); log messages go to stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

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
    dec = sub.add_parser("decode", help="O-Voxel .npz -> mesh .glb")
    dec.add_argument("npz", help="input .npz")
    dec.add_argument("out", help="output .glb")
    dec.add_argument("--device", default="cpu", help="torch device for contouring (default cpu)")
    dec.add_argument("--fill-holes", type=float, default=None, metavar="PERIMETER",
                     help="fill boundary loops shorter than this (unit-cube units, e.g. 0.03)")
    dec.add_argument("--orient", action="store_true", help="make face orientation consistent")


def _encode(args: argparse.Namespace) -> int:
    from backend.meshio import read_mesh

    from .encode import mesh_to_ovoxel
    from .io import save_ovoxel
    from .normalize import normalize_to_unit_cube
    from .types import check_resolution

    check_resolution(args.resolution)
    t0 = time.perf_counter()
    mesh = read_mesh(args.mesh)
    if not args.no_normalize:
        mesh, _ = normalize_to_unit_cube(mesh)
    t1 = time.perf_counter()
    ov = mesh_to_ovoxel(mesh, args.resolution, attributes=not args.no_attributes)
    t2 = time.perf_counter()
    save_ovoxel(args.out, ov)
    t3 = time.perf_counter()
    sys.stdout.write(
        f"read      {mesh.num_vertices} vertices, {mesh.num_faces} triangles   {t1 - t0:8.3f} s\n"
        f"encode    {ov.num_voxels} voxels at {ov.resolution}^3 "
        f"({int(ov.intersected.sum())} crossed edges)   {t2 - t1:8.3f} s\n"
        f"write     {args.out}   {t3 - t2:8.3f} s\n"
    )
    return 0


def _decode(args: argparse.Namespace) -> int:
    import numpy as np

    from backend.geometry import PbrMaterial, TriangleMesh
    from backend.meshio import write_glb, z_up_to_y_up

    from .decode import ovoxel_to_mesh
    from .io import load_ovoxel
    from .lookup import sample_attributes

    t0 = time.perf_counter()
    ov = load_ovoxel(args.npz)
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
    write_glb(args.out, z_up_to_y_up(out))
    t3 = time.perf_counter()
    sys.stdout.write(
        f"read      {ov.num_voxels} voxels at {ov.resolution}^3   {t1 - t0:8.3f} s\n"
        f"decode    {mesh.num_vertices} vertices, {mesh.num_faces} triangles   {t2 - t1:8.3f} s\n"
        f"write     {args.out}   {t3 - t2:8.3f} s\n"
    )
    return 0


def run(args: argparse.Namespace) -> int:
    from backend.geometry import MeshError

    from .types import OVoxelError

    try:
        return _encode(args) if args.ovoxel_command == "encode" else _decode(args)
    except (MeshError, OVoxelError) as exc:
        log.error("%s", exc)
        return 2
