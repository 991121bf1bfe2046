"""Neural networks of TRELLIS.2: flow DiTs, the sparse-structure decoder and the SC-VAEs.

Public API (the SC-VAE classes live in :mod:`backend.models.sc_vae` and are imported lazily by
the registry so that the DiTs do not pull in the sparse-convolution stack):

* :class:`SparseStructureFlowModel`, :class:`SLatFlowModel`, :class:`SparseStructureDecoder`,
  :class:`SparseStructureEncoder` (training-data preparation);
* :class:`AttentionBackend` -- pick a kernel with ``model.set_attention_backend(...)``;
* :class:`CondKVCache` -- a sampler's per-job store of the flow DiTs' condition K/V;
* :func:`load_model`, :class:`CheckpointError` -- strict safetensors loading;
* :func:`read_pipeline_config` -- typed ``pipeline.json`` / ``texturing_pipeline.json``.
"""

from .attention import AttentionBackend, attention, flash_attn_available
from .flow_trunk import CondKVCache
from .loading import CheckpointError, load_model, read_model_config, resolve_checkpoint
from .pipeline_config import PipelineConfig, PipelineConfigError, read_pipeline_config
from .registry import model_class
from .slat_flow import SLatFlowModel
from .sparse_structure_flow import SparseStructureFlowModel
from .ss_decoder import SparseStructureDecoder
from .ss_encoder import SparseStructureEncoder

__all__ = [
    "AttentionBackend",
    "CheckpointError",
    "CondKVCache",
    "PipelineConfig",
    "PipelineConfigError",
    "SLatFlowModel",
    "SparseStructureDecoder",
    "SparseStructureEncoder",
    "SparseStructureFlowModel",
    "attention",
    "flash_attn_available",
    "load_model",
    "model_class",
    "read_model_config",
    "read_pipeline_config",
    "resolve_checkpoint",
]
