"""Training datasets over a data-toolkit folder, batched per optimisation step.

A data folder (written by ``python -m backend.train.data``) holds ``metadata.jsonl`` (one record per
asset: id, split, status, ...), ``ovoxel_{R}/{id}.npz``, ``renders_cond/{id}/{k:03d}.png`` and the
latent folders. Each dataset here lists the usable training items at construction and turns a
list of item indices into the tensors of one micro-batch (:meth:`collate`).

Which items a step uses is a pure function of ``(seed, step, rank, world_size)``
(:class:`StepPlan`): one endless stream of per-epoch permutations, cut into consecutive windows of
``batch_size_per_gpu * world_size``, rank ``r`` taking every ``world_size``-th item of its window.
Resuming at step ``s`` therefore needs only ``s`` -- no sampler state -- and a crash never
reorders data. Nothing in a dataset draws random numbers: per-item choices (such as which
condition view) are hashed from ``(seed, step, item)``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from backend.ovoxel.io import load_ovoxel

from .config import ConfigError
from .data.layout import SS_GRID, pooled_occupancy

log = logging.getLogger(__name__)


class DataError(ValueError):
    """The data folder is missing something a dataset needs; the message names the path."""


def read_records(data_dir: Path, split: str = "train") -> list[dict[str, Any]]:
    """The ok records of ``split`` from ``metadata.jsonl``, sorted by id."""
    path = data_dir / "metadata.jsonl"
    if not path.is_file():
        raise DataError(f"{path}: no metadata.jsonl (run `python -m backend.train.data prepare` first)")
    records = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{n}: not a JSON record ({exc})") from exc
            if rec.get("status") == "ok" and rec.get("split", "train") == split:
                records.append(rec)
    records.sort(key=lambda r: r["id"])
    return records


def stable_hash(*parts: int) -> int:
    """A platform-independent hash of integers (crc32), for per-item deterministic choices."""
    return zlib.crc32(np.asarray(parts, dtype=np.int64).tobytes())


@functools.lru_cache(maxsize=4)
def _epoch_permutation(seed: int, epoch: int, num_items: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(num_items)


@dataclass(frozen=True)
class StepPlan:
    """Which dataset items rank ``rank`` uses at each step (see the module docstring)."""

    num_items: int
    batch_size: int  # per rank
    world_size: int = 1
    rank: int = 0
    seed: int = 0

    def _permutation(self, epoch: int) -> np.ndarray:
        return _epoch_permutation(self.seed, epoch, self.num_items)

    def items(self, step: int) -> list[int]:
        """Dataset indices of this rank's batch at ``step`` (0-based)."""
        window = self.batch_size * self.world_size
        start = step * window
        out = []
        for pos in range(start + self.rank, start + window, self.world_size):
            epoch, j = divmod(pos, self.num_items)
            out.append(int(self._permutation(epoch)[j]))
        return out


def split_balanced(items: list[int], weights: list[int], parts: int) -> list[list[int]]:
    """Greedy largest-first split of ``items`` into ``parts`` non-empty groups of similar total weight."""
    parts = max(1, min(parts, len(items)))
    order = sorted(range(len(items)), key=lambda i: (-weights[i], i))
    groups: list[list[int]] = [[] for _ in range(parts)]
    loads = [0] * parts
    for rank_in_order, i in enumerate(order):
        # The first `parts` items seed every group so none stays empty.
        g = rank_in_order if rank_in_order < parts else min(range(parts), key=lambda k: (loads[k], k))
        groups[g].append(items[i])
        loads[g] += weights[i]
    return [sorted(g) for g in groups]


# --------------------------------------------------------------------------- base
@dataclass(frozen=True)
class DatasetArgs:
    """Arguments shared by every dataset (``dataset.args`` in the config)."""

    resolution: int = 512  # O-Voxel grid the data was prepared at
    max_tokens: int = 0  # sparse data: items with more tokens are dropped (0: keep all)
    views: int = 0  # condition views per asset to use (0: all that were rendered)
    image_size: int = 512  # condition image side for the image encoder
    limit: int = 0  # use only the first N items (0: all); for smoke tests


