"""The ``bpy`` side of a job: inputs out of the scene, results into it.

- :func:`snapshot_image` turns the panel's image choice into a file the backend can read.
- :func:`export_mesh` writes a selected mesh for retexturing (a Y-up PLY, see :mod:`.meshfile`).
- :func:`import_result` builds a mesh object plus its material from a direct result folder.
- :func:`apply_retexture` gives an existing object a new material from a retexture result.

Everything a failed import created is removed again, so an error never leaves a
partial object behind. Runs on Blender's main thread only. numpy is imported where it is
used, so the add-on registers on a Blender without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import bpy
from mathutils import Vector

from .core import placement, results
from .core.results import DirectResult, ResultError

SETTINGS_KEY = "trellis2"  # custom property holding a job's settings on the object
QA_KEY = "trellis2_qa"  # custom property holding the asset's QA report (result.json's "qa")
VARIATIONS_KEY = "trellis2_variations"  # custom property marking a collection of one job's samples


class InputError(ValueError):
    """The scene does not provide what a job needs; the message says what to do."""


# --- inputs --------------------------------------------------------------------------------

def snapshot_image(settings, job_dir: Path) -> tuple[Path, str]:
    """The input image as a file, and a display name for what is made from it.

    A file on disk is used where it is; a Blender image (maybe packed, generated or
    edited) is saved as a PNG copy in ``job_dir``.
    """
    if settings.image_source == "BLENDER":
        image = settings.image
        if image is None:
            raise InputError("Choose an image")
        missing = image.source == "FILE" and not image.packed_file
        if missing and not Path(bpy.path.abspath(image.filepath)).is_file():
            raise InputError(f"Image '{image.name}' has no pixels (its file is missing)")
        job_dir.mkdir(parents=True, exist_ok=True)
        out = job_dir / "input.png"
        copy = image.copy()
        try:
            copy.filepath_raw = str(out)
            copy.file_format = "PNG"
            copy.save()
        except RuntimeError as exc:
            raise InputError(f"Cannot save image '{image.name}': {exc}") from None
        finally:
            bpy.data.images.remove(copy)
        return out, Path(image.name).stem or image.name
    if not settings.image_path:
        raise InputError("Choose an image file")
    path = Path(bpy.path.abspath(settings.image_path))
    if not path.is_file():
        raise InputError(f"Image file not found: {path}")
    return path, path.stem


def view_paths(settings) -> list[Path]:
    """The extra pictures of the object (``settings.views``), checked; empty entries are skipped."""
    paths = []
    for number, view in enumerate(settings.views, start=2):
        if not view.path:
            continue
        path = Path(bpy.path.abspath(view.path))
        if not path.is_file():
            raise InputError(f"View {number}: picture not found: {path}")
        paths.append(path)
    return paths


def export_mesh(obj, path: Path) -> dict:
    """Write ``obj``'s mesh (object space, triangulated, its render UV map) as the backend's PLY.

    Vertices are split along UV seams so each gets one UV; the object itself is not changed.
    """
    import numpy as np

    mesh = obj.data
    uv_layer = next((layer for layer in mesh.uv_layers if layer.active_render), None) or mesh.uv_layers.active
    if uv_layer is None:
        raise InputError(f"'{obj.name}' has no UV map: unwrap it first")
    mesh.calc_loop_triangles()
    n_tris = len(mesh.loop_triangles)
    if n_tris == 0:
        raise InputError(f"'{obj.name}' has no faces")
    tri_loops = np.empty(n_tris * 3, dtype=np.int32)
    mesh.loop_triangles.foreach_get("loops", tri_loops)
    loop_vertex = np.empty(len(mesh.loops), dtype=np.int32)
    mesh.loops.foreach_get("vertex_index", loop_vertex)
    loop_uv = np.empty(len(mesh.loops) * 2, dtype=np.float32)
    uv_layer.data.foreach_get("uv", loop_uv)
    loop_uv = loop_uv.reshape(-1, 2)
    co = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
    mesh.vertices.foreach_get("co", co)
    co = co.reshape(-1, 3)
    vnormal = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
    mesh.vertices.foreach_get("normal", vnormal)
    vnormal = vnormal.reshape(-1, 3)

    source, uvs, corner_to_new = results.split_corners(loop_vertex[tri_loops], loop_uv[tri_loops])
    path.parent.mkdir(parents=True, exist_ok=True)
    from .core import meshfile

    meshfile.write_ply(path, co[source], corner_to_new.reshape(-1, 3), uvs, vnormal[source])
    return {"uv_map": uv_layer.name, "vertices": int(len(source)), "triangles": n_tris}


# --- results -------------------------------------------------------------------------------

class _Created:
    """Datablocks made during one import, removed again if the import fails."""

    def __init__(self) -> None:
        self.items: list[tuple[object, object]] = []

    def add(self, collection, block):
        self.items.append((collection, block))
        return block

    def remove_all(self) -> None:
        for collection, block in reversed(self.items):
            try:
                collection.remove(block)
            except (ReferenceError, RuntimeError):
                pass
        self.items.clear()


def import_result(context, result_path: Path | str, *, name: str | None = None,
                  settings: Mapping | None = None, location=None, collection=None, select: bool = True):
    """Create the mesh object of a direct result at ``location`` (default: the 3D cursor) in
    ``collection`` (default: the active one).

    Returns the new object (selected and active when ``select``). Raises :class:`ResultError`
    (and leaves nothing behind) when the result cannot be imported.
    """
    result = results.read_result(result_path)
    if result.mesh is None:
        raise ResultError(f"{result.path}: the result has no mesh")
    arrays = results.load_mesh(result.mesh)
    name = name or result.name
    created = _Created()
    try:
        mesh = created.add(bpy.data.meshes, _mesh_from_arrays(name, arrays))
        material = build_material(name, result, created)
        mesh.materials.append(material)
        obj = created.add(bpy.data.objects, bpy.data.objects.new(name, mesh))
        obj.location = context.scene.cursor.location if location is None else location
        if settings is not None:
            obj[SETTINGS_KEY] = dict(settings)
        qa = result.extra.get("qa")
        if isinstance(qa, dict):
            obj[QA_KEY] = qa_property(qa)
        (collection or context.collection).objects.link(obj)
    except Exception:
        created.remove_all()
        raise
    if select:
        select_only(context, [obj])
    return obj


def select_only(context, objects) -> None:
    """Select ``objects`` (the first active) and nothing else."""
    context.view_layer.update()  # the view layer may still list objects removed a moment ago
    for other in context.view_layer.objects:
        if other is not None:
            other.select_set(False)
    for obj in objects:
        obj.select_set(True)
    context.view_layer.objects.active = objects[0]


def qa_property(qa: Mapping) -> dict:
    """A QA report as an ID property (lists of text, which ID properties cannot hold, are joined)."""
    return {key: "; ".join(map(str, value)) if isinstance(value, list) else value
            for key, value in qa.items() if isinstance(value, bool | int | float | str | list)}


def import_results(context, result_paths, *, name: str, settings: Mapping | None = None,
                   scale: float = 1.0, on_ground: bool = False) -> list:
    """Import every asset of one job beside what is in the scene (see :mod:`.placement`).

    One asset becomes one object in the active collection. Several (variations) become one
    object each, named ``<name>_<k>``, in a new collection ``<name> variations`` (marked with
    :data:`VARIATIONS_KEY`) laid out in a row; every object records its own seed and sample
    index with the job's settings. Every object gets ``scale``; ``on_ground`` puts its lowest
    point at the 3D cursor's height. All of them end up selected, the first one active. If any
    asset fails, nothing of the job stays in the scene.
    """
    paths = [Path(p) for p in result_paths]
    if not paths:
        raise ResultError("the backend reported no Blender result")
    collection = None
    objects = []
    try:
        if len(paths) > 1:
            collection = bpy.data.collections.new(f"{name} variations")
            collection[VARIATIONS_KEY] = True
            context.collection.children.link(collection)
        for k, path in enumerate(paths):
            record = dict(settings or {})
            doc = results.read_result(path).extra
            record.update({key: doc[key] for key in ("seed", "sample") if isinstance(doc.get(key), int)})
            obj_name = name if len(paths) == 1 else f"{name}_{k}"
            obj = import_result(context, path, name=obj_name, settings=record, collection=collection,
                                select=False)
            obj.scale = (scale, scale, scale)
            objects.append(obj)
    except Exception:
        for obj in objects:
            remove_object(obj)
        if collection is not None:
            bpy.data.collections.remove(collection)
        raise
    place_beside_scene(context, objects, on_ground=on_ground)
    select_only(context, objects)
    return objects


SOLID_TYPES = ("MESH", "CURVE", "SURFACE", "META", "FONT")  # objects a new one must not sit inside


def _box(points) -> placement.Box:
    points = [tuple(p) for p in points]
    low = tuple(min(p[i] for p in points) for i in range(3))
    return low, tuple(max(p[i] for p in points) for i in range(3))


def place_beside_scene(context, objects, on_ground: bool = False) -> None:
    """Put ``objects`` in a row at the 3D cursor, moved along +X clear of the scene's other objects;
    ``on_ground`` lifts or lowers each so its lowest point is at the cursor's height."""
    new = set(objects)
    occupied = [_box(o.matrix_world @ Vector(c) for c in o.bound_box) for o in context.view_layer.objects
                if o is not None and o not in new and o.type in SOLID_TYPES and o.visible_get()]
    context.view_layer.update()  # matrix_world of the new objects, with their scale
    # Sizes as placed: scaled and rotated, without the location.
    sizes = [_box(o.matrix_world.to_3x3() @ Vector(c) for c in o.bound_box) for o in objects]
    lift = [-lo[2] if on_ground else 0.0 for lo, _ in sizes]
    sizes = [((lo[0], lo[1], lo[2] + dz), (hi[0], hi[1], hi[2] + dz)) for (lo, hi), dz in zip(sizes, lift)]
    cursor = tuple(context.scene.cursor.location)
    for obj, (x, y, z), dz in zip(objects, placement.row_locations(cursor, sizes, occupied), lift):
        obj.location = (x, y, z + dz)


