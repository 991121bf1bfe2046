"""Add-on preferences: where the backend runs, which weights it uses, where results go."""

from __future__ import annotations

from pathlib import Path

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, StringProperty

from . import paths
from .core.session import BackendSettings
from .protocol import BACKGROUND_REMOVAL_MODES, BUNDLED_MINI_MODEL, DEFAULT_BACKGROUND_REMOVAL
from .widgets import draw_backend_status, draw_message

DEFAULT_MODEL = "microsoft/TRELLIS.2-4B"
MODEL_KIND_ITEMS = (
    ("OFFICIAL", "TRELLIS.2-4B (official)",
     f"Microsoft's released weights ({DEFAULT_MODEL}), downloaded from Hugging Face on first use. Without "
     "them (offline, or no access yet) the backend uses the bundled mini model and says so"),
    ("LOCAL", "Local folder",
     "A local folder holding TRELLIS.2 weights (or another Hugging Face repository id), set below"),
    ("BUNDLED_MINI", "Bundled mini model (small, trained on procedural objects; for trying things out)",
     "A small model that ships with the backend, trained on procedural objects, not the official weights; "
     "nothing is downloaded"),
)
DEVICE_ITEMS = (
    ("auto", "Automatic", "The first CUDA GPU, else the Apple GPU, else the CPU"),
    ("cuda", "CUDA", "An NVIDIA GPU"),
    ("mps", "Apple GPU", "The GPU of an Apple Silicon Mac (Metal); operations it lacks run on the CPU"),
    ("cpu", "CPU", "Very slow; for testing"),
)
_BACKGROUND_TEXT = {
    "none": ("None", "Only pictures with a transparent background are accepted"),
    "solid": ("Plain Background", "Cut the object out of a plain, uniform background (no model needed); "
                                  "busy pictures are refused"),
    "rmbg": ("RMBG-2.0", "BRIA's RMBG-2.0 model (gated; non-commercial licence) or a BiRefNet folder. "
                         "Choosing it lets the backend download it and run the Python code that ships "
                         "with it"),
}
# Identifiers are the contract's modes in upper case (Blender's enum style); lowered when sent.
BACKGROUND_ITEMS = tuple((mode.upper(), *_BACKGROUND_TEXT[mode]) for mode in BACKGROUND_REMOVAL_MODES)


class TRELLIS2_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    backend_python: StringProperty(
        name="Backend Python", subtype="FILE_PATH",
        description="Python of the backend environment; empty finds the one set up by this add-on")
    model_kind: EnumProperty(
        name="Model Source", items=MODEL_KIND_ITEMS, default="OFFICIAL",
        description="Which weights the backend loads")
    model_source: StringProperty(
        name="Model", default=DEFAULT_MODEL,
        description="For the Local Folder source: a local folder holding the weights, or a Hugging Face "
                    "repository id")
    device: EnumProperty(name="Device", items=DEVICE_ITEMS, default="auto")
    low_vram: BoolProperty(
        name="Low VRAM",
        description="Move each network to the GPU only while its stage runs (slower; the result is the same)")
    use_own_cache: BoolProperty(
        name="Keep Weights With the Add-on",
        description="Download into the add-on's user folder instead of the shared Hugging Face cache")
    background_removal: EnumProperty(
        name="Background Removal", items=BACKGROUND_ITEMS, default=DEFAULT_BACKGROUND_REMOVAL.upper(),
        description="What happens to pictures without transparency (transparent ones are used as they are)")
    background_model: StringProperty(
        name="RMBG Folder", subtype="DIR_PATH",
        description="A local RMBG-2.0 or BiRefNet folder; empty uses briaai/RMBG-2.0 from Hugging Face")
    image_encoder_dir: StringProperty(
        name="DINOv3 Folder", subtype="DIR_PATH",
        description="A local copy of facebook/dinov3-vitl16-pretrain-lvd1689m (gated on Hugging Face); "
                    "empty uses the Hugging Face copy")
    ss_decoder_dir: StringProperty(
        name="Sparse-Structure Decoder Folder", subtype="DIR_PATH",
        description="A local copy of microsoft/TRELLIS-image-large (its ckpts/ss_dec_conv3d_16l8_fp16 "
                    "files); empty uses the Hugging Face copy")
    hf_token: StringProperty(
        name="Hugging Face Token", subtype="PASSWORD",
        description="A read token (huggingface.co/settings/tokens) of the account that accepted the gated "
                    "licences. Shown as dots, never logged, handed to the backend through its input pipe; "
                    "kept with Blender's preferences like every setting here")
    commercial_safe: BoolProperty(
        name="Commercial-Safe",
        description="Never use the parts under non-commercial licences: nvdiffrast (textures are baked with "
                    "the built-in rasterizer) and RMBG-2.0 / BiRefNet background removal")
    allow_model_code: BoolProperty(
        name="Run RMBG Model Code",
        description="RMBG-2.0 and BiRefNet ship Python code that runs when they load; allow it to run "
                    "(needed for RMBG background removal)")
    output_dir: StringProperty(
        name="Output Folder", subtype="DIR_PATH",
        description="Where job folders go; empty uses the add-on's user folder")
    history_limit_gb: FloatProperty(
        name="Keep Jobs Up To (GB)", default=20.0, min=0.0, soft_max=500.0, precision=1,
        description="When the job folders take more than this, the oldest are deleted after each job "
                    "(0 keeps everything)")
    show_guide: BoolProperty(
        name="Show First-Run Guide", default=True,
        description="Show the steps to a first result at the top of the TRELLIS.2 panel")

    def draw(self, context):
        draw_preferences(self, context, self.layout)


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


