"""The TRELLIS.2 sidebar panel and the preferences' draw code.

``draw`` only reads properties and cached state (``WindowManager.trellis2_status``,
the image thumbnails of a preview collection); it never talks to the backend.
"""

from __future__ import annotations

from pathlib import Path

import bpy

from . import operators, preferences

_previews: dict[str, object] = {}  # "files" -> bpy.utils.previews collection

BACKEND_ICONS = {"STOPPED": "RADIOBUT_OFF", "STARTING": "SORTTIME", "LOADING": "IMPORT",
                 "READY": "CHECKMARK", "BUSY": "PLAY", "ERROR": "ERROR"}


def _file_preview_icon(path: str) -> int:
    """Thumbnail icon of an image file (loaded lazily by Blender's preview system)."""
    pcoll = _previews.get("files")
    if pcoll is None or not path:
        return 0
    full = bpy.path.abspath(path)
    if full not in pcoll:
        if not Path(full).is_file():
            return 0
        pcoll.load(full, full, "IMAGE")
    return pcoll[full].icon_id


def draw_backend_status(layout, context) -> None:
    status = context.window_manager.trellis2_status
    row = layout.row(align=True)
    state = status.backend_state
    text = {"LOADING": f"Loading {status.backend_percent:.0f}%"}.get(state, state.title())
    row.label(text=f"Backend: {text}", icon=BACKEND_ICONS.get(state, "QUESTION"))
    if state in ("STOPPED", "ERROR"):
        row.operator("trellis2.backend_start", text="", icon="PLAY")
    else:
        row.operator("trellis2.backend_stop", text="", icon="SNAP_FACE")
    if state == "LOADING" and status.backend_percent > 0:
        layout.progress(factor=status.backend_percent / 100, text=status.backend_message[:80])
    elif state == "ERROR" and status.backend_message:
        box = layout.box()
        for line in _wrap(status.backend_message, 48):
            box.label(text=line)


def _wrap(text: str, width: int) -> list[str]:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return [*lines, line][:6] if line or lines else []


def draw_preferences(prefs, context, layout) -> None:
    col = layout.column()
    col.use_property_split = True
    col.prop(prefs, "backend_python")
    python = preferences.resolved_python(prefs)
    col.label(text=f"Using: {python}" if python else "No backend Python found yet",
              icon="CHECKMARK" if python else "INFO")
    col.prop(prefs, "model_kind")
    if prefs.model_kind == "LOCAL":
        col.prop(prefs, "model_source")
    col.prop(prefs, "use_own_cache")
    col.prop(prefs, "device")
    col.prop(prefs, "low_vram")
    col.prop(prefs, "background_removal")
    if prefs.background_removal == "RMBG":
        col.prop(prefs, "background_model")
        col.prop(prefs, "allow_model_code")
    col.prop(prefs, "output_dir")
    row = layout.row()
    row.operator("trellis2.setup_backend", icon="CONSOLE")
    row.operator("trellis2.download_weights", icon="IMPORT")
    row.operator("trellis2.open_log", icon="TEXT")
    status = context.window_manager.trellis2_status
    if status.task_running:
        layout.progress(factor=status.fraction, text=status.task_running)
    if not bpy.app.online_access:
        layout.label(text="Online access is off: setup and downloads are disabled", icon="INFO")
    draw_backend_status(layout, context)


class VIEW3D_PT_trellis2(bpy.types.Panel):
    bl_label = "TRELLIS.2"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "TRELLIS.2"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.trellis2
        status = context.window_manager.trellis2_status
        draw_backend_status(layout, context)

        layout.prop(settings, "image_source", expand=True)
        if settings.image_source == "FILE":
            layout.prop(settings, "image_path", text="")
            icon = _file_preview_icon(settings.image_path)
        else:
            layout.template_ID(settings, "image", open="image.open")
            icon = layout.icon(settings.image) if settings.image is not None else 0
        if icon:
            layout.template_icon(icon_value=icon, scale=6.0)

        col = layout.column()
        col.use_property_split = True
        col.prop(settings, "pipeline_type")
        row = col.row(align=True)
        row.prop(settings, "seed")
        row.operator("trellis2.randomize_seed", text="", icon="FILE_REFRESH")
        col.prop(settings, "randomize_seed")
        col.prop(settings, "face_target")
        col.prop(settings, "texture_size")

        header, body = layout.panel("trellis2_advanced", default_closed=True)
        header.label(text="Advanced")
        if body is not None:
            for key, label in (("sparse_structure", "Structure"), ("shape", "Shape"), ("texture", "Texture")):
                stage = getattr(settings, key)
                box = body.box()
                box.prop(stage, "override", text=f"{label} Sampler")
                sub = box.column(align=True)
                sub.active = stage.override
                sub.prop(stage, "steps")
                sub.prop(stage, "guidance")
            body.prop(settings, "retexture_resolution", text="Retexture Resolution")

        running = operators.active_job() is not None
        col = layout.column(align=True)
        col.scale_y = 1.4
        col.operator("trellis2.generate", icon="MESH_MONKEY")
        col.operator("trellis2.retexture", icon="TEXTURE")
        if running:
            text = (f"{status.stage} {status.step}/{status.total}" if status.stage
                    else "Waiting for the backend")
            layout.progress(factor=status.fraction, type="BAR", text=text)
            layout.operator("trellis2.cancel", icon="CANCEL")
        elif status.job_state == "FAILED" and status.message:
            box = layout.box()
            box.label(text="Last job failed:", icon="ERROR")
            for line in _wrap(status.message, 48):
                box.label(text=line)
        elif status.job_state == "CANCELLED":
            layout.label(text="Last job was cancelled", icon="CANCEL")


classes = (VIEW3D_PT_trellis2,)


def register() -> None:
    import bpy.utils.previews

    _previews["files"] = bpy.utils.previews.new()
    for cls in classes:
        bpy.utils.register_class(cls)


def unregister() -> None:
    import bpy.utils.previews

    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
    pcoll = _previews.pop("files", None)
    if pcoll is not None:
        bpy.utils.previews.remove(pcoll)
