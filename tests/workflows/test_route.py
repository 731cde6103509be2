"""Running route/benchmark/partition/ingest workflows, checked against the float64 oracle."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import xarray as xr
from workflow_cases import small_route

from hydroscale.api import accumulate
from hydroscale.io import open_forcing, open_output
from hydroscale.network import continental_forest
from hydroscale.routing import route_oracle
from hydroscale.workflows import (
    basin_subset,
    build_inputs,
    hydrograph_reaches,
    run_benchmark,
    run_ingest,
    run_partition,
    run_route,
    workflow_from_mapping,
)


def _oracle(cfg, inputs, runoff=None):
    r = inputs.forcing.read_all(0, inputs.forcing.n_steps) if runoff is None else runoff
    return np.asarray(route_oracle(inputs.network, r.astype(np.float64), cfg["routing"]["irf"],
                                   inputs.params, substeps=cfg["routing"]["substeps"]))


def test_synthetic_inputs_are_deterministic_and_chunk_free(tiny_route):
    cfg = workflow_from_mapping(tiny_route)
    inputs = build_inputs(cfg)
    assert inputs.network.n_reaches == 150 and inputs.forcing.n_steps == 12
    whole = inputs.forcing.read_all(0, 12)
    assert whole.shape == (150, 12) and whole.dtype == np.float32
    f = inputs.forcing
    assert np.array_equal(np.concatenate([f.read_all(0, 5), f.read_all(5, 12)], axis=1), whole)
    assert 0.0 <= whole.min() and whole.max() < 2.0  # U(0, scale = 2)
    tau = inputs.params[:, 0].numpy()
    assert inputs.params.shape == (150, 1) and 0.5 <= tau.min() and tau.max() <= 1.5
    assert np.array_equal(build_inputs(cfg).params.numpy(), inputs.params.numpy())
    assert np.datetime_as_string(inputs.forcing.time[1], "s") == "2000-01-02T00:00:00"


@pytest.mark.parametrize("engine", ["torch", "oracle"])
def test_route_matches_oracle_across_time_chunks(tiny_route, engine):
    tiny_route["routing"]["engine"] = engine
    cfg = workflow_from_mapping(tiny_route)
    res = run_route(cfg)
    inputs = build_inputs(cfg)
    q = open_output(res.store, inputs.network)
    q0 = _oracle(cfg, inputs)
    np.testing.assert_allclose(q.values, q0, rtol=1e-5, atol=1e-5)  # store is float32
    assert q.dims == ("reach", "time") and q.attrs["units"] == "m3 s-1"
    np.testing.assert_array_equal(q["time"].values, inputs.forcing.time)
    s = json.loads(res.summary_path.read_text())
    assert s["reaches"] == 150 and s["steps"] == 12 and s["substeps"] == 2
    assert s["outputs"]["store"] == str(res.store)
    assert res.figure is not None and res.figure.stat().st_size > 10_000
    # the two largest basins' outlets were plotted
    size = np.bincount(inputs.network.basin)
    top = inputs.network.outlets[np.argsort(-size[inputs.network.outlets], kind="stable")[:2]]
    assert s["outputs"]["hydrograph_reaches"] == inputs.network.ids[top].tolist()


def test_steady_start_is_the_long_run_limit(tmp_path):
    wf = small_route(tmp_path, routing={"initial": "steady", "time_chunk": 12})
    cfg = workflow_from_mapping(wf)
    res = run_route(cfg)
    inputs = build_inputs(cfg)
    r = inputs.forcing.read_all(0, 12).astype(np.float64)
    warm = 400  # the first step's inflow held long before the run: the rivers are in steady state
    long = np.concatenate([np.repeat(r[:, :1], warm, axis=1), r], axis=1)
    q0 = _oracle(cfg, inputs, long)[:, warm:]
    np.testing.assert_allclose(open_output(res.store, inputs.network).values, q0,
                               rtol=1e-5, atol=1e-5)
    # first step of a steady start: every reach carries its accumulated inflow
    np.testing.assert_allclose(q0[:, 0], accumulate(inputs.network, r[:, 0]), rtol=1e-6)


def test_route_from_zarr_store_and_attribute_params(tmp_path):
    net = continental_forest(120, seed=1)
    rng = np.random.default_rng(0)
    t = np.datetime64("2021-01-01T00:00", "ns") + np.arange(10) * np.timedelta64(3600, "s")
    da = xr.DataArray(rng.random((120, 10)).astype(np.float32), {"reach": net.ids, "time": t},
                      ("reach", "time"))
    from hydroscale.io import ingest

    ingest(da.isel(reach=slice(None, None, -1)), tmp_path / "f.zarr")  # rows in another order
    wf = small_route(tmp_path / "out",
                     network={"reaches": 120, "seed": 1},
                     forcing={"source": "zarr", "path": str(tmp_path / "f.zarr"), "steps": None},
                     routing={"irf": "muskingum", "substeps": 1, "time_chunk": 4,
                              "params": {"k": {"attribute": "length", "units": "seconds",
                                               "factor": 0.5},
                                         "x": 0.1},
                              "allow_unstable": True})
    cfg = workflow_from_mapping(wf)
    inputs = build_inputs(cfg)
    assert inputs.forcing.interval_s == 3600.0
    np.testing.assert_allclose(inputs.params[:, 0].numpy(),
                               net.attrs["length"] * 0.5 / 3600.0)  # m at 2 m/s -> hours
    np.testing.assert_array_equal(inputs.forcing.read_all(0, 10), da.values)
    res = run_route(cfg)
    q0 = np.asarray(route_oracle(net, da.values.astype(np.float64), "muskingum", inputs.params,
                                 allow_unstable=True))
    np.testing.assert_allclose(open_output(res.store, net).values, q0, rtol=1e-5, atol=1e-5)


def test_existing_store_needs_overwrite(tiny_route):
    tiny_route["routing"]["engine"] = "oracle"
    run_route(workflow_from_mapping(tiny_route))
    tiny_route["output"]["overwrite"] = False
    with pytest.raises(FileExistsError, match="output.overwrite=true"):
        run_route(workflow_from_mapping(tiny_route))


def test_unknown_attribute_names_the_attributes(tiny_route):
    tiny_route["routing"]["params"] = {"tau": {"attribute": "slope"}}
    with pytest.raises(ValueError, match=r"params.tau: the network has no attribute 'slope'; "
                                         r"it has \['length'\]"):
        build_inputs(workflow_from_mapping(tiny_route))


def test_hydrograph_reaches_order(small_tree):
    hydro = {"reaches": [4], "gauges": True, "outlets": 2, "max_panels": 4}
    idx = hydrograph_reaches(small_tree, hydro, np.array([1, 5, 6]))
    # chosen reach, outlets by basin size (6: 6 reaches, 9: 1), gauges by upstream reaches
    assert small_tree.ids[idx].tolist() == [4, 6, 9, 5]


def test_basin_subset_takes_whole_basins():
    net = continental_forest(3000, seed=2)
    mask = basin_subset(net, 800)
    assert 0 < mask.sum() <= 800
    assert np.array_equal(mask, mask[net.basin[np.arange(net.n_reaches)]])  # whole basins
    size = np.bincount(net.basin)
    biggest_fit = max(s for s in size[net.outlets] if s <= 800)
    assert biggest_fit in size[np.unique(net.basin[mask])]


def test_benchmark_reports_error_vs_oracle(tiny_route):
    tiny_route["kind"] = "benchmark"
    tiny_route["routing"]["dtype"] = "float32"
    tiny_route["benchmark"] = {"repeat": 2, "oracle_reaches": 60, "oracle_steps": 8}
    r = run_benchmark(workflow_from_mapping(tiny_route))
    assert r["reaches"] == 150 and len(r["forward_runs_s"]) == 2
    assert r["reach_steps_per_s"] == pytest.approx(150 * 12 / r["forward_s"], rel=1e-2)
    o = r["oracle"]
    assert 0 < o["reaches"] <= 60 and o["steps"] == 8
    assert o["rel_l2"] < 1e-5 and o["nse_largest_outlet"] > 1 - 1e-9


def test_partition_writes_report_png_and_reloadable_partition(tiny_route, tmp_path):
    from hydroscale.partition import Partition

    tiny_route["partition"]["workers"] = 2
    cfg = workflow_from_mapping(tiny_route)
    s = run_partition(cfg, tmp_path / "part")
    net = build_inputs(cfg).network
    part = Partition.load(s["outputs"]["partition"], net)
    assert part.n_workers == 2 and s["clusters"] == part.n_clusters
    assert int(part.size.max()) <= 32 and int(part.size.sum()) == 150
    assert "clusters" in (tmp_path / "part" / "partition_report.txt").read_text()
    assert (tmp_path / "part" / "partition.png").stat().st_size > 10_000


def test_ingest_workflow_round_trip(tmp_path):
    csv = tmp_path / "runoff.csv"
    csv.write_text("time,11,22,33\n2020-01-01T00:00,1.0,2.0,3.0\n2020-01-01T01:00,4.0,5.0,6.5\n")
    cfg = workflow_from_mapping({"kind": "ingest", "ingest": {
        "source": str(csv), "store": str(tmp_path / "s.zarr"), "chunks": [2, 1]}})
    s = run_ingest(cfg)
    assert s["reaches"] == 3 and s["steps"] == 2 and s["chunks"] == [2, 1]
    assert s["interval_s"] == 3600.0
    from hydroscale.network import RiverNetwork

    fs = open_forcing(tmp_path / "s.zarr", RiverNetwork.from_arrays([33, 22, 11], [0, 33, 22]))
    np.testing.assert_array_equal(fs.to_xarray().values, [[3.0, 6.5], [2.0, 5.0], [1.0, 4.0]])
    with pytest.raises(FileExistsError, match="ingest.overwrite=true"):
        run_ingest(cfg)


def test_float64_params_are_routing_step_units(tiny_route):
    tiny_route["routing"]["params"] = {"tau": {"uniform": [1, 3], "units": "hours"}}
    tiny_route["forcing"]["interval_s"] = 7200.0
    p = build_inputs(workflow_from_mapping(tiny_route)).params
    assert p.dtype == torch.float64
    assert 0.5 <= float(p.min()) and float(p.max()) <= 1.5  # hours / (2 h steps)


class _Bars:
    """A ``progress(desc, total, unit)`` factory that records each bar and its updates."""

    def __init__(self) -> None:
        self.bars: list[dict] = []

    def __call__(self, desc, total, unit):
        rec = {"desc": desc, "total": total, "unit": unit, "done": 0, "closed": False}
        self.bars.append(rec)

        class Bar:
            def update(self, n=1):
                rec["done"] += n

            def close(self):
                rec["closed"] = True

        return Bar()


def _in_cluster_pairs(net, cluster_of) -> int:
    """Pairs (reach, itself or a reach downstream of it in the same cluster), walked one
    reach at a time: what the kernel aggregation enumerates."""
    down = net.downstream
    total = 0
    for i in range(net.n_reaches):
        j = i
        while j >= 0 and cluster_of[j] == cluster_of[i]:
            total += 1
            j = down[j]
    return total


def test_route_set_up_phases_logged_in_order_with_progress(tiny_route, caplog):
    """A one-device run logs each set-up phase (start, then done) before routing, and the
    long ones (kernel window, path kernels) count every path pair on their progress bar."""
    import logging

    from hydroscale.partition import partition_network

    cfg = workflow_from_mapping(tiny_route)
    bars = _Bars()
    with caplog.at_level(logging.INFO, logger="hydroscale"):
        run_route(cfg, progress=bars)
    phases = ["network", "forcing", "parameters", "partition", "router", "window", "kernels",
              "output"]
    seen = []
    for rec in caplog.records:
        name, sep, rest = rec.getMessage().partition(": ")
        if sep and name in phases + ["route"]:
            seen.append((name, rest.startswith("done in ")))
    want = [(p, done) for p in phases for done in (False, True)] + [("route", False)]
    assert seen == want
    assert [b["desc"] for b in bars.bars] == phases + ["route"]
    assert all(b["closed"] for b in bars.bars)
    inputs = build_inputs(cfg)
    part = partition_network(inputs.network, max_reaches=cfg["partition"]["max_reaches"])
    pairs = _in_cluster_pairs(inputs.network, part.cluster_of)
    assert pairs > inputs.network.n_reaches  # clusters longer than one reach
    by = {b["desc"]: b for b in bars.bars}
    for name in ("window", "kernels"):
        assert (by[name]["total"], by[name]["done"], by[name]["unit"]) == (pairs, pairs, "pair")
    assert (by["route"]["total"], by["route"]["done"]) == (3, 3)  # 12 steps, chunks of 5
    assert (by["partition"]["total"], by["partition"]["done"]) == (1, 1)