def remove_object(obj) -> None:
    """Delete ``obj`` and the mesh, materials and images only it used."""
    mesh = obj.data if obj.type == "MESH" else None
    bpy.data.objects.remove(obj)
    if mesh is None or mesh.users:
        return
    materials = [m for m in mesh.materials if m is not None]
    bpy.data.meshes.remove(mesh)
    for material in materials:
        if material.users:
            continue
        images = [n.image for n in material.node_tree.nodes if n.type == "TEX_IMAGE" and n.image] \
            if material.node_tree else []
        bpy.data.materials.remove(material)
        for image in images:
            if not image.users:
                bpy.data.images.remove(image)


def variation_set(obj):
    """The collection of variations ``obj`` belongs to, or None."""
    if obj is None:
        return None
    return next((c for c in obj.users_collection if c.get(VARIATIONS_KEY)), None)


def keep_variation(obj) -> int:
    """Keep ``obj`` and delete the other variations of its set; returns how many were deleted."""
    collection = variation_set(obj)
    if collection is None:
        return 0
    others = [o for o in collection.objects if o != obj]
    for other in others:
        remove_object(other)
    if SETTINGS_KEY in obj:
        obj[SETTINGS_KEY]["kept_of"] = len(others) + 1
    return len(others)


def apply_retexture(obj, result_path: Path | str, *, settings: Mapping | None = None,
                    replace_materials: bool = False):
    """Put the material of a retexture result on ``obj`` (transform, topology and UVs untouched).

    The object's material slots stay and the new material becomes one more slot that every face
    uses (switching a face back is a slot change); ``replace_materials`` removes the old slots.
    """
    import numpy as np

    result = results.read_result(result_path)
    if "base_color" not in result.textures:
        raise ResultError(f"{result.path}: the result has no base color texture")
    created = _Created()
    try:
        material = build_material(f"{obj.name}_retexture", result, created)
    except Exception:
        created.remove_all()
        raise
    mesh = obj.data
    if replace_materials or not obj.material_slots:
        mesh.materials.clear()
    mesh.materials.append(material)
    index = len(obj.material_slots) - 1
    mesh.polygons.foreach_set("material_index", np.full(len(mesh.polygons), index, dtype=np.int32))
    mesh.update()
    if settings is not None:
        obj[SETTINGS_KEY] = dict(settings)
    qa = result.extra.get("qa")
    if isinstance(qa, dict):
        obj[QA_KEY] = qa_property(qa)
    return material


