"""Submanifold 3x3x3 sparse convolution (implicit GEMM over a cached neighbour map).

Weight layout is the official TRELLIS.2 / FlexGEMM one, ``[Co, 3, 3, 3, Ci]`` with the
kernel axes ordered (x, y, z) of the neighbour offset (index = offset + 1). The neighbour
map is ``[N, 27]`` int32, column ``v = 9 (dx+1) + 3 (dy+1) + (dz+1)``, ``-1`` when absent.

Modules: ``reference`` (plain torch, importable without Triton), ``ops`` (the Triton
launcher ``subm_conv3d``), ``kernel`` (the ``@triton.jit`` code), ``configs`` (autotuning).
"""

from .reference import subm_conv3d_reference

__all__ = ["subm_conv3d_reference"]
