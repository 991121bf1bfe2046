"""Protocol messages <-> pipeline requests and results, and exceptions -> protocol errors.

A request arrives here already checked against the contract's choices and limits (decoding it
does that, see ``backend.protocol``); what is left to check are the files and folders it names
and the rules that tie several fields together.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from backend import protocol
from backend.fileio import output_folder_problem
from backend.pipeline import api, errors
from backend.pipeline.weights import WeightsError
from backend.server.generators import PipelineUnavailable

INPUT_HINT = "check the input file: re-export it, or use another one"
OOM_HINT = ("Lower the resolution (pipeline 512 or 1024), lower max_num_tokens or the texture size, "
            "or reload the models in low-VRAM mode.")


class InvalidRequest(ValueError):
    """A well-formed message whose values the pipeline cannot accept."""


@dataclass(frozen=True)
class Failure:
    """What to tell the client about an exception."""

    code: str
    message: str
    hint: str = ""


def _sampler(s: protocol.Sampler) -> api.SamplerOverrides:
    interval = None
    if s.guidance_interval is not None:
        if len(s.guidance_interval) != 2:
            raise InvalidRequest("guidance_interval must have two numbers")
        interval = (s.guidance_interval[0], s.guidance_interval[1])
    return api.SamplerOverrides(steps=s.steps, guidance_strength=s.guidance_strength,
                                guidance_rescale=s.guidance_rescale, guidance_interval=interval,
                                rescale_t=s.rescale_t)


def _export(e: protocol.Export) -> api.ExportOptions:
    return api.ExportOptions(texture_size=e.texture_size, faces=e.faces, texture_format=e.texture_format,  # type: ignore[arg-type]
                             write_glb=e.write_glb, write_direct=e.write_direct, unwrap=e.unwrap,  # type: ignore[arg-type]
                             remove_floaters=e.remove_floaters, remove_inner_shells=e.remove_inner_shells,
                             fill_holes=e.fill_holes, bake_normal_map=e.bake_normal_map)


def _output_dir(path: str) -> Path:
    """``output_dir`` as a path; it must be absolute (checked for writing by ``_check_output_dir``)."""
    out = Path(path)
    if not out.is_absolute():
        raise InvalidRequest(f"output_dir must be an absolute path, got {path!r}")
    return out


def _check_output_dir(out: Path) -> None:
    """Refuse an ``output_dir`` that cannot take results; it is not created here (the job's
    writer creates it), so a job that fails before writing leaves nothing behind."""
    problem = output_folder_problem(out)
    if problem is not None:
        raise InvalidRequest(f"output_dir {str(out)!r} cannot be used: {problem}")


def _existing_file(path: str, what: str) -> Path:
    p = Path(path)
    try:
        found = p.is_file()
    except (OSError, ValueError) as exc:  # a name too long for the file system, a NUL character
        raise InvalidRequest(f"{what} {path!r} is not a usable path: {exc}") from None
    if not found:
        raise InvalidRequest(f"{what} not found: {path}")
    return p


def to_generate(msg: protocol.Generate) -> api.GenerateRequest:
    if not msg.images:
        raise InvalidRequest("generate needs at least one image")
    if msg.multiview is not None and len(msg.images) > protocol.MAX_VIEWS:
        raise InvalidRequest(f"a multi-view request takes at most {protocol.MAX_VIEWS} images, "
                             f"got {len(msg.images)}")
    request = api.GenerateRequest(
        images=tuple(_existing_file(p, "image") for p in msg.images), output_dir=_output_dir(msg.output_dir),
        pipeline_type=msg.pipeline_type, seed=msg.seed, num_samples=msg.num_samples,  # type: ignore[arg-type]
        sparse_structure=_sampler(msg.sparse_structure), shape=_sampler(msg.shape),
        texture=_sampler(msg.texture), max_num_tokens=msg.max_num_tokens, export=_export(msg.export),
        name=msg.name, multiview=msg.multiview)  # type: ignore[arg-type]
    _check_output_dir(request.output_dir)
    return request


def to_retexture(msg: protocol.Retexture) -> api.RetextureRequest:
    request = api.RetextureRequest(
        mesh=_existing_file(msg.mesh, "mesh"), image=_existing_file(msg.image, "image"),
        output_dir=_output_dir(msg.output_dir), seed=msg.seed, resolution=msg.resolution,
        texture=_sampler(msg.texture), export=_export(msg.export), name=msg.name)
    _check_output_dir(request.output_dir)
    return request


def to_result(job: str, output_dir: str, result: api.JobResult) -> protocol.Result:
    assets = [protocol.Asset(
        name=a.name, glb=str(a.glb) if a.glb else None, direct=str(a.direct) if a.direct else None,
        faces=int(a.faces), vertices=int(a.vertices), texture_size=int(a.texture_size),
        alpha_mode=a.alpha_mode, extra=_jsonable(a.extra)) for a in result.assets]
    return protocol.Result(job=job, output_dir=output_dir, assets=assets,
                           seconds_per_stage={k: float(v) for k, v in result.seconds_per_stage.items()},
                           peak_memory_bytes=int(result.peak_memory_bytes))


def _jsonable(value: object) -> object:
    """Plain JSON values only (numbers, strings, lists, dicts); anything else becomes its str()."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)


def is_out_of_memory(exc: BaseException) -> bool:
    """torch's OutOfMemoryError (CUDA or otherwise), MemoryError, or an allocator 'out of memory'."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


# Errors of the mesh and O-Voxel readers. Looked up among the loaded modules rather than imported,
# so the server starts without numpy and the O-Voxel code: an exception of a class whose module
# was never loaded cannot be raised.
_INPUT_FILE_ERRORS = (("backend.geometry.mesh", "MeshError"), ("backend.ovoxel.types", "OVoxelError"))


def _is_input_file_error(exc: BaseException) -> bool:
    for module, name in _INPUT_FILE_ERRORS:
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and isinstance(exc, cls):
            return True
    return False


def classify(exc: BaseException) -> Failure:
    """The protocol error for an exception raised by a job."""
    if isinstance(exc, errors.OutOfMemoryError):
        return Failure("out_of_memory", exc.message, f"{exc.hint}. {OOM_HINT}")
    if is_out_of_memory(exc):
        return Failure("out_of_memory", f"out of memory: {str(exc)[:500]}", OOM_HINT)
    if isinstance(exc, WeightsError):  # before its base class: it carries its own code (gated_model)
        return Failure(exc.code, exc.message, exc.hint)
    if isinstance(exc, errors.ModelUnavailableError):
        return Failure("model_unavailable", exc.message, exc.hint)
    if isinstance(exc, errors.InputError):
        return Failure("invalid_input", exc.message, exc.hint or INPUT_HINT)
    if _is_input_file_error(exc):
        return Failure("invalid_input", str(exc), INPUT_HINT)
    if isinstance(exc, errors.PipelineError):
        return Failure("invalid_request", exc.message, exc.hint)
    if isinstance(exc, PipelineUnavailable):
        return Failure("pipeline_unavailable", str(exc), "install the backend's pipeline, see the README")
    if isinstance(exc, InvalidRequest):
        return Failure("invalid_request", str(exc), "check the request's values")
    if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        return Failure("io_error", f"{exc.strerror or exc}{where}",
                       "check free disk space, permissions and path lengths of the input and output folders")
    if isinstance(exc, FileNotFoundError | ValueError):
        return Failure("invalid_request", f"{type(exc).__name__}: {exc}",
                       "check the input files and settings")
    return Failure("internal", f"{type(exc).__name__}: {str(exc)[:1000]}",
                   "the backend log has the traceback; the server is still running")
