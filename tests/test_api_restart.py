"""route(initial=..., return_state=...): restarts and steady starts against the float64
oracle on a hand-built network."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

import hydroscale as hs
from hydroscale.network import RiverNetwork
from hydroscale.routing import RestartMismatchError, RouteState, route_oracle

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# 1 and 2 join at 3; 3 and 4 join at 5; 5 drains to the outlet 6
NET = RiverNetwork.from_arrays(ids=[1, 2, 3, 4, 5, 6], downstream_ids=[3, 3, 5, 5, 6, 0])
#: steady lateral inflow and, summed by hand along the tree, its steady discharge
R_STAR = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
Q_STAR = np.array([1.0, 2.0, 6.0, 4.0, 15.0, 21.0])  # 1, 2, 1+2+3, 4, 6+4+5, 15+6
PARAMS = {"k": np.array([1.2, 0.8, 1.0, 0.6, 0.9, 1.1]), "x": 0.2}  # stable at f = 2
F = 2
T, T1 = 40, 14


def _runoff(seed=0, t=T):
    return np.random.default_rng(seed).uniform(0.0, 4.0, (NET.n_reaches, t))


def _oracle(r):
    return route_oracle(NET, r, "muskingum", {"k": PARAMS["k"], "x": np.full(6, 0.2)},
                        substeps=F).numpy()


def _close(got, want, tol):
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * np.abs(want).max())


def test_restart_equals_one_run_of_the_float64_oracle(tmp_path):
    r = _runoff()
    want = _oracle(r)  # T steps at once, from dry
    q1, state = hs.route(NET, r[:, :T1], "muskingum", PARAMS, substeps=F, return_state=True)
    assert isinstance(state, RouteState) and state.steps == T1
    path = state.save(tmp_path / "state")
    assert path.name == "state.npz"
    again = RouteState.load(path)
    q2, end = hs.route(NET, r[:, T1:], "muskingum", PARAMS, substeps=F, initial=again,
                       return_state=True)
    assert end.steps == T
    # the restart is exact up to the kernel window's truncation (<= 1e-6 of a path's mass)
    _close(np.concatenate([q1, q2], axis=1), want, 1e-6)
    # ... while a dry restart (the state dropped) is visibly wrong after the split
    dry = hs.route(NET, r[:, T1:], "muskingum", PARAMS, substeps=F, engine="torch")
    assert np.abs(dry - want[:, T1:]).max() > 0.1
    # the state carried by the split run is the uninterrupted run's state
    _, whole = hs.route(NET, r, "muskingum", PARAMS, substeps=F, return_state=True)
    np.testing.assert_array_equal(end.router.runoff_hist.numpy(),
                                  whole.router.runoff_hist.numpy())
    assert end.fingerprint == whole.fingerprint


def test_restart_float32_torch_tensor():
    r = torch.as_tensor(_runoff(1), dtype=torch.float32)
    want = _oracle(r.double().numpy())
    q1, s = hs.route(NET, r[:, :T1], "muskingum", PARAMS, substeps=F, return_state=True)
    q2 = hs.route(NET, r[:, T1:], "muskingum", PARAMS, substeps=F, initial=s)
    assert q2.dtype == torch.float32
    _close(torch.cat([q1, q2], 1).double().numpy(), want, 2e-6)


def test_steady_start_holds_the_hand_computed_steady_discharge():
    const = np.repeat(R_STAR[:, None], 12, axis=1)
    q = hs.route(NET, const, "muskingum", PARAMS, substeps=F, initial="steady")
    _close(q, np.repeat(Q_STAR[:, None], 12, axis=1), 1e-12)
    dry = hs.route(NET, const, "muskingum", PARAMS, substeps=F)
    assert dry[5, 0] < 0.5 * Q_STAR[5]  # from dry the outlet starts low


def test_initial_discharge_is_the_steady_state_that_yields_it():
    """Q0 means: r* = Q0 - upstream(Q0) has flowed forever.  The oracle, routing a long
    spin-up of constant r* from dry and then the runoff, gives the same discharge."""
    r = _runoff(2, 20)
    spin = 600  # Muskingum responses decay geometrically: 600 steps leave < 1e-12
    long = np.concatenate([np.repeat(R_STAR[:, None], spin, axis=1), r], axis=1)
    want = _oracle(long)[:, spin:]
    got = hs.route(NET, r, "muskingum", PARAMS, substeps=F, initial=Q_STAR)
    _close(got, want, 1e-9)
    # as a DataArray in another reach order (RAPID's rivid), aligned by id
    perm = [5, 3, 0, 1, 4, 2]
    q0 = xr.DataArray(Q_STAR[perm], {"rivid": NET.ids[perm]}, ("rivid",))
    _close(hs.route(NET, r, "muskingum", PARAMS, substeps=F, initial=q0), want, 1e-9)
    # the same start carried through a restart
    q1, s = hs.route(NET, r[:, :7], "muskingum", PARAMS, substeps=F, initial=Q_STAR,
                     return_state=True)
    np.testing.assert_array_equal(s.discharge_offset[0], Q_STAR)
    q2 = hs.route(NET, r[:, 7:], "muskingum", PARAMS, substeps=F, initial=s)
    _close(np.concatenate([q1, q2], 1), want, 1e-6)


def test_inconsistent_initial_discharge_is_refused():
    q0 = Q_STAR.copy()
    q0[4] = 3.0  # less than the 6 + 4 flowing into reach 5
    with pytest.raises(ValueError, match=r"smaller than the sum of the discharges flowing into "
                                         r"1 reach\(es\), ids \[5\].*allow_negative=True"):
        hs.route(NET, _runoff(), "muskingum", PARAMS, substeps=F, initial=q0)
    q = hs.route(NET, _runoff(), "muskingum", PARAMS, substeps=F, initial=q0,
                 allow_negative=True)
    assert np.isfinite(q).all()
    with pytest.raises(ValueError, match=r"initial discharge must be \[N = 6\]"):
        hs.route(NET, _runoff(), "muskingum", PARAMS, initial=Q_STAR[:4])
    with pytest.raises(ValueError, match="initial must be 'dry', 'steady'"):
        hs.route(NET, _runoff(), "muskingum", PARAMS, initial="wet")


def test_mismatched_state_is_refused_naming_what_differs(tmp_path):
    r = _runoff()
    _, s = hs.route(NET, r[:, :T1], "muskingum", PARAMS, substeps=F, return_state=True)
    s = RouteState.load(s.save(tmp_path / "s.npz"))
    other = {"k": PARAMS["k"] * 1.1, "x": 0.2}
    with pytest.raises(RestartMismatchError, match=r"s.npz' was written by another routing "
                                                   r"\(params: state '[0-9a-f]+', this run"):
        hs.route(NET, r[:, T1:], "muskingum", other, substeps=F, initial=s)
    with pytest.raises(RestartMismatchError, match=r"substeps: state 2, this run 3"):
        hs.route(NET, r[:, T1:], "muskingum", PARAMS, substeps=3, initial=s)
    with pytest.raises(RestartMismatchError, match=r"dt_s: state None, this run 3600.0"):
        hs.route(NET, r[:, T1:], "muskingum", {"k": PARAMS["k"] * 3600, "x": 0.2},
                 substeps=F, dt=3600, initial=s)
    bigger = RiverNetwork.from_arrays([1, 2, 3, 4, 5, 6, 7], [3, 3, 5, 5, 6, 0, 6])
    with pytest.raises(RestartMismatchError, match=r"another network's reaches \(missing \[7\]"):
        hs.route(bigger, np.ones((7, 3)), "muskingum", {"k": 1.0, "x": 0.2}, substeps=F,
                 initial=s)
    with pytest.raises(RestartMismatchError, match=r"holds 1 batch member\(s\), the runoff 2"):
        hs.route(NET, np.stack([r[:, T1:]] * 2), "muskingum", PARAMS, substeps=F, initial=s)
    with pytest.raises(ValueError, match="engine 'oracle' carries no state"):
        hs.route(NET, r, "muskingum", PARAMS, engine="oracle", return_state=True)
    (tmp_path / "junk.npz").write_bytes(b"not a state")
    with pytest.raises(ValueError, match=r"junk.npz: not a hydroscale restart state"):
        RouteState.load(tmp_path / "junk.npz")
