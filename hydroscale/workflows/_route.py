"""Run a ``route`` workflow on one device: partition, time chunks with carried state, Zarr out.

The run streams: forcing is read one time chunk at a time, routed with the state carried from
the previous chunk, and written to the output store; only the reaches chosen for hydrographs are
kept in memory.  Progress is reported through a ``progress(desc, total, unit)`` factory (the CLI
passes tqdm bars; the default reports nothing).
"""

from __future__ import annotations

import json
import logging
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..network import RiverNetwork
from ._common import (
    NullProgress,
    Progress,
    input_paths,
    memory_facts,
    output_folder_lock,
    partition_inputs,
    phase,
)
from ._common import device as device_of
from ._initial import initial_offsets
from ._inputs import RouteInputs, build_inputs, routing_options

__all__ = ["RouteResult", "hydrograph_reaches", "plan_route", "run_route", "route_single"]

logger = logging.getLogger(__name__)


@dataclass
class RouteResult:
    """What a run produced: ``summary`` (also written as JSON) and the file paths."""

    summary: dict[str, Any]
    store: Path | None
    figure: Path | None
    summary_path: Path


def hydrograph_reaches(network: RiverNetwork, hydro: dict[str, Any],
                       gauges: np.ndarray) -> np.ndarray:
    """Reach indices to plot: chosen ids, the outlets of the largest basins, then gauged
    reaches with the most upstream reaches first (at most ``max_panels``, no repeats)."""
    picks: list[int] = []
    if hydro["reaches"]:
        picks.extend(network.index_of(np.asarray(hydro["reaches"], np.int64)).tolist())
    if hydro["outlets"]:
        size = np.bincount(network.basin, minlength=network.n_reaches)
        outlets = network.outlets[np.argsort(-size[network.outlets], kind="stable")]
        picks.extend(outlets[: hydro["outlets"]].tolist())
    if hydro["gauges"] and gauges.size:
        from ..api import accumulate

        g = network.index_of(gauges)
        upstream = accumulate(network, np.ones(network.n_reaches))[g]
        picks.extend(g[np.argsort(-upstream, kind="stable")].tolist())
    seen: dict[int, None] = {}
    for i in picks:
        seen.setdefault(int(i), None)
    return np.asarray(list(seen)[: hydro["max_panels"]], np.int64)


def _definition(cfg: dict[str, Any], inputs: RouteInputs, extra: dict[str, Any]) -> dict:
    """What determines a single-device run's output (a resumed run must match it)."""
    from ..io import digest

    rt, net, f = cfg["routing"], inputs.network, inputs.forcing
    start = extra.get("initial_state")
    lakes = {"lakes": extra["lakes"]} if extra.get("lakes") else {}  # level-pool runs only
    return {
        **lakes,
        "engine": extra.get("engine"),
        "routing": {**routing_options(cfg).describe(), "window": extra.get("window")},
        "time_chunk": rt["time_chunk"], "initial": rt["initial"],
        "initial_discharge": rt.get("initial_discharge"),
        "initial_negative": rt.get("initial_negative"),
        "initial_offsets": extra.get("initial_offsets"),  # r*, Q0: what a given file held
        "initial_state": None if start is None else digest(
            start.router.runoff_hist.numpy(), start.router.inflow_hist.numpy(),
            start.inflow_offset),
        "partition": dict(cfg["partition"]),
        "network": digest(net.ids, net.downstream),
        "params": None if inputs.params is None else digest(inputs.params.numpy()),
        "forcing": f.identity(),
    }