class TrainingDataset:
    """Base: item list, per-item token counts, and step -> micro-batches."""

    args_class = DatasetArgs
    needs_condition = False

    def __init__(
        self, data_dir: str | Path, args: DatasetArgs, context: dict[str, Any] | None = None
    ) -> None:
        self.data_dir = Path(data_dir)
        self.args = args
        self.context = context or {}
        records = read_records(self.data_dir)
        if args.limit:
            records = records[: args.limit]
        self.records = self._filter(records)
        if not self.records:
            raise DataError(f"{self.data_dir}: no usable training items for {type(self).__name__}")
        log.info("%s: %d training items from %s", type(self).__name__, len(self.records), self.data_dir)

    def _filter(self, records: list[dict]) -> list[dict]:
        return records

    def __len__(self) -> int:
        return len(self.records)

    def tokens(self, index: int) -> int:
        """Work units of one item (voxels or latent tokens); used to balance micro-batches."""
        return 1

    def micro_batches(self, items: list[int], parts: int) -> list[list[int]]:
        return split_balanced(items, [self.tokens(i) for i in items], parts)

    def collate(self, items: list[int], step: int) -> dict[str, Any]:
        raise NotImplementedError

    def views_of(self, index: int) -> int:
        """How many condition views of item ``index`` training uses (``dataset.args.views`` caps them)."""
        views = int(self.records[index].get("views", 1))
        if self.args.views:
            views = min(views, self.args.views)
        return max(1, views)

    def view_of(self, index: int, step: int, seed: int) -> int:
        """Which condition view item ``index`` shows at ``step`` (hashed, no RNG state)."""
        return stable_hash(seed, step, index) % self.views_of(index)


def _ovoxel_path(data_dir: Path, resolution: int, item_id: str) -> Path:
    return data_dir / f"ovoxel_{resolution}" / f"{item_id}.npz"


def _pack(coords_list: list[np.ndarray]) -> torch.Tensor:
    """Per-sample ``[N_i, 3]`` coords -> ``[sum N_i, 4]`` int32 with the batch index first."""
    rows = [
        np.concatenate([np.full((len(c), 1), b, np.int32), c.astype(np.int32)], 1)
        for b, c in enumerate(coords_list)
    ]
    return torch.from_numpy(np.concatenate(rows, 0))


# --------------------------------------------------------------------------- VAE data
class SparseStructureDataset(TrainingDataset):
    """64^3 occupancy of each asset's O-Voxel (voxel ``c`` -> cell ``c // (R / 64)``), for the SS VAE."""

    def collate(self, items: list[int], step: int) -> dict[str, Any]:
        occ = torch.zeros(len(items), 1, SS_GRID, SS_GRID, SS_GRID)
        for b, i in enumerate(items):
            cells = occupied_cells(self.data_dir, self.args.resolution, self.records[i]["id"])
            cells = torch.from_numpy(cells)
            occ[b, 0, cells[:, 0], cells[:, 1], cells[:, 2]] = 1.0
        return {"occupancy": occ}


