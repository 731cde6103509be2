"""The other workflow tasks: partition report, benchmark, ingest."""

from __future__ import annotations

import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io import ArrayForcing
from ._common import NullProgress, Progress
from ._inputs import RouteInputs, build_inputs
from ._route import route_single

__all__ = ["run_benchmark", "run_ingest", "run_partition", "basin_subset"]

logger = logging.getLogger(__name__)


def run_partition(cfg: dict[str, Any], out_dir: str | Path, *,
                  progress: Progress = NullProgress) -> dict[str, Any]:
    """Partition the workflow's network; write ``partition_report.txt``, ``partition.png``,
    ``partition/`` (:meth:`~hydroscale.partition.Partition.save`, reload with
    ``Partition.load``) and ``partition_summary.json`` under ``out_dir``; return the summary."""
    from ..partition import partition_network, travel_time_bound

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rt, pc = cfg["routing"], cfg["partition"]
    bar = progress("partition", 4, "phase")
    t0 = time.perf_counter()
    inputs = build_inputs(cfg)
    bar.update(1)
    travel = None
    if pc["max_travel_time"] is not None:
        travel = travel_time_bound(rt["irf"], inputs.params, substeps=rt["substeps"])
    t1 = time.perf_counter()
    part = partition_network(inputs.network, max_reaches=pc["max_reaches"], travel_time=travel,
                             max_travel_time=pc["max_travel_time"],
                             n_workers=pc["workers"] or 1)
    t2 = time.perf_counter()
    bar.update(1)
    report = out / "partition_report.txt"
    report.write_text(part.report() + "\n")
    png = part.plot(out / "partition.png")
    bar.update(1)
    saved = part.save(out / "partition")  # a folder: partition.npz + partition.json
    bar.update(1)
    bar.close()
    summary = {
        "reaches": inputs.network.n_reaches,
        "inputs_s": round(t1 - t0, 3),
        "partition_s": round(t2 - t1, 3),
        **{k: v for k, v in part.summary().items()},
        "outputs": {"report": str(report), "figure": str(png), "partition": str(saved)},
    }
    js = out / "partition_summary.json"
    summary["outputs"]["summary"] = str(js)
    js.write_text(json.dumps(summary, indent=2, default=_jsonable) + "\n")
    return summary


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


def basin_subset(network: Any, target: int, seed: int = 0) -> np.ndarray:
    """Bool mask [N] of whole basins holding at most ``target`` reaches (largest that fit
    first, then random ones), for oracle checks on a network too big for the oracle."""
    size = np.bincount(network.basin, minlength=network.n_reaches)
    outlets = network.outlets
    chosen = np.zeros(network.n_reaches, bool)
    total = 0
    biggest = outlets[np.argsort(-size[outlets], kind="stable")]
    rng = np.random.default_rng(seed)
    for o in list(biggest[:1]) + list(rng.permutation(biggest[1:])):
        if total + size[o] <= target:
            chosen[o] = True
            total += size[o]
    return chosen[network.basin]