def _open_store(cfg: dict[str, Any], inputs: RouteInputs,
                extra: dict[str, Any]) -> tuple[Path | None, Any]:
    """Create the output store, or reopen an incomplete one of the same run (``resume``);
    returns its path and the :class:`~hydroscale.distributed._recovery.PreparedOutput`
    (``done``: the time chunks it records as written, ``(0, chunk)``)."""
    out = cfg["output"]
    if out["store"] is None:
        return None, None
    from ..io import create_output_store, prepare_output, run_fingerprint

    path = Path(out["dir"]) / out["store"]
    rt = cfg["routing"]
    definition = _definition(cfg, inputs, extra)
    start = extra.pop("initial_state", None)

    def create() -> None:
        create_output_store(
            path, inputs.network.ids, inputs.forcing.time,
            chunks=(out["reach_chunk"], rt["time_chunk"]), interval_s=inputs.forcing.interval_s,
            run={"workflow": cfg.get("name") or "route", "irf": rt["irf"],
                 "substeps": rt["substeps"], "forcing": inputs.forcing.describe()["source"],
                 "definition": definition, **extra,
                 "initial_state": None if start is None else start.path},
            overwrite=out["overwrite"], fingerprint=run_fingerprint(definition),
            dtype=rt["dtype"],
        )

    prepared = prepare_output(str(path), definition, create, overwrite=out["overwrite"],
                              resume=out["resume"], hint="--overwrite (output.overwrite=true)",
                              inputs=input_paths(cfg))
    return path, prepared


def truncation_facts(truncated_mass: Any, window: int, steps: int) -> dict[str, Any]:
    """``window_is_run_length`` (the window spans the run: nothing is truncated within it)
    and ``max_truncated_mass``: the largest fraction of an in-cluster path response the run
    leaves out (0 when the window spans the run)."""
    covers = int(window) >= int(steps)
    m = np.asarray(truncated_mass if truncated_mass is not None else [], np.float64)
    worst = float(np.nanmax(m)) if m.size and np.isfinite(m).any() else 0.0
    return {"window_is_run_length": covers, "max_truncated_mass": 0.0 if covers else worst}


def _kept_from_store(store: Path, keep: np.ndarray, a: int, b: int) -> np.ndarray:
    """Discharge ``[k, b - a]`` of reaches ``keep`` (network order rows) already written."""
    import zarr

    root = zarr.open_group(str(store), mode="r")
    srt = np.argsort(keep)
    got = root[root.attrs["variable"]].get_orthogonal_selection((keep[srt], slice(a, b)))
    out = np.empty_like(got)
    out[srt] = got
    return out


def single_device_plan(router: Any, part: Any, steps: int, rt: dict[str, Any],
                       device: torch.device, options: Any) -> Any:
    """The run plan of a one-device route (:func:`~hydroscale.routing.plan_run` with one
    worker: every kernel resident, the whole network's chunk of runoff and discharge, one
    carried state); refuses (:class:`~hydroscale.routing.RunTooLargeError`) a run whose
    kernels do not fit resident, pointing to a cluster (whose runtime builds them per
    batch)."""
    from ..routing import RunTooLargeError, available_bytes, format_bytes, parse_bytes, plan_run

    limit = ((parse_bytes(rt["memory_limit"]), "routing.memory_limit")
             if rt.get("memory_limit") is not None else available_bytes(device))
    n = int(part.n_reaches)
    store = options.storage_dtype or options.dtype
    plan = plan_run([{"kernel_rows": [router.kernel_rows()], "reaches": [n],
                      "groups": [[n, 0, 0]]}], window=int(router.window),
                    substeps=options.substeps, n_steps=steps, time_chunk=rt["time_chunk"],
                    itemsize=store.itemsize, aggregate_itemsize=options.aggregate_dtype.itemsize,
                    limits=[limit], held_chunks=1)
    if plan.residency != "resident":
        w = plan.workers[0]
        raise RunTooLargeError(
            f"the path kernels ({format_bytes(w.kernels)}) and a time chunk do not fit "
            f"{device} ({format_bytes(w.limit or 0)}, {w.limit_source}) at once: route on a "
            "cluster (--cluster local-cuda or local-cpu), whose runtime builds kernels per "
            "batch of groups, lower routing.window or routing.substeps, or raise "
            "routing.memory_limit")
    logger.info("%s", plan.table())
    return plan


