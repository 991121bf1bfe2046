"""Export clean-ups and the QA report in result.json, on meshes with known defects."""

from __future__ import annotations

import json

import numpy as np

from backend.pipeline.api import ExportOptions
from backend.pipeline.export.asset import export_generated
from tests.fixtures.meshes import box, uv_sphere


def _defective():
    """A closed sphere with a small cube floating beside it and a small sphere inside it."""
    outer = uv_sphere(0.4, 16, 32)
    inner = uv_sphere(0.15, 8, 16)
    crumb = box(size=(0.03, 0.03, 0.03), center=(0.47, 0.0, 0.0))
    parts = (outer, inner, crumb)
    offsets = np.cumsum([0] + [p.num_vertices for p in parts[:-1]])
    return (np.concatenate([p.vertices for p in parts]),
            np.concatenate([p.faces + o for p, o in zip(parts, offsets)]))


def _grey(points):
    return np.full((len(points), 6), 0.5, np.float32)


def _qa(tmp_path, name, **cleanup):
    v, f = _defective()
    options = ExportOptions(texture_size=64, faces=100_000, write_glb=False, unwrap="fast", **cleanup)
    result = export_generated(v, f, _grey, tmp_path, name, options)
    doc = json.loads(result.direct.read_text())
    assert doc["qa"] == result.extra["qa"]
    return doc["qa"]


def test_qa_report_counts_the_defects(tmp_path):
    qa = _qa(tmp_path, "raw")
    assert (qa["shells"], qa["inner_shells"], qa["floaters"]) == (3, 1, 1)
    assert qa["watertight"] and qa["boundary_loops"] == 0 and qa["non_manifold_edges"] == 0
    assert qa["triangles"] > 0 and qa["texel_density"] > 0 and 0.0 <= qa["uv_overlap"] < 0.5
    assert qa["cleanup"] == []


def test_cleanup_removes_floaters_and_inner_shells(tmp_path):
    qa = _qa(tmp_path, "clean", remove_floaters=True, remove_inner_shells=True)
    assert (qa["shells"], qa["inner_shells"], qa["floaters"]) == (1, 0, 0)
    assert qa["watertight"]
    assert qa["cleanup"] and "removed" in qa["cleanup"][0]
    only_floaters = _qa(tmp_path, "floaters", remove_floaters=True)
    assert (only_floaters["shells"], only_floaters["inner_shells"], only_floaters["floaters"]) == (2, 1, 0)


def test_fill_holes_closes_a_small_hole(tmp_path):
    sphere = uv_sphere(0.05, 16, 32)
    # Drop the faces around one pole: a hole of perimeter 2 pi 0.05 sin(pi / 16) = 0.06.
    top = sphere.vertices[:, 2].max()
    keep = ~np.isclose(sphere.vertices[sphere.faces][..., 2], top).any(1)
    options = ExportOptions(texture_size=64, faces=100_000, write_glb=False, unwrap="fast")
    open_result = export_generated(sphere.vertices, sphere.faces[keep], _grey, tmp_path, "open", options)
    assert open_result.extra["qa"]["boundary_loops"] == 1 and not open_result.extra["qa"]["watertight"]
    filled = export_generated(sphere.vertices, sphere.faces[keep], _grey, tmp_path, "filled",
                              ExportOptions(texture_size=64, faces=100_000, write_glb=False, unwrap="fast",
                                            fill_holes=True))
    assert filled.extra["qa"]["boundary_loops"] == 0 and filled.extra["qa"]["watertight"]
