"""CatchmentInterpolator: hand-computed weights, volume conservation, staging, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hydroscale.models.interpolation import (
    CatchmentInterpolator,
    box_overlap_table,
    polygon_overlap_table,
)


def _grid(nx: int, ny: int, size: float) -> np.ndarray:
    """Cell boxes of an nx x ny grid of square cells (row-major, y outer)."""
    x0, y0 = np.meshgrid(np.arange(nx) * size, np.arange(ny) * size)
    x0, y0 = x0.ravel(), y0.ravel()
    return np.stack([x0, y0, x0 + size, y0 + size], axis=1)


def test_hand_computed_table():
    # 2 cells, 2 reaches (daily step): reach 10 gets 2 km² of cell "a" and 1 km² of cell "b",
    # reach 20 gets 3 km² of cell "b"; depth a = 1 mm, b = 2 mm on day 0, then 0 and 4 mm.
    interp = CatchmentInterpolator.from_table(
        ["a", "b", "b"], [10, 10, 20], [2.0, 1.0, 3.0], cells=["a", "b"], reaches=[10, 20],
        step_seconds=86400.0,
    )
    depth = torch.tensor([[[1.0, 0.0], [2.0, 4.0]]], dtype=torch.float64)
    q = interp(depth)
    # reach 10: (2 * 1 + 1 * 2) km²·mm = 4000 m³ per day; reach 20: 6000 m³ per day
    want = np.array([[[4000.0, 4000.0], [6000.0, 12000.0]]]) / 86400.0
    np.testing.assert_allclose(q.numpy(), want, rtol=1e-14)
    np.testing.assert_allclose(interp.dense(), [[2.0, 1.0], [0.0, 3.0]])


def test_table_errors_name_ids():
    with pytest.raises(ValueError, match="99"):
        CatchmentInterpolator.from_table([0], [99], [1.0], cells=[0], reaches=[1, 2],
                                         step_seconds=3600.0)
    with pytest.raises(ValueError, match="area_km2"):
        CatchmentInterpolator([0], [0], [-1.0], n_cells=1, n_reaches=1, step_seconds=1.0)
    with pytest.raises(ValueError, match="step_seconds"):
        CatchmentInterpolator([0], [0], [1.0], n_cells=1, n_reaches=1, step_seconds=0.0)
    with pytest.raises(ValueError, match="twice"):
        CatchmentInterpolator([0, 0], [0, 1], [1.0, 1.0], n_cells=1, n_reaches=2,
                              step_seconds=1.0, cell_area_km2=[1.5])


def test_boxes_hand_computed():
    # 2x2 grid of 1 km cells (in m); catchment 0 = left half, catchment 1 = a box across all
    cells = _grid(2, 2, 1000.0)
    cats = np.array([[0.0, 0.0, 1000.0, 2000.0], [500.0, 500.0, 1500.0, 1500.0]])
    c, r, a = box_overlap_table(cells, cats)
    w = np.zeros((2, 4))
    np.add.at(w, (r, c), a)
    np.testing.assert_allclose(w, [[1.0, 0.0, 1.0, 0.0], [0.25, 0.25, 0.25, 0.25]])


def test_polygon_matches_closed_form():
    # a triangle (0,0)-(2,0)-(0,2) km over a 2x2 grid of 1 km cells: areas 1, 0.5, 0.5, 0
    cells = _grid(2, 2, 1.0)
    tri = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    # a concave L-shape covering cells 0, 1 and 2 fully
    ell = np.array([[0, 0], [2, 0], [2, 1], [1, 1], [1, 2], [0, 2]], dtype=float)
    c, r, a = polygon_overlap_table(cells, [tri, ell[::-1]], length_unit="km")
    w = np.zeros((2, 4))
    np.add.at(w, (r, c), a)
    np.testing.assert_allclose(w, [[1.0, 0.5, 0.5, 0.0], [1.0, 1.0, 1.0, 0.0]], atol=1e-12)
    interp = CatchmentInterpolator.from_polygons(cells, [tri], step_seconds=1000.0,
                                                 length_unit="km")
    np.testing.assert_allclose(interp.catchment_area_km2(), [2.0])


def _random_interp(seed: int = 0) -> CatchmentInterpolator:
    """A 6x5 grid of 2 km cells split among 7 random box catchments that tile part of it."""
    rng = np.random.default_rng(seed)
    cells = _grid(6, 5, 2000.0)
    xs = np.sort(rng.uniform(0, 12000, 6))
    cats = []
    for i in range(7):
        xa, xb = (0.0, xs[0]) if i == 0 else (xs[i - 1], xs[i]) if i < 6 else (xs[5], 12000.0)
        cats.append([xa, 1000.0, xb, 9000.0])
    return CatchmentInterpolator.from_boxes(cells, np.array(cats), step_seconds=3600.0)


def test_volume_conserved():
    interp = _random_interp()
    rng = np.random.default_rng(1)
    depth = torch.tensor(rng.exponential(3.0, (2, interp.n_cells, 40)), dtype=torch.float64)
    q = interp(depth)
    vol_out = (q.sum(-1) * interp.step_seconds).sum(-1)
    vol_in = interp.volume_m3(depth)
    np.testing.assert_allclose(vol_out.numpy(), vol_in.numpy(), rtol=1e-6)
    # all catchments together cover rows y in [1000, 9000] of the 12 km x 10 km grid
    assert interp.catchment_area_km2().sum() == pytest.approx(12.0 * 8.0, rel=1e-12)
    # float32 too
    q32 = interp(depth.float())
    np.testing.assert_allclose((q32.double().sum(-1) * 3600.0).sum(-1).numpy(),
                               vol_in.numpy(), rtol=1e-6)


def test_subset_stages_own_weights():
    interp = _random_interp()
    depth = torch.rand(1, interp.n_cells, 9, dtype=torch.float64)
    full = interp(depth)
    for part in ([0, 1, 2], [6, 3], [5]):
        sub = interp.subset(part)
        assert sub.n_reaches == len(part)
        assert sub.n_cells < interp.n_cells
        # only cells that feed the part
        np.testing.assert_array_equal(
            np.sort(sub.source_cells), np.unique(interp.cell[np.isin(interp.reach, part)]))
        out = sub(sub.select_cells(depth))
        torch.testing.assert_close(out, full[:, part], rtol=1e-14, atol=0)
        np.testing.assert_array_equal(sub.reach_index, part)


def _same(a: CatchmentInterpolator, b: CatchmentInterpolator) -> None:
    for name in ("cell", "reach", "area_km2", "source_cells", "reach_index"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert (a.n_cells, a.n_reaches) == (b.n_cells, b.n_reaches)


def test_split_stages_each_worker_its_own_weights():
    """Clusters placed on two workers: split() per cluster equals subset() per cluster; per
    worker, each holds exactly the weight rows of its reaches and the cells feeding them, the
    workers' outputs are the full output's rows, and the gradient to the source field (cells
    shared by both workers included) is the full interpolator's."""
    cells = _grid(8, 6, 1000.0)
    rng = np.random.default_rng(3)
    xs = np.concatenate([[0.0], np.sort(rng.uniform(0, 8000, 5)), [8000.0]])
    ys = np.concatenate([[0.0], np.sort(rng.uniform(0, 6000, 3)), [6000.0]])
    cats = np.array([[xs[i], ys[j], xs[i + 1], ys[j + 1]] for j in range(4) for i in range(6)])
    interp = CatchmentInterpolator.from_boxes(cells, cats, step_seconds=86400.0)
    n = interp.n_reaches  # 24 catchments tiling the grid, with partial cell overlaps
    cluster_of = rng.integers(0, 5, n)
    clusters = [rng.permutation(np.flatnonzero(cluster_of == c)) for c in range(5)]
    for sub, part in zip(interp.split(clusters), clusters):
        _same(sub, interp.subset(part))
    worker_of = np.array([0, 1, 0, 1, 1])
    mine = [np.concatenate([clusters[c] for c in np.flatnonzero(worker_of == w)])
            for w in range(2)]
    parts = interp.split(mine)
    assert sum(p.nnz for p in parts) == interp.nnz
    depth = torch.rand(2, interp.n_cells, 5, dtype=torch.float64, requires_grad=True)
    full = interp(depth)
    w = torch.rand_like(full)
    (g_full,) = torch.autograd.grad((full * w).sum(), depth)
    total = 0.0
    for p, reaches in zip(parts, mine):
        # only its own rows and the cells that feed them
        own = np.isin(interp.reach, reaches)
        assert p.nnz == own.sum()
        np.testing.assert_array_equal(np.sort(p.source_cells), np.unique(interp.cell[own]))
        np.testing.assert_allclose(np.sort(p.area_km2), np.sort(interp.area_km2[own]),
                                   rtol=0, atol=0)
        out = p(p.select_cells(depth))
        torch.testing.assert_close(out, full[:, reaches], rtol=1e-14, atol=0)
        total = total + (out * w[:, reaches]).sum()
    shared = np.intersect1d(parts[0].source_cells, parts[1].source_cells)
    assert shared.size > 0  # some cells feed reaches on both workers
    (g_split,) = torch.autograd.grad(total, depth)
    torch.testing.assert_close(g_split, g_full, rtol=1e-12, atol=0)
    # reaches of no group are left out; overlapping groups and bad indices are errors
    assert interp.split([[0, 1]])[0].nnz == np.isin(interp.reach, [0, 1]).sum()
    with pytest.raises(ValueError, match="disjoint"):
        interp.split([[0, 1], [1, 2]])
    with pytest.raises(ValueError, match=r"outside \[0, 24\)"):
        interp.split([[0, 24]])