def _initial_state(rt: dict[str, Any]) -> Any:
    """The restart state ``routing.initial_state`` names (a RouteState), or None."""
    if not rt.get("initial_state"):
        return None
    from ..routing import RouteState

    return RouteState.load(rt["initial_state"])


def _offset(values: np.ndarray) -> np.ndarray | None:
    """A state's steady-start offset ``[1, N]`` as ``[N]``, None when it is 0 (dry start)."""
    return np.asarray(values[0], np.float64) if np.any(values) else None


def _run_context(cfg: dict[str, Any], inputs: RouteInputs, keep: np.ndarray | None
                 ) -> tuple[Any, ...]:
    """What a one-device route reads first: ``(routing section, partition section, network,
    forcing, steps, device, RoutingOptions, keep [k], kept [k, T] zeros in the run's
    dtype)``."""
    rt, forcing = cfg["routing"], inputs.forcing
    keep = np.zeros(0, np.int64) if keep is None else keep
    return (rt, cfg["partition"], inputs.network, forcing, forcing.n_steps,
            device_of(rt["device"]), routing_options(cfg), keep,
            np.zeros((keep.size, forcing.n_steps), np.dtype(rt["dtype"])))


def route_single(
    cfg: dict[str, Any],
    inputs: RouteInputs,
    *,
    progress: Progress = NullProgress,
    keep: np.ndarray | None = None,
    write: bool = True,
    plan_only: bool = False,
) -> tuple[dict[str, Any], np.ndarray, Path | None]:
    """Route on one device; returns (run facts, discharge of the ``keep`` reaches [k, T], store).

    ``plan_only``: stop after the run plan (``facts["run_plan"]``), before aggregation.

    The facts hold timings (``partition_s``, ``setup_s``, ``route_s``), the engine, the
    window and the largest truncated kernel mass (and ``final_state``: the restart file
    written, with ``output.final_state``).

    Restarts: ``routing.initial_state`` continues the run that wrote that state file
    (:class:`~hydroscale.routing.RouteState`: its window, its steady-start offsets; refused,
    naming what differs, when the network, parameters, IRF, substeps, window, partition or
    step length differ, or when the forcing does not start at the step after its last).
    Routing ``T1`` steps with ``output.final_state``, then the next ``T - T1`` from it,
    writes the same discharge as one run of ``T`` steps with a final state, bit for bit when
    ``T1`` is a multiple of ``routing.time_chunk`` (the same chunks; same engine and
    device), within rounding otherwise.
    """
    if inputs.lakes is not None:
        if plan_only:
            raise ValueError("routing.lakes level_pool has no run plan yet (plan the run "
                             "with routing.lakes none)")
        from ._lakes import route_single_lakes

        return route_single_lakes(cfg, inputs, progress=progress, keep=keep, write=write)
    rt, part_cfg, net, forcing, steps, device, options, keep, kept = _run_context(
        cfg, inputs, keep)
    dtype = options.dtype
    start = _initial_state(rt)
    base, acc = initial_offsets(rt, inputs) if start is None else (
        _offset(start.inflow_offset), _offset(start.discharge_offset))
    facts: dict[str, Any] = {"device": str(device), "dtype": rt["dtype"]}
    if rt["engine"] == "oracle":
        from ..routing import route_oracle

        facts.update(engine="oracle", partition_s=0.0, setup_s=0.0)
        r = forcing.read_all(0, steps).astype(np.float64)
        if base is not None:
            r = r - base[:, None]
        t0 = time.perf_counter()
        q = route_oracle(net, r, rt["irf"], inputs.params, substeps=rt["substeps"],
                         allow_unstable=rt["allow_unstable"])
        q = np.asarray(q, np.float64) + (0.0 if acc is None else np.asarray(acc)[:, None])
        facts["route_s"] = time.perf_counter() - t0
        store, prepared = _open_store(cfg, inputs, {"engine": "oracle"}) if write else (None,
                                                                                       None)
        if store is not None:
            try:
                prepared.store.write(0, 0, q)
            except BaseException:
                prepared.rollback()
                raise
            prepared.complete()
        kept[:] = q[keep]
        return facts, kept, store

    from ..io import digest
    from ..routing import RivTreeCluster, StagedRouter, check_fits, estimate_route_bytes

    tc = min(rt["time_chunk"], steps)  # a coarse guard before anything is built
    check_fits(estimate_route_bytes(net.n_reaches, tc, rt["substeps"], 1, dtype, window=1),
               device, "route", detail=f"{net.n_reaches} reaches x {tc} steps x substeps="
               f"{rt['substeps']}", hint="lower routing.substeps or routing.time_chunk")
    t0 = time.perf_counter()
    part = partition_inputs(net, inputs, rt, part_cfg, progress)
    t1 = time.perf_counter()
    backend = options.backend
    with phase(progress, "router", f"planning the in-cluster paths of {part.n_clusters} "
               f"clusters in {part.n_waves} waves on {device}"):
        router = StagedRouter(RivTreeCluster(net, part.cluster_of), options=options,
                              device=device)
    pairs = router.plan.n_pairs
    if start is not None:  # a restart keeps the window of the run it continues
        if rt["window"] not in ("auto", start.window):
            raise ValueError(f"routing.window {rt['window']} differs from the window "
                             f"{start.window} of the restart state {start.path!r}; leave "
                             "routing.window 'auto' (the state's window is used)")
        router.window = start.window
    elif rt["window"] == "auto":
        # Taps beyond the run's length never act: a window longer than the run is wasted
        # work, unless the run is to be continued (a final state): then it fits the
        # tolerance whatever the length, and a continuation keeps it.
        with phase(progress, "window", f"fitting the kernel window: {pairs:,} path pairs "
                   "aggregated in float64", pairs, "pair") as bar:
            router.window = router.auto_window(
                inputs.params.to(device),
                max_steps=None if cfg["output"].get("final_state") else steps,
                on_progress=bar.update)
    run_plan = single_device_plan(router, part, steps, rt, device, options)
    facts["run_plan"] = run_plan.as_dict()
    if plan_only:
        return facts, kept, None
    if run_plan.time_chunk < run_plan.requested_time_chunk:  # lowered to fit
        logger.warning("routing.time_chunk %d does not fit %s: %d steps (see the run plan)",
                       rt["time_chunk"], device, run_plan.time_chunk)
        rt = {**rt, "time_chunk": run_plan.time_chunk}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with phase(progress, "kernels", f"aggregating the path kernels of {pairs:,} pairs "
               f"(window {router.window} steps, {rt['substeps']} sub-steps)", pairs,
               "pair") as bar, torch.no_grad():
        kernels = router.aggregate(inputs.params.to(device), on_progress=bar.update)
    from ..routing import restart_fingerprint

    fingerprint = restart_fingerprint(net, inputs.params, rt["irf"], rt["substeps"],
                                      kernels.window, part.cluster_of, forcing.interval_s)
    before = 0
    if start is not None:
        start.check(net, fingerprint, batch=1, time=forcing.time[0])
        before = start.steps
    # before any output is touched
    router.check_window(kernels, before + steps, "routing.window")
    t2 = time.perf_counter()
    facts.update(
        engine=f"staged/{backend}", clusters=part.n_clusters, waves=part.n_waves,
        window=int(kernels.window), partition_s=t1 - t0, setup_s=t2 - t1,
        **truncation_facts(kernels.truncated_mass, kernels.window, steps),
    )
    store, prepared = None, None
    if write and cfg["output"]["store"] is not None:
        with phase(progress, "output", "creating (or resuming) the output store "
                   f"{Path(cfg['output']['dir']) / cfg['output']['store']}"):
            store, prepared = _open_store(cfg, inputs, {
                "engine": facts["engine"], "window": kernels.window, "initial_state": start,
                "initial_offsets": None if base is None else digest(base, acc)})
    try:
        facts, kept, store, last = _route_chunks(
            facts, router, kernels, inputs, rt, keep, kept, base, acc, store, prepared,
            device, dtype, progress, None if start is None else start.router)
    except BaseException:
        if prepared is not None:
            prepared.rollback()  # a store replaced by overwrite comes back
        raise
    final = cfg["output"].get("final_state")
    if final:
        from ..routing import RouteState

        n = net.n_reaches
        zeros = np.zeros((1, n))
        t_next = forcing.time[-1] + np.timedelta64(int(round(forcing.interval_s)), "s")
        path = RouteState(
            last.to("cpu"), net.ids.copy(),
            zeros if base is None else np.asarray(base, np.float64).reshape(1, n),
            zeros if acc is None else np.asarray(acc, np.float64).reshape(1, n),
            fingerprint, before + steps, np.datetime64(t_next, "s")).save(final)
        facts["final_state"] = str(path)
        logger.info("final state (after step %d, next step %s) written to %s", before + steps,
                    t_next, path)
    return facts, kept, store


