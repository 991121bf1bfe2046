"""Render the demo input image ``scripts/assets/demo.png`` with Blender (bpy module).

A red-glazed Suzanne on a transparent background, so the generator can skip
background removal. Re-run to regenerate: ``.venv/bin/python scripts/make_demo_image.py``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import bpy

OUT = Path(__file__).resolve().parent / "assets" / "demo.png"


def main() -> int:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    bpy.ops.mesh.primitive_monkey_add(size=1.6)
    monkey = bpy.context.active_object
    monkey.rotation_euler = (0.0, 0.0, math.radians(-25))
    bpy.ops.object.modifier_add(type="SUBSURF")
    monkey.modifiers[-1].levels = 2
    bpy.ops.object.shade_smooth()

    mat = bpy.data.materials.new("glaze")
    mat.use_nodes = True
    bsdf = mat.node_tree.nodes["Principled BSDF"]
    bsdf.inputs["Base Color"].default_value = (0.7, 0.12, 0.06, 1.0)
    bsdf.inputs["Roughness"].default_value = 0.35
    monkey.data.materials.append(mat)

    cam_data = bpy.data.cameras.new("cam")
    cam_data.lens = 70
    cam = bpy.data.objects.new("cam", cam_data)
    scene.collection.objects.link(cam)
    cam.location = (1.6, -5.2, 1.3)
    direction = -cam.location.normalized()
    cam.rotation_euler = direction.to_track_quat("-Z", "Y").to_euler()
    scene.camera = cam

    for loc, energy in (((4, -4, 5), 900.0), ((-5, -2, 2), 300.0)):
        light_data = bpy.data.lights.new("light", type="POINT")
        light_data.energy = energy
        light = bpy.data.objects.new("light", light_data)
        light.location = loc
        scene.collection.objects.link(light)

    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 32
    scene.render.film_transparent = True
    scene.render.resolution_x = scene.render.resolution_y = 512
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    scene.render.filepath = str(OUT)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    bpy.ops.render.render(write_still=True)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
