"""The client side of a distributed run: ship once, submit every task up front, summarise.

:func:`route_distributed` routes a forcing store through a partitioned network on the
workers of a Dask cluster (DESIGN §3):

1. the network arrays (ids, downstream index, group of every reach) are scattered once to
   every worker (``broadcast=True, hash=False``), and each worker builds its run: its groups'
   :class:`~hydroscale.routing.StagedRouter` and kernels on its device;
2. one task per (group, time chunk) is submitted, all at once, pinned to the group's worker:
   it depends on the group's previous chunk (carried state, kept on the worker) and on the
   transfer buffers of the upstream groups for the same chunk, reads its forcing block from
   Zarr on the worker, writes its discharge block to the output store on the worker and
   returns its own transfer buffer.  Dask runs wave ``w + 1`` of chunk ``k`` while wave ``w``
   runs chunk ``k + 1``;
3. the client only waits (progress through logging) and gathers small per-worker figures.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..network import RiverNetwork
from ..partition import Partition
from ._forcing import SyntheticForcing, ZarrForcing, as_forcing
from ._plan import WavePlan, map_workers, plan_waves
from ._worker import (
    aggregate_task,
    begin_task,
    copy_task,
    finish_task,
    route_task,
    setup_task,
    teardown_task,
)

__all__ = [
    "DistributedRouter",
    "RunSummary",
    "io_floor",
    "route_distributed",
    "synthesize_forcing_store",
]

logger = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """Figures of one distributed run (wall times in s, bytes, reach-steps/s).

    ``wall_s`` runs from the first task submitted to the last write flushed; ``setup_s``
    (scatter, per-worker router build and kernel aggregation) is apart.  ``checksum`` is the
    float64 sum of all discharge (or, for the I/O floor, of all forcing) computed on the
    workers: equal runs on different worker counts give equal checksums.
    """

    kind: str
    reaches: int
    steps: int
    time_chunk: int
    chunks: int
    groups: int
    waves: int
    workers: int
    tasks: int
    setup_s: float
    wall_s: float
    reach_steps_per_s: float
    window: int | None = None
    max_truncated_mass: float | None = None
    checksum: float = 0.0
    peak_gpu_bytes: list[int] = field(default_factory=list)
    per_worker: list[dict[str, Any]] = field(default_factory=list)
    plan: dict[str, Any] = field(default_factory=dict)
    output_store: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return (f"{self.kind}: {self.reaches} reaches x {self.steps} steps on {self.workers} "
                f"workers ({self.groups} groups, {self.waves} waves, {self.chunks} chunks, "
                f"{self.tasks} tasks): wall {self.wall_s:.2f} s, setup {self.setup_s:.2f} s, "
                f"{self.reach_steps_per_s:.3g} reach-steps/s")


def _submit(client: Any, fn: Any, *args: Any, addr: str, key: str, priority: int = 0) -> Any:
    return client.submit(fn, *args, workers=[addr], allow_other_workers=False, pure=False,
                         key=key, priority=priority)


def _chunks(n_steps: int, time_chunk: int) -> list[tuple[int, int]]:
    if int(time_chunk) != time_chunk or time_chunk < 1:
        raise ValueError(f"time_chunk must be a positive number of steps, got {time_chunk}")
    return [(t, min(t + int(time_chunk), n_steps)) for t in range(0, n_steps, int(time_chunk))]


def _wait_logged(futures: list[Any], what: str) -> None:
    from distributed import as_completed

    n, step, done = len(futures), max(1, len(futures) // 10), 0
    for fut in as_completed(futures):
        done += 1
        if fut.status == "error":
            err = fut.exception()
            raise RuntimeError(f"{what}: task {fut.key} failed: {err!r}") from err
        if done % step == 0 or done == n:
            logger.info("%s: %d/%d tasks done", what, done, n)


def _create_output(output_store: Any, plan: WavePlan, time: np.ndarray, time_chunk: int,
                   reach_chunk: int, interval_s: Any, run: dict[str, Any], overwrite: bool,
                   variable: str = "discharge") -> str:
    import os

    from ..io import create_output_store

    path = os.fspath(output_store)
    create_output_store(path, plan.reach_ids, time, variable=variable,
                        chunks=(int(reach_chunk), int(time_chunk)), interval_s=interval_s,
                        run=run, overwrite=overwrite)
    return path


def _scatter_network(client: Any, plan: WavePlan) -> list[Any]:
    net = plan.network
    return client.scatter([net.ids, net.downstream, plan.group_of], broadcast=True, hash=False)


def _on_workers(client: Any, addrs: list[str], fn: Any, *args: Any, tag: str,
                per_worker: Any = None) -> list[Any]:
    """Run ``fn`` once on every worker (``per_worker(w)`` adds worker-specific arguments)."""
    futs = [_submit(client, fn, *args, *(per_worker(w) if per_worker else ()), addr=a,
                    key=f"hydroscale-{tag}-{w}") for w, a in enumerate(addrs)]
    return client.gather(futs)


class DistributedRouter:
    """A routing set-up resident on the workers of a Dask cluster; route passes reuse it.

    Construction scatters the network once, builds on every worker a
    :class:`~hydroscale.routing.StagedRouter` over its own groups (on its device) and
    aggregates their path kernels with one common window; :meth:`route` then runs passes
    (forcing store -> output store) and :meth:`close` frees the workers.

    Parameters
    ----------
    client, network, partition, irf, params, substeps, window, dtype, storage_dtype,
    backend, precision, allow_unstable : see :func:`route_distributed`.
    plan : a :func:`plan_waves` result to reuse.
    batch_reaches : groups hold at most about this many reaches (larger (wave, worker) sets
        are split, see :func:`plan_waves`), and each worker aggregates its kernels in batches
        of groups of at most this many reaches: this bounds device memory at set-up and per
        task.
    placement : ``"partition"`` (the partition's placement) or ``"basins"`` (every basin on
        one worker: no cross-worker transfers), see :func:`plan_waves`.
    """

    def __init__(
        self,
        client: Any,
        network: RiverNetwork,
        partition: Partition,
        irf: Any,
        params: Any,
        substeps: int = 1,
        *,
        window: int | str = "auto",
        dtype: torch.dtype = torch.float32,
        storage_dtype: torch.dtype | None = None,
        backend: str = "auto",
        precision: str | None = None,
        allow_unstable: bool = False,
        plan: WavePlan | None = None,
        batch_reaches: int = 262144,
        placement: str = "partition",
    ) -> None:
        tic = time.perf_counter()
        self.client = client
        self.plan = plan or plan_waves(network, partition, max_group_reaches=batch_reaches,
                                       placement=placement)
        self.addrs = map_workers(client, self.plan.n_workers)
        self.run_id = uuid.uuid4().hex[:10]
        self.irf, self.substeps, self.dtype = irf, int(substeps), dtype
        options = {"irf": irf, "substeps": int(substeps), "window": window, "dtype": dtype,
                   "storage_dtype": storage_dtype, "backend": backend, "precision": precision,
                   "allow_unstable": allow_unstable, "batch_reaches": int(batch_reaches)}
        arrays = _scatter_network(client, self.plan)
        pf = params
        if params is not None and not callable(params):
            pf = client.scatter(np.asarray(torch.as_tensor(params).detach().cpu().numpy()),
                                broadcast=True, hash=False)
        info = _on_workers(client, self.addrs, setup_task, self.run_id, *arrays,
                           tag=f"setup-{self.run_id}",
                           per_worker=lambda w: (self.plan.groups_of_worker(w), options, pf))
        self.window = max(int(i["window"]) for i in info)
        agg = _on_workers(client, self.addrs, aggregate_task, self.run_id, self.window,
                          tag=f"aggregate-{self.run_id}")
        arrays = pf = None  # the workers hold what they built; release the scattered data
        self.max_truncated_mass = max(a["max_truncated_mass"] for a in agg)
        self.worker_setup = [{**i, **a} for i, a in zip(info, agg)]
        self.setup_s = time.perf_counter() - tic
        self._closed = False
        logger.info("DistributedRouter %s: %d groups on %d workers set up in %.2f s "
                    "(window %d, max truncated mass %.3g)", self.run_id, self.plan.n_groups,
                    len(self.addrs), self.setup_s, self.window, self.max_truncated_mass)

    def route(
        self,
        forcing_store: Any,
        output_store: Any,
        time_chunk: int = 365,
        *,
        n_steps: int | None = None,
        reach_chunk: int = 65536,
        run_metadata: dict[str, Any] | None = None,
        overwrite: bool = False,
    ) -> RunSummary:
        """One pass from zero state: forcing -> discharge (see :func:`route_distributed`)."""
        if self._closed:
            raise RuntimeError("this DistributedRouter is closed")
        plan, client, addrs = self.plan, self.client, self.addrs
        forcing = as_forcing(forcing_store)
        steps = int(n_steps or forcing.n_steps)
        if steps > forcing.n_steps or steps < 1:
            raise ValueError(f"n_steps must lie in [1, {forcing.n_steps}], got {n_steps}")
        chunks = _chunks(steps, time_chunk)
        pass_id = uuid.uuid4().hex[:10]
        output = None
        if output_store is not None:
            meta = {
                "engine": "hydroscale.distributed", "irf": str(self.irf),
                "substeps": self.substeps, "window": self.window,
                "max_truncated_mass": self.max_truncated_mass, "time_chunk": int(time_chunk),
                "dtype": str(self.dtype), "forcing": forcing.describe(), "run_id": pass_id,
                "partition": {k: v for k, v in plan.summary().items()
                              if k != "reaches_per_worker"},
                **(run_metadata or {}),
            }
            output = _create_output(output_store, plan, forcing.time[:steps], int(time_chunk),
                                    reach_chunk, forcing.interval_s, meta, overwrite)
        _on_workers(client, addrs, begin_task, self.run_id, pass_id, forcing, output,
                    tag=f"begin-{pass_id}")
        t0 = time.perf_counter()
        g_n = plan.n_groups
        futs: dict[tuple[int, int], Any] = {}
        for k, (a, b) in enumerate(chunks):
            for g in range(g_n):
                w = int(plan.group_worker[g])
                ups = [futs[(int(u), k)] for u in plan.upstream[g] if plan.n_exits(int(u))]
                futs[(g, k)] = _submit(
                    client, route_task, self.run_id, g, k, a, b, futs.get((g, k - 1)), *ups,
                    addr=addrs[w], key=f"hydroscale-route-{pass_id}-{g}-{k}",
                    priority=-(k * g_n + g))
        last: dict[int, list[Any]] = {}
        for g in range(g_n):
            last.setdefault(int(plan.group_worker[g]), []).append(futs[(g, len(chunks) - 1)])
        try:
            _wait_logged(list(futs.values()), f"route {pass_id}")
            per = _on_workers(client, addrs, finish_task, self.run_id, tag=f"finish-{pass_id}",
                              per_worker=lambda w: tuple(last.get(w, [])))
        finally:
            futs.clear()
            last.clear()
        wall = time.perf_counter() - t0
        summ = RunSummary(
            kind="route", reaches=plan.network.n_reaches, steps=steps,
            time_chunk=int(time_chunk), chunks=len(chunks), groups=g_n, waves=plan.n_waves,
            workers=len(addrs), tasks=g_n * len(chunks), setup_s=self.setup_s, wall_s=wall,
            reach_steps_per_s=plan.network.n_reaches * steps / wall, window=self.window,
            max_truncated_mass=self.max_truncated_mass,
            checksum=float(sum(p["checksum"] for p in per)),
            peak_gpu_bytes=[max(p["peak_bytes"], s["peak_bytes"])
                            for p, s in zip(per, self.worker_setup)],
            per_worker=per, plan=plan.summary(), output_store=output,
        )
        logger.info("%s", summ)
        return summ

    def close(self) -> None:
        """Drop the run on every worker (frees their device memory)."""
        if not self._closed:
            _on_workers(self.client, self.addrs, teardown_task, self.run_id,
                        tag=f"teardown-{self.run_id}")
            self._closed = True

    def __enter__(self) -> DistributedRouter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def route_distributed(
    client: Any,
    network: RiverNetwork,
    partition: Partition,
    forcing_store: Any,
    output_store: Any,
    irf: Any,
    params: Any,
    substeps: int = 1,
    time_chunk: int = 365,
    *,
    window: int | str = "auto",
    dtype: torch.dtype = torch.float32,
    storage_dtype: torch.dtype | None = None,
    backend: str = "auto",
    precision: str | None = None,
    allow_unstable: bool = False,
    n_steps: int | None = None,
    reach_chunk: int = 65536,
    run_metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
    plan: WavePlan | None = None,
) -> RunSummary:
    """Route a forcing store through ``network`` on the workers of ``client``.

    Parameters
    ----------
    client : ``distributed.Client`` (see :func:`start_cluster`) with exactly
        ``partition.n_workers`` workers.
    network : the river network (N reaches).
    partition : its partition, placed on ``partition.n_workers`` workers.
    forcing_store : path of a Zarr forcing store (:func:`hydroscale.io.ingest`; rows in
        ``plan.reach_ids`` order are read as contiguous slices), a :class:`ZarrForcing` or a
        :class:`SyntheticForcing` (generated on the workers).  Runoff in m³/s per step.
    output_store : path of the Zarr output store to create (``(reach, time)`` float32
        discharge in m³/s, rows in the plan's engine order, with reach ids, time, units and
        the run's metadata), or None to discard discharge (benchmarks; the checksum remains).
    irf : registered IRF name.
    params : ``[N, P]`` parameters in network order (routing-step units), scattered once; or
        a picklable callable ``params(network) -> [N, P]`` evaluated on each worker.
    substeps : f, sub-steps per routing step.
    time_chunk : steps per task; bounds per-worker memory (runoff, discharge and transfer
        buffers of one chunk, plus the carried state).
    window : kernel window in steps, or ``"auto"`` (the largest of the workers' auto windows,
        so every worker uses the single-device router's window).
    dtype, storage_dtype, backend, precision, allow_unstable : as
        :class:`~hydroscale.routing.StagedRouter`.
    n_steps : route the first ``n_steps`` steps only (default all).
    reach_chunk : output store chunk along reaches.
    run_metadata : extra attributes stored under the output's ``run`` attribute.
    overwrite : replace an existing output store.
    plan : a :func:`plan_waves` result to reuse.

    Returns
    -------
    RunSummary (``setup_s``: the set-up on the workers; ``wall_s``: the pass).
    """
    forcing_store = as_forcing(forcing_store)  # a bad source fails before any set-up
    with DistributedRouter(client, network, partition, irf, params, substeps, window=window,
                           dtype=dtype, storage_dtype=storage_dtype, backend=backend,
                           precision=precision, allow_unstable=allow_unstable,
                           plan=plan) as dr:
        return dr.route(forcing_store, output_store, time_chunk, n_steps=n_steps,
                        reach_chunk=reach_chunk, run_metadata=run_metadata,
                        overwrite=overwrite)


def io_floor(
    client: Any,
    network: RiverNetwork,
    partition: Partition,
    forcing_store: Any,
    output_store: Any,
    time_chunk: int = 365,
    *,
    n_steps: int | None = None,
    reach_chunk: int = 65536,
    overwrite: bool = False,
    plan: WavePlan | None = None,
    variable: str = "discharge",
) -> RunSummary:
    """The I/O floor of :func:`route_distributed`: the same workers read the same forcing
    blocks (host -> device) and write an output store of the same size (device -> host ->
    Zarr), with the same (group, chunk) tasks and writers, but no routing and no
    dependencies between tasks."""
    tic = time.perf_counter()
    plan = plan or plan_waves(network, partition)
    addrs = map_workers(client, plan.n_workers)
    forcing = as_forcing(forcing_store)
    steps = int(n_steps or forcing.n_steps)
    chunks = _chunks(steps, time_chunk)
    run_id = uuid.uuid4().hex[:10]
    output = None
    if output_store is not None:
        output = _create_output(output_store, plan, forcing.time[:steps], int(time_chunk),
                                reach_chunk, forcing.interval_s,
                                {"engine": "hydroscale.distributed.io_floor",
                                 "forcing": forcing.describe()}, overwrite, variable)
    arrays = _scatter_network(client, plan)
    info = _on_workers(client, addrs, setup_task, run_id, *arrays, tag=f"setup-{run_id}",
                       per_worker=lambda w: (plan.groups_of_worker(w), None, None))
    del arrays
    _on_workers(client, addrs, begin_task, run_id, run_id, forcing, output,
                tag=f"begin-{run_id}")
    setup_s = time.perf_counter() - tic
    t0 = time.perf_counter()
    futs = []
    last: dict[int, list[Any]] = {}
    g_n = plan.n_groups
    for k, (a, b) in enumerate(chunks):
        for g in range(g_n):
            w = int(plan.group_worker[g])
            f = _submit(client, copy_task, run_id, g, k, a, b, addr=addrs[w],
                        key=f"hydroscale-copy-{run_id}-{g}-{k}", priority=-(k * g_n + g))
            futs.append(f)
            last.setdefault(w, []).append(f)
    try:
        _wait_logged(futs, f"io floor {run_id}")
        per = _on_workers(client, addrs, finish_task, run_id, tag=f"finish-{run_id}",
                          per_worker=lambda w: tuple(last.get(w, [])))
    finally:
        futs.clear()
        last.clear()
    wall = time.perf_counter() - t0
    _on_workers(client, addrs, teardown_task, run_id, tag=f"teardown-{run_id}")
    for p, s in zip(per, info):
        p.update(setup_s=s["setup_s"], device=s["device"], groups=s["groups"])
    summ = RunSummary(
        kind="io_floor", reaches=plan.network.n_reaches, steps=steps,
        time_chunk=int(time_chunk), chunks=len(chunks), groups=g_n, waves=plan.n_waves,
        workers=len(addrs), tasks=g_n * len(chunks), setup_s=setup_s, wall_s=wall,
        reach_steps_per_s=plan.network.n_reaches * steps / wall,
        checksum=float(sum(p["checksum"] for p in per)),
        peak_gpu_bytes=[p["peak_bytes"] for p in per], per_worker=per, plan=plan.summary(),
        output_store=output,
    )
    logger.info("%s", summ)
    return summ


def synthesize_forcing_store(
    client: Any,
    network: RiverNetwork,
    partition: Partition,
    store: Any,
    forcing: SyntheticForcing,
    time_chunk: int = 365,
    *,
    reach_chunk: int = 65536,
    overwrite: bool = False,
    plan: WavePlan | None = None,
) -> ZarrForcing:
    """Write a :class:`SyntheticForcing` as a Zarr forcing store, in parallel on the workers
    (rows in the plan's engine order), and return it as a :class:`ZarrForcing`."""
    import os

    import zarr

    summ = io_floor(client, network, partition, forcing, store, time_chunk,
                    reach_chunk=reach_chunk, overwrite=overwrite, plan=plan, variable="runoff")
    root = zarr.open_group(os.fspath(store), mode="r+")
    root.attrs.update({"hydroscale_store": "forcing",
                       "provenance": {**forcing.describe(), "written_s": summ.wall_s}})
    return ZarrForcing(os.fspath(store))
