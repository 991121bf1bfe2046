"""``Trellis2Generator.warm_up``: one small decode where the sparse convs compile, nothing elsewhere."""

from __future__ import annotations

from backend.pipeline import generator as generator_module
from backend.pipeline.generator import Trellis2Generator
from backend.pipeline.runtime import Runtime


def test_warm_up_decodes_a_small_block_only_where_kernels_compile(tiny_checkpoint, monkeypatch):
    gen = Trellis2Generator(Runtime(model=str(tiny_checkpoint), device="cpu", offline=True))
    seen = []
    original = generator_module.decode

    def spy(*args, **kwargs):
        seen.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(generator_module, "decode", spy)
    assert gen.warm_up() is False and seen == []  # torch convs on the CPU: nothing to compile
    gen.store.get("shape_slat_decoder"), gen.store.get("tex_slat_decoder")  # loaded with torch convs
    gen.store.conv_backend = "triton"  # what a CUDA GPU with Triton chooses
    assert gen.warm_up() is True
    ((shape_decoder, tex_decoder, shape, texture, resolution),) = seen
    assert shape_decoder is gen.store.get("shape_slat_decoder") and resolution == 512
    assert len(shape) == 64 and shape.batch_size == 1 and len(texture) == 64
    assert shape.coords[:, 1:].min() == 14 and shape.coords[:, 1:].max() == 17  # a 4^3 block mid-grid
