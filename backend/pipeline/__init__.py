"""Image -> 3D and retexture pipelines, sampling, baking and export."""
