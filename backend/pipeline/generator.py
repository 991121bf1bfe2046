"""``Trellis2Generator``: the :class:`~backend.pipeline.api.Generator` the CLI and the server drive.

Models load lazily (on the first job that needs them) and stay loaded between
jobs. Each job: preprocess the image(s) -> stages -> decode -> export; the
accelerator cache is emptied after every job, and running out of GPU memory
becomes :class:`~backend.pipeline.errors.OutOfMemoryError` naming the stage
and what to change.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from backend import protocol
from backend.geometry.axes import to_z_up_matrix
from backend.sparse import SparseTensor

from .accelerator import resolve_device
from .api import (
    AssetResult,
    CancelToken,
    ExportOptions,
    GenerateRequest,
    JobResult,
    ProgressCallback,
    RetextureRequest,
)
from .errors import InputError, OutOfMemoryError
from .export import export_generated, export_retextured
from .export.result_files import free_name
from .image import BackgroundRemover, load_and_preprocess
from .image_to_3d import image_to_assets, norms
from .licences import check_background_removal, commercial_safe_export
from .model_source import ModelProvenance
from .process_memory import peak_rss_bytes
from .progress import Tracker
from .rembg import BiRefNetRemover
from .residency import GIB, Transfers
from .retexture import retexture_voxels, work_frame
from .runtime import ModelStore, Runtime
from .sampler import make_generator
from .stages import LR_RESOLUTION, DecodedAsset, decode
from .structure import FlowStructure, StructureSampler

log = logging.getLogger(__name__)

DEFAULT_PIPELINE_TYPE = protocol.DEFAULT_PIPELINE_TYPE  # when neither the request nor pipeline.json names one


class Trellis2Generator:
    """Image -> 3D and retexture with TRELLIS.2.

    Args:
        runtime: a :class:`Runtime`, or (the server's form) the local release folder, completed
            by ``device`` ("auto" = CUDA, else Apple's MPS, else CPU), ``low_vram``,
            ``vram_budget_gib``, ``dependencies`` (repo id -> local folder), ``provenance`` (what
            results record as their ``"model"``; default: the folder as a local source) and
            ``commercial_safe``; that form never downloads.
        remover: background remover for inputs without alpha (None: such inputs are refused).
        structure: finds each object's voxels (default: the release's sparse-structure flow,
            :class:`~.structure.FlowStructure`).
        store: the networks to run, already set up for ``runtime`` (default: a :class:`ModelStore`
            over ``runtime``'s release, opened by the first job).
    """

    def __init__(self, runtime: Runtime | str | Path = Runtime(), *,  # noqa: B008
                 device: str | None = None, low_vram: bool | None = None,
                 vram_budget_gib: float | None = None,
                 dependencies: dict[str, Path] | None = None, remover: BackgroundRemover | None = None,
                 structure: StructureSampler | None = None, store: ModelStore | None = None,
                 provenance: ModelProvenance | None = None, commercial_safe: bool = False) -> None:
        if not isinstance(runtime, Runtime):
            dev = resolve_device(device)
            runtime = Runtime(model=str(runtime), device=dev, low_vram=bool(low_vram),
                              vram_budget_gib=vram_budget_gib, offline=True,
                              dependencies={k: str(v) for k, v in (dependencies or {}).items()},
                              provenance=provenance, commercial_safe=commercial_safe)
        self.runtime = runtime
        self.remover = remover
        self.structure = structure if structure is not None else FlowStructure()
        if store is not None and store.runtime != runtime:
            raise ValueError("the model store was set up for another runtime than the generator's")
        self._store = store

    @property
    def store(self) -> ModelStore:
        if self._store is None:
            self._store = ModelStore(self.runtime)
        return self._store

    # ------------------------------------------------------------------ jobs
    def generate(self, request: GenerateRequest, on_progress: ProgressCallback | None = None,
                 cancel: CancelToken | None = None) -> JobResult:
        """One asset per object and sample, written under ``request.output_dir``.

        Without ``request.multiview`` every image is its own object; with it all images are views of
        one object. Every object starts a fresh CPU generator from ``request.seed`` (so an image's
        result does not depend on its position in the list); samples of one object share that stream.
        """
        if not request.images:
            raise InputError("no input image given")
        request = dataclasses.replace(request, export=self._licence_checked(request.export))
        store = self.store  # resolves the release first: a missing model stops the job at once
        if request.pipeline_type is None:
            request = dataclasses.replace(
                request, pipeline_type=store.config.default_pipeline_type or DEFAULT_PIPELINE_TYPE)
        objects = [request.images] if request.multiview else [(path,) for path in request.images]
        tracker = Tracker(on_progress, cancel, assets=len(objects))
        assets: list[AssetResult] = []
        names: set[str] = set()
        with self._job(tracker) as job:
            for i, views in enumerate(objects):
                tracker.asset = i
                decoded = self._decode_object(store, views, request, tracker)
                tracker.begin("export")
                base = request.name or Path(views[0]).stem
                for k, asset in enumerate(decoded):
                    name = base if len(decoded) == 1 else f"{base}_{k}"
                    if len(objects) > 1 and request.name:
                        name = f"{name}_{i}"
                    if not request.name:  # a default name never replaces an earlier result
                        name = free_name(request.output_dir, name, names)
                    names.add(name)
                    if asset.faces.shape[0] == 0:
                        raise InputError(f"{Path(views[0]).name}: the decoded shape has no surface",
                                         "try another --seed")
                    # What made this asset, recorded in result.json and in the result event.
                    made_by = {**self._result_fields(store), "seed": request.seed, "sample": k,
                               "samples": len(decoded), "pipeline_type": request.pipeline_type}
                    if request.multiview:
                        made_by.update(views=[str(p) for p in views], multiview=request.multiview)
                    result = export_generated(asset.vertices, asset.faces, asset.attribute_fn(),
                                              request.output_dir, name, request.export, self.runtime.device,
                                              result_fields=made_by, cancel=tracker.cancel)
                    result.extra.update(resolution=asset.resolution, source=str(views[0]), **made_by)
                    assets.append(result)
                tracker.end()
        return self._result(assets, tracker, job)

    def warm_up(self, cancel: CancelToken | None = None) -> bool:
        """Compile (and tune) the GPU kernels a first job would, so it does not wait for them.

        Where the sparse convolutions run as Triton kernels, the shape and texture decoders run once
        on a 4^3 block of latent voxels with random latents: that compiles every kernel variant (layer
        widths, precision) a decode of any size launches, and Triton's disk cache keeps them for later
        processes. Elsewhere nothing is compiled, and False is returned.
        """
        store = self.store
        if store.conv_backend != "triton":
            return False
        shape_decoder, tex_decoder = store.get("shape_slat_decoder"), store.get("tex_slat_decoder")
        shape_norm, tex_norm = norms(store.config)
        block = torch.stack(torch.meshgrid(*[torch.arange(14, 18)] * 3, indexing="ij"), -1).reshape(-1, 3)
        coords = torch.cat([torch.zeros(len(block), 1, dtype=torch.long), block], 1).int().to(store.device)
        gen = make_generator(0)
        noise = [torch.randn(len(block), n.mean.shape[1], generator=gen) for n in (shape_norm, tex_norm)]
        with torch.no_grad(), store.on_device(shape_decoder, tex_decoder):
            shape = shape_norm.denormalize(SparseTensor(coords, noise[0].to(store.device), batch_size=1))
            texture = tex_norm.denormalize(shape.replace(noise[1].to(store.device)))
            if cancel is not None:
                cancel.check()
            decode(shape_decoder, tex_decoder, shape, texture, LR_RESOLUTION)
        return True

    def decode(self, request: GenerateRequest, cancel: CancelToken | None = None) -> list[DecodedAsset]:
        """The decoded samples of the first object of ``request`` (all its images with
        ``request.multiview``): meshes and PBR voxels in the working frame, before the export's
        cleanup, decimation, unwrapping and baking. Nothing is written (evaluation scores these)."""
        if not request.images:
            raise InputError("no input image given")
        store = self.store
        if request.pipeline_type is None:
            request = dataclasses.replace(
                request, pipeline_type=store.config.default_pipeline_type or DEFAULT_PIPELINE_TYPE)
        views = request.images if request.multiview else request.images[:1]
        tracker = Tracker(None, cancel)
        with self._job(tracker):
            return self._decode_object(store, views, request, tracker)

    def _decode_object(self, store: ModelStore, views: Sequence[str | Path], request: GenerateRequest,
                       tracker: Tracker) -> list[DecodedAsset]:
        """Preprocess one object's pictures and run the three stages and the decoders."""
        tracker.begin("preprocess", f"reading {', '.join(Path(p).name for p in views)}")
        pictures = [load_and_preprocess(path, self.remover) for path in views]
        gen = make_generator(request.seed)
        return image_to_assets(store, pictures if request.multiview else pictures[0], request, gen,
                               tracker, self.structure)

    def retexture(self, request: RetextureRequest, on_progress: ProgressCallback | None = None,
                  cancel: CancelToken | None = None) -> JobResult:
        """New PBR textures for ``request.mesh``: same vertices, faces, UVs and placement."""
        from backend.geometry import MeshError
        from backend.meshio import read_mesh

        request = dataclasses.replace(request, export=self._licence_checked(request.export))
        store = self.store
        tracker = Tracker(on_progress, cancel)
        with self._job(tracker) as job:
            tracker.begin("preprocess", f"reading {Path(request.mesh).name}")
            try:
                mesh = read_mesh(request.mesh).validate()
            except MeshError as e:
                raise InputError(f"{Path(request.mesh).name}: {e}") from e
            image = load_and_preprocess(request.image, self.remover)
            frame = work_frame(mesh, request.up_axis)
            gen = make_generator(request.seed)
            try:
                voxels = retexture_voxels(store, image, mesh, frame, request, gen, tracker)
            except MeshError as e:  # e.g. a flat mesh that crosses no grid edge
                raise InputError(f"{Path(request.mesh).name}: {e}") from e
            tracker.begin("export")
            to_blender = to_z_up_matrix(request.up_axis)
            name = request.name or free_name(request.output_dir, Path(request.mesh).stem)
            result = export_retextured(mesh, frame.apply, voxels.attribute_fn(), request.output_dir,
                                       name, request.export, to_blender,
                                       self.runtime.device, result_fields=self._result_fields(store),
                                       cancel=tracker.cancel)
            result.extra.update(seed=request.seed, resolution=request.resolution, source=str(request.mesh),
                                **self._result_fields(store))
            tracker.end()
        return self._result([result], tracker, job)

    # ------------------------------------------------------------------ helpers
    def _licence_checked(self, export: ExportOptions) -> ExportOptions:
        """``export`` as commercial-safe mode allows it (unchanged when the mode is off)."""
        if not self.runtime.commercial_safe:
            return export
        if isinstance(self.remover, BiRefNetRemover):
            check_background_removal("birefnet")
        return commercial_safe_export(export)

    @staticmethod
    def _result_fields(store: ModelStore) -> dict[str, object]:
        """Fields every result records: ``"model"``, which weights made it (when known)."""
        return {"model": store.provenance.as_json()} if store.provenance is not None else {}

    def _job(self, tracker: Tracker):
        """The context of one job: no autograd, the peak memory counted from its start, the cache
        emptied and the VRAM budget's moves logged at its end (``transfers`` after it), and running
        out of GPU memory reported as :class:`OutOfMemoryError` naming the stage."""
        generator = self

        class _Job:
            transfers = Transfers()

            def __enter__(self):
                if generator.runtime.device.startswith("cuda") and torch.cuda.is_available():
                    torch.cuda.reset_peak_memory_stats()
                self._grad = torch.is_grad_enabled()
                torch.set_grad_enabled(False)
                self._moved_before = generator.store.transfers
                return self

            def __exit__(self, exc_type, exc, tb):
                torch.set_grad_enabled(self._grad)
                self.transfers = generator.store.transfers - self._moved_before
                budget = generator.runtime.vram_budget_gib
                if budget is not None:
                    log.info("VRAM budget %.3g GiB: %.3g GiB of networks moved to the device and %.3g GiB "
                             "back to host memory in this job", budget, self.transfers.to_device / GIB,
                             self.transfers.to_host / GIB)
                stage = tracker._stage or "export"
                if generator.runtime.device.startswith("cuda") and torch.cuda.is_available():
                    torch.cuda.empty_cache()
                if exc_type is not None and issubclass(exc_type, torch.OutOfMemoryError):
                    raise OutOfMemoryError(stage, str(exc).splitlines()[0]) from exc
                return False

        return _Job()

    def _result(self, assets: list[AssetResult], tracker: Tracker, job) -> JobResult:
        """What a finished job reports: its assets, seconds per stage, peak memory and the bytes its
        VRAM budget moved (``job``: the finished :meth:`_job`)."""
        return JobResult(assets, dict(tracker.seconds), self._peak_memory(),
                         moved_to_device_bytes=job.transfers.to_device,
                         moved_to_host_bytes=job.transfers.to_host)

    def _peak_memory(self) -> int:
        if self.runtime.device.startswith("cuda") and torch.cuda.is_available():
            return int(torch.cuda.max_memory_allocated())
        return peak_rss_bytes()  # CPU: peak resident set size
