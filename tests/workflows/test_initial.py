"""routing.initial 'discharge': the steady state that yields a given discharge, checked as the
long-run limit of the float64 oracle (the start's inflow held for hundreds of steps first)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from workflow_cases import small_route

from hydroscale.io import open_output
from hydroscale.routing import route_oracle
from hydroscale.workflows import WorkflowError, build_inputs, run_route, workflow_from_mapping

WARM = 400  # steps of constant inflow before the run: far beyond every path's travel time


def _upstream_sum(down: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Σ of ``q`` over the upstream-adjacent reaches of each reach (by hand, not the API)."""
    s = np.zeros_like(q)
    has = down >= 0
    np.add.at(s, down[has], q[has])
    return s


def _long_run(cfg, inputs, r_star: np.ndarray, start: np.ndarray) -> np.ndarray:
    """The oracle's discharge [N, T] of the run's forcing after ``r_star`` flowed for WARM
    steps; checks that the rivers then carried ``start``."""
    r = inputs.forcing.read_all(0, inputs.forcing.n_steps).astype(np.float64)
    long = np.concatenate([np.repeat(r_star[:, None], WARM, axis=1), r], axis=1)
    q = np.asarray(route_oracle(inputs.network, long, cfg["routing"]["irf"], inputs.params,
                                substeps=cfg["routing"]["substeps"]))
    np.testing.assert_allclose(q[:, WARM - 1], start, rtol=1e-9, atol=1e-9)
    return q[:, WARM:]


def _case(tmp_path, q0: np.ndarray, **routing):
    path = tmp_path / "q0.csv"
    np.savetxt(path, q0)
    wf = small_route(tmp_path / "out", routing={"initial": "discharge",
                                                "initial_discharge": str(path), **routing})
    return workflow_from_mapping(wf)


@pytest.fixture
def network_q0(tmp_path):
    """The small workflow's inputs and a discharge Q0 whose steady inflow r* = Q0 -
    upstream(Q0) is U(0.5, 1.5) everywhere (so Q0 grows downstream)."""
    inputs = build_inputs(workflow_from_mapping(small_route(tmp_path / "x")))
    net = inputs.network
    r_star = np.random.default_rng(7).uniform(0.5, 1.5, net.n_reaches)
    q0 = np.zeros(net.n_reaches)
    for lv in range(net.n_levels):  # headwaters first: Q0 = r* + inflow from upstream
        idx = net.topo_order[net.level_ptr[lv]: net.level_ptr[lv + 1]]
        q0[idx] = r_star[idx] + _upstream_sum(net.downstream, q0)[idx]
    return inputs, q0, r_star


def test_initial_discharge_is_the_steady_state_that_yields_it(tmp_path, network_q0):
    inputs, q0, r_star = network_q0
    np.testing.assert_allclose(q0 - _upstream_sum(inputs.network.downstream, q0), r_star)
    cfg = _case(tmp_path, q0)  # time_chunk 5: the offsets carry across 3 chunks
    res = run_route(cfg)
    got = open_output(res.store, inputs.network).values
    np.testing.assert_allclose(got, _long_run(cfg, inputs, r_star, q0), rtol=1e-6, atol=1e-6)


def test_initial_discharge_falling_downstream_refuse_allow_clip(tmp_path, network_q0, caplog):
    inputs, q0, r_star = network_q0
    net = inputs.network
    j = int(np.argmax(_upstream_sum(net.downstream, np.ones(net.n_reaches))))  # most inflows
    q0 = q0.copy()
    q0[j] = 0.25 * _upstream_sum(net.downstream, q0)[j]  # falls below its inflow
    want_r = q0 - _upstream_sum(net.downstream, q0)
    assert want_r[j] < 0 and (np.delete(want_r, j) > 0).all()

    with pytest.raises(ValueError) as err:
        run_route(_case(tmp_path, q0))
    msg = str(err.value)
    assert f"(reaches [{net.ids[j]}])" in msg and "falls downstream at 1 reach(es)" in msg
    assert "routing.initial_negative to allow" in msg and "clip" in msg

    cfg = _case(tmp_path, q0, initial_negative="allow")
    got = open_output(run_route(cfg).store, net).values
    np.testing.assert_allclose(got, _long_run(cfg, inputs, want_r, q0), rtol=1e-6, atol=1e-6)

    cfg = _case(tmp_path, q0, initial_negative="clip")
    with caplog.at_level(logging.WARNING, logger="hydroscale.workflows._initial"):
        got = open_output(run_route(cfg).store, net).values
    clipped = np.maximum(want_r, 0.0)
    start = q0.copy()  # below j every reach carries what clipping r*_j to 0 added
    k = j
    while k >= 0:
        start[k] += -want_r[j]
        k = int(net.downstream[k])
    np.testing.assert_allclose(got, _long_run(cfg, inputs, clipped, start), rtol=1e-6,
                               atol=1e-6)
    assert f"at reach {net.ids[j]}" in caplog.text and "clip" in caplog.text


def test_initial_discharge_keys_are_checked(tmp_path):
    with pytest.raises(WorkflowError, match="routing.initial 'discharge': give "
                                            "routing.initial_discharge"):
        workflow_from_mapping(small_route(tmp_path, routing={"initial": "discharge"}))
    with pytest.raises(WorkflowError, match="needs network.source 'lower_colorado'"):
        workflow_from_mapping(small_route(tmp_path, routing={
            "initial": "discharge", "initial_discharge": "lower_colorado"}))
    with pytest.raises(WorkflowError, match="routing.initial_discharge is used with "
                                            "routing.initial 'discharge' only"):
        workflow_from_mapping(small_route(tmp_path, routing={"initial_discharge": "x.csv"}))
    with pytest.raises(WorkflowError, match="initial_negative"):
        workflow_from_mapping(small_route(tmp_path, routing={"initial_negative": "zero"}))
    bad = tmp_path / "short.csv"
    np.savetxt(bad, np.ones(3))
    with pytest.raises(ValueError, match=r"short.csv' has 3 values for 150 reaches"):
        run_route(workflow_from_mapping(small_route(tmp_path / "o", routing={
            "initial": "discharge", "initial_discharge": str(bad)})))
