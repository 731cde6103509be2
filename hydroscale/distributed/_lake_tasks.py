"""Groups of lakes in the distributed runtime (issue 29): what a worker runs for a group of
lakes instead of path kernels.

A plan cut at lakes (:func:`~hydroscale.distributed.plan_waves` with ``lakes=``) holds groups
made only of lakes (one (wave, worker) set of lakes each, :attr:`WavePlan.group_lake`).  Their
task, like any group's, is a pure function of its inputs: the runoff of the lakes' reaches,
the transfer buffers of the upstream groups (their exits' ``f`` sub-step channels) and the
carried state -- here the lakes' water elevation ``[B, L_g]`` (float64, m), carried in
:attr:`ChunkResult.elevation` (and saved as the group's state for a resumed run).  All lakes
of the group are stepped in one fused time loop (:class:`~hydroscale.routing.LakeNodes`); the
outflow at the lakes' outlets is the group's transfer buffer.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch

from ..network import RiverNetwork
from ..routing import LakeLayout, LakeNodes, RivTreeCluster
from ._sizeof import ChunkResult, TransferBuffer

logger = logging.getLogger(__name__)


def lake_nodes(data: Any, network: RiverNetwork, groups: RivTreeCluster,
               device: torch.device) -> LakeNodes:
    """The lake step of a run's lake groups on this worker (from the scattered run data)."""
    layout = LakeLayout.build(network, data.lakes)
    return LakeNodes(groups, layout, dt=float(data.dt), substeps=data.options.substeps,
                     device=device)


def route_lake_group(run: Any, ps: Any, spec: Any, group: int, chunk: int, t0: int, t1: int,
                     prev: Any, baseline: Any, upstream: tuple) -> ChunkResult:
    """:func:`~._worker.route_task` for a group of lakes: read the lakes' runoff, sum the
    upstream buffers into their inlets, step the lakes from the carried elevation, write the
    lakes' discharge (each reach its lake's outflow) and return the outlets' buffer.

    With a ``baseline`` (a warm start's discharge ``q0`` ``[N]``: the linear groups route the
    departure from it, :meth:`~hydroscale.routing.LakeLayout.steady_inflow`), the lakes
    start at the level releasing ``q0`` at their outlets and get their feeders' ``q0`` as
    extra inflow; their own discharge is written as it is."""
    from ._worker import (  # the task helpers of every group
        _reaches,
        block_checksum,
        upstream_outflows,
    )

    nodes: LakeNodes = run.lakes
    dev, cs = run.device, run.groups
    a, b = (int(x) for x in cs.reach_ptr_cluster[group])
    dtype = run.data.options.dtype
    tic = time.perf_counter()
    x = ps.forcing.read(_reaches(run, a, b, ps.forcing), (a, b), t0, t1, dev)
    ps.timers["read"] += time.perf_counter() - tic
    tic = time.perf_counter()
    node_run = nodes.run_of(group)
    if run.lake_params is None:
        run.lake_params = nodes.params()
    extra = None
    if baseline is not None:
        q0 = torch.as_tensor(np.asarray(baseline, np.float64))[None]
        extra, start = nodes.steady_start(node_run, q0, run.lake_params)
    volumes = None  # [B, l, 2] m³ in and out before this chunk (None: zero)
    if prev is None:
        elev = nodes.initial_elevation(node_run, 1) if baseline is None else start
    elif isinstance(prev, ChunkResult):
        elev = prev.elevation.to(dev, torch.float64)
        volumes = prev.lake_volumes
    else:  # SavedState: the state the interrupted run saved for this group
        from ..io import RunProgress

        z = torch.from_numpy(RunProgress(spec.output).load_state(prev.group, prev.chunk)
                             ["inflow_hist"]).to(dev, torch.float64)
        elev, volumes = _split_saved(z)
    outflows = upstream_outflows(upstream, dev)
    inflow = nodes.inflow_for(group, outflows) if outflows else None
    with torch.no_grad():
        q, out, done = nodes.step(node_run, x[None].to(dtype), inflow, elev, run.lake_params,
                                  extra, out_dtype=dtype)
    checksum = block_checksum(q)
    moved = torch.stack([done.inflow_volume, done.outflow_volume], -1)
    volumes = moved if volumes is None else volumes.to(moved) + moved
    ps.timers["route"] += time.perf_counter() - tic
    if ps.writer is not None:
        tic = time.perf_counter()
        block = q[0].to("cpu").numpy()
        ps.timers["d2h"] += time.perf_counter() - tic
        state = (torch.cat([done.elevation[..., None], volumes], -1).cpu().numpy()
                 if spec.record else None)
        ps.writer.submit(a, t0, block, (int(group), int(chunk)), state)
    ps.tasks += 1
    buf = TransferBuffer(int(group), int(chunk), out) if out.shape[1] else None
    empty = q.new_zeros(1, 0, 0)
    return ChunkResult(int(group), int(chunk), empty, empty.new_zeros(1, 0, 0, 0), buf,
                       checksum, done.elevation, volumes)


def _split_saved(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(elevation ``[B, l]``, volumes in and out ``[B, l, 2]``) of a lake group's saved state:
    ``[B, l, 3]`` (elevation, then the volumes since the pass began), or ``[B, l]`` (the
    elevation alone, as stores written before the volumes were saved: volumes unknown, NaN)."""
    if z.ndim == 3:
        return z[..., 0].contiguous(), z[..., 1:].contiguous()
    return z, torch.full((*z.shape, 2), float("nan"), dtype=z.dtype, device=z.device)


def lake_end_task(result: ChunkResult | list[ChunkResult], group: int) -> Any:
    """``[B, l, 3]`` float64 numpy: the lake elevations (m) a lake group's result carries (of
    ``group`` in a unit's list of results), then the lakes' inflow and outflow volumes (m³)
    since the pass began: the run summary's end levels and volumes."""
    res = next(r for r in result if r.group == group) if isinstance(result, list) else result
    vol = res.lake_volumes
    if vol is None:
        vol = torch.full((*res.elevation.shape, 2), float("nan"), dtype=torch.float64)
    return torch.cat([res.elevation.detach().cpu()[..., None].double(),
                      vol.detach().cpu().double()], -1).numpy()