def _mesh_from_arrays(name: str, arrays: results.MeshArrays):
    import numpy as np

    positions, faces = arrays.positions, arrays.faces
    mesh = bpy.data.meshes.new(name)
    try:
        mesh.vertices.add(len(positions))
        mesh.vertices.foreach_set("co", positions.ravel())
        mesh.loops.add(faces.size)
        mesh.loops.foreach_set("vertex_index", faces.ravel())
        mesh.polygons.add(len(faces))
        mesh.polygons.foreach_set("loop_start", np.arange(0, faces.size, 3, dtype=np.int32))
        mesh.update(calc_edges=True)
        if arrays.uvs is not None:
            layer = mesh.uv_layers.new(name="UVMap")
            layer.data.foreach_set("uv", arrays.uvs[faces.ravel()].ravel())
        mesh.validate(clean_customdata=False)  # drops degenerate faces; vertices are kept
        if arrays.normals is not None and len(mesh.vertices) == len(arrays.normals):
            mesh.polygons.foreach_set("use_smooth", np.ones(len(mesh.polygons), dtype=bool))
            mesh.normals_split_custom_set_from_vertices(arrays.normals)
    except Exception:
        bpy.data.meshes.remove(mesh)
        raise
    return mesh


# --- materials -----------------------------------------------------------------------------

