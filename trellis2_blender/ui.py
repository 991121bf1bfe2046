"""The TRELLIS.2 sidebar panel.

``draw`` only reads properties and cached state (``WindowManager.trellis2_status``,
the image thumbnails of a preview collection); it never talks to the backend.
"""

from __future__ import annotations

import time
from pathlib import Path

import bpy

from . import operators, preferences, scene_io
from .widgets import draw_backend_status, draw_message

_previews: dict[str, object] = {}  # "files" -> bpy.utils.previews collection


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


def _step(layout, context, done: bool, text: str) -> None:
    """One step of the guide, wrapped to the sidebar's width (a plain label is cut mid-line)."""
    draw_message(layout, context, text, icon="CHECKMARK" if done else "RADIOBUT_OFF")


def guide_steps(context) -> tuple[bool, bool, bool]:
    """(backend found, models loaded, a first result made): what the first-run guide checks."""
    prefs = preferences.get(context)
    state = context.window_manager.trellis2_status.backend_state
    has_backend = preferences.resolved_python(prefs) is not None
    loaded = state in ("READY", "BUSY")
    made = any(e.state == "ok" for e in operators.history_entries())
    return has_backend, loaded, made


def draw_guide(layout, context) -> None:
    """Three steps to a first result, each with the one button it needs."""
    prefs = preferences.get(context)
    if prefs is None or not prefs.show_guide:
        return
    has_backend, loaded, made = guide_steps(context)
    if has_backend and loaded and made:
        return
    box = layout.box()
    header = box.row()
    header.label(text="Getting Started", icon="INFO")
    header.prop(prefs, "show_guide", text="", icon="X", emboss=False)
    online = bpy.app.online_access
    system = context.preferences.system
    if not online and not (has_backend and loaded) and hasattr(system, "use_online_access"):
        # Only while a step still may need a download: once the model is loaded it is noise.
        draw_message(box, context, "Blender's \"Allow Online Access\" is off, so nothing can be downloaded. "
                     "Turn it on to set up the backend and fetch the weights:")
        box.prop(system, "use_online_access")
    _step(box, context, has_backend, "1. Backend: " + ("found" if has_backend else "not set up yet"))
    if not has_backend:
        box.operator("trellis2.setup_backend", icon="CONSOLE")
        draw_message(box, context, "Or set Backend Python in the add-on's preferences to an environment that "
                     "has the backend installed.")
        show = box.operator("preferences.addon_show", text="Open Preferences", icon="PREFERENCES")
        show.module = __package__
    _step(box, context, loaded, "2. Model: " + ("loaded" if loaded else "not loaded yet"))
    if has_backend and not loaded:
        if online:
            box.operator("trellis2.download_weights", icon="IMPORT")
        else:
            draw_message(box, context, "Without online access the backend uses the weights already on this "
                         "computer, or the small bundled mini model.")
        box.operator("trellis2.backend_start", text="Start Backend", icon="PLAY")
    _step(box, context, made, "3. First result: choose a picture below, press Generate")


def draw_views(layout, settings) -> None:
    """More pictures of the same object: a closed sub-panel with one file field per view."""
    header, body = layout.panel("trellis2_views", default_closed=not settings.views)
    count = 1 + sum(1 for v in settings.views if v.path)
    header.label(text=f"More Views ({count} pictures)" if count > 1 else "More Views")
    if body is None:
        return
    for index, view in enumerate(settings.views):
        row = body.row(align=True)
        row.prop(view, "path", text=f"View {index + 2}")
        row.operator("trellis2.view_remove", text="", icon="X").index = index
    body.operator("trellis2.view_add", icon="ADD")
    if settings.views:
        col = body.column()
        col.use_property_split = True
        col.prop(settings, "multiview_mode")


def draw_mesh_options(layout, settings) -> None:
    header, body = layout.panel("trellis2_mesh", default_closed=True)
    header.label(text="Game-Ready Mesh")
    if body is None:
        return
    col = body.column()
    col.use_property_split = True
    col.prop(settings, "remove_floaters")
    col.prop(settings, "remove_inner_shells")
    col.prop(settings, "fill_holes")
    col.prop(settings, "unwrap")
    col.prop(settings, "import_scale")
    col.prop(settings, "place_on_ground")
    col.separator()
    col.prop(settings, "remesh_mode")
    col.prop(settings, "remesh_voxel_size" if settings.remesh_mode == "VOXEL" else "remesh_faces")
    col.prop(settings, "bake_size")
    body.operator("trellis2.remesh", icon="MOD_REMESH")


QA_ROWS = (  # key, label, a value that is fine
    ("watertight", "Watertight", True), ("non_manifold_edges", "Non-manifold edges", 0),
    ("boundary_loops", "Holes (boundary loops)", 0), ("shells", "Shells", 1),
    ("inner_shells", "Inner shells", 0), ("floaters", "Floaters", 0),
)


