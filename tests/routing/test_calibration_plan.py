"""The calibration planner: a tiny plan's estimate by hand, the strategy it picks as the memory
limit shrinks, a given strategy kept, its refusal (the one-device Calibrator's plan is tested
in tests/calibration/test_calibrator.py, the strategies' exactness in test_gradient.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hydroscale.routing import (
    MEMORY_ENV_VAR,
    CalibrationPlan,
    RunTooLargeError,
    available_bytes,
    plan_calibration,
    tensor_bytes,
)
from hydroscale.routing._run_plan import SLACK

ORDER = ["keep+no-remat", "recompute+no-remat", "keep+remat", "recompute+remat"]


def _tiny():
    """One worker, two groups: [reaches, exits, inlets], kernel rows and path pairs."""
    return [{"groups": [[10, 2, 0], [5, 1, 2]], "kernel_rows": [100, 50], "pairs": [30, 12],
             "resident": 1000, "work": 500}]


def test_estimate_by_hand():
    """Every part of a worker's estimate, and each strategy's peak, computed by hand:
    K = 4, f = 3 (L = 12 sub-step taps), T = 20, B = 1, float32 stored, float64 aggregated,
    recursive hops (every hop's kernels saved)."""
    p = plan_calibration(_tiny(), window=4, substeps=3, n_steps=20, itemsize=4,
                         aggregate_itemsize=8, recursive=True)
    w = p.workers[0]
    assert (w.groups, w.reaches) == (2, 15)
    assert w.routers == 1000 + (30 + 12) * 24  # + the hop index tensors, 24 B per pair
    assert w.kernels == (100 + 50) * 4 * 4
    # (pairs + 2 reaches) x L x 8 B per group
    graph = [(30 + 20) * 12 * 8, (12 + 10) * 12 * 8]
    assert w.kernel_graph == sum(graph) == 6912
    row = 20 * 4  # one [1, 1, T] float32 row
    assert w.inflow == 2 * 3 * row and w.buffers == (2 + 1) * 3 * row
    assert w.forward_graphs == (15 + 3 * 3) * row  # runoff and exit outflow of every group
    # aggregation: rows K (3 x 8 + 4) + 3 hop arrays n L 8
    assert w.aggregation == 100 * 4 * 28 + 3 * 10 * 12 * 8 == 14080
    # forward task: 4 reach rows, 3 f rows per exit/inlet
    assert w.task == max((4 * 10 + 9 * 2) * row, (4 * 5 + 9 * 3) * row) == 4640
    # backward: the largest group's routing (3 reach rows, 4 f rows per exit/inlet), then
    # the largest unit's kernel backward (its kernel gradients in float64, rows K 8, and 3
    # hop arrays n L 8; with "recompute" its graph and outputs made again), while every
    # unit's leaf gradients (the kernels' size again) are held
    routing = max((3 * 10 + 12 * 2) * row, (3 * 5 + 12 * 3) * row)
    kernel_bwd = [100 * 4 * 8 + 3 * 10 * 12 * 8, 50 * 4 * 8 + 3 * 5 * 12 * 8]
    assert routing == 4320 and kernel_bwd == [6080, 3040]
    assert w.backward == routing + max(kernel_bwd) == 10400
    rec = routing + max(kernel_bwd[0] + graph[0] + 100 * 4 * 28,
                        kernel_bwd[1] + graph[1] + 50 * 4 * 28)
    assert w.recompute == rec - 10400 == 16000
    base = w.routers + w.kernels + 500
    held = base + w.buffers + w.inflow
    want = {
        "keep+no-remat": max(base + 6912 + 14080, held + 6912 + 1920 + 4640,
                             held + 6912 + 1920 + 2400 + 10400),
        "recompute+no-remat": max(base + 14080, held + 1920 + 4640, held + 1920 + 2400 + rec),
        "keep+remat": max(base + 6912 + 14080, held + 6912 + 4640, held + 6912 + 2400 + 10400),
        "recompute+remat": max(base + 14080, held + 4640, held + 2400 + rec),
    }
    assert w.peaks == want == {"keep+no-remat": 27740, "recompute+no-remat": 36828,
                               "keep+remat": 25900, "recompute+remat": 34908}
    # no limit known: today's default, keep + rematerialise
    assert (p.kernel_graph, p.rematerialise, p.chosen) == ("keep", True, "unknown limit")
    assert w.peak == want["keep+remat"]
    # FFT hops save each extended hop's input in float32, the reaches' kernels in float64
    q = plan_calibration(_tiny(), window=4, substeps=3, n_steps=20, recursive=False)
    assert q.workers[0].kernel_graph == ((30 - 10) * 12 * 4 + 2 * 10 * 12 * 8
                                         + (12 - 5) * 12 * 4 + 2 * 5 * 12 * 8)
    # the plan round-trips through its dict (the run summary)
    assert CalibrationPlan.from_dict(p.as_dict()) == p
    # the wave runtime reports batches of groups (one router, one aggregation each): the
    # kernel parts are the batch's, the routing parts still the groups'
    one = [{"groups": _tiny()[0]["groups"], "batches": [[15, 150, 42]], "resident": 1000,
            "work": 500}]
    b = plan_calibration(one, window=4, substeps=3, n_steps=20, itemsize=4,
                         aggregate_itemsize=8, recursive=True).workers[0]
    assert b.kernel_graph == (42 + 2 * 15) * 12 * 8
    assert b.aggregation == 150 * 4 * 28 + 3 * 15 * 12 * 8
    assert b.backward == routing + 150 * 4 * 8 + 3 * 15 * 12 * 8
    assert (b.task, b.inflow, b.buffers, b.kernels) == (w.task, w.inflow, w.buffers, w.kernels)


def _many_groups():
    """Ten equal groups, a long period: every strategy's peak is distinct, fastest largest."""
    return [{"groups": [[10, 2, 1]] * 10, "kernel_rows": [60] * 10, "pairs": [30] * 10,
             "resident": 1000, "work": 500}]


def test_strategy_flips_as_the_memory_limit_shrinks(monkeypatch):
    kw = dict(window=4, substeps=3, n_steps=200, recursive=True)
    peaks = plan_calibration(_many_groups(), **kw).workers[0].peaks
    assert [peaks[k] for k in ORDER] == sorted(peaks.values(), reverse=True)
    chosen = []
    for name in ORDER:  # the limit just fits `name`: the faster ones do not
        monkeypatch.setenv(MEMORY_ENV_VAR, str(int(np.ceil(peaks[name] / SLACK))))
        p = plan_calibration(_many_groups(), limits=[available_bytes("cpu")], **kw)
        assert p.chosen == "auto" and p.fits and p.workers[0].peak == peaks[name]
        assert p.workers[0].limit_source.startswith(MEMORY_ENV_VAR)
        chosen.append(p.strategy)
    assert chosen == ORDER
    # more memory: the fastest again
    monkeypatch.setenv(MEMORY_ENV_VAR, "1GB")
    assert plan_calibration(_many_groups(), limits=[available_bytes("cpu")],
                            **kw).strategy == ORDER[0]


def test_a_given_strategy_is_kept_with_a_warning(caplog):
    kw = dict(window=4, substeps=3, n_steps=200, recursive=True)
    peaks = plan_calibration(_many_groups(), **kw).workers[0].peaks
    limit = int(np.ceil(peaks["keep+remat"] / SLACK))
    fixed = plan_calibration(_many_groups(), limits=[(limit, "test")], kernel_graph="recompute",
                             **kw)  # recompute given, rematerialise chosen: remat fits
    assert fixed.strategy == "recompute+remat" and fixed.chosen == "given" and fixed.fits
    with caplog.at_level("WARNING"):
        p = plan_calibration(_many_groups(), limits=[(limit, "test")], kernel_graph="keep",
                             rematerialise=False, **kw)
    assert p.strategy == "keep+no-remat" and not p.fits  # not silently changed
    assert f"{peaks['keep+no-remat'] / 1e9:.3g} GB" in caplog.text
    assert "keep+remat would fit" in caplog.text


def test_refusal_names_the_estimate_the_limit_and_the_settings(monkeypatch):
    kw = dict(window=4, substeps=3, n_steps=200, recursive=True)
    least = plan_calibration(_many_groups(), **kw).workers[0].peaks["recompute+remat"]
    monkeypatch.setenv(MEMORY_ENV_VAR, str(int(least * SLACK)))  # just short of the leanest
    with pytest.raises(RunTooLargeError) as err:
        plan_calibration(_many_groups(), limits=[available_bytes("cpu")], **kw)
    msg = str(err.value)
    assert f"needs {least / 1e9:.3g} GB" in msg
    assert f"{MEMORY_ENV_VAR}=" in msg and "does not fit worker 0" in msg
    for setting in ("batch_reaches", "routing.max_reaches", "routing.window", "substeps",
                    "more workers", "memory_limit"):
        assert setting in msg


def test_tensor_bytes_counts_each_storage_once():
    a = torch.zeros(10, dtype=torch.float64)
    b = a[2:5]  # a view: the same storage

    class Holder:
        __module__ = "hydroscale.test"

        def __init__(self):
            self.x, self.parts = a, {"y": b, "z": [torch.zeros(3, dtype=torch.int32)]}

    assert tensor_bytes(Holder()) == 80 + 12
    seen: set[int] = set()
    assert tensor_bytes(a, seen=seen) == 80 and tensor_bytes(Holder(), seen=seen) == 12
