"""Sparse compression VAEs (SC-VAE) of TRELLIS.2: shape (flexible dual grid) and texture."""

from .fdg import FlexiDualGridVaeDecoder, FlexiDualGridVaeEncoder
from .unet import SparseUnetVaeDecoder, SparseUnetVaeEncoder

__all__ = [
    "SparseUnetVaeEncoder",
    "SparseUnetVaeDecoder",
    "FlexiDualGridVaeEncoder",
    "FlexiDualGridVaeDecoder",
]
