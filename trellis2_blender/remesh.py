"""Remesh a generated object with Blender's own remeshers and bake its look onto the new mesh.

The new object is a copy: the generated one stays (hidden) as the bake source. Steps: copy,
remesh (voxel remesh or QuadriFlow quads), Smart UV Project, then Cycles bakes from the source
onto the copy (selected to active): base color, metallic and roughness through an emission
pass (so metal keeps its colour), and a tangent-space normal map of the source's surface.
Anything made by a failed run is removed again. Main thread only.
"""

from __future__ import annotations

import logging

import bpy

log = logging.getLogger(__name__)

REMESH_MODES = (
    ("VOXEL", "Voxel", "Blender's voxel remesh: evenly sized quads, closes holes, fast"),
    ("QUADRIFLOW", "QuadriFlow", "Blender's QuadriFlow: quads that follow the shape, to a face count; "
     "slower"),
)
# Channels baked through an emission pass: (BSDF input, image colour space).
EMISSION_CHANNELS = (("Base Color", "sRGB"), ("Metallic", "Non-Color"), ("Roughness", "Non-Color"))


class RemeshError(RuntimeError):
    """The remesh or the bake failed; the message says which step."""


def _override(context, obj, selected):
    return context.temp_override(object=obj, active_object=obj, selected_objects=selected,
                                 selected_editable_objects=selected)


def _remeshed_copy(context, src, mode: str, voxel_size: float, quad_faces: int):
    import bmesh

    mesh = src.data.copy()
    mesh.materials.clear()
    # Generated meshes are split along UV seams; QuadriFlow needs one connected surface.
    bm = bmesh.new()
    bm.from_mesh(mesh)
    bmesh.ops.remove_doubles(bm, verts=bm.verts, dist=1e-6)
    bm.to_mesh(mesh)
    bm.free()
    new = bpy.data.objects.new(f"{src.name}_remeshed", mesh)
    new.matrix_world = src.matrix_world.copy()
    for collection in src.users_collection:
        collection.objects.link(new)
    if mode == "VOXEL":
        modifier = new.modifiers.new("Remesh", "REMESH")
        modifier.mode = "VOXEL"
        modifier.voxel_size = voxel_size
        evaluated = new.evaluated_get(context.evaluated_depsgraph_get())
        remeshed = bpy.data.meshes.new_from_object(evaluated)
        new.modifiers.remove(modifier)
        new.data = remeshed
        bpy.data.meshes.remove(mesh)
    else:
        before = len(mesh.polygons)
        with _override(context, new, [new]):
            result = bpy.ops.object.quadriflow_remesh(target_faces=quad_faces, mode="FACES")
        quads = sum(1 for p in new.data.polygons if p.loop_total == 4)
        if "FINISHED" not in result or (len(new.data.polygons) == before and quads < before):
            raise RemeshError("QuadriFlow could not remesh this surface (it needs a closed, manifold "
                              "mesh): try the Voxel remesh")
    if not new.data.polygons:
        raise RemeshError("the remesh left no faces: use a smaller voxel size")
    return new


def _smart_uvs(context, obj) -> None:
    obj.data.uv_layers.new(name="UVMap")
    context.view_layer.objects.active = obj
    with _override(context, obj, [obj]):
        bpy.ops.object.mode_set(mode="EDIT")
        try:
            bpy.ops.mesh.select_all(action="SELECT")
            bpy.ops.uv.smart_project(island_margin=0.01)
        finally:
            bpy.ops.object.mode_set(mode="OBJECT")


def _target_material(name: str, size: int):
    material = bpy.data.materials.new(name)
    material.use_nodes = True
    nodes, links = material.node_tree.nodes, material.node_tree.links
    bsdf = nodes.get("Principled BSDF")
    images = {}
    for i, (socket, colorspace) in enumerate((*EMISSION_CHANNELS, ("Normal", "Non-Color"))):
        image = bpy.data.images.new(f"{name}_{socket.lower().replace(' ', '_')}", size, size, alpha=False)
        image.colorspace_settings.name = colorspace
        node = nodes.new("ShaderNodeTexImage")
        node.name = node.label = socket
        node.image = image
        node.location = (-700, 300 - 300 * i)
        images[socket] = (image, node)
        if socket == "Normal":
            normal_map = nodes.new("ShaderNodeNormalMap")
            normal_map.name = normal_map.label = "Normal Map"
            normal_map.location = (-300, -600)
            links.new(node.outputs["Color"], normal_map.inputs["Color"])
            links.new(normal_map.outputs["Normal"], bsdf.inputs["Normal"])
        else:
            links.new(node.outputs["Color"], bsdf.inputs[socket])
    return material, images


