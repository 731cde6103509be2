"""A ``route`` workflow with ``routing.lakes: level_pool`` on one device.

The network is routed by a :class:`~hydroscale.routing.LakeRouter` (the linear reaches by the
block-sparse engine with the lakes as node clusters stepped at the sub-step between its
waves, or stage by stage by the oracle), time chunk by time chunk with the lake levels and
the input histories carried
(:class:`~hydroscale.routing.LakeState`), and written to the output store as the lake-free
runs write it.  A warm start (``routing.initial``) sets the reaches outside lakes in the steady
state of its discharge and each lake at the level releasing that discharge at its outlet
(a dry start: lakes at NWM's initial fractional depth).  The facts list every
lake with its storage change over the run (``lakes``).  Resuming an interrupted run re-routes
it from the start (the per-chunk restart states do not hold lake levels yet).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._common import NullProgress, Progress, phase
from ._initial import initial_offsets
from ._inputs import RouteInputs

__all__ = ["lake_facts", "route_single_lakes"]

logger = logging.getLogger(__name__)


def _engine(name: str, device: torch.device) -> str:
    if name != "auto":
        return name
    from ..kernels import triton_available

    return "triton" if device.type == "cuda" and triton_available() else "torch"


def lake_facts(router: Any, start: torch.Tensor, end: torch.Tensor, vin: torch.Tensor | None,
               vout: torch.Tensor | None, layout: Any = None) -> list[dict[str, Any]]:
    """One entry per lake: id, name, outlet reach, stage, elevations (m), inflow, outflow
    (None where unknown: a cluster run resumed from a store that kept levels only) and
    storage change (m³) over the run (batch member 0).  ``router``: a LakeRouter, or None
    with the ``layout`` and network given as ``layout=(LakeLayout, network)``."""
    lay, net = (router.layout, router.network) if router is not None else layout
    lakes = lay.lakes
    area = lakes.param("area")
    out = []
    for j in range(lakes.n_lakes):
        h0, h1 = float(start[0, j]), float(end[0, j])
        out.append({
            "id": int(lakes.ids[j]),
            "name": lakes.names[j] if lakes.names else "",
            "reaches": int((lakes.lake_of == j).sum()),
            "outlet": int(net.ids[lay.outlet[j]]),
            "stage": int(lay.lake_stage[j]),
            "elevation_start_m": round(h0, 4),
            "elevation_end_m": round(h1, 4),
            "inflow_m3": None if vin is None else float(vin[0, j]),
            "outflow_m3": None if vout is None else float(vout[0, j]),
            "storage_change_m3": float(area[j] * (h1 - h0)),
        })
    return out


def route_single_lakes(
    cfg: dict[str, Any],
    inputs: RouteInputs,
    *,
    progress: Progress = NullProgress,
    keep: np.ndarray | None = None,
    write: bool = True,
) -> tuple[dict[str, Any], np.ndarray, Path | None]:
    """Route a workflow with lakes on one device; returns (run facts, discharge of the
    ``keep`` reaches [k, T], store), as :func:`~._route.route_single` does."""
    from ..io import digest
    from ..partition import partition_network
    from ..routing import LakeRouter
    from ._route import _open_store, _run_context

    rt, part_cfg, net, forcing, steps, device, options, keep, kept = _run_context(
        cfg, inputs, keep)
    dtype = options.dtype
    engine = _engine(rt["engine"], device)
    t0 = time.perf_counter()

    def partition(sub: Any) -> np.ndarray:
        return partition_network(sub, max_reaches=part_cfg["max_reaches"]).cluster_of

    with phase(progress, "router", f"cutting {net.n_reaches:,} reaches at "
               f"{inputs.lakes.n_lakes} lakes and planning the stages on {device}"):
        router = LakeRouter(net, inputs.lakes, options, dt=forcing.interval_s, engine=engine,
                            partition=partition, device=device)
    base, acc = initial_offsets(rt, inputs)
    offsets = None
    if acc is not None:
        q0 = torch.as_tensor(np.asarray(acc, np.float64)[None], device=device)
        offsets = router.steady_offsets(q0)
    params = inputs.params.to(device)
    clustered = router.clustered
    tc = rt["time_chunk"] if clustered else steps  # the oracle carries no state: one chunk
    kernels = None
    with torch.no_grad():
        if clustered:
            with phase(progress, "kernels", f"aggregating the path kernels "
                       f"({router.lakes.n_lakes} lakes as node clusters)"):
                kernels = router.aggregate(params, run_steps=steps)
    t1 = time.perf_counter()
    windows = [None if k is None else int(k.window) for k in (kernels or [])]
    facts: dict[str, Any] = {
        "device": str(device), "dtype": rt["dtype"], "engine": f"lakes/{engine}",
        "partition_s": 0.0, "setup_s": t1 - t0, "lake_stages": router.n_stages,
    }
    if kernels:  # the block-sparse engine: one router, its window in routing steps
        from ._route import truncation_facts

        facts.update(window=windows[0], clusters=router.clusters.n_clusters,
                     waves=router.clusters.n_waves,
                     **truncation_facts(kernels[0].truncated_mass, windows[0], steps))
    store, prepared = None, None
    if write and cfg["output"]["store"] is not None:
        store, prepared = _open_store(cfg, inputs, {
            "engine": facts["engine"], "window": windows,
            "lakes": digest(inputs.lakes.ids, inputs.lakes.reach_ids, inputs.lakes.params),
            "initial_offsets": None if base is None else digest(base, acc)})
    n_chunks = -(-steps // tc)
    state, route_s = None, 0.0
    start = vin = vout = None
    bar = progress("route", n_chunks, "chunk")
    try:
        with torch.no_grad():
            for c in range(n_chunks):
                a, b = c * tc, min(steps, (c + 1) * tc)
                r = torch.from_numpy(forcing.read_all(a, b)).to(device=device, dtype=dtype)
                ts = time.perf_counter()
                out = router(r.unsqueeze(0), None if kernels else params, kernels=kernels,
                             state=state, offsets=offsets, return_state=clustered)
                q, state = out if clustered else (out, None)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                route_s += time.perf_counter() - ts
                lk = router.last_lakes
                start = lk["elevation_start"] if start is None else start
                vin = lk["inflow_volume"] if vin is None else vin + lk["inflow_volume"]
                vout = lk["outflow_volume"] if vout is None else vout + lk["outflow_volume"]
                qn = q[0].cpu().numpy()
                if store is not None:
                    prepared.check()
                    prepared.store.write(0, a, qn)
                    prepared.store.progress.mark_done(0, c)
                kept[:, a:b] = qn[keep]
                bar.update(1)
        bar.close()
        if store is not None:
            prepared.complete()
    except BaseException:
        if prepared is not None:
            prepared.rollback()
        raise
    end = router.last_lakes["elevation_end"]
    facts["route_s"] = route_s
    facts["lakes"] = lake_facts(router, start, end, vin, vout)
    logger.info("routed %d reaches and %d lakes x %d steps in %.2f s", net.n_reaches,
                inputs.lakes.n_lakes, steps, route_s)
    return facts, kept, store