def _route_chunks(facts: dict[str, Any], router: Any, kernels: Any, inputs: RouteInputs,
                  rt: dict[str, Any], keep: np.ndarray, kept: np.ndarray, base: Any, acc: Any,
                  store: Path | None, prepared: Any, device: torch.device, dtype: torch.dtype,
                  progress: Progress, state0: Any = None
                  ) -> tuple[dict[str, Any], np.ndarray, Path | None, Any]:
    """The time-chunk loop of :func:`route_single` (resumes after the chunks ``prepared``
    records as written), from the carried state ``state0`` (a restart; dry when None);
    returns the facts, the kept rows, the store and the state after the last chunk."""
    net, forcing = inputs.network, inputs.forcing
    n, steps, tc = net.n_reaches, forcing.n_steps, rt["time_chunk"]
    n_chunks = -(-steps // tc)
    done = set() if prepared is None else prepared.done
    prog = None if prepared is None else prepared.store.progress
    first = 0  # chunks written by an interrupted run of the same definition: reused
    while (0, first) in done and prog.has_state(0, first) and first < n_chunks:
        first += 1
    state = None if state0 is None else state0.to(device, dtype)
    if first:
        from ..routing import RouterState

        z = prog.load_state(0, first - 1)
        state = RouterState(torch.from_numpy(z["runoff_hist"]).to(device, dtype),
                            torch.from_numpy(z["inflow_hist"]).to(device, dtype))
        logger.info("resuming %s: %d of %d time chunks already written", store, first,
                    n_chunks)
    facts["reused_chunks"] = first
    base_t = None if base is None else torch.as_tensor(base, dtype=dtype, device=device)
    acc_t = None if acc is None else torch.as_tensor(np.asarray(acc), dtype=dtype, device=device)
    route_s = 0.0
    logger.info("route: %d reaches x %d steps in %d time chunk(s) of at most %d steps", n,
                steps, n_chunks, min(tc, steps))
    bar = progress("route", n_chunks, "chunk")
    with torch.no_grad():
        for c in range(n_chunks):
            a, b = c * tc, min(steps, (c + 1) * tc)
            if c < first:
                if keep.size:
                    kept[:, a:b] = _kept_from_store(store, keep, a, b)
                bar.update(1)
                continue
            r = torch.from_numpy(forcing.read_all(a, b)).to(device=device, dtype=dtype)
            if base_t is not None:
                r = r - base_t[:, None]
            ts = time.perf_counter()
            q, state = router(r.unsqueeze(0), kernels=kernels, state=state, return_state=True)
            q = q[0]
            if acc_t is not None:
                q = q + acc_t[:, None]
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            route_s += time.perf_counter() - ts
            qn = q.cpu().numpy()  # in routing.dtype, as the store holds it
            if store is not None:
                prepared.check()  # another run took the store: stop now, report no success
                prepared.store.write(0, a, qn)
                prog.save_state(0, c, {"runoff_hist": state.runoff_hist.cpu().numpy(),
                                       "inflow_hist": state.inflow_hist.cpu().numpy()})
                prog.mark_done(0, c)
            kept[:, a:b] = qn[keep]
            bar.update(1)
    bar.close()
    if store is not None:
        prepared.complete()
    facts["route_s"] = route_s
    if "run_plan" in facts:
        from ..routing import peak_bytes

        facts.update(memory_facts(facts["run_plan"], [peak_bytes(device)]))
    if n * steps:
        logger.info("routed %d reaches x %d steps in %.2f s", n, steps, route_s)
    return facts, kept, store, state


def _station(network: RiverNetwork, i: int) -> str:
    """The USGS station on reach index ``i`` (RouteLink ``gages``), or ""."""
    g = network.attrs.get("gages")
    return "" if g is None else str(np.asarray(g)[i]).strip()


def _figure(path: Path, inputs: RouteInputs, keep: np.ndarray, kept: np.ndarray,
            title: str, label: str = "hydroscale") -> Path | None:
    """Hydrographs of the ``keep`` reaches: ours (each step's mean, plotted at its end)
    beside the references (NWM streamflow, USGS), titled with the reach id and its USGS
    station; times in UTC."""
    if keep.size == 0:
        return None
    from ..plotting import plot_hydrographs

    net, f = inputs.network, inputs.forcing
    t_end = f.time + np.timedelta64(int(round(f.interval_s)), "s")
    panels = []
    for row, i in enumerate(keep):
        rid = int(net.ids[i])
        series = {label: (t_end, kept[row])}
        for name, ref in inputs.references.items():
            if rid in ref["reach"].values:
                s = ref.sel(reach=rid)
                if bool(np.isfinite(s.values).any()):
                    series[name] = (s["time"].values, s.values)
        kind = "outlet" if net.downstream[i] < 0 else "reach"
        station = _station(net, int(i))
        panels.append((f"{kind} {rid}" + (f", USGS {station}" if station else ""), series))
    return plot_hydrographs(path, panels, title=title)


def _start_label(rt: dict[str, Any]) -> str:
    """How the run started, for the figure's legend."""
    if rt.get("initial_state"):
        return "hydroscale (continued from a restart state)"
    return {"dry": "hydroscale (dry start)",
            "steady": "hydroscale (steady start: first step's inflow)",
            "discharge": "hydroscale (warm start from NWM)"
            if rt.get("initial_discharge") == "lower_colorado" else
            f"hydroscale (start: discharge of {rt.get('initial_discharge')})"}[rt["initial"]]


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB on Linux


def plan_route(cfg: dict[str, Any], *, client: Any = None,
               progress: Progress = NullProgress) -> Any:
    """The run plan of a validated ``route`` workflow (:class:`~hydroscale.routing.RunPlan`:
    kernel residency, time chunk, each worker's estimated peak memory against its limit),
    computed after the inputs, the partition and the routers' set-up, before any kernel is
    aggregated; nothing is written.  Raises
    :class:`~hydroscale.routing.RunTooLargeError` when the run cannot fit."""
    from ..routing import RunPlan

    inputs = build_inputs(cfg)
    if client is not None:
        from ._distributed import route_distributed_workflow

        facts, _, _ = route_distributed_workflow(cfg, inputs, client, keep=np.zeros(0, np.int64),
                                                 progress=progress, plan_only=True)
    else:
        if cfg["routing"]["engine"] == "oracle":
            raise ValueError("routing.engine oracle has no run plan (it holds full-length "
                             "float64 kernels); plan the block-sparse engine instead")
        facts, _, _ = route_single(cfg, inputs, progress=progress, write=False, plan_only=True)
    return RunPlan.from_dict(facts["run_plan"])


def run_route(
    cfg: dict[str, Any],
    *,
    progress: Progress = NullProgress,
    client: Any = None,
    inputs: RouteInputs | None = None,
) -> RouteResult:
    """Run a validated ``route`` workflow; write the store, the hydrograph PNG and
    ``summary.json`` under ``output.dir``.

    With ``client`` (a ``distributed.Client``) the run goes through
    :mod:`hydroscale.distributed`; otherwise on one device (:func:`route_single`).
    """
    out_dir = Path(cfg["output"]["dir"])
    if cfg["output"]["store"] is not None:
        from ..io import check_not_nested

        store = out_dir / cfg["output"]["store"]
        bundled = [out_dir / "forcing.zarr"] if client is not None and \
            cfg["forcing"]["source"] == "lower_colorado" else []
        check_not_nested(store, [*input_paths(cfg), *bundled])
    with output_folder_lock(out_dir):
        return _run_route(cfg, progress, client, inputs)


def _run_route(cfg: dict[str, Any], progress: Progress, client: Any,
               inputs: RouteInputs | None) -> RouteResult:
    t_start = time.perf_counter()
    out_dir = Path(cfg["output"]["dir"])
    inputs = inputs if inputs is not None else build_inputs(cfg, progress)
    t_inputs = time.perf_counter() - t_start
    net, steps = inputs.network, inputs.forcing.n_steps
    keep = hydrograph_reaches(net, cfg["output"]["hydrographs"], inputs.gauges)
    if client is not None:
        from ._distributed import route_distributed_workflow

        if cfg["output"]["store"] is None:  # discharge stays on the workers: nothing to plot
            keep = keep[:0]
        facts, kept, store = route_distributed_workflow(cfg, inputs, client, keep=keep,
                                                        progress=progress)
    else:
        facts, kept, store = route_single(cfg, inputs, progress=progress, keep=keep)
    out_format, converted = cfg["output"].get("format", "zarr"), None
    if store is not None and out_format != "zarr":
        from ..io import export_output

        converted = export_output(store, Path(store).with_suffix(".nc"), out_format,
                                  network=net)
    label = cfg.get("name") or f"{cfg['network']['source']} network"
    fig = _figure(out_dir / "hydrographs.png", inputs, keep, kept,
                  f"hydroscale: {label}, {cfg['routing']['irf']}",
                  _start_label(cfg["routing"]))
    wall = time.perf_counter() - t_start
    reach_steps = net.n_reaches * steps
    summary = {
        "workflow": cfg.get("name"),
        "reaches": net.n_reaches,
        "steps": steps,
        "substeps": cfg["routing"]["substeps"],
        "interval_s": inputs.forcing.interval_s,
        "irf": cfg["routing"]["irf"],
        # timings rounded; figures such as the truncated mass (~1e-7) kept as they are
        **{k: (round(v, 4) if isinstance(v, float) and k.endswith("_s") else v)
           for k, v in facts.items()},
        "inputs_s": round(t_inputs, 3),
        "wall_s": round(wall, 3),
        "reach_steps_per_s_routing": reach_steps / facts["route_s"] if facts["route_s"] else None,
        "reach_steps_per_s_wall": reach_steps / wall,
        "peak_rss_gb": round(_peak_rss_gb(), 2),
        "outputs": {
            "store": None if store is None else str(store),
            "file": None if converted is None else str(converted),
            "format": out_format,
            "hydrographs": None if fig is None else str(fig),
            "hydrograph_reaches": net.ids[keep].tolist(),
        },
    }
    js = out_dir / "summary.json"
    summary["outputs"]["summary"] = str(js)
    js.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    logger.info("summary written to %s", js)
    return RouteResult(summary, store, fig, js)
