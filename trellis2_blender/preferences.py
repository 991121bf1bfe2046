"""Add-on preferences: where the backend runs, which weights it uses, where results go."""

from __future__ import annotations

from pathlib import Path

import bpy
from bpy.props import BoolProperty, EnumProperty, StringProperty

from . import paths

DEFAULT_MODEL = "microsoft/TRELLIS.2-4B"
DEVICE_ITEMS = (
    ("auto", "Automatic", "The first CUDA GPU, else the CPU"),
    ("cuda", "CUDA", "An NVIDIA GPU"),
    ("cpu", "CPU", "Very slow; for testing"),
)


class TRELLIS2_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    backend_python: StringProperty(
        name="Backend Python", subtype="FILE_PATH",
        description="Python of the backend environment; empty finds the one set up by this add-on")
    model_source: StringProperty(
        name="Model", default=DEFAULT_MODEL,
        description="Hugging Face repository id, or a local folder holding the weights")
    device: EnumProperty(name="Device", items=DEVICE_ITEMS, default="auto")
    low_vram: BoolProperty(
        name="Low VRAM", description="Keep only the running stage on the GPU and use fewer tokens (slower)")
    output_dir: StringProperty(
        name="Output Folder", subtype="DIR_PATH",
        description="Where job folders go; empty uses the add-on's user folder")

    def draw(self, context):
        from . import ui

        ui.draw_preferences(self, context, self.layout)


def get(context=None) -> TRELLIS2_AP_preferences | None:
    context = context or bpy.context
    addon = context.preferences.addons.get(__package__)
    return addon.preferences if addon else None


def managed_env_dir() -> Path:
    return paths.user_dir("backend-env")


def resolved_python(prefs) -> Path | None:
    return paths.find_backend_python(prefs.backend_python if prefs else "", managed_env_dir())


def jobs_dir(prefs) -> Path:
    if prefs is not None and prefs.output_dir:
        path = Path(bpy.path.abspath(prefs.output_dir))
        path.mkdir(parents=True, exist_ok=True)
        return path
    return paths.user_dir("jobs")


classes = (TRELLIS2_AP_preferences,)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