def _load_image(path: Path, name: str, colorspace: str, created: _Created):
    try:
        image = bpy.data.images.load(str(path), check_existing=False)
    except RuntimeError as exc:
        raise ResultError(f"cannot load texture {path}: {exc}") from None
    created.add(bpy.data.images, image)
    image.name = name
    image.colorspace_settings.name = colorspace
    image.pack()
    return image


def has_transparency(image) -> bool:
    """True when the image has an alpha channel that is not fully opaque anywhere."""
    import numpy as np

    if image.channels < 4 or image.depth not in (32, 64, 128):
        return False
    pixels = np.empty(len(image.pixels), dtype=np.float32)
    image.pixels.foreach_get(pixels)
    return bool(pixels[3::4].min() < 1.0 - 0.5 / 255.0)


def _set_blended(material) -> None:
    """Alpha blending with transparent shadows, on every Blender from 4.2 on."""
    if hasattr(material, "surface_render_method"):
        material.surface_render_method = "BLENDED"
    if hasattr(material, "use_transparent_shadow"):
        material.use_transparent_shadow = True
    material.show_transparent_back = False


def build_material(name: str, result: DirectResult, created: _Created):
    """A Principled BSDF material from a result's textures (see the module docstring of results)."""
    material = created.add(bpy.data.materials, bpy.data.materials.new(name))
    material.use_nodes = True
    nodes, links = material.node_tree.nodes, material.node_tree.links
    nodes.clear()
    output = nodes.new("ShaderNodeOutputMaterial")
    output.name = output.label = "Material Output"
    output.location = (400, 0)
    bsdf = nodes.new("ShaderNodeBsdfPrincipled")
    bsdf.name = "Principled BSDF"
    bsdf.location = (0, 0)
    links.new(bsdf.outputs["BSDF"], output.inputs["Surface"])
    material.use_backface_culling = False  # generated surfaces may face either way

    def image_node(key: str, colorspace: str, label: str, y: float):
        image = _load_image(result.textures[key], f"{name}_{key}", colorspace, created)
        node = nodes.new("ShaderNodeTexImage")
        node.name = node.label = label
        node.image = image
        node.location = (-700, y)
        return node

    textures = result.textures
    if "base_color" in textures:
        base = image_node("base_color", "sRGB", "Base Color", 300)
        links.new(base.outputs["Color"], bsdf.inputs["Base Color"])
        if "alpha" in textures:
            alpha = image_node("alpha", "Non-Color", "Alpha", -600)
            if _min_value(alpha.image) < 1.0 - 0.5 / 255.0:
                links.new(alpha.outputs["Color"], bsdf.inputs["Alpha"])
                _set_blended(material)
        elif has_transparency(base.image):
            links.new(base.outputs["Alpha"], bsdf.inputs["Alpha"])
            _set_blended(material)
    if "metallic_roughness" in textures:
        packed = image_node("metallic_roughness", "Non-Color", "Metallic Roughness", 0)
        split = nodes.new("ShaderNodeSeparateColor")
        split.name = split.label = "Separate Metallic Roughness"
        split.mode = "RGB"
        split.location = (-300, 0)
        links.new(packed.outputs["Color"], split.inputs["Color"])
        links.new(split.outputs["Green"], bsdf.inputs["Roughness"])
        links.new(split.outputs["Blue"], bsdf.inputs["Metallic"])
    else:
        for key, socket, y in (("metallic", "Metallic", 0), ("roughness", "Roughness", -300)):
            if key in textures:
                node = image_node(key, "Non-Color", socket, y)
                links.new(node.outputs["Color"], bsdf.inputs[socket])
    if "normal" in textures:
        normal_image = image_node("normal", "Non-Color", "Normal", -900)
        normal_map = nodes.new("ShaderNodeNormalMap")
        normal_map.name = normal_map.label = "Normal Map"
        normal_map.location = (-300, -900)
        links.new(normal_image.outputs["Color"], normal_map.inputs["Color"])
        links.new(normal_map.outputs["Normal"], bsdf.inputs["Normal"])
    return material


def _min_value(image) -> float:
    import numpy as np

    pixels = np.empty(len(image.pixels), dtype=np.float32)
    image.pixels.foreach_get(pixels)
    return float(pixels.min()) if pixels.size else 1.0


def material_links(material) -> set[tuple[str, str, str, str]]:
    """Every link of a material as (from node, from socket, to node, to socket): for checks."""
    return {(link.from_node.name, link.from_socket.name, link.to_node.name, link.to_socket.name)
            for link in material.node_tree.links}
