"""Procedural PBR training objects: furniture, vessels, tools, toys and buildings, deterministic by seed.

``generate_object(index, seed)`` builds one Z-up textured mesh; ``write_dataset`` writes a
set of them as GLB files with a fixed train/test split (``python -m backend.train.procedural``).
"""

from .dataset import DatasetSummary, held_out_indices, object_record, write_dataset, write_object
from .generator import (
                        CATEGORIES,
                        GENERATOR_VERSION,
                        KIND_NAMES,
                        ProceduralObject,
                        generate_object,
                        kind_of,
                        object_id,
)

__all__ = ["CATEGORIES", "GENERATOR_VERSION", "KIND_NAMES", "DatasetSummary", "ProceduralObject",
           "generate_object", "held_out_indices", "kind_of", "object_id", "object_record", "write_dataset",
           "write_object"]
