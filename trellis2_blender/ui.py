"""The TRELLIS.2 sidebar panel and the preferences' draw code."""

from __future__ import annotations

import bpy


def draw_preferences(prefs, context, layout) -> None:
    col = layout.column()
    col.prop(prefs, "backend_python")
    col.prop(prefs, "model_source")
    col.prop(prefs, "device")
    col.prop(prefs, "low_vram")
    col.prop(prefs, "output_dir")


class VIEW3D_PT_trellis2(bpy.types.Panel):
    bl_label = "TRELLIS.2"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "TRELLIS.2"

    def draw(self, context):
        settings = context.scene.trellis2
        self.layout.prop(settings, "pipeline_type")


classes = (VIEW3D_PT_trellis2,)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
