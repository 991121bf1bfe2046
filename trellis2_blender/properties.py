"""Property groups: user settings at ``Scene.trellis2``, transient job status at ``WindowManager``."""

from __future__ import annotations

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

from . import protocol

PIPELINE_ITEMS = (
    ("512", "512", "Fastest, coarse: 512³ geometry"),
    ("1024", "1024", "1024³ geometry in one pass"),
    ("1024_cascade", "1024 Cascade", "512 then 1024: the default balance of detail and time"),
    ("1536_cascade", "1536 Cascade", "512 then 1536: most detail, most memory and time"),
)
TEXTURE_SIZE_ITEMS = tuple((s, s, f"{s}×{s} pixel textures") for s in ("512", "1024", "2048", "4096"))
RETEXTURE_RESOLUTION_ITEMS = (
    ("512", "512", "Coarse texture field"),
    ("1024", "1024", "Default"),
    ("1536", "1536", "Finest texture field"),
)
_MULTIVIEW_TEXT = {
    "stochastic": ("Stochastic",
                   "Each sampler step looks at one picture in turn: costs what one picture costs"),
    "multidiffusion": ("Multidiffusion",
                       "Each step averages what every picture suggests: about (views + 1) / 2 times slower"),
}
MULTIVIEW_ITEMS = tuple((mode, *_MULTIVIEW_TEXT[mode]) for mode in protocol.MULTIVIEW_MODES)
MAX_VARIATIONS = 8  # the panel's limit: a row of more objects is hard to compare
IMAGE_SOURCE_ITEMS = (
    ("FILE", "File", "An image file on disk"),
    ("BLENDER", "Blender Image", "An image already loaded in this file"),
)


class TRELLIS2_PG_stage(bpy.types.PropertyGroup):
    """Sampler overrides for one stage (used only when ``override`` is on)."""

    override: BoolProperty(name="Override", description="Use these values instead of the model's defaults")
    steps: IntProperty(name="Steps", default=12, min=1, soft_max=50)
    guidance: FloatProperty(name="Guidance", default=7.5, min=0.0, soft_max=15.0, precision=2)


class TRELLIS2_PG_view(bpy.types.PropertyGroup):
    """One more picture of the same object (side, back...)."""

    path: StringProperty(name="Picture", subtype="FILE_PATH",
                         description="Another picture of the same object, e.g. from the side or the back")


class TRELLIS2_PG_settings(bpy.types.PropertyGroup):
    image_source: EnumProperty(name="Image Source", items=IMAGE_SOURCE_ITEMS, default="FILE")
    image_path: StringProperty(name="Image", subtype="FILE_PATH",
                               description="Picture of one object (RGBA skips background removal)")
    image: PointerProperty(name="Image", type=bpy.types.Image)
    views: CollectionProperty(type=TRELLIS2_PG_view, name="More Views")
    multiview_mode: EnumProperty(name="Combine Views", items=MULTIVIEW_ITEMS,
                                 default=protocol.DEFAULT_MULTIVIEW_MODE)
    num_samples: IntProperty(name="Variations", default=1, min=1, max=MAX_VARIATIONS,
                             description="How many versions to make from one seed; all are added side "
                                         "by side so you can keep the best")
    pipeline_type: EnumProperty(name="Pipeline", items=PIPELINE_ITEMS, default="1024_cascade")
    seed: IntProperty(name="Seed", default=42, min=0)
    randomize_seed: BoolProperty(name="Randomize", description="Pick a new seed for every generation")
    show_advanced: BoolProperty(name="Advanced")
    sparse_structure: PointerProperty(type=TRELLIS2_PG_stage)
    shape: PointerProperty(type=TRELLIS2_PG_stage)
    texture: PointerProperty(type=TRELLIS2_PG_stage)
    face_target: IntProperty(name="Faces", default=200_000, min=1_000, soft_max=2_000_000,
                             description="Decimate the generated mesh to about this many faces")
    texture_size: EnumProperty(name="Texture Size", items=TEXTURE_SIZE_ITEMS, default="2048")
    retexture_resolution: EnumProperty(name="Resolution", items=RETEXTURE_RESOLUTION_ITEMS, default="1024")


JOB_STATE_ITEMS = (
    ("IDLE", "Idle", ""), ("RUNNING", "Running", ""), ("FINISHED", "Finished", ""),
    ("CANCELLED", "Cancelled", ""), ("FAILED", "Failed", ""),
)
BACKEND_STATE_ITEMS = (
    ("STOPPED", "Stopped", ""), ("STARTING", "Starting", ""), ("LOADING", "Loading", ""),
    ("READY", "Ready", ""), ("BUSY", "Busy", ""), ("ERROR", "Error", ""),
)


class TRELLIS2_PG_status(bpy.types.PropertyGroup):
    """What the panel shows; written only by operators on the main thread, never saved."""

    job_state: EnumProperty(items=JOB_STATE_ITEMS, default="IDLE")
    job_kind: StringProperty()
    stage: StringProperty()
    step: IntProperty()
    total: IntProperty()
    fraction: FloatProperty(min=0.0, max=1.0)
    message: StringProperty()
    backend_state: EnumProperty(items=BACKEND_STATE_ITEMS, default="STOPPED")
    backend_percent: FloatProperty(min=0.0, max=100.0, subtype="PERCENTAGE")
    backend_message: StringProperty()
    task_running: StringProperty(description="Name of a running setup or download task")


classes = (TRELLIS2_PG_stage, TRELLIS2_PG_view, TRELLIS2_PG_settings, TRELLIS2_PG_status)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.types.Scene.trellis2 = PointerProperty(type=TRELLIS2_PG_settings)
    bpy.types.WindowManager.trellis2_status = PointerProperty(type=TRELLIS2_PG_status)


def unregister() -> None:
    del bpy.types.WindowManager.trellis2_status
    del bpy.types.Scene.trellis2
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
