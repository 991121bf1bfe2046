"""TRELLIS.2 generation backend.

Runs in its own Python environment (torch, triton), never inside Blender.
Importing this package is cheap: it imports neither torch nor bpy, so the
command-line entry point can start fast and report missing dependencies
clearly. Subpackages:

- ``geometry``: plain-numpy mesh and material types shared by every part.
- ``ovoxel``: textured mesh <-> O-Voxel conversion (no learned weights).
- ``sparse``: sparse voxel tensors and their cached neighbour maps.
- ``models``: the TRELLIS.2 networks and strict checkpoint loading.
- ``pipeline``: image -> 3D and retexture, sampling, baking and export.
- ``server``: the line-delimited JSON service that Blender drives.
"""

__version__ = "0.1.0"