def test_gradient_matches_finite_differences():
    interp = _random_interp(3)
    depth = torch.rand(1, interp.n_cells, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(interp, (depth,), eps=1e-6, atol=1e-8)
    # closed form: d sum(q * g) / d depth_c = sum_j g_j * a_cj * 1e3 / dt
    g = torch.rand(1, interp.n_reaches, 5, dtype=torch.float64)
    (interp(depth) * g).sum().backward()
    want = np.einsum("jc,bjt->bct", interp.dense() * 1e3 / interp.step_seconds, g.numpy())
    np.testing.assert_allclose(depth.grad.numpy(), want, rtol=1e-12)


def test_wrong_depth_shape():
    interp = _random_interp()
    with pytest.raises(ValueError, match="n_cells=30"):
        interp(torch.zeros(1, 7, 3))


def test_time_chunks_equal_one_pass(monkeypatch):
    import hydroscale.models.interpolation as mod

    interp = _random_interp(5)
    depth = torch.rand(2, interp.n_cells, 23, dtype=torch.float64, requires_grad=True)
    whole = interp(depth)
    (g_whole,) = torch.autograd.grad(whole.square().sum(), depth)
    monkeypatch.setattr(mod, "_CHUNK_ELEMENTS", 2 * interp.nnz * 5)  # chunks of 5 steps
    chunked = interp(depth)
    (g_chunked,) = torch.autograd.grad(chunked.square().sum(), depth)
    torch.testing.assert_close(chunked, whole, rtol=1e-15, atol=0)
    torch.testing.assert_close(g_chunked, g_whole, rtol=1e-15, atol=0)
