"""Run a ``route`` workflow on a Dask cluster (:func:`hydroscale.distributed.route_distributed`).

The client partitions the network over the cluster's workers and hands the forcing to the
workers as a description (a Zarr store path, or the synthetic source they generate
themselves); discharge goes from the workers straight to the output store.  The bundled
basin's forcing is first written to ``<output.dir>/forcing.zarr``.  With ``output.resume``
(the default) the same command after an interruption continues the incomplete store.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ._common import NullProgress, Progress, memory_facts, partition_inputs, phase
from ._initial import initial_offsets
from ._inputs import RouteInputs, routing_options

__all__ = ["route_distributed_workflow"]

logger = logging.getLogger(__name__)


def _forcing_source(cfg: dict[str, Any], inputs: RouteInputs, out_dir: Path,
                    r_star: np.ndarray | None) -> Any:
    """What the workers read: the workflow's forcing source, or for values held in memory
    (the bundled basin) or a steady start (``r - r*``) a store written for them in the
    output folder."""
    from ..io import ArrayForcing

    f = inputs.forcing
    if not isinstance(f, ArrayForcing) and r_star is None:
        return f  # opened (checked) once by build_inputs; the workers open their own
    import xarray as xr

    from ..io import ingest

    values = f.read_all(0, f.n_steps)
    if r_star is not None:  # route r - r*; its steady discharge Q0 is added after
        values = values - r_star[:, None].astype(values.dtype)
    da = xr.DataArray(values, {"reach": inputs.network.ids, "time": f.time},
                      ("reach", "time"), attrs={"units": "m3 s-1", "interval_s": f.interval_s})
    path = out_dir / "forcing.zarr"
    ingest(da, path, network=inputs.network, overwrite=True,
           provenance={"source": f.describe()["source"]})
    logger.info("wrote the bundled forcing to %s for the workers", path)
    return str(path)


def _lake_summary(lakes: Any, net: Any, q0: np.ndarray | None, end: list[float],
                  vin: list[float] | None = None, vout: list[float] | None = None
                  ) -> list[dict[str, Any]]:
    """The summary's lakes of a cluster run: start level (``ifd``, or releasing the warm
    start's discharge), end level, inflow and outflow volumes over the run (from the
    workers; None where unknown: a run resumed from a store that kept levels only) and
    storage change."""
    import torch

    from ..routing import (
        LakeLayout,
        elevation_for_outflow,
        initial_elevation,
        level_pool_params,
    )
    from ._lakes import lake_facts

    lay = LakeLayout.build(net, lakes)
    p = level_pool_params(torch.tensor(lakes.params))
    if q0 is None:
        start = initial_elevation(p, torch.tensor(lakes.ifd))
    else:
        start = elevation_for_outflow(p, torch.as_tensor(np.asarray(q0)[lay.outlet]))
    def volumes(v: list[float] | None) -> np.ndarray | None:
        return None if v is None or not np.isfinite(v).all() else np.asarray(v)[None]

    return lake_facts(None, start[None], np.asarray(end)[None], volumes(vin), volumes(vout),
                      layout=(lay, net))


def _kept_rows(store: str, ids: np.ndarray) -> np.ndarray:
    import zarr

    root = zarr.open_group(store, mode="r")
    arr = root[root.attrs["variable"]]
    if ids.size == 0:
        return np.zeros((0, arr.shape[1]), np.float32)
    sid = root["reach"][:]
    order = np.argsort(sid)
    rows = order[np.searchsorted(sid[order], ids)]
    srt = np.argsort(rows)
    got = arr.get_orthogonal_selection((rows[srt], slice(None)))
    out = np.empty_like(got)
    out[srt] = got
    return out


def route_distributed_workflow(
    cfg: dict[str, Any],
    inputs: RouteInputs,
    client: Any,
    *,
    keep: np.ndarray,
    progress: Progress = NullProgress,
    plan_only: bool = False,
) -> tuple[dict[str, Any], np.ndarray, Path | None]:
    """Route on the cluster of ``client``; returns (run facts, discharge of ``keep`` [k, T],
    output store path).  ``plan_only``: set the workers up, return the run plan
    (``facts["run_plan"]``) and stop."""
    from ..distributed import (
        DistributedRouter,
        plan_waves,
        route_distributed,
        worker_addresses,
    )

    rt, pc, out = cfg["routing"], cfg["partition"], cfg["output"]
    out_dir = Path(out["dir"])
    net = inputs.network
    workers = len(worker_addresses(client))
    n_workers = pc["workers"] or workers
    if n_workers != workers:
        raise ValueError(f"partition.workers = {n_workers} but the cluster has {workers} "
                         "workers; leave partition.workers null to use them all")
    store = None if out["store"] is None else out_dir / out["store"]
    if store is not None and store.exists() and not out["overwrite"]:
        import zarr

        try:
            complete = zarr.open_group(str(store), mode="r").attrs.get("complete") is not False
        except Exception:  # noqa: BLE001 - not a store: route_distributed says so
            complete = False
        if complete or not out["resume"]:
            raise FileExistsError(
                f"the output store {str(store)!r} exists and is left untouched; pass "
                "--overwrite (output.overwrite=true) to replace it, or choose another "
                "output.store")
    with phase(progress, "worker forcing", "choosing what the workers read (the bundled "
               f"forcing is written to {out_dir / 'forcing.zarr'})"):
        r_star, q0 = initial_offsets(rt, inputs)
        if inputs.lakes is not None and q0 is not None:
            # the lakes' warm start: r* from the discharge of the reaches outside lakes
            # (each lake releases q0 and takes its feeders' q0, see LakeLayout.steady_inflow)
            from ..routing import LakeLayout

            r_star = LakeLayout.build(net, inputs.lakes).steady_inflow(net, q0)
        source = _forcing_source(cfg, inputs, out_dir, r_star)
    t0 = time.perf_counter()
    part = partition_inputs(net, inputs, rt, pc, progress, n_workers)
    lakes = inputs.lakes
    cut = "" if lakes is None else f", cut at {lakes.n_lakes} lakes"
    with phase(progress, "plan", f"grouping {part.n_clusters} clusters by wave and "
               f"worker{cut}"):
        plan = plan_waves(net, part, lakes=lakes)
    lake_kw = {} if lakes is None else {"lakes": lakes, "dt": inputs.forcing.interval_s}
    partition_s = time.perf_counter() - t0
    steps = inputs.forcing.n_steps
    n_chunks = -(-steps // rt["time_chunk"])
    options = routing_options(cfg)  # "auto" window: at most the run's length
    if plan_only:
        dr = DistributedRouter(client, net, part, params=inputs.params, options=options,
                               plan=plan, max_steps=steps, time_chunk=rt["time_chunk"],
                               memory_limit=rt.get("memory_limit"), plan_only=True,
                               **lake_kw)
        return {"run_plan": dr.run_plan.as_dict()}, np.zeros((0, steps), np.float32), None
    backend = options.backend
    logger.info("set-up: scattering the run to %d workers, building their routers and "
                "aggregating the path kernels of %d groups there; then route: %d time chunks",
                n_workers, plan.n_groups, n_chunks)
    bar = progress("route", plan.n_groups * n_chunks, "group-chunk")
    try:
        summ = route_distributed(
            client, net, part, source, None if store is None else str(store),
            params=inputs.params, time_chunk=rt["time_chunk"], options=options,
            n_steps=steps, reach_chunk=out["reach_chunk"], plan=plan,
            run_metadata={"workflow": cfg.get("name") or "route"},
            overwrite=out["overwrite"], resume=out["resume"],
            baseline=q0,
            on_progress=bar.update, memory_limit=rt.get("memory_limit"), **lake_kw,
        )
    finally:
        bar.close()
    facts = {
        "engine": f"distributed/{backend}", "device": "cluster", "dtype": rt["dtype"],
        "workers": summ.workers, "clusters": part.n_clusters, "groups": summ.groups,
        "waves": summ.waves, "tasks": summ.tasks, "window": summ.window,
        "max_truncated_mass": summ.max_truncated_mass,
        "window_is_run_length": summ.window >= steps,
        "partition_s": partition_s,
        "setup_s": summ.setup_s, "route_s": summ.wall_s, "checksum": summ.checksum,
        "reused_tasks": summ.reused_tasks, "recomputed_tasks": summ.recomputed_tasks,
        **({} if lakes is None else {"lake_groups": summ.plan.get("lake_groups", 0)}),
        **memory_facts(summ.run_plan, [
            max(p["peak_bytes"], p.get("host_peak_bytes", 0)) for p in summ.per_worker]),
    }
    if lakes is not None and summ.lake_elevation_end is not None:
        facts["lakes"] = _lake_summary(lakes, net, q0, summ.lake_elevation_end,
                                       summ.lake_inflow_m3, summ.lake_outflow_m3)
    if store is None:
        return facts, np.zeros((0, steps), np.float32), None
    return facts, _kept_rows(str(store), net.ids[keep]), store