def run_benchmark(cfg: dict[str, Any], *, progress: Progress = NullProgress) -> dict[str, Any]:
    """Time the single-device forward pass of a ``benchmark`` workflow and check it against
    the float64 oracle on whole basins; writes ``benchmark.json`` under ``output.dir``."""
    from ..calibration.metrics import nse
    from ..routing import route_oracle

    bench = cfg["benchmark"]
    out = Path(cfg["output"]["dir"])
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    inputs = build_inputs(cfg, progress)
    t_inputs = time.perf_counter() - t0
    runs = []
    for rep in range(bench["repeat"] + 1):
        facts, _, _ = route_single(cfg, inputs, progress=progress if rep == 0 else NullProgress,
                                   write=False)
        runs.append(facts)
    timed = runs[1:]
    route_s = statistics.median(r["route_s"] for r in timed)
    net, steps = inputs.network, inputs.forcing.n_steps
    result: dict[str, Any] = {
        "workflow": cfg.get("name"), "reaches": net.n_reaches, "steps": steps,
        "substeps": cfg["routing"]["substeps"], "engine": runs[0]["engine"],
        "device": runs[0]["device"], "dtype": cfg["routing"]["dtype"],
        "clusters": runs[0].get("clusters"), "waves": runs[0].get("waves"),
        "window": runs[0].get("window"), "max_truncated_mass": runs[0].get("max_truncated_mass"),
        "inputs_s": round(t_inputs, 3),
        "partition_s": round(statistics.median(r["partition_s"] for r in timed), 3),
        "setup_s": round(statistics.median(r["setup_s"] for r in timed), 3),
        "forward_s": round(route_s, 4), "forward_runs_s": [round(r["route_s"], 4) for r in timed],
        "reach_steps_per_s": net.n_reaches * steps / route_s if route_s else None,
    }
    if bench["oracle_reaches"] > 0:
        mask = basin_subset(net, bench["oracle_reaches"], seed=cfg["network"]["seed"])
        if mask.any():
            sub = net.subnetwork(mask)
            s = min(bench["oracle_steps"], steps)
            full = inputs.forcing
            values = full.read_all(0, s)[mask]
            sub_in = RouteInputs(sub, ArrayForcing(values, full.time[:s], full.interval_s,
                                                   full.describe()["source"]),
                                 inputs.params[torch.as_tensor(mask)])
            keep = np.arange(sub.n_reaches)
            dry = {**cfg, "routing": {**cfg["routing"], "initial": "dry"}}
            _, q, _ = route_single(dry, sub_in, keep=keep, write=False)
            q0 = np.asarray(route_oracle(sub, values.astype(np.float64), cfg["routing"]["irf"],
                                         sub_in.params, substeps=cfg["routing"]["substeps"],
                                         allow_unstable=cfg["routing"]["allow_unstable"]))
            size = np.bincount(sub.basin, minlength=sub.n_reaches)
            outlet = int(sub.outlets[np.argmax(size[sub.outlets])])
            result["oracle"] = {
                "reaches": sub.n_reaches, "steps": s,
                "rel_l2": float(np.linalg.norm(q - q0) / np.linalg.norm(q0)),
                "max_abs": float(np.max(np.abs(q - q0))),
                "nse_largest_outlet": float(nse(q[outlet], q0[outlet])),
                "largest_outlet_id": int(sub.ids[outlet]),
            }
    path = out / "benchmark.json"
    result["outputs"] = {"summary": str(path)}
    path.write_text(json.dumps(result, indent=2, default=_jsonable) + "\n")
    return result


def run_ingest(cfg: dict[str, Any], command: str = "") -> dict[str, Any]:
    """Run an ``ingest`` workflow through :func:`hydroscale.io.ingest`; returns a summary."""
    from ..io import ingest

    ing = cfg["ingest"]
    network = None
    if ing["routelink"]:
        from ..io import read_routelink

        network = read_routelink(ing["routelink"])
    elif ing["rapid_connect"]:
        from ..io.rapid import read_rapid_connect

        network = read_rapid_connect(ing["rapid_connect"])
    order = None
    if ing["reach_order"]:
        order = np.loadtxt(ing["reach_order"], dtype=np.int64, ndmin=1)
    if Path(ing["store"]).exists() and not ing["overwrite"]:
        raise FileExistsError(
            f"the store {ing['store']!r} exists; pass --overwrite (or set "
            "ingest.overwrite=true) to replace it"
        )
    t0 = time.perf_counter()
    root = ingest(ing["source"], ing["store"], network=network, reach_order=order,
                  variable=ing["variable"], name=ing["name"], chunks=tuple(ing["chunks"]),
                  time_is_end=ing["time_is_end"], overwrite=ing["overwrite"],
                  provenance={"command": command} if command else None)
    arr = root[ing["name"]]
    return {"store": ing["store"], "variable": ing["name"], "reaches": int(arr.shape[0]),
            "steps": int(arr.shape[1]), "chunks": list(arr.chunks),
            "interval_s": root.attrs.get("interval_s"),
            "wall_s": round(time.perf_counter() - t0, 3)}