def _bake(context, src, new, bake_type: str, node, extrusion: float) -> None:
    new.active_material.node_tree.nodes.active = node
    with _override(context, new, [src, new]):
        bpy.ops.object.bake(type=bake_type, use_selected_to_active=True, cage_extrusion=extrusion, margin=4)


def _bake_channel(context, src, new, socket: str, node, extrusion: float) -> None:
    """Bake what feeds ``socket`` of the source's Principled BSDF, routed through an emission shader."""
    changes = []
    for slot in src.material_slots:
        material = slot.material
        tree = material.node_tree if material is not None and material.use_nodes else None
        bsdf = tree.nodes.get("Principled BSDF") if tree is not None else None
        output = tree.nodes.get("Material Output") if tree is not None else None
        if bsdf is None or output is None:
            continue
        emission = tree.nodes.new("ShaderNodeEmission")
        source = bsdf.inputs[socket]
        if source.is_linked:
            tree.links.new(source.links[0].from_socket, emission.inputs["Color"])
        else:
            value = source.default_value
            emission.inputs["Color"].default_value = (*value[:3], 1.0) if hasattr(value, "__len__") else (
                value, value, value, 1.0)
        surface = output.inputs["Surface"]
        previous = surface.links[0].from_socket if surface.is_linked else None
        tree.links.new(emission.outputs["Emission"], surface)
        changes.append((tree, emission, surface, previous))
    try:
        _bake(context, src, new, "EMIT", node, extrusion)
    finally:
        for tree, emission, surface, previous in changes:
            tree.nodes.remove(emission)
            if previous is not None:
                tree.links.new(previous, surface)


def remesh_and_bake(context, src, *, mode: str = "VOXEL", voxel_size: float = 0.02, quad_faces: int = 5000,
                    bake_size: int = 1024, samples: int = 4):
    """A remeshed, unwrapped copy of ``src`` with its look baked on; ``src`` is hidden. Returns the copy."""
    scene = context.scene
    saved = (scene.render.engine, scene.cycles.samples, scene.cycles.device)
    made_images, new, material = [], None, None
    dims = src.dimensions
    extrusion = max(voxel_size * 2, 0.01 * max(dims.x, dims.y, dims.z, 1e-6))
    try:
        new = _remeshed_copy(context, src, mode, voxel_size, quad_faces)
        _smart_uvs(context, new)
        material, images = _target_material(f"{new.name}_baked", bake_size)
        made_images = [image for image, _ in images.values()]
        new.data.materials.append(material)
        scene.render.engine = "CYCLES"
        scene.cycles.samples = samples
        scene.cycles.device = "CPU"
        for socket, _ in EMISSION_CHANNELS:
            _bake_channel(context, src, new, socket, images[socket][1], extrusion)
        _bake(context, src, new, "NORMAL", images["Normal"][1], extrusion)
        for image in made_images:
            image.pack()
    except Exception as exc:
        if new is not None:
            mesh = new.data
            bpy.data.objects.remove(new)
            if mesh.users == 0:
                bpy.data.meshes.remove(mesh)
        if material is not None:
            bpy.data.materials.remove(material)
        for image in made_images:
            bpy.data.images.remove(image)
        if isinstance(exc, RemeshError):
            raise
        raise RemeshError(f"remesh and bake of '{src.name}' failed: {exc}") from exc
    finally:
        scene.render.engine, scene.cycles.samples, scene.cycles.device = saved
    from .scene_io import select_only

    src.hide_set(True)
    src.hide_render = True
    select_only(context, [new])
    return new
