"""hydroscale.accumulate / upstream / downstream: hand-computed, networkx and oracle checks."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import torch
import xarray as xr

import hydroscale as hs
from hydroscale.network import RiverNetwork, continental_forest
from hydroscale.routing import route_oracle

# small_tree (tests/conftest.py): ids [6, 3, 1, 9, 4, 2, 5] draining to [0, 5, 3, 0, 5, 3, 6]
#   1, 2 -> 3;  3, 4 -> 5 -> 6 (outlet);  9 (outlet)
POW2 = np.array([1, 2, 4, 8, 16, 32, 64])  # one bit per reach: sums name the reaches summed
ACCUMULATED = [119, 38, 4, 8, 16, 32, 118]  # 6: all of 1,2,3,4,5,6; 3: 1,2,3; 5: 1,2,3,4,5
UPSTREAM = [64, 36, 0, 0, 0, 0, 18]  # 6 <- 5; 3 <- 1, 2; 5 <- 3, 4
DOWNSTREAM = [0, 64, 2, 0, 64, 2, 1]  # 3 -> 5, 1 -> 3, 4 -> 5, 2 -> 3, 5 -> 6; outlets 0


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def forest() -> RiverNetwork:
    return continental_forest(500, seed=2)


def test_hand_computed(small_tree):
    np.testing.assert_array_equal(hs.accumulate(small_tree, POW2), ACCUMULATED)
    np.testing.assert_array_equal(hs.upstream(small_tree, POW2), UPSTREAM)
    np.testing.assert_array_equal(hs.downstream(small_tree, POW2), DOWNSTREAM)
    filled = hs.downstream(small_tree, POW2.astype(float), fill_value=np.nan)
    assert np.isnan(filled[[0, 3]]).all() and filled[1] == 64


def test_skipna_counts_nan_as_zero(small_tree):
    """NaN is refused by default (tests/test_bad_input.py); skipna=True counts it as 0."""
    field = POW2.astype(float)
    field[2] = np.nan  # reach 1
    want = np.array(ACCUMULATED, float) - np.array([4, 4, 4, 0, 0, 0, 4])
    np.testing.assert_array_equal(hs.accumulate(small_tree, field, skipna=True), want)
    np.testing.assert_array_equal(hs.upstream(small_tree, field, skipna=True),
                                  np.array(UPSTREAM, float) - [0, 4, 0, 0, 0, 0, 0])
    da = xr.DataArray(np.stack([field, field]), dims=("time", "reach"),
                      coords={"reach": small_tree.ids})
    np.testing.assert_array_equal(hs.accumulate(small_tree, da, skipna=True).values,
                                  np.stack([want, want]))
    field[3] = np.inf  # infinite values are refused either way
    with pytest.raises(ValueError, match=r"field has 1 infinite value\(s\); first at reach id 9"):
        hs.accumulate(small_tree, field, skipna=True)


def test_counts_from_bool_and_dtypes(small_tree):
    counts = hs.accumulate(small_tree, np.ones(7, dtype=bool))
    assert counts.dtype == np.int64
    np.testing.assert_array_equal(counts, [6, 3, 1, 1, 1, 1, 5])
    a = hs.accumulate(small_tree, POW2.astype(np.int32))
    assert a.dtype == np.int32
    np.testing.assert_array_equal(a, ACCUMULATED)
    d = hs.downstream(small_tree, POW2 > 10)
    assert d.dtype == bool
    np.testing.assert_array_equal(d, np.asarray(DOWNSTREAM) > 10)
    f = hs.accumulate(small_tree, POW2.astype(np.float32))
    assert f.dtype == np.float32


def test_against_networkx(forest):
    field = np.random.default_rng(0).uniform(size=forest.n_reaches)
    g = forest.to_networkx()
    pos = {int(i): k for k, i in enumerate(forest.ids)}
    want = np.array(
        [field[[pos[a] for a in nx.ancestors(g, int(i))]].sum() + field[pos[int(i)]]
         for i in forest.ids]
    )
    np.testing.assert_allclose(hs.accumulate(forest, field), want, rtol=1e-12)
    up = np.array([sum(field[pos[u]] for u in g.predecessors(int(i))) for i in forest.ids])
    np.testing.assert_allclose(hs.upstream(forest, field), up, rtol=1e-12)
    down = np.array(
        [sum(field[pos[d]] for d in g.successors(int(i))) for i in forest.ids]
    )  # at most one successor; none at outlets gives 0 = the default fill
    np.testing.assert_array_equal(hs.downstream(forest, field), down)


@pytest.mark.parametrize("shape", [(None, 9), (3, 9)])
def test_over_time_equals_pure_lag_zero_routing(forest, shape):
    b, t = shape
    size = (forest.n_reaches, t) if b is None else (b, forest.n_reaches, t)
    field = np.random.default_rng(1).uniform(size=size)
    want = route_oracle(forest, field, "pure_lag", {"delay": np.float64(0.0)}).numpy()
    got = hs.accumulate(forest, field)
    assert got.shape == field.shape
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_torch_gradient_is_the_downstream_sum(forest, device):
    n = forest.n_reaches
    rng = np.random.default_rng(2)
    x = torch.tensor(rng.uniform(size=(n, 4)), device=device, requires_grad=True)
    w = torch.tensor(rng.uniform(size=(n, 4)), device=device)
    acc = hs.accumulate(forest, x)
    assert acc.device == x.device and acc.dtype == x.dtype
    (acc * w).sum().backward()
    # d/dx_i of sum_j w_j acc_j = sum of w over i and every reach downstream of i
    g = forest.to_networkx()
    pos = {int(i): k for k, i in enumerate(forest.ids)}
    wn = w.cpu().numpy()
    want = np.stack(
        [wn[[pos[d] for d in nx.descendants(g, int(i))] + [pos[int(i)]]].sum(0)
         for i in forest.ids]
    )
    np.testing.assert_allclose(x.grad.cpu().numpy(), want, rtol=1e-12)


def test_xarray_labels_kept_and_aligned(small_tree):
    perm = np.array([3, 0, 6, 2, 5, 1, 4])
    da = xr.DataArray(
        np.stack([POW2[perm], 2 * POW2[perm]]).astype(float),
        dims=("member", "reach"),
        coords={"member": ["a", "b"], "reach": small_tree.ids[perm], "area": ("reach", perm)},
        attrs={"units": "km2"},
        name="area",
    ).T
    out = hs.accumulate(small_tree, da)
    assert out.dims == ("reach", "member") and out.attrs == {"units": "km2"}
    assert out.name == "area"
    np.testing.assert_array_equal(out["reach"].values, da["reach"].values)
    np.testing.assert_array_equal(out["area"].values, perm)
    np.testing.assert_array_equal(out.sel(member="a").values, np.asarray(ACCUMULATED)[perm])
    np.testing.assert_array_equal(out.sel(member="b").values, 2 * np.asarray(ACCUMULATED)[perm])
    one = hs.upstream(small_tree, da.sel(member="a"))
    assert one.dims == ("reach",)
    np.testing.assert_array_equal(one.values, np.asarray(UPSTREAM)[perm])


def test_errors(small_tree):
    with pytest.raises(ValueError, match=r"\[N\], \[N, T\] or \[B, N, T\] with N = 7"):
        hs.accumulate(small_tree, np.ones(6))
    with pytest.raises(ValueError, match=r"got shape \(1, 1, 7, 2\)"):
        hs.accumulate(small_tree, np.ones((1, 1, 7, 2)))
    with pytest.raises(TypeError, match="field must be one of numpy.ndarray"):
        hs.accumulate(small_tree, list(range(7)))
    with pytest.raises(ValueError, match=r"not in the network: \[99\]"):
        hs.accumulate(
            small_tree,
            xr.DataArray(np.ones(7), dims="reach", coords={"reach": [6, 3, 1, 9, 4, 2, 99]}),
        )
