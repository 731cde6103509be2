"""hydroscale.route(..., lakes=): array types, engines, warm start, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

import hydroscale
from hydroscale.network import RiverNetwork
from hydroscale.routing import LEVEL_POOL_PARAMS, LakeRouter, Lakes

DT = 3600.0


def _lakes() -> Lakes:
    p = dict(area=2e5, max_elevation=12.0, weir_elevation=10.5, weir_coefficient=0.8,
             weir_length=10.0, dam_length=10.0, orifice_elevation=5.0,
             orifice_coefficient=0.3, orifice_area=1.0)
    row = [p[c] for c in LEVEL_POOL_PARAMS]
    return Lakes.from_members({50: [3, 4], 60: [7]}, [row, row], [0.7, 0.8])


@pytest.fixture
def net() -> RiverNetwork:
    """1, 2 -> 3 -> 4 -> 5 -> 7 -> 8 (outlet), 6 -> 7: lake 50 = {3, 4}, lake 60 = {7}."""
    return RiverNetwork.from_arrays([1, 2, 3, 4, 5, 6, 7, 8], [3, 3, 4, 5, 7, 7, 8, 0])


def _runoff(net, t=20, seed=0):
    return np.random.default_rng(seed).uniform(0.5, 3.0, (net.n_reaches, t))


def test_route_with_lakes_matches_lake_router(net):
    r = _runoff(net)
    k_s = np.full(net.n_reaches, 1.2 * DT)
    q = hydroscale.route(net, r, "muskingum", {"k": k_s, "x": 0.1}, dt=DT, substeps=2,
                         lakes=_lakes())
    assert isinstance(q, np.ndarray) and q.shape == r.shape
    ref = LakeRouter(net, _lakes(), irf="muskingum", substeps=2, dt=DT, engine="oracle",
                     dtype=torch.float64)(torch.tensor(r)[None],
                                          torch.tensor(np.stack([k_s / DT, np.full(8, 0.1)], 1)))
    np.testing.assert_allclose(q, ref[0].numpy(), rtol=1e-6, atol=1e-9)
    # the block-sparse engine gives the same
    q2 = hydroscale.route(net, r, "muskingum", {"k": k_s, "x": 0.1}, dt=DT, substeps=2,
                          lakes=_lakes(), engine="torch")
    np.testing.assert_allclose(q2, q, rtol=1e-6, atol=1e-6)
    # lake reaches report the lake's outflow; the lake holds water back
    np.testing.assert_array_equal(q[2], q[3])
    free = hydroscale.route(net, r, "muskingum", {"k": k_s, "x": 0.1}, dt=DT, substeps=2)
    assert np.abs(free[7] - q[7]).max() > 0.1


def test_dataarray_and_gradient_to_lake_params(net):
    r = _runoff(net, 12)
    da = xr.DataArray(r[::-1], dims=("reach", "time"), coords={"reach": net.ids[::-1]})
    q = hydroscale.route(net, da, "muskingum", {"k": 1.5 * DT, "x": 0.1}, dt="1h",
                         lakes=_lakes())
    assert q.name == "discharge" and list(q["reach"].values) == list(net.ids[::-1])
    lp = torch.tensor(_lakes().params, requires_grad=True)
    qt = hydroscale.route(net, torch.tensor(r), "muskingum", {"k": 1.5 * DT, "x": 0.1},
                          dt=DT, lakes=_lakes(), lake_params=lp)
    np.testing.assert_allclose(q.sel(reach=net.ids).values, qt.detach().numpy(), rtol=1e-12)
    qt[-1].sum().backward()
    assert float(lp.grad[:, LEVEL_POOL_PARAMS.index("weir_coefficient")].abs().min()) > 0


def test_warm_start_with_lakes(net):
    """A steady discharge start: the reaches outside lakes start in the steady state that
    yields Q0 and each lake at the level releasing Q0 at its outlet; with the same constant
    inflow the whole network, lakes too, stays at Q0."""
    r = np.ones((net.n_reaches, 6))
    q0 = hydroscale.accumulate(net, np.ones(net.n_reaches))
    q = hydroscale.route(net, r, "muskingum", {"k": DT, "x": 0.1}, dt=DT, lakes=_lakes(),
                         initial=q0)
    want = np.array(q0)
    want[2] = q0[3]  # the lake's other reach reports its outflow too
    np.testing.assert_allclose(q, want[:, None] * np.ones((1, 6)), rtol=1e-9)
    dry = hydroscale.route(net, r, "muskingum", {"k": DT, "x": 0.1}, dt=DT, lakes=_lakes())
    assert dry[0, 0] < 0.9 * q0[0]


def test_lake_errors(net):
    r = _runoff(net, 4)
    with pytest.raises(ValueError, match="lakes need dt="):
        hydroscale.route(net, r, "muskingum", {"k": 1.0, "x": 0.1}, lakes=_lakes())
    with pytest.raises(ValueError, match="not supported with lakes yet"):
        hydroscale.route(net, r, "muskingum", {"k": DT, "x": 0.1}, dt=DT, lakes=_lakes(),
                         return_state=True)
    with pytest.raises(ValueError, match="lake_params= needs lakes="):
        hydroscale.route(net, r, "muskingum", {"k": DT, "x": 0.1}, dt=DT,
                         lake_params=_lakes().params)