def occupied_cells(data_dir: Path, resolution: int, item_id: str) -> np.ndarray:
    """``[N, 3]`` int64 occupied cells of an asset's ``SS_GRID^3`` occupancy grid."""
    path = data_dir / "ss_occupancy" / f"{item_id}.npz"
    if path.is_file():  # written by prepare: a few KB instead of the whole O-Voxel
        with np.load(path) as f:
            return f["cells"].astype(np.int64)
    ov = load_ovoxel(_ovoxel_path(data_dir, resolution, item_id))
    return np.unique(ov.coords // (resolution // SS_GRID), axis=0).astype(np.int64)


def voxels_at(record: dict, resolution: int) -> int:
    """An asset's voxel count at ``resolution``: its main grid or one of ``prepare``'s extra grids."""
    if int(record.get("resolution", resolution)) == resolution:
        return int(record.get("num_voxels") or 1)
    extra = record.get("extra_voxels") or {}
    if str(resolution) not in extra:
        raise DataError(f"asset {record['id']} has no O-Voxel at resolution {resolution} "
                        f"(prepare with --resolution {resolution} or --extra-resolutions {resolution})")
    return int(extra[str(resolution)])


class _OVoxelDataset(TrainingDataset):
    def _filter(self, records: list[dict]) -> list[dict]:
        for r in records:
            voxels_at(r, self.args.resolution)  # every item has this grid (else a clear error)
        if not self.args.max_tokens:
            return records
        kept = [r for r in records if voxels_at(r, self.args.resolution) <= self.args.max_tokens]
        if len(kept) < len(records):
            log.info(
                "dropped %d items over max_tokens=%d voxels", len(records) - len(kept), self.args.max_tokens
            )
        return kept

    def tokens(self, index: int) -> int:
        return voxels_at(self.records[index], self.args.resolution)

    def _load(self, items: list[int]):
        return [
            load_ovoxel(_ovoxel_path(self.data_dir, self.args.resolution, self.records[i]["id"]))
            for i in items
        ]


class FlexiDualGridDataset(_OVoxelDataset):
    """Dual vertices and intersection flags per voxel, for the shape SC-VAE."""

    def collate(self, items: list[int], step: int) -> dict[str, Any]:
        ovs = self._load(items)
        return {
            "coords": _pack([ov.coords for ov in ovs]),
            "vertices": torch.from_numpy(np.concatenate([ov.dual_vertices for ov in ovs])).float(),
            "intersected": torch.from_numpy(np.concatenate([ov.intersected for ov in ovs])).float(),
            "batch_size": len(items),
            "resolution": self.args.resolution,  # the grid the rendered losses extract meshes on
        }


class SparseVoxelPbrDataset(_OVoxelDataset):
    """PBR attributes per voxel (base colour 3, metallic, roughness, alpha in [0, 1]), for the texture VAE.

    The batch also carries each voxel's dual vertex and intersection flags and the grid
    resolution: the texture VAE's rendered losses draw the attributes on the O-Voxel's own
    surface, which they extract from these (the arrays are in the same file, so it costs no
    extra read).
    """

    def collate(self, items: list[int], step: int) -> dict[str, Any]:
        ovs = self._load(items)
        for ov, i in zip(ovs, items):
            if ov.attributes is None:
                raise DataError(
                    f"{_ovoxel_path(self.data_dir, self.args.resolution, self.records[i]['id'])}: "
                    "no PBR attributes"
                )
        return {
            "coords": _pack([ov.coords for ov in ovs]),
            "attributes": torch.from_numpy(np.concatenate([ov.attributes for ov in ovs])).float(),
            "vertices": torch.from_numpy(np.concatenate([ov.dual_vertices for ov in ovs])).float(),
            "intersected": torch.from_numpy(np.concatenate([ov.intersected for ov in ovs])).float(),
            "batch_size": len(items),
            "resolution": self.args.resolution,
        }


# --------------------------------------------------------------------------- flow data
@dataclass(frozen=True)
class LatentDatasetArgs(DatasetArgs):
    """Latent datasets also name the encoder folders the latents were written under."""

    ss_latent: str = ""  # ss_latents/<name>
    shape_latent: str = ""  # shape_latents/<name>
    pbr_latent: str = ""  # pbr_latents/<name>


def _latent_stats(data_dir: Path, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    path = data_dir / "latent_stats.json"
    try:
        stats = json.loads(path.read_text())[kind]
        mean = torch.tensor(stats["mean"], dtype=torch.float32)
        std = torch.tensor(stats["std"], dtype=torch.float32)
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(
            f"{path}: no {kind} latent statistics ({exc}); run the toolkit's encode step"
        ) from exc
    return mean, std


class _ConditionedDataset(TrainingDataset):
    args_class = LatentDatasetArgs
    needs_condition = True

    def _require(self, folder: str, what: str) -> Path:
        if not folder:
            raise ConfigError(f"dataset.args.{what} must name the latent folder")
        path = self.data_dir / folder
        if not path.is_dir():
            raise DataError(f"{path}: no such latent folder (dataset.args.{what})")
        return path

    def _keep_with(self, records: list[dict], folder: Path) -> list[dict]:
        kept = [r for r in records if (folder / f"{r['id']}.npz").is_file()]
        if len(kept) < len(records):
            log.warning("%d items have no latent in %s and are skipped", len(records) - len(kept), folder)
        return kept

    def condition_refs(self, items: list[int], step: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(item index [B], view [B])`` for the condition-feature cache."""
        views = [self.view_of(i, step, seed) for i in items]
        return torch.tensor(items, dtype=torch.long), torch.tensor(views, dtype=torch.long)


class ImageConditionedSparseStructureLatent(_ConditionedDataset):
    """Sparse-structure latents ``z [8, 16, 16, 16]`` (not normalised) with their condition views."""

    def _filter(self, records: list[dict]) -> list[dict]:
        self.folder = self._require(self.args.ss_latent, "ss_latent")
        return self._keep_with(records, self.folder)

    def collate(self, items: list[int], step: int) -> dict[str, Any]:
        zs = []
        for i in items:
            with np.load(self.folder / f"{self.records[i]['id']}.npz") as f:
                zs.append(torch.from_numpy(f["z"].astype(np.float32)))
        item, view = self.condition_refs(items, step, self.context.get("seed", 0))
        return {"x0": torch.stack(zs), "item": item, "view": view}


@dataclass(frozen=True)
class OccupancyDatasetArgs(DatasetArgs):
    grid: int = 16  # cells per side of the target occupancy (divides the 64^3 structure grid)

    def __post_init__(self) -> None:
        if self.grid < 1 or SS_GRID % self.grid:
            raise ValueError(f"grid must divide {SS_GRID}, got {self.grid}")


class ImageConditionedOccupancy(_ConditionedDataset):
    """Each asset's occupancy at ``grid^3`` (a cell is full when any of its 64^3 cells is) with its
    condition views: what the image encoder's pretraining predicts from a picture."""

    args_class = OccupancyDatasetArgs

    def collate(self, items: list[int], step: int) -> dict[str, Any]:
        res, grid = self.args.resolution, self.args.grid
        occ = np.stack([pooled_occupancy(occupied_cells(self.data_dir, res, self.records[i]["id"]), grid)
                        for i in items])
        item, view = self.condition_refs(items, step, self.context.get("seed", 0))
        return {"occupancy": torch.from_numpy(occ).float(), "item": item, "view": view}


class ImageConditionedSLatShape(_ConditionedDataset):
    """Normalised shape latents (sparse, packed) with their condition views."""

    def _filter(self, records: list[dict]) -> list[dict]:
        self.folder = self._require(self.args.shape_latent, "shape_latent")
        self.mean, self.std = _latent_stats(self.data_dir, "shape")
        records = self._keep_with(records, self.folder)
        self._tokens = {}
        kept = []
        for r in records:
            encoder_name = Path(self.args.shape_latent).name
            n = int(r.get("shape_latent_tokens", {}).get(encoder_name, 0)) or self._count(r["id"])
            if self.args.max_tokens and n > self.args.max_tokens:
                continue
            self._tokens[r["id"]] = n
            kept.append(r)
        return kept

    def _count(self, item_id: str) -> int:
        with np.load(self.folder / f"{item_id}.npz") as f:
            return int(f["coords"].shape[0])

    def tokens(self, index: int) -> int:
        return self._tokens[self.records[index]["id"]]

    def _read(self, folder: Path, item_id: str) -> tuple[np.ndarray, np.ndarray]:
        with np.load(folder / f"{item_id}.npz") as f:
            return f["coords"].astype(np.int32), f["feats"].astype(np.float32)

    def collate(self, items: list[int], step: int) -> dict[str, Any]:
        coords, feats = zip(*(self._read(self.folder, self.records[i]["id"]) for i in items))
        x0 = (torch.from_numpy(np.concatenate(feats)) - self.mean) / self.std
        item, view = self.condition_refs(items, step, self.context.get("seed", 0))
        return {"coords": _pack(list(coords)), "x0": x0, "batch_size": len(items), "item": item, "view": view}


class ImageConditionedSLatPbr(ImageConditionedSLatShape):
    """Normalised PBR latents with the normalised shape latent on the same voxels (``concat``)."""

    def _filter(self, records: list[dict]) -> list[dict]:
        self.pbr_folder = self._require(self.args.pbr_latent, "pbr_latent")
        self.pbr_mean, self.pbr_std = _latent_stats(self.data_dir, "pbr")
        records = self._keep_with(records, self.pbr_folder)
        return super()._filter(records)

    def collate(self, items: list[int], step: int) -> dict[str, Any]:
        batch = super().collate(items, step)
        pbr = []
        for i in items:
            coords, feats = self._read(self.pbr_folder, self.records[i]["id"])
            shape_coords, _ = self._read(self.folder, self.records[i]["id"])
            if not np.array_equal(coords, shape_coords):
                raise DataError(
                    f"{self.pbr_folder}/{self.records[i]['id']}.npz: PBR latent coords differ from "
                    "the shape latent's (encode both from the same O-Voxel)"
                )
            pbr.append(feats)
        batch["concat"] = batch.pop("x0")
        batch["x0"] = (torch.from_numpy(np.concatenate(pbr)) - self.pbr_mean) / self.pbr_std
        return batch


DATASETS: dict[str, type[TrainingDataset]] = {
    "SparseStructure": SparseStructureDataset,
    "FlexiDualGridDataset": FlexiDualGridDataset,
    "SparseVoxelPbrDataset": SparseVoxelPbrDataset,
    "ImageConditionedSparseStructureLatent": ImageConditionedSparseStructureLatent,
    "ImageConditionedOccupancy": ImageConditionedOccupancy,
    "ImageConditionedSLatShape": ImageConditionedSLatShape,
    "ImageConditionedSLatPbr": ImageConditionedSLatPbr,
}


def build_dataset(
    name: str, raw_args: dict, data_dir: str | Path, where: str, context: dict[str, Any] | None = None
) -> TrainingDataset:
    """The dataset ``name`` with its typed args; unknown names and keys are ``ConfigError``."""
    from .config import typed_args

    if name not in DATASETS:
        raise ConfigError(
            f"{where}: dataset.name: unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}"
        )
    cls = DATASETS[name]
    args = typed_args(cls.args_class, raw_args, f"{where}: dataset.args")
    return cls(data_dir, args, context)


class StepBatches(torch.utils.data.Dataset):
    """``index -> step``: the micro-batches of one rank at one step (for a ``DataLoader`` with workers)."""

    def __init__(self, dataset: TrainingDataset, plan: StepPlan, parts: int, first_step: int, last_step: int):
        self.dataset, self.plan, self.parts = dataset, plan, parts
        self.first_step, self.last_step = first_step, last_step

    def __len__(self) -> int:
        return max(0, self.last_step - self.first_step)

    def __getitem__(self, index: int) -> list[dict[str, Any]]:
        step = self.first_step + index
        items = self.plan.items(step)
        return [self.dataset.collate(group, step) for group in self.dataset.micro_batches(items, self.parts)]


def dataset_fields(cls: type[TrainingDataset]) -> list[str]:
    return [f.name for f in dataclasses.fields(cls.args_class)]
