"""What the calibration page shows, without a browser or a cluster: the scheduler-side board
(events in, bounded views out), the table's paging and order, the map's decimation, the
parameter histograms, long hydrographs reduced, the SSH tunnel hint, and a learning rate set
through the control changing the very next optimiser step (plain SGD as the oracle)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hydroscale.calibration import Calibrator, GaugeObservations
from hydroscale.calibration._board import MAX_HYDROGRAPHS, Board, decimate_map, table_page
from hydroscale.calibration._summary import (
    AT_BOUND,
    histogram_edges,
    parameter_counts,
    reduce_series,
)
from hydroscale.calibration.dashboard import tunnel_hint
from hydroscale.models import FreeParameters
from hydroscale.network import continental_forest
from hydroscale.routing import route_oracle


def test_table_page_orders_with_nan_last_and_pages():
    ids = np.array([10, 11, 12, 13, 14, 15, 16])
    nse = np.array([0.5, np.nan, -1.0, 0.9, 0.5, np.nan, 0.1])
    p0 = table_page(ids, {"nse": nse}, "nse", False, 0, rows=3)
    assert p0["rows"]["id"] == [12, 16, 10] and p0["pages"] == 3 and p0["total"] == 7
    p1 = table_page(ids, {"nse": nse}, "nse", False, 1, rows=3)
    assert p1["rows"]["id"] == [14, 13, 11]  # ties keep gauge order; NaN last
    assert p1["rows"]["nse"] == [0.5, 0.9, None]
    desc = table_page(ids, {"nse": nse}, "nse", True, 0, rows=7)
    assert desc["rows"]["id"] == [13, 10, 14, 16, 12, 11, 15]
    assert table_page(ids, {"nse": nse}, "nse", False, 99, rows=3)["page"] == 2
    with pytest.raises(ValueError, match="sort must be one of"):
        table_page(ids, {"nse": nse}, "colour", False, 0)


def test_map_decimation_keeps_the_worst_and_a_spread():
    rng = np.random.default_rng(0)
    nse = rng.uniform(-2, 1, 5000)
    pick = decimate_map(nse, n_points=1000, worst=100)
    assert pick.size <= 1000 and np.all(np.diff(pick) > 0)
    assert set(np.argsort(nse)[:100]) <= set(pick.tolist())
    assert decimate_map(nse[:50], n_points=1000).tolist() == list(range(50))


def test_parameter_counts_against_numpy_histogram():
    rng = np.random.default_rng(1)
    low, high = torch.tensor([0.2, 0.0]), torch.tensor([3.0, 0.45])
    v = np.stack([rng.uniform(0.2, 3.0, 500), rng.uniform(0.0, 0.45, 500)], -1)
    v[:7, 0] = 0.2 + 0.5 * AT_BOUND * 2.8  # within the tolerance of the lower bound
    v[7:10, 1] = 0.45  # at the upper bound
    edges = histogram_edges(low, high, bins=12)
    got = parameter_counts(torch.as_tensor(v), low, high, edges)
    for j in range(2):
        # values outside the edges (0.45 > float32(0.45)) count in the end bins
        want, _ = np.histogram(np.clip(v[:, j], edges[j, 0], edges[j, -1]), bins=edges[j])
        np.testing.assert_array_equal(got["counts"][j], want)
    assert got["counts"].sum() == 1000
    want_low = (v <= low.numpy() + AT_BOUND * (high - low).numpy()).sum(0)
    want_high = (v >= high.numpy() - AT_BOUND * (high - low).numpy()).sum(0)
    np.testing.assert_array_equal(got["at_low"], want_low)
    np.testing.assert_array_equal(got["at_high"], want_high)
    assert got["at_low"][0] >= 7 and got["at_high"][1] >= 3
    # per-reach bounds: the edges span the widest; the share at a bound uses each reach's own
    lo2 = torch.tensor([[0.2, 0.0], [1.0, 0.1]])
    hi2 = torch.tensor([[3.0, 0.45], [2.0, 0.2]])
    e2 = histogram_edges(lo2, hi2, bins=4)
    np.testing.assert_allclose(e2[:, [0, -1]], [[0.2, 3.0], [0.0, 0.45]], rtol=1e-6)
    c2 = parameter_counts(torch.tensor([[2.9, 0.3], [1.0, 0.2]]), lo2, hi2, e2)
    assert c2["at_low"].tolist() == [1, 0] and c2["at_high"].tolist() == [0, 1]


def test_reduce_series_keeps_short_series_and_averages_long_ones():
    t, y = reduce_series(np.arange(10.0), max_points=10)
    assert t.tolist() == list(range(10)) and y.tolist() == list(range(10))
    y = np.arange(25.0)
    y[3] = np.nan
    t, m = reduce_series(y, max_points=10)  # blocks of 3 steps: 9 blocks
    assert len(m) == 9 and m[0] == 1.0 and m[1] == 4.5 and t[1] == 4.0
    assert m[-1] == 24.0 and t[-1] == 24.0


def _board(n: int = 20) -> Board:
    b = Board()
    b.event({"kind": "start", "total": 10, "gauge_ids": list(range(100, 100 + n)),
             "engine": "levels", "lr": 0.05, "gauge_lat": [30.0] * n, "gauge_lon": [-97.0] * n,
             "params": {"names": ["k"], "edges": [[0, 1, 2]], "n": 5, "counts": [[3, 2]],
                        "at_low": [1], "at_high": [0]}})
    return b


def test_board_updates_once_per_iteration_and_stays_bounded():
    b = _board()
    v0, body0 = b.update()
    assert b.update()[1] is body0  # cached until the next version: one build per iteration
    nse = np.linspace(-1, 1, 20)
    b.event({"kind": "progress", "phase": "forward", "wave": 1, "waves": 3, "iteration": 1,
             "workers": [{"worker": "w0", "forward": [2, 5]}]})
    assert b.update()[0] == v0  # progress is in the light view only
    b.event({"kind": "iteration", "iteration": 1, "loss": 0.5, "lr": 0.05,
             "gauge_nse": nse.tolist(), "gauge_kge": nse.tolist(),
             "params": {"counts": [[1, 4]], "at_low": [0], "at_high": [2]}})
    v1, body = b.update("nse", True, 0)
    assert v1 == v0 + 1
    u = json.loads(body)
    assert u["series"]["loss"] == [0.5] and u["series"]["iteration"] == [1]
    assert u["table"]["rows"]["id"][:3] == [119, 118, 117]
    assert u["map"]["shown"] == 20 and u["params"]["now"]["counts"] == [[1, 4]]
    st = b.status([{"address": "w0", "worker": 0, "gpu": None}])
    assert st["workers"][0]["groups"] == {"forward": [2, 5]} and st["lr"] == 0.05
    # hydrographs: only the most recently clicked gauges are held
    for g in range(100, 100 + MAX_HYDROGRAPHS + 3):
        assert b.watch(g) is None
        b.event({"kind": "hydrograph", "gauge": g, "observed": {"step": [0], "value": [1.0]},
                 "first": None, "current": None})
    assert list(b.hydro) == list(range(103, 100 + MAX_HYDROGRAPHS + 3))
    assert b.take()["watch"] == list(range(100, 100 + MAX_HYDROGRAPHS + 3))
    assert b.take()["watch"] == []  # taken once
    with pytest.raises(ValueError, match="no gauge at reach id 7"):
        b.watch(7)
    b.command({"action": "lr", "lr": 0.01})
    assert b.take()["commands"] == [{"action": "lr", "lr": 0.01}]
    b.event({"kind": "action", "action": "lr", "iteration": 1, "lr_from": 0.05, "lr_to": 0.01})
    assert b.status([])["lr"] == 0.01 and b.status([])["actions"][0]["lr_to"] == 0.01


@pytest.mark.parametrize(("url", "hint"), [
    ("http://127.0.0.1:8787/calibration", None),
    ("http://localhost:8787/calibration", None),
    ("http://me.example:8787/calibration", None),
    ("http://node17.cluster:8790/calibration",
     ("ssh -N -L 8790:localhost:8790 node17.cluster", "http://localhost:8790/calibration")),
    ("http://10.1.2.3:8787/prefix/calibration",
     ("ssh -N -L 8787:localhost:8787 10.1.2.3", "http://localhost:8787/prefix/calibration")),
])
def test_tunnel_hint_for_a_scheduler_on_another_host(url, hint):
    assert tunnel_hint(url, {"localhost", "me.example"}) == hint


def test_learning_rate_from_the_control_changes_the_next_step():
    """Plain SGD: the step after the request is ``raw -= new_lr * grad`` exactly; the history
    and the action log record it."""
    net = continental_forest(60, seed=2)
    rng = np.random.default_rng(4)
    true = np.stack([rng.uniform(0.5, 2.0, 60), rng.uniform(0.05, 0.3, 60)], -1)
    runoff = rng.uniform(0.0, 1.0, (60, 30))
    q = route_oracle(net, runoff, "muskingum", true, allow_unstable=True).numpy()
    obs = GaugeObservations(net.ids[net.outlets[:3]], q[net.outlets[:3]])
    model = FreeParameters("muskingum", net, bounds={"k": (0.2, 3.0), "x": (0.0, 0.45)},
                           dtype=torch.float64)
    cal = Calibrator(net, runoff, obs, model, engine="levels", optimizer="sgd", lr=0.01,
                     allow_unstable=True, dtype=torch.float64)
    cal.run(1)
    raw1 = model.raw.detach().clone()
    cal.control.set_lr(0.5, source="test")
    cal.run(2)
    grad = model.raw.grad  # the gradient of iteration 2 (SGD leaves it after its step)
    torch.testing.assert_close(model.raw.detach(), raw1 - 0.5 * grad, rtol=1e-12, atol=0)
    assert cal.history["lr"] == [0.01, 0.5]
    (act,) = cal.actions
    assert (act["iteration"], act["action"], act["lr_from"], act["lr_to"], act["source"]) == \
        (1, "lr", 0.01, 0.5, "test")
    with pytest.raises(ValueError, match="finite number > 0"):
        cal.control.set_lr(float("nan"))


def test_a_learning_rate_and_the_actions_survive_a_checkpoint(tmp_path):
    net = continental_forest(40, seed=5)
    rng = np.random.default_rng(6)
    runoff = rng.uniform(0.0, 1.0, (40, 20))
    q = route_oracle(net, runoff, "muskingum", np.full((40, 2), [1.0, 0.2]),
                     allow_unstable=True).numpy()
    obs = GaugeObservations(net.ids[net.outlets[:2]], q[net.outlets[:2]])

    def make() -> Calibrator:
        model = FreeParameters("muskingum", net, bounds={"k": (0.2, 3.0), "x": (0.0, 0.45)})
        return Calibrator(net, runoff, obs, model, engine="levels", lr=0.05,
                          allow_unstable=True, checkpoint_dir=tmp_path)

    cal = make()
    cal.run(1)
    cal.control.set_lr(0.003)
    cal.control.checkpoint()
    cal.run(2)
    assert [a["action"] for a in cal.actions] == ["lr", "checkpoint"]
    assert cal.actions[1]["path"] == str(tmp_path / "calibration-00000001.pt")
    again = make()
    assert again.load_checkpoint() == 2
    assert again.lr == 0.003 and again.optimizer.param_groups[0]["lr"] == 0.003
    assert again.actions == cal.actions and again.history["lr"] == [0.05, 0.003]