def draw_qa(layout, context, obj) -> None:
    """The active object's QA report (from its result.json, kept on the object)."""
    qa = obj.get(scene_io.QA_KEY) if obj is not None else None
    if qa is None:
        return
    header, body = layout.panel("trellis2_qa", default_closed=False)
    header.label(text=f"Game-Ready Check: {obj.name}")
    if body is None:
        return
    col = body.column(align=True)
    for key, label, fine in QA_ROWS:
        if key not in qa:
            continue
        value = qa[key]
        ok = bool(value) == fine if isinstance(fine, bool) else value <= fine
        shown = ("yes" if value else "no") if isinstance(fine, bool) else str(value)
        col.label(text=f"{label}: {shown}", icon="CHECKMARK" if ok else "ERROR")
    col.label(text=f"Triangles: {qa.get('triangles', 0):,}")
    if "uv_overlap" in qa:
        col.label(text=f"UV overlap: {100 * qa['uv_overlap']:.1f}%",
                  icon="CHECKMARK" if qa["uv_overlap"] < 0.01 else "ERROR")
        col.label(text=f"Texel density: {qa['texel_density']:.0f} px per unit")
    if qa.get("cleanup"):
        draw_message(col, context, f"Clean-up: {qa['cleanup']}")


def draw_history(layout, context) -> None:
    header, body = layout.panel("trellis2_history", default_closed=True)
    header.label(text="History")
    header.operator("trellis2.history_refresh", text="", icon="FILE_REFRESH", emboss=False)
    if body is None:
        return
    entries = operators.history_entries()
    if not entries:
        body.label(text="No earlier jobs")
    for entry in entries:
        box = body.box()
        row = box.row()
        icon = _file_preview_icon(str(entry.picture)) if entry.picture is not None else 0
        stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.modified))
        settings = entry.settings
        if icon:
            row.label(text=f"{entry.name}  {stamp}", icon_value=icon)
        else:
            row.label(text=f"{entry.name}  {stamp}", icon="FILE_3D")
        sub = box.row(align=True)
        sub.label(text=f"{entry.kind} · {entry.state} · seed {settings.get('seed', '?')} · "
                       f"{settings.get('pipeline_type', '')}")
        if entry.results and entry.kind == "generate":
            sub.operator("trellis2.history_import", text="", icon="IMPORT").folder = str(entry.folder)
        sub.operator("trellis2.history_delete", text="", icon="TRASH").folder = str(entry.folder)


class VIEW3D_PT_trellis2(bpy.types.Panel):
    bl_label = "TRELLIS.2"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "TRELLIS.2"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.trellis2
        status = context.window_manager.trellis2_status
        running = operators.active_job() is not None
        if running:
            # First, so Stop stays in view while the guide and the settings fill the sidebar.
            layout.progress(factor=status.fraction, type="BAR",
                            text=status.progress_text or "Waiting for the backend")
            layout.operator("trellis2.cancel", icon="CANCEL")
        draw_guide(layout, context)
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
        draw_views(layout, settings)

        col = layout.column()
        col.use_property_split = True
        col.prop(settings, "pipeline_type")
        row = col.row(align=True)
        row.prop(settings, "seed")
        row.operator("trellis2.randomize_seed", text="", icon="FILE_REFRESH")
        col.prop(settings, "randomize_seed")
        col.prop(settings, "num_samples")
        col.prop(settings, "face_target")
        col.prop(settings, "texture_size")
        draw_mesh_options(layout, settings)

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
                sub.prop(stage, "rescale")
            body.prop(settings, "retexture_resolution", text="Retexture Resolution")

        col = layout.column(align=True)
        col.scale_y = 1.4
        col.operator("trellis2.generate", icon="MESH_MONKEY")
        col.operator("trellis2.retexture", icon="TEXTURE")
        layout.prop(settings, "replace_materials")
        if scene_io.variation_set(context.active_object) is not None:
            layout.operator("trellis2.keep_variation", icon="CHECKMARK")
        if not running and status.job_state == "FAILED" and status.message:
            box = layout.box()
            box.label(text="Last job failed:", icon="ERROR")
            draw_message(box, context, status.message)
        elif status.job_state == "CANCELLED":
            layout.label(text="Last job was cancelled", icon="CANCEL")
        draw_qa(layout, context, context.active_object)
        draw_history(layout, context)


classes = (VIEW3D_PT_trellis2,)


_register_classes, _unregister_classes = bpy.utils.register_classes_factory(classes)


def register() -> None:
    import bpy.utils.previews

    _previews["files"] = bpy.utils.previews.new()
    _register_classes()


def unregister() -> None:
    import bpy.utils.previews

    _unregister_classes()
    pcoll = _previews.pop("files", None)
    if pcoll is not None:
        bpy.utils.previews.remove(pcoll)
