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
from .remesh import REMESH_MODES

_PIPELINE_TEXT = {
    "512": ("512", "Fastest, coarse: 512³ geometry"),
    "1024": ("1024", "1024³ geometry in one pass"),
    "1024_cascade": ("1024 Cascade", "512 then 1024: the default balance of detail and time"),
    "1536_cascade": ("1536 Cascade", "512 then 1536: most detail, most memory and time"),
}
PIPELINE_ITEMS = tuple((kind, *_PIPELINE_TEXT[kind]) for kind in protocol.PIPELINE_TYPES)
TEXTURE_SIZE_ITEMS = tuple((str(s), str(s), f"{s}×{s} pixel textures") for s in protocol.TEXTURE_SIZE_CHOICES)
_RESOLUTION_TEXT = {512: "Coarse texture field", 1024: "Balanced texture field", 1536: "Finest texture field"}
RETEXTURE_RESOLUTION_ITEMS = tuple((str(r), str(r), _RESOLUTION_TEXT[r])
                                   for r in protocol.RETEXTURE_RESOLUTIONS)
_MULTIVIEW_TEXT = {
    "stochastic": ("Stochastic",
                   "Each sampler step looks at one picture in turn: costs what one picture costs"),
    "multidiffusion": ("Multidiffusion",
                       "Each step averages what every picture suggests: about (views + 1) / 2 times slower"),
}
MULTIVIEW_ITEMS = tuple((mode, *_MULTIVIEW_TEXT[mode]) for mode in protocol.MULTIVIEW_MODES)
_UNWRAP_TEXT = {
    "auto": ("Auto", "xatlas for small meshes, fast charts for large ones"),
    "fast": ("Fast Charts", "Seconds at any size, but more seams and less of the texture used"),
    "xatlas": ("xatlas", "Fewer, larger charts: sharper textures at the same size; minutes on large meshes"),
}
UNWRAP_ITEMS = tuple((method, *_UNWRAP_TEXT[method]) for method in protocol.UNWRAP_METHODS)
# The panel's limit, below protocol.MAX_SAMPLES: a row of more objects is hard to compare.
MAX_VARIATIONS = min(8, protocol.MAX_SAMPLES)
IMAGE_SOURCE_ITEMS = (
    ("FILE", "File", "An image file on disk"),
    ("BLENDER", "Blender Image", "An image already loaded in this file"),
)


def _start_override(stage, context) -> None:
    """Switching an override on starts from the model's values for that stage (nothing jumps)."""
    if stage.override:
        key = stage.path_from_id().rsplit(".", 1)[-1]  # "trellis2.shape" -> "shape"
        stage.steps, stage.guidance, stage.rescale = protocol.STAGE_SAMPLER_DEFAULTS[key]


class TRELLIS2_PG_stage(bpy.types.PropertyGroup):
    """Sampler overrides for one stage (used only when ``override`` is on)."""

    override: BoolProperty(name="Override", update=_start_override,
                           description="Use these values instead of the model's; they start at the model's")
    steps: IntProperty(name="Steps", default=12, min=1, soft_max=50)
    guidance: FloatProperty(name="Guidance", default=7.5, min=0.0, soft_max=15.0, precision=2,
                            description="Classifier-free guidance strength (1 = none)")
    rescale: FloatProperty(name="Guidance Rescale", default=0.0, min=0.0, max=1.0, precision=2,
                           description="Pull the guided prediction's spread back towards the unguided one "
                                       "(0 = off): less over-saturated results at high guidance")


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
    pipeline_type: EnumProperty(name="Pipeline", items=PIPELINE_ITEMS, default=protocol.DEFAULT_PIPELINE_TYPE)
    seed: IntProperty(name="Seed", default=protocol.DEFAULT_SEED, min=0)
    randomize_seed: BoolProperty(name="Randomize", description="Pick a new seed for every generation")
    show_advanced: BoolProperty(name="Advanced")
    sparse_structure: PointerProperty(type=TRELLIS2_PG_stage)
    shape: PointerProperty(type=TRELLIS2_PG_stage)
    texture: PointerProperty(type=TRELLIS2_PG_stage)
    face_target: IntProperty(name="Faces", default=protocol.DEFAULT_FACES, min=1_000, soft_max=2_000_000,
                             description="Decimate the generated mesh to about this many faces")
    texture_size: EnumProperty(name="Texture Size", items=TEXTURE_SIZE_ITEMS,
                               default=str(protocol.DEFAULT_TEXTURE_SIZE))
    unwrap: EnumProperty(name="UV Method", items=UNWRAP_ITEMS, default=protocol.Export.unwrap)
    remove_floaters: BoolProperty(name="Remove Floaters", description="Drop small pieces beside the object")
    remove_inner_shells: BoolProperty(name="Remove Inner Shells",
                                      description="Drop pieces enclosed by another closed piece: never seen, "
                                                  "they cost triangles and texture space")
    fill_holes: BoolProperty(name="Fill Small Holes", description="Close small holes in the surface")
    import_scale: FloatProperty(name="Scale", default=1.0, min=0.001, soft_max=100.0,
                                description="Scale of the added object (it is generated about 1 unit across)")
    place_on_ground: BoolProperty(name="Place on Ground at the 3D Cursor", default=False,
                                  description="Put the object's lowest point at the height of the 3D cursor")
    remesh_mode: EnumProperty(name="Remesh", items=REMESH_MODES, default="VOXEL")
    remesh_voxel_size: FloatProperty(name="Voxel Size", default=0.02, min=0.001, soft_max=0.2, precision=3,
                                     subtype="DISTANCE", description="Edge length of the voxel remesh")
    remesh_faces: IntProperty(name="Faces", default=5000, min=100, soft_max=100_000,
                              description="QuadriFlow's target number of quads")
    bake_size: EnumProperty(name="Bake Size", items=TEXTURE_SIZE_ITEMS, default="1024",
                            description="Size of the textures baked onto the remeshed object")
    replace_materials: BoolProperty(
        name="Replace Materials", default=False,
        description="Retexture: remove the object's material slots and keep only the new material "
                    "(off: the slots stay and the new material is added as one more slot that every "
                    "face uses)")
    retexture_resolution: EnumProperty(name="Resolution", items=RETEXTURE_RESOLUTION_ITEMS,
                                       default=str(protocol.DEFAULT_RETEXTURE_RESOLUTION))


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
    progress_text: StringProperty()
    backend_state: EnumProperty(items=BACKEND_STATE_ITEMS, default="STOPPED")
    backend_percent: FloatProperty(min=0.0, max=100.0, subtype="PERCENTAGE")
    backend_message: StringProperty()
    task_running: StringProperty(description="Name of a running setup or download task")


classes = (TRELLIS2_PG_stage, TRELLIS2_PG_view, TRELLIS2_PG_settings, TRELLIS2_PG_status)


_register_classes, _unregister_classes = bpy.utils.register_classes_factory(classes)


def register() -> None:
    _register_classes()
    bpy.types.Scene.trellis2 = PointerProperty(type=TRELLIS2_PG_settings)
    bpy.types.WindowManager.trellis2_status = PointerProperty(type=TRELLIS2_PG_status)


def unregister() -> None:
    del bpy.types.WindowManager.trellis2_status
    del bpy.types.Scene.trellis2
    _unregister_classes()