def backend_settings(context=None, *, offline: bool | None = None) -> BackendSettings:
    """A snapshot of what starting the backend needs; defaults when the add-on has no preferences."""
    from . import logging_setup

    prefs = get(context)
    python = resolved_python(prefs)
    root = paths.backend_root()
    if offline is None:
        offline = not bpy.app.online_access
    source = chosen_model(prefs)
    local = (Path(bpy.path.abspath(source))
             if source and source != BUNDLED_MINI_MODEL and not paths.looks_like_repo_id(source) else None)
    def folder(value: str) -> str | None:
        return str(Path(bpy.path.abspath(value))) if value else None

    return BackendSettings(
        python=str(python) if python else "",
        backend_root=str(root) if root else "",
        log_path=str(logging_setup.log_file().with_name("backend.log")),
        model_source=str(local) if local is not None else source,
        device=prefs.device if prefs is not None else "auto",
        low_vram=prefs.low_vram if prefs is not None else False,
        offline=offline,
        cache_dir=str(paths.user_dir("models")) if prefs is not None and prefs.use_own_cache else None,
        background_removal=(prefs.background_removal.lower() if prefs is not None
                            else DEFAULT_BACKGROUND_REMOVAL),
        background_remover=(str(Path(bpy.path.abspath(prefs.background_model)))
                            if prefs is not None and prefs.background_removal == "RMBG"
                            and prefs.background_model else None),
        image_encoder=folder(prefs.image_encoder_dir) if prefs is not None else None,
        sparse_structure_decoder=folder(prefs.ss_decoder_dir) if prefs is not None else None,
        commercial_safe=prefs.commercial_safe if prefs is not None else False,
        token=(prefs.hf_token.strip() or None) if prefs is not None else None,
        allow_model_code=prefs.allow_model_code if prefs is not None else False,
    )


def chosen_model(prefs) -> str:
    """The ``load`` source the preferences ask for: the official repo id, the Local Folder setting,
    or ``protocol.BUNDLED_MINI_MODEL`` (defaults when the add-on has no preferences)."""
    if prefs is None or prefs.model_kind == "OFFICIAL":
        return DEFAULT_MODEL
    if prefs.model_kind == "BUNDLED_MINI":
        return BUNDLED_MINI_MODEL
    return prefs.model_source


def download_notice(context=None) -> str:
    """What the user agrees to before a download, besides the sizes the access check found: the
    model and the licences of its gated and non-commercial parts."""
    prefs = get(context)
    source = chosen_model(prefs)
    return (f"Model: {source}. The image encoder (DINOv3) is gated: its licence was accepted on Hugging Face "
            "by the account of your Hugging Face Token. "
            + ("Background removal (RMBG-2.0) is gated and non-commercial; it is downloaded too. "
               if prefs is not None and prefs.background_removal == "RMBG" and not prefs.background_model
               else "") + "Pictures with a transparent background need no background removal.")


classes = (TRELLIS2_AP_preferences,)


# Blender's own register/unregister pair for a class tuple (unregistered in reverse).
register, unregister = bpy.utils.register_classes_factory(classes)


def draw_preferences(prefs, context, layout) -> None:
    """The preferences' page: backend, models, access and the setup buttons."""
    col = layout.column()
    col.use_property_split = True
    col.prop(prefs, "backend_python")
    python = resolved_python(prefs)
    # Wrapped to the region: a long path would otherwise be cut in its middle.
    draw_message(col, context, f"Using: {python}" if python else "No backend Python found yet",
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
    col.prop(prefs, "commercial_safe")
    col.prop(prefs, "output_dir")
    models = layout.column(heading="Gated Models and Local Copies")
    models.use_property_split = True
    models.prop(prefs, "hf_token")
    models.prop(prefs, "image_encoder_dir")
    models.prop(prefs, "ss_decoder_dir")
    row = layout.row()
    row.operator("trellis2.setup_backend", icon="CONSOLE")
    row.operator("trellis2.check_access", icon="LOCKED")
    row.operator("trellis2.download_weights", icon="IMPORT")
    row.operator("trellis2.open_log", icon="TEXT")
    status = context.window_manager.trellis2_status
    if status.task_running:
        layout.progress(factor=status.fraction, text=status.task_running)
    if not bpy.app.online_access:
        draw_message(layout, context, "Blender's \"Allow Online Access\" is off (Preferences > System > "
                     "Network): Set Up Backend and Download Weights need it.", icon="INFO")
    draw_backend_status(layout, context)
