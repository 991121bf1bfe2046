"""The box-constrained QEF solve picks the least-energy point of the unit box."""

import numpy as np

from backend.ovoxel._qef import _constrained, _energy


def _grid_minimum(A, b, steps=41):
    t = np.linspace(0.0, 1.0, steps)
    pts = np.stack(np.meshgrid(t, t, t, indexing="ij"), -1).reshape(-1, 3)
    energies = np.einsum("ni,ij,nj->n", pts, A, pts) + 2.0 * pts @ b
    return energies.min()


def test_constrained_minimum_is_not_beaten_by_a_dense_grid():
    rng = np.random.default_rng(0)
    for _ in range(50):
        m = rng.normal(size=(3, 3))
        A = m @ m.T + 1e-3 * np.eye(3)
        b = rng.normal(size=3) * 3.0  # free minima mostly far outside the box
        best = _constrained(A, b)
        assert best.min() >= -1e-9 and best.max() <= 1.0 + 1e-9
        assert _energy(A, b, best) <= _grid_minimum(A, b) + 1e-9


def test_corner_wins_when_the_minimum_lies_beyond_it():
    A = np.eye(3)
    b = np.array([-5.0, 5.0, -5.0])  # free minimum at (5, -5, 5)
    np.testing.assert_allclose(_constrained(A, b), [1.0, 0.0, 1.0])
