"""The level-pool lake against a plain-Python float64 reference written from the published
NWM / WRF-Hydro LEVELPOOL_PHYSICS equations (weir, orifice, overtopping; third-order
Runge-Kutta), per lake per step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _lake_reference import ref_route

from hydroscale.routing import (
    LEVEL_POOL_PARAMS,
    elevation_for_outflow,
    initial_elevation,
    level_pool_discharge,
    level_pool_params,
    route_level_pool,
)


def lake(**kw) -> dict:
    base = dict(area=2.0e6, max_elevation=110.0, weir_elevation=108.0, weir_coefficient=0.4,
                weir_length=30.0, dam_length=10.0, orifice_elevation=100.0,
                orifice_coefficient=0.1, orifice_area=2.0)
    base.update(kw)
    return base


# inflow series (m3/s) and initial fractional depths for the four hand-built cases
CASES = {
    # starts above the weir crest with a flood: weir + orifice, then overtopping
    "spill": (lake(area=3.0e5), 0.85, [50.0, 400.0, 900.0, 700.0, 300.0, 80.0, 20.0, 5.0]),
    # the weir is never reached: orifice only
    "orifice_only": (lake(), 0.3, [2.0, 5.0, 3.0, 0.0, 0.0, 1.0, 4.0, 2.0]),
    # empty start (at the orifice): nothing flows until the level rises
    "empty_start": (lake(area=5.0e5), 0.0, [0.0, 0.0, 30.0, 60.0, 10.0, 0.0, 0.0, 0.0]),
    # full start (at the max elevation): draws down over the weir
    "full_start": (lake(), 1.0, [0.0, 0.0, 10.0, 0.0, 0.0, 0.0, 0.0, 0.0]),
}


def _tensor_params(lakes: list[dict]) -> torch.Tensor:
    return torch.tensor([[lk[k] for k in LEVEL_POOL_PARAMS] for lk in lakes],
                        dtype=torch.float64)


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_reference(name):
    lk, ifd, inflow = CASES[name]
    dt = 3600.0
    h0 = lk["orifice_elevation"] + ifd * (lk["max_elevation"] - lk["orifice_elevation"])
    ref_q, ref_h = ref_route(inflow, lk, dt, h0)
    p = level_pool_params(_tensor_params([lk]))
    start = initial_elevation(p, [ifd])
    assert float(start[0]) == pytest.approx(h0, rel=1e-15)
    x = torch.tensor(inflow, dtype=torch.float64).view(1, 1, -1)
    q, h_end, levels = route_level_pool(x, p, dt, start, return_elevation=True)
    np.testing.assert_allclose(q[0, 0].numpy(), ref_q, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(levels[0, 0].numpy(), ref_h, rtol=1e-9)
    assert float(h_end[0, 0]) == pytest.approx(ref_h[-1], rel=1e-12)
    if name == "spill":  # the case really spills and overtops
        assert max(ref_h) > lk["max_elevation"]
        assert max(ref_q) > 100.0
    if name == "orifice_only":
        assert max(ref_h) < lk["weir_elevation"] and min(ref_q) > 0
    if name == "empty_start":
        assert ref_q[0] == 0.0 and ref_q[-1] > 0
    if name == "full_start":
        assert ref_h[-1] < h0


def test_lakes_vectorised_and_batched():
    """All four cases as four lakes of one call, two batch members (the second with the inflow
    doubled): each row equals its own reference."""
    names = sorted(CASES)
    lakes = [CASES[k][0] for k in names]
    ifd = [CASES[k][1] for k in names]
    inflow = torch.tensor([CASES[k][2] for k in names], dtype=torch.float64)
    x = torch.stack([inflow, 2.0 * inflow])
    p = level_pool_params(_tensor_params(lakes))
    q, _ = route_level_pool(x, p, 900.0, initial_elevation(p, ifd))
    for b, scale in enumerate((1.0, 2.0)):
        for j, lk in enumerate(lakes):
            h0 = float(initial_elevation(level_pool_params(_tensor_params([lk])), [ifd[j]])[0])
            ref_q, _ = ref_route([scale * v for v in CASES[names[j]][2]], lk, 900.0, h0)
            np.testing.assert_allclose(q[b, j].numpy(), ref_q, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", sorted(CASES))
def test_mass_balance(name):
    """Cumulative inflow - cumulative outflow = storage change, to 1e-6 of the inflow."""
    lk, ifd, inflow = CASES[name]
    dt = 600.0
    rng = np.random.default_rng(3)
    x = torch.tensor(np.repeat(inflow, 6) * rng.uniform(0.5, 1.5, 6 * len(inflow)),
                     dtype=torch.float64).view(1, 1, -1)
    p = level_pool_params(_tensor_params([lk]))
    h0 = initial_elevation(p, [ifd])
    q, h_end = route_level_pool(x, p, dt, h0)
    vin, vout = float(x.sum()) * dt, float(q.sum()) * dt
    storage = lk["area"] * float(h_end[0, 0] - h0[0])
    assert vin > 0
    assert abs(vin - vout - storage) <= 1e-6 * vin


def test_state_carries_between_chunks():
    lk, ifd, inflow = CASES["spill"]
    p = level_pool_params(_tensor_params([lk]))
    x = torch.tensor(inflow, dtype=torch.float64).view(1, 1, -1)
    h0 = initial_elevation(p, [ifd])
    q, _ = route_level_pool(x, p, 3600.0, h0)
    qa, ha = route_level_pool(x[..., :3], p, 3600.0, h0)
    qb, _ = route_level_pool(x[..., 3:], p, 3600.0, ha)
    torch.testing.assert_close(torch.cat([qa, qb], -1), q, rtol=0, atol=0)


def test_gradcheck_inflow_and_weir_coefficient():
    """Autograd w.r.t. inflow and the weir coefficient equals finite differences (away from
    the on/off kinks of the outlet terms: the level stays between weir and max elevation)."""
    lk = lake(area=1.0e6)
    base = _tensor_params([lk, lake(area=4.0e5, weir_length=12.0)])
    x0 = torch.tensor([[[20.0, 60.0, 90.0, 40.0, 10.0], [5.0, 15.0, 30.0, 8.0, 2.0]]],
                      dtype=torch.float64)
    wc0 = base[:, LEVEL_POOL_PARAMS.index("weir_coefficient")].clone()

    def loss(x, wc):
        p = base.clone()
        p[:, LEVEL_POOL_PARAMS.index("weir_coefficient")] = wc
        pp = level_pool_params(p)
        q, h = route_level_pool(x, pp, 1800.0, initial_elevation(pp, [0.9, 0.88]))
        assert bool((h > pp["weir_elevation"]).all())
        return (q * torch.linspace(0.5, 1.5, q.shape[-1], dtype=torch.float64)).sum()

    x = x0.clone().requires_grad_(True)
    wc = wc0.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(loss, (x, wc), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_bad_parameters_name_the_lake():
    p = _tensor_params([lake(), lake(area=0.0)])
    with pytest.raises(ValueError, match="area must be > 0.*lake 1"):
        level_pool_params(p)
    with pytest.raises(ValueError, match="missing"):
        level_pool_params({"area": 1.0})
    with pytest.raises(ValueError, match=r"\[B, L, S\]"):
        route_level_pool(torch.zeros(3, 4), level_pool_params(p[:1]), 60.0, [100.0])


def test_elevation_for_outflow_inverts_the_discharge():
    """Orifice only, weir, overtopping and zero outflow: Q(H(q)) = q."""
    p = level_pool_params(_tensor_params([lake(), lake(area=3e5)]))
    q = torch.tensor([[0.0, 3.0], [40.0, 900.0]], dtype=torch.float64)
    h = elevation_for_outflow(p, q)
    assert float(h[0, 0]) == lake()["orifice_elevation"]
    torch.testing.assert_close(level_pool_discharge(h, p)[:, :].flatten()[1:],
                               q.flatten()[1:], rtol=1e-10, atol=0)
    assert float(h[1, 1]) > lake()["max_elevation"]  # 900 m3/s overtops
