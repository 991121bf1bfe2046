"""Data toolkit: mesh folder -> O-Voxels, condition renders, latents and statistics.

Run as ``python -m backend.train.data {prepare,encode,merge} ...``; see :mod:`.layout` for the
folder layout the trainers read.
"""

from .encode import Encoder, encode_batch, encode_dataset, load_encoder, occupancy_grid
from .layout import DataLayout, DataToolkitError, list_meshes, read_split
from .merge import dataset_statistics, latent_statistics, merge_records
from .prepare import PrepareOptions, RunSummary, convert_asset, prepare_dataset, shard

__all__ = [
    "Encoder", "encode_batch", "encode_dataset", "load_encoder", "occupancy_grid",
    "DataLayout", "DataToolkitError", "list_meshes", "read_split", "dataset_statistics",
    "latent_statistics", "merge_records", "PrepareOptions", "RunSummary", "convert_asset",
    "prepare_dataset", "shard",
]
