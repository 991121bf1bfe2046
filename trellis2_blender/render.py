"""A small Cycles CPU preview render of one object, in a throw-away scene."""

from __future__ import annotations

import math
from pathlib import Path

import bpy
from mathutils import Vector


def render_preview(obj, path: Path | str, *, size: int = 256, samples: int = 8) -> Path:
    """Render ``obj`` from the front-right, slightly above, to a PNG at ``path``.

    The object is linked into a temporary scene with its own camera, light and
    world; the scene and everything made for it are removed afterwards.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scene = bpy.data.scenes.new("trellis2_preview")
    made = []
    try:
        scene.collection.objects.link(obj)
        scene.render.engine = "CYCLES"
        scene.cycles.device = "CPU"
        scene.cycles.samples = samples
        scene.cycles.use_denoising = False
        scene.cycles.max_bounces = 4
        scene.render.resolution_x = scene.render.resolution_y = size
        scene.render.resolution_percentage = 100
        scene.render.film_transparent = False
        scene.render.image_settings.file_format = "PNG"
        scene.render.filepath = str(path)
        scene.view_settings.view_transform = "Standard"

        world = bpy.data.worlds.new("trellis2_preview")
        made.append((bpy.data.worlds, world))
        world.use_nodes = True
        background = world.node_tree.nodes.get("Background")
        if background is not None:
            background.inputs["Color"].default_value = (0.6, 0.62, 0.65, 1.0)
            background.inputs["Strength"].default_value = 1.0
        scene.world = world

        corners = [obj.matrix_world @ Vector(corner) for corner in obj.bound_box]
        center = sum(corners, Vector()) / 8
        radius = max((c - center).length for c in corners) or 1.0

        cam_data = bpy.data.cameras.new("trellis2_preview")
        made.append((bpy.data.cameras, cam_data))
        cam_data.lens = 50
        cam = bpy.data.objects.new("trellis2_preview_camera", cam_data)
        made.append((bpy.data.objects, cam))
        scene.collection.objects.link(cam)
        direction = Vector((1.0, -1.4, 0.8)).normalized()
        fov = 2 * math.atan(cam_data.sensor_width / (2 * cam_data.lens))
        distance = radius / math.sin(fov / 2) * 1.05
        cam.location = center + direction * distance
        cam.rotation_euler = (-direction).to_track_quat("-Z", "Y").to_euler()
        scene.camera = cam

        sun_data = bpy.data.lights.new("trellis2_preview", type="SUN")
        made.append((bpy.data.lights, sun_data))
        sun_data.energy = 3.0
        sun = bpy.data.objects.new("trellis2_preview_sun", sun_data)
        made.append((bpy.data.objects, sun))
        sun.rotation_euler = (math.radians(40), math.radians(10), math.radians(30))
        scene.collection.objects.link(sun)

        bpy.ops.render.render(write_still=True, scene=scene.name)
    finally:
        for collection, block in reversed(made):
            collection.remove(block)
        bpy.data.scenes.remove(scene)
    if not path.is_file():
        raise RuntimeError(f"render did not write {path}")
    return path
