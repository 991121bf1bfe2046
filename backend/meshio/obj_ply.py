"""Wavefront OBJ (+ MTL: Kd, d, map_Kd) and PLY (ascii / binary) readers."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from backend.geometry import MeshError, PbrMaterial, TriangleMesh

from .gltf_read import referenced_file
from .images import decode_image

log = logging.getLogger(__name__)


def _read_mtl(path: Path, folder: Path) -> dict[str, PbrMaterial]:
    """The materials of the MTL file ``path``; its textures must lie inside ``folder`` (the OBJ's)."""
    mats: dict[str, dict] = {}
    cur = None
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        log.warning("material library %s not found; using default materials", path)
        return {}
    for line in lines:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "newmtl":
            cur = mats.setdefault(" ".join(parts[1:]), {})
        elif cur is not None and parts[0] in ("Kd", "d", "Pm", "Pr", "map_Kd"):
            cur[parts[0]] = parts[1:]
    out = {}
    for name, m in mats.items():
        kd = [float(x) for x in m.get("Kd", (1, 1, 1))[:3]]
        alpha = float(m.get("d", (1,))[0])
        tex = None
        if "map_Kd" in m:
            tex_path = referenced_file(folder, str(path.parent / m["map_Kd"][-1]), path,
                                       "map_Kd texture", shown=m["map_Kd"][-1])
            try:
                tex = decode_image(tex_path.read_bytes(), str(tex_path))
            except OSError:
                log.warning("texture %s not found; ignoring it", tex_path)
        out[name] = PbrMaterial(
            name=name, base_color_factor=(*kd, alpha),
            metallic_factor=float(m.get("Pm", (0,))[0]), roughness_factor=float(m.get("Pr", (1,))[0]),
            base_color_texture=tex, alpha_mode="BLEND" if alpha < 1 else "OPAQUE",
        )
    return out


def read_obj(path: str | Path) -> TriangleMesh:
    """Read an OBJ file; polygons are fan-triangulated, OBJ's bottom-up V becomes glTF's 1 - v."""
    path = Path(path)
    v, vt, vn, corners, face_mat = [], [], [], [], []
    mtl: dict[str, PbrMaterial] = {}
    names: list[str] = []
    cur = -1
    for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        tag = parts[0]
        try:
            if tag == "v":
                v.append([float(x) for x in parts[1:7]])
            elif tag == "vt":
                vt.append([float(x) for x in parts[1:3]])
            elif tag == "vn":
                vn.append([float(x) for x in parts[1:4]])
            elif tag == "f":
                idx = []
                for p in parts[1:]:
                    f = (p.split("/") + ["", ""])[:3]
                    idx.append([int(x) if x else 0 for x in f])
                for k in range(1, len(idx) - 1):
                    corners += [idx[0], idx[k], idx[k + 1]]
                    face_mat.append(cur)
            elif tag == "mtllib":
                mtllib = " ".join(parts[1:])
                mtl.update(_read_mtl(referenced_file(path.parent, mtllib, path, "mtllib"), path.parent))
            elif tag == "usemtl":
                name = " ".join(parts[1:])
                if name not in names:
                    names.append(name)
                cur = names.index(name)
        except MeshError:
            raise
        except ValueError as exc:
            raise MeshError(f"{path}:{lineno}: cannot parse {line.strip()!r}") from exc
    if not corners:
        raise MeshError(f"{path}: the OBJ file has no faces")
    c = np.asarray(corners, dtype=np.int64)  # [3F, 3] (v, vt, vn), 1-based, negative = relative
    for col, count in ((0, len(v)), (1, len(vt)), (2, len(vn))):
        neg = c[:, col] < 0
        c[neg, col] += count + 1
    uniq, inverse = np.unique(c, axis=0, return_inverse=True)
    va = np.asarray(v, dtype=np.float64)
    if (uniq[:, 0] < 1).any() or (uniq[:, 0] > len(va)).any():
        raise MeshError(f"{path}: a face references a vertex that does not exist")
    for col, what, count in ((1, "texture coordinate (vt)", len(vt)), (2, "normal (vn)", len(vn))):
        if (uniq[:, col] < 0).any() or (uniq[:, col] > count).any():
            raise MeshError(f"{path}: a face references a {what} that does not exist "
                            f"(the file has {count})")
    mesh = TriangleMesh(va[uniq[:, 0] - 1, :3], inverse.reshape(-1, 3).astype(np.int64))
    if va.shape[1] >= 6:
        mesh.vertex_colors = np.concatenate([va[uniq[:, 0] - 1, 3:6], np.ones((len(uniq), 1))], 1).clip(0, 1)
    if vt and (uniq[:, 1] > 0).any():
        if any(len(t) < 2 for t in vt):
            raise MeshError(f"{path}: a texture coordinate (vt) has fewer than two numbers")
        t = np.asarray(vt)[np.clip(uniq[:, 1] - 1, 0, None)]
        mesh.uvs = np.stack([t[:, 0], 1.0 - t[:, 1]], 1)
    if vn and (uniq[:, 2] > 0).all() and all(len(n) == 3 for n in vn):
        mesh.normals = np.asarray(vn, dtype=np.float64)[uniq[:, 2] - 1]
    fm = np.asarray(face_mat, dtype=np.int64)
    if names or (fm >= 0).any():
        mats = [mtl.get(n, PbrMaterial(name=n)) for n in names]
        if (fm < 0).any():
            mats.append(PbrMaterial(name="default"))
            fm = np.where(fm < 0, len(mats) - 1, fm)
        mesh.materials, mesh.face_materials = mats, fm
    return mesh.validate()


_PLY_TYPES = {"char": "i1", "uchar": "u1", "int8": "i1", "uint8": "u1", "short": "i2", "ushort": "u2",
              "int16": "i2", "uint16": "u2", "int": "i4", "uint": "u4", "int32": "i4", "uint32": "u4",
              "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}


def _ply_type(path: Path, name: str) -> str:
    if name not in _PLY_TYPES:
        raise MeshError(f"{path}: unknown PLY property type {name!r} "
                        f"(known: {', '.join(sorted(_PLY_TYPES))})")
    return _PLY_TYPES[name]


def _ply_header(path: Path, data: bytes) -> tuple[str, list[tuple[str, int, list[list[str]]]], bytes]:
    """(format, [(element, count, properties)], body) of a PLY file."""
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise MeshError(f"{path}: not a PLY file")
    header = data[:end].decode("ascii", errors="replace").splitlines()
    newline = data.find(b"\n", end)
    body = data[newline + 1:] if newline >= 0 else b""
    fmt, elements = "ascii", []
    for line in header:
        p = line.split()
        if not p:
            continue
        if p[0] == "format" and len(p) > 1:
            fmt = p[1]
        elif p[0] == "element":
            if len(p) < 3 or not p[2].isdigit():
                raise MeshError(f"{path}: malformed PLY header line {line.strip()!r}")
            elements.append((p[1], int(p[2]), []))
        elif p[0] == "property" and elements:
            if len(p) < 3 or (p[1] == "list" and len(p) < 5):
                raise MeshError(f"{path}: malformed PLY header line {line.strip()!r}")
            elements[-1][2].append(p[1:])
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise MeshError(f"{path}: unknown PLY format {fmt!r}")
    return fmt, elements, body


def _ply_faces(path: Path, props: list[list[str]], count: int, body: bytes, tokens: list[bytes] | None,
               pos: int, bo: str) -> tuple[np.ndarray, int]:
    ct, it = _ply_type(path, props[0][1]), _ply_type(path, props[0][2])
    # every face takes at least its count field: more faces than that cannot be there
    available = len(tokens) - pos if tokens is not None else (len(body) - pos) // np.dtype(ct).itemsize
    if count > available:
        raise ValueError(f"the header announces {count} faces, the data holds at most {available}")
    polys = []
    for _ in range(count):
        if tokens is not None:
            n = int(tokens[pos])
            if n < 0:
                raise ValueError(f"a face with {n} corners")
            polys.append([int(x) for x in tokens[pos + 1: pos + 1 + n]])
            pos += 1 + n
        else:
            n = int(np.frombuffer(body, bo + ct, 1, pos)[0])
            pos += np.dtype(ct).itemsize
            polys.append(np.frombuffer(body, bo + it, n, pos).tolist())
            pos += n * np.dtype(it).itemsize
    faces = np.asarray([[p[0], p[k], p[k + 1]] for p in polys for k in range(1, len(p) - 1)],
                       dtype=np.int64).reshape(-1, 3)
    return faces, pos


def read_ply(path: str | Path) -> TriangleMesh:
    """Read a PLY file (ascii, binary little/big endian): positions, normals, colours, uvs, faces."""
    path = Path(path)
    fmt, elements, body = _ply_header(path, path.read_bytes())
    bo = {"binary_little_endian": "<", "binary_big_endian": ">"}.get(fmt, "=")
    tokens = body.split() if fmt == "ascii" else None
    pos, verts, faces = 0, None, None
    try:
        for name, count, props in elements:
            if any(pr[0] == "list" for pr in props):
                if name != "face" or len(props) != 1:
                    raise MeshError(f"{path}: unsupported list element {name!r}")
                faces, pos = _ply_faces(path, props, count, body, tokens, pos, bo)
                continue
            dt = np.dtype([(pr[1], bo + _ply_type(path, pr[0])) for pr in props])
            if tokens is not None:
                if len(tokens) - pos < count * len(props):
                    raise ValueError("fewer values than the header announces")
                vals = np.asarray(tokens[pos: pos + count * len(props)], dtype=np.float64)
                arr = np.zeros(count, dtype=dt)
                for k, pr in enumerate(props):
                    arr[pr[1]] = vals[k::len(props)]
                pos += count * len(props)
            else:
                if len(body) - pos < count * dt.itemsize:
                    raise ValueError("fewer bytes than the header announces")
                arr = np.frombuffer(body, dt, count, pos)
                pos += count * dt.itemsize
            if name == "vertex":
                verts = arr
    except MeshError:
        raise
    except (ValueError, IndexError, OverflowError) as exc:
        raise MeshError(f"{path}: the PLY data is truncated or malformed ({exc})") from None
    if verts is None or faces is None or len(faces) == 0:
        raise MeshError(f"{path}: the PLY file has no vertices or no faces")
    names = verts.dtype.names or ()
    if not {"x", "y", "z"} <= set(names):
        raise MeshError(f"{path}: the PLY vertices have no x, y and z properties (found {list(names)})")
    col = lambda keys: np.stack([verts[k].astype(np.float64) for k in keys], 1)  # noqa: E731
    mesh = TriangleMesh(col(("x", "y", "z")), faces)
    if {"nx", "ny", "nz"} <= set(names):
        mesh.normals = col(("nx", "ny", "nz"))
    for uk in (("u", "v"), ("s", "t"), ("texture_u", "texture_v")):
        if set(uk) <= set(names):
            t = col(uk)
            mesh.uvs = np.stack([t[:, 0], 1.0 - t[:, 1]], 1)
    if {"red", "green", "blue"} <= set(names):
        scale = 255.0 if verts["red"].dtype.kind in "iu" else 1.0
        rgb = col(("red", "green", "blue")) / scale
        a = col(("alpha",)) / scale if "alpha" in names else np.ones((len(rgb), 1))
        mesh.vertex_colors = np.concatenate([rgb, a], 1).clip(0, 1)
    return mesh.validate()
