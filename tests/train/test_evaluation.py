"""Held-out evaluation: surface sampling, colours, Chamfer / F-score / colour error, the driver end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from backend.colorspace import linear_to_srgb, srgb_to_linear
from backend.geometry import MeshError, PbrMaterial, TriangleMesh
from backend.meshio import read_mesh
from backend.train import evaluation as ev
from backend.train import metrics
from tests.fixtures import tiny_checkpoint as tiny_checkpoint_fixtures

tiny_release = tiny_checkpoint_fixtures.tiny_checkpoint  # the session's tiny random-weight release folder


def _cube(center=(0.0, 0.0, 0.0), side=1.0) -> TriangleMesh:
    """An axis-aligned cube of ``side`` (12 triangles, outward winding)."""
    corners = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
    faces = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                      [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
    return TriangleMesh(corners * side + np.asarray(center), faces)


def _quad(texture=None, uvs=None, factor=(1.0, 1.0, 1.0, 1.0), vertex_colors=None) -> TriangleMesh:
    """The unit square [0, 1]^2 at z = 0 (two triangles); uv = (x, y) unless given."""
    vertices = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    materials = [PbrMaterial(base_color_factor=factor, base_color_texture=texture)]
    return TriangleMesh(vertices, faces, uvs=vertices[:, :2].copy() if uvs is None else uvs,
                        vertex_colors=vertex_colors, materials=materials)


# ------------------------------------------------------------------------------- sampling


def test_sampling_is_uniform_deterministic_and_on_the_surface():
    # Triangles of area 1/2 and 3/2 (1x1 and 1x3 right triangles): a quarter of the samples land in the first.
    mesh = TriangleMesh(np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [2, 0, 0], [3, 0, 0], [2, 3, 0]], float),
                        np.array([[0, 1, 2], [3, 4, 5]]))
    a = metrics.sample_surface(mesh, 40_000, np.random.default_rng(7))
    b = metrics.sample_surface(mesh, 40_000, np.random.default_rng(7))
    assert np.array_equal(a.points, b.points) and np.array_equal(a.face_ids, b.face_ids)
    assert abs(np.mean(a.face_ids == 0) - 0.25) < 0.01
    assert (a.barycentrics >= 0).all() and np.allclose(a.barycentrics.sum(1), 1.0)
    corners = mesh.vertices[mesh.faces[a.face_ids]]
    assert np.allclose(np.einsum("nk,nkd->nd", a.barycentrics, corners), a.points)
    first = a.points[a.face_ids == 0]
    assert (first[:, 0] + first[:, 1] <= 1 + 1e-12).all()
    # Uniform inside a triangle: the centroid of the samples is the triangle's centroid.
    assert np.allclose(first.mean(0), [1 / 3, 1 / 3, 0], atol=0.01)
    # No material: the glTF default (white).
    assert np.allclose(a.colors, 1.0)


def test_zero_area_is_refused():
    flat = TriangleMesh(np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0]], float), np.array([[0, 1, 2]]))
    with pytest.raises(MeshError):
        metrics.sample_surface(flat, 10, np.random.default_rng(0))


def test_colours_of_a_two_colour_textured_quad():
    red, blue = (200, 10, 30), (20, 40, 250)
    texture = np.zeros((64, 64, 3), np.uint8)
    texture[:, :32], texture[:, 32:] = red, blue
    s = metrics.sample_surface(_quad(texture), 5000, np.random.default_rng(1))
    u = s.points[:, 0]
    # Bilinear with REPEAT: pure colours between the texel centres away from the seams at u = 0, 1/2, 1.
    left, right = (u > 1 / 64) & (u < 31 / 64), (u > 33 / 64) & (u < 63 / 64)
    assert left.sum() > 1000 and right.sum() > 1000
    np.testing.assert_allclose(s.colors[left], np.tile(np.array(red) / 255, (left.sum(), 1)), atol=1e-9)
    np.testing.assert_allclose(s.colors[right], np.tile(np.array(blue) / 255, (right.sum(), 1)), atol=1e-9)
    # Across a seam the colour is a mix of the two.
    lo, hi = np.minimum(red, blue) / 255 - 1e-9, np.maximum(red, blue) / 255 + 1e-9
    assert ((s.colors >= lo) & (s.colors <= hi)).all()


def test_factor_and_vertex_colours_multiply_in_linear_light():
    grey = np.full((4, 4, 3), 188, np.uint8)  # sRGB 188/255 -> linear ~0.5029
    linear = srgb_to_linear(np.array([188 / 255]))[0]
    s = metrics.sample_surface(_quad(grey, factor=(0.5, 1.0, 1.0, 1.0)), 100, np.random.default_rng(2))
    expected = linear_to_srgb(np.array([0.5 * linear, linear, linear]))
    np.testing.assert_allclose(s.colors, np.tile(expected, (100, 1)), atol=1e-9)
    # Vertex colours alone (no texture): linear RGBA interpolated, then encoded to sRGB.
    vc = np.array([[0.0, 0, 0, 1], [1, 0, 0, 1], [1, 0, 0, 1], [0, 0, 0, 1]])
    s = metrics.sample_surface(_quad(vertex_colors=vc), 500, np.random.default_rng(3))
    np.testing.assert_allclose(s.colors[:, 0], linear_to_srgb(s.points[:, 0]), atol=1e-9)
    assert np.allclose(s.colors[:, 1:], 0.0)


def test_canonical_normalization_centres_and_scales_the_longest_side_to_one():
    box = TriangleMesh(_cube().vertices * np.array([4.0, 2.0, 1.0]) + 7.0, _cube().faces)
    lo, hi = metrics.canonical_normalize(box).bounds()
    np.testing.assert_allclose(lo, [-0.5, -0.25, -0.125])
    np.testing.assert_allclose(hi, [0.5, 0.25, 0.125])
    diagonal = metrics.bounding_box_diagonal(metrics.canonical_normalize(box))
    assert diagonal == pytest.approx(np.sqrt(1 + 0.25 + 0.0625))


# ------------------------------------------------------------------------------- metrics


def test_point_set_metrics_by_hand():
    pred = np.array([[0.0, 0, 0], [1, 0, 0]])
    gt = np.array([[0.0, 0, 0], [0, 0, 3]])
    # pred -> gt: 0, 1 (mean 0.5); gt -> pred: 0, 3 (mean 1.5); Chamfer = 1.
    assert metrics.chamfer_distance(pred, gt) == pytest.approx(1.0)
    # At 1.5: precision 1, recall 1/2 -> F = 2/3; at 0.5: precision 1/2, recall 1/2 -> 1/2.
    assert metrics.f_score(pred, gt, 1.5) == pytest.approx(2 / 3)
    assert metrics.f_score(pred, gt, 0.5) == pytest.approx(0.5)
    assert metrics.f_score(pred + 10, gt, 0.5) == 0.0
    # The torch path (exhaustive cdist) agrees with the k-d tree.
    rng = np.random.default_rng(0)
    q, r = rng.random((500, 3)), rng.random((300, 3))
    d_tree, i_tree = metrics.nearest_neighbors(q, r)
    d_torch, i_torch = metrics.nearest_neighbors(q, r, device="cpu", chunk_elements=1000)
    np.testing.assert_allclose(d_torch, d_tree, rtol=1e-12)
    assert np.array_equal(i_torch, i_tree)


def test_identical_meshes_score_perfectly():
    texture = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    quad = _quad(texture)
    m = metrics.compare_meshes(quad, quad, num_points=2000, seed=5)
    assert m.chamfer == 0.0 and m.f_score_1pct == 1.0 and m.f_score_5pct == 1.0 and m.color_error == 0.0
    # Scale and placement do not matter (canonical normalization).
    moved = TriangleMesh(quad.vertices * 3.0 + 2.0, quad.faces, uvs=quad.uvs, materials=quad.materials)
    m = metrics.compare_meshes(moved, quad, num_points=2000, seed=5)
    assert m.chamfer < 1e-12 and m.f_score_1pct == 1.0 and m.color_error < 1e-12


def test_shifted_cube_chamfer_and_f_score():
    """Unit cube A vs A shifted by d along x (d <= 1/2), compared as point samples without normalization.

    Exact surface-to-surface directed mean (either direction, by symmetry): the -x face (area 1) is
    at distance d; the four side faces give d^2/2 each; the +x face, inside B, is at
    min(d, 1/2 - |y|, 1/2 - |z|), which integrates to d - 2d^2 + 4d^3/3. Over area 6:
    d/3 + 2d^3/9. Samples add a small positive bias (the nearest sample is not the nearest point).
    """
    d, n = 0.1, 30_000
    a = metrics.sample_surface(_cube(), n, np.random.default_rng(0))
    b = metrics.sample_surface(_cube(center=(d, 0, 0)), n, np.random.default_rng(1))
    chamfer = metrics.chamfer_distance(a.points, b.points)
    exact = d / 3 + 2 * d**3 / 9
    assert exact - 0.002 < chamfer < exact + 0.008
    assert d / 6 < chamfer < d  # the cruder bounds: the -x face alone, and every point moves by at most d
    # Every point of A is within d of B's surface: F = 1 above d plus the sample spacing.
    assert metrics.f_score(a.points, b.points, 2 * d) == 1.0
    # Below d the -x face (1/6 of the area) is out of reach: precision and recall <= 5/6 + noise.
    assert metrics.f_score(a.points, b.points, d / 2) < 5 / 6 + 0.01
    # compare_samples agrees with the separate functions.
    m = metrics.compare_samples(b, a, gt_diagonal=np.sqrt(3))
    assert m.chamfer == pytest.approx(chamfer)
    assert m.f_score_5pct == pytest.approx(metrics.f_score(b.points, a.points, 0.05 * np.sqrt(3)))
    assert m.color_error == 0.0


def test_colour_error_uses_the_nearest_predicted_sample():
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255
    black = np.zeros((4, 4, 3), np.uint8)
    m = metrics.compare_meshes(_quad(black), _quad(red), num_points=1000, seed=0)
    assert m.chamfer == 0.0 and m.color_error == pytest.approx(1 / 3)
    assert torch.get_default_dtype() == torch.float32  # nothing here changed global torch state


# ------------------------------------------------------------------------------- the driver


def _fake_data(root: Path) -> tuple[Path, Path]:
    """A data folder with 2 held-out and 2 training objects (plus a failed record), and their GLBs.

    Held-out "a" has a rendered condition picture; held-out "b" has a fully transparent one (the
    pipeline refuses it: an empty foreground), so every method must record a failure for it.
    """
    from backend.meshio import write_glb, z_up_to_y_up
    from backend.render import orbit_camera, render_mesh

    data, meshes = root / "data", root / "meshes"
    meshes.mkdir(parents=True)
    records = []
    shapes = {"a": (0.8, 0.6, 0.4), "b": (0.5, 0.5, 0.9), "t1": (0.9, 0.3, 0.3), "t2": (0.6, 0.7, 0.5)}
    split = {"a": "test", "b": "test", "t1": "train", "t2": "train"}
    camera = orbit_camera(0.6, 0.4, 2.5, 0.7)
    for i, (object_id, size) in enumerate(shapes.items()):
        texture = np.zeros((8, 8, 3), np.uint8)
        texture[:, :4], texture[:, 4:] = (220, 40, 40 + 50 * i), (30, 60 + 40 * i, 200)
        cube = _cube()
        box = TriangleMesh(cube.vertices * np.array(size), cube.faces, uvs=cube.vertices[:, :2] + 0.5,
                           materials=[PbrMaterial(base_color_texture=texture)])
        write_glb(meshes / f"{object_id}.glb", z_up_to_y_up(box))
        pictures = data / "renders_cond" / object_id
        pictures.mkdir(parents=True)
        rgba = render_mesh(box, camera, 96).rgba_uint8()
        if object_id == "b":
            rgba[..., 3] = 0
        for view in range(2):
            Image.fromarray(rgba, "RGBA").save(pictures / f"{view:03d}.png")
        records.append({"id": object_id, "split": split[object_id], "status": "ok",
                        "normalization": {"center": [0, 0, 0], "scale": 1.0}})
    records.append({"id": "broken", "split": "test", "status": "failed"})
    (data / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return data, meshes


@pytest.mark.slow
def test_evaluate_release_end_to_end_on_the_tiny_checkpoint(tmp_path, tiny_release):
    data, meshes = _fake_data(tmp_path)
    out = tmp_path / "eval"
    report = ev.evaluate_release(tiny_release, data, meshes, out, device="cpu", view=0, seed=0, steps=2,
                                 num_points=2000, grid_cell=48)
    assert report.table == out / "table.md" and report.grid == out / "grid.png"
    rows = [json.loads(line) for line in report.results.read_text().splitlines()]
    methods = ("ours", "random", "retrieval")
    assert sorted((r["object_id"], r["method"]) for r in rows) == [(o, m) for o in "ab" for m in methods]
    by = {(r["object_id"], r["method"]): r for r in rows}
    for method in ("ours", "random", "retrieval"):
        failed = by["b", method]
        assert failed["status"] == "failed" and failed["chamfer"] is None and failed["f_score_5pct"] == 0.0
        assert "foreground is empty" in failed["error"]
    # Retrieval on "a" finds a training object and scores its mesh; a box vs a box is not far off.
    hit = by["a", "retrieval"]
    assert hit["status"] == "ok" and hit["extra"]["retrieved"] in ("t1", "t2") and 0 <= hit["chamfer"] < 0.5
    # The random-weight networks may or may not find a surface; either way the outcome is recorded.
    for method in ("ours", "random"):
        assert by["a", method]["status"] in ("ok", "failed")
        if by["a", method]["status"] == "ok":
            written = read_mesh(by["a", method]["prediction"])  # the decoded mesh, vertex-coloured
            assert written.num_faces == by["a", method]["extra"]["faces"]
            assert written.vertex_colors is not None
            assert by["a", method]["chamfer"] >= 0
    summary = json.loads(report.summary.read_text())
    assert list(summary["methods"]) == ["ours", "random", "retrieval"]
    assert summary["held_out_objects"] == 2
    for method, s in summary["methods"].items():
        assert s["objects"] == 2 and s["failed"] == sum(by[o, method]["status"] == "failed" for o in "ab")
    assert summary["methods"]["retrieval"]["f_score_5pct_mean"] == pytest.approx(hit["f_score_5pct"] / 2)
    table = report.table.read_text().splitlines()
    assert table[0].startswith("| method | objects | failed | Chamfer median")
    assert [line.split("|")[1].strip() for line in table[2:5]] == ["ours", "random", "retrieval"]
    grid = Image.open(report.grid)
    assert grid.size == (4 * 48, 16 + 2 * 48)  # columns input / ours / retrieval / GT; one row per object
    pixels = np.asarray(grid.convert("RGB"))
    gt_cell = pixels[16:16 + 48, 3 * 48:4 * 48]
    assert (gt_cell != 255).any()  # the ground truth of "a" is drawn
    assert (out / "random_release" / "pipeline.json").is_file()


def test_true_occupancy_pools_the_cells_and_repeats_them_per_sample():
    cells = np.array([[0, 0, 0], [1, 1, 1], [63, 2, 5], [62, 3, 4]], np.uint8)  # 64^3 cells
    sampler = ev.TrueOccupancy()
    with pytest.raises(ev.EvaluationError, match="no object's occupancy"):
        sampler.occupancy(None, None, torch.zeros(1, 3, 4), None, None, 32, None)
    sampler.cells = cells
    coords = sampler.occupancy(None, None, torch.zeros(2, 3, 4), None, None, 32, None)
    expected = {(0, 0, 0), (31, 1, 2)}  # both pairs of neighbours share a 2^3 block
    assert coords.dtype == torch.int32 and coords.shape == (4, 4)
    assert {tuple(c[1:]) for c in coords.tolist()} == expected
    assert sorted(coords[:, 0].tolist()) == [0, 0, 1, 1]


@pytest.mark.slow
def test_the_true_structure_ablation_generates_on_each_objects_own_voxels(tmp_path, tiny_release,
                                                                          monkeypatch):
    from backend.pipeline import image_to_3d

    data, meshes = _fake_data(tmp_path)
    occupancy = data / "ss_occupancy"
    occupancy.mkdir()
    block = [[x, y, z] for x in range(20, 28) for y in range(24, 30) for z in range(30, 34)]
    cells = np.array(block, np.uint8)
    np.savez(occupancy / "a.npz", cells=cells)
    np.savez(occupancy / "b.npz", cells=cells)
    seen = []
    original = image_to_3d.sample_shape

    def spy(flow, coords, *args, **kwargs):
        seen.append(coords.cpu())
        return original(flow, coords, *args, **kwargs)

    monkeypatch.setattr(image_to_3d, "sample_shape", spy)
    report = ev.evaluate_release(tiny_release, data, meshes, tmp_path / "eval", device="cpu", view=0, steps=1,
                                 num_points=500, grid_cell=32, baselines=(), limit=1, structure="true")
    (coords,) = seen  # only "a" (limit 1), with the 4 x 3 x 2 blocks its 8 x 6 x 4 cells fill on 32^3
    assert sorted(map(tuple, coords[:, 1:].tolist())) == [
        (x, y, z) for x in range(10, 14) for y in range(12, 15) for z in range(15, 17)]
    assert json.loads(report.summary.read_text())["stage_1"] == "each object's true occupancy"
    with pytest.raises(ValueError, match="unknown structure"):
        ev.evaluate_release(tiny_release, data, meshes, tmp_path / "eval2", device="cpu", structure="oracle")


def test_random_release_has_the_same_configs_and_new_weights(tmp_path, tiny_release):
    from safetensors.torch import load_file

    copy = ev.write_random_release(tiny_release, tmp_path / "random", seed=3)
    for config in sorted((tiny_release / "ckpts").glob("*.json")):
        assert json.loads((copy / "ckpts" / config.name).read_text()) == json.loads(config.read_text())
    stem = "slat_flow_img2shape_dit_1_3B_512_bf16"
    old = load_file(str(tiny_release / "ckpts" / f"{stem}.safetensors"))
    new = load_file(str(copy / "ckpts" / f"{stem}.safetensors"))
    assert old.keys() == new.keys()
    assert any(not torch.equal(old[k], new[k]) for k in old if old[k].is_floating_point())
    assert (copy / "dinov3_tiny" / "config.json").is_file()
    encoder = json.loads((copy / "pipeline.json").read_text())["args"]["image_cond_model"]["args"]
    assert Path(encoder["model_name"]) == copy / "dinov3_tiny"  # redirected to the copy's own encoder folder


def test_no_held_out_objects_is_an_error(tmp_path):
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"id": "x", "split": "train", "status": "ok"}) + "\n")
    with pytest.raises(ev.EvaluationError):
        ev.evaluate_release(tmp_path, tmp_path, tmp_path, tmp_path / "out", device="cpu")
    with pytest.raises(ValueError, match="unknown baseline"):
        ev.evaluate_release(tmp_path, tmp_path, tmp_path, tmp_path / "out", device="cpu", baselines=("dino",))


def test_cli_reports_a_missing_data_folder(tmp_path, capsys):
    import importlib.util

    path = Path(__file__).parents[2] / "scripts" / "eval_mini.py"
    spec = importlib.util.spec_from_file_location("eval_mini", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    code = script.main(["--release", str(tmp_path), "--data", str(tmp_path / "none"),
                        "--meshes", str(tmp_path), "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert code == 1 and "metadata.jsonl" in capsys.readouterr().err


def test_cli_settings_reach_the_evaluation(tmp_path, monkeypatch):
    import importlib.util

    path = Path(__file__).parents[2] / "scripts" / "eval_mini.py"
    spec = importlib.util.spec_from_file_location("eval_mini", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    seen = {}

    def fake_evaluate(*args, **kwargs):
        seen.update(kwargs)
        raise ev.EvaluationError("stop here")

    monkeypatch.setattr(script, "evaluate_release", fake_evaluate)
    common = ["--release", str(tmp_path), "--data", str(tmp_path), "--meshes", str(tmp_path),
              "--out", str(tmp_path / "out")]
    assert script.main(common + ["--view", "3", "--steps", "2", "--limit", "5", "--baselines", "random"]) == 1
    assert (seen["view"], seen["steps"], seen["limit"], seen["baselines"]) == (3, 2, 5, ["random"])
    assert seen["structure"] == "flow"
    assert script.main(common + ["--structure", "true"]) == 1 and seen["structure"] == "true"
    assert script.main(common) == 1
    assert seen["view"] is None  # each object's photo-like view


def test_decoded_mesh_carries_the_voxels_base_colour():
    class Decoded:
        vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float64)
        faces = np.array([[0, 1, 2]], np.int64)

        def attribute_fn(self):
            return lambda points: np.tile([0.5, 0.2, 0.9, 0.0, 1.0, 1.0], (len(points), 1)).astype(np.float32)

    mesh = ev.decoded_mesh(Decoded())
    assert mesh.num_faces == 1 and mesh.vertex_colors.shape == (3, 4)
    samples = metrics.sample_surface(mesh, 20, np.random.default_rng(0))
    np.testing.assert_allclose(samples.colors, np.tile([0.5, 0.2, 0.9], (20, 1)), atol=1e-6)  # sRGB again
    Decoded.faces = np.zeros((0, 3), np.int64)
    with pytest.raises(MeshError, match="no surface"):
        ev.decoded_mesh(Decoded())


def test_grid_shows_only_the_columns_asked_for(tmp_path):
    picture = tmp_path / "p.png"
    Image.new("RGBA", (32, 32), (200, 10, 10, 255)).save(picture)
    rows = [("a", picture, {"ours": None, "ground truth": None})]
    columns = [c for c in ev.GRID_COLUMNS if c != ev.BASELINE_RETRIEVAL]
    grid = Image.open(ev.write_grid(tmp_path / "g.png", rows, 40, "cpu", columns))
    assert grid.size == (3 * 40, 16 + 40)
    full = Image.open(ev.write_grid(tmp_path / "f.png", rows, 40, "cpu"))
    assert full.size == (4 * 40, 16 + 40)
    assert (np.asarray(grid.convert("RGB"))[16 + 20, 20] == (200, 10, 10)).all()  # the input picture
