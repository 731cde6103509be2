"""The client side of a distributed run: ship once, submit every task up front, summarise.

:func:`route_distributed` routes a forcing store through a partitioned network on the
workers of a Dask cluster (DESIGN §3):

1. the run's data (network arrays, group of every reach, home worker of every group,
   parameters, router options: a :class:`~._worker.RunData`) is scattered once to every
   worker (``broadcast=True, hash=False``) and each worker builds its groups' routers and
   kernels on its device;
2. one task per (group, time chunk) is submitted, all at once, placed on the group's worker
   (``allow_other_workers=True``): a pure function of the run data, the previous chunk's
   result of the same group (its carried state) and the upstream groups' results for the
   same chunk (their transfer buffers).  It reads its forcing block from Zarr on the worker,
   writes its discharge block to the output store on the worker and returns its new state,
   transfer buffer and checksum, which stay on the worker.  Dask runs wave ``w + 1`` of
   chunk ``k`` while wave ``w`` runs chunk ``k + 1``;
3. the client keeps every future until the pass ends, so that Dask recomputes whatever a
   lost worker held (on any worker; the routers are rebuilt from the run data), waits
   (progress through logging) and gathers small per-worker figures.

With an output store, every finished task is recorded in it (:class:`~hydroscale.io.
RunProgress`) and the store is marked complete last; the same call on an incomplete store
resumes: finished time chunks are not routed again (:attr:`RunSummary.reused_tasks`).
"""

from __future__ import annotations

import inspect
import logging
import os
import time
import uuid
from concurrent.futures import CancelledError
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .._adapters import params_tensor
from .._closing import Closing
from ..io import (
    ArrayForcing,
    SyntheticForcing,
    ZarrForcing,
    as_forcing,
    digest,
    prepare_output,
    run_fingerprint,
)
from ..network import RiverNetwork
from ..partition import Partition
from ..routing import (
    LakeLayout,
    Lakes,
    RoutingOptions,
    RunPlan,
    RunTooLargeError,
    check_truncation,
    is_out_of_memory,
    parse_bytes,
    plan_run,
)
from ._plan import WavePlan, map_workers, plan_waves
from ._recovery import restart_points, worker_addresses
from ._worker import (
    PassSpec,
    RunData,
    SavedState,
    abort_pass,
    aggregate_task,
    begin_task,
    budget_task,
    buffer_task,
    checksum_task,
    copy_task,
    finish_task,
    pass_busy,
    route_unit_task,
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
    float64 sum of the discharge routed by this pass (or, for the I/O floor, of the forcing)
    computed on the workers: equal runs on different worker counts give equal checksums.
    ``tasks`` is the number of (group, chunk) tasks routed by this pass; a resumed pass
    reuses ``reused_tasks`` tasks finished by the interrupted run and routes again
    ``recomputed_tasks`` finished ones whose transfer buffers downstream groups need.
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
    reused_tasks: int = 0
    recomputed_tasks: int = 0
    run_plan: dict[str, Any] = field(default_factory=dict)
    lake_elevation_end: list[float] | None = None  # [L] m (NaN: not routed by this pass)
    lake_inflow_m3: list[float] | None = None  # [L] volumes over the pass (NaN: unknown)
    lake_outflow_m3: list[float] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        reuse = (f", {self.reused_tasks} reused, {self.recomputed_tasks} recomputed"
                 if self.reused_tasks or self.recomputed_tasks else "")
        return (f"{self.kind}: {self.reaches} reaches x {self.steps} steps on {self.workers} "
                f"workers ({self.groups} groups, {self.waves} waves, {self.chunks} chunks, "
                f"{self.tasks} tasks{reuse}): wall {self.wall_s:.2f} s, setup "
                f"{self.setup_s:.2f} s, {self.reach_steps_per_s:.3g} reach-steps/s")


def _submit(client: Any, fn: Any, *args: Any, addr: str, key: str, priority: int = 0,
            strict: bool = False) -> Any:
    """A task placed on ``addr``; unless ``strict``, any worker may run it when ``addr`` is
    gone (a lost worker's tasks move on; tasks are pure)."""
    return client.submit(fn, *args, workers=[addr], allow_other_workers=not strict,
                         pure=False, key=key, priority=priority)


def _worker_forcing(forcing: Any) -> Any:
    """A forcing the workers read themselves (a store or a generator): in-memory values are
    not shipped through the client (ingest them with :func:`hydroscale.io.ingest` first)."""
    f = as_forcing(forcing)
    if isinstance(f, ArrayForcing):
        raise TypeError("route_distributed reads forcing on the workers: an ArrayForcing "
                        "would travel through the client with every task; write it to a "
                        "store with hydroscale.io.ingest and pass the store's path")
    return f


def _chunks(n_steps: int, time_chunk: int) -> list[tuple[int, int]]:
    if int(time_chunk) != time_chunk or time_chunk < 1:
        raise ValueError(f"time_chunk must be a positive number of steps, got {time_chunk}")
    return [(t, min(t + int(time_chunk), n_steps)) for t in range(0, n_steps, int(time_chunk))]


def _wait_logged(futures: list[Any], what: str, on_progress: Any = None,
                 weight: dict[str, int] | None = None) -> None:
    """Wait for every task; raise the first failure once nothing else can run.

    A failed task fails the tasks that depend on it; the others go on, so that an output
    store records all the work that could be done (a resumed run reuses it).
    ``on_progress(n)`` is called as tasks finish, ``n`` the task's ``weight`` (default 1)."""
    from distributed import as_completed

    n, step, done, first = len(futures), max(1, len(futures) // 10), 0, None
    for fut in as_completed(futures):
        done += 1
        if on_progress is not None:
            on_progress((weight or {}).get(fut.key, 1))
        if fut.status == "error" and first is None:
            first = fut
            logger.error("%s: task %s failed: %r; finishing the tasks that do not depend on "
                         "it", what, fut.key, fut.exception())
        if done % step == 0 or done == n:
            logger.info("%s: %d/%d tasks done", what, done, n)
    if first is not None:
        err = first.exception()
        if is_out_of_memory(err):
            raise RunTooLargeError(
                f"{what}: task {first.key} ran out of device memory ({err}), beyond the run "
                f"plan's estimate (`hydroscale route --plan` prints it): set memory_limit "
                f"below the device's memory, or lower the time chunk, batch_reaches or the "
                f"window") from err
        raise RuntimeError(f"{what}: task {first.key} failed: {err!r}") from err


def _run_data(run_id: str, plan: WavePlan, params: Any = None,
              options: RoutingOptions | None = None, batch_reaches: int = 1 << 62,
              max_steps: int | None = None, dt: float | None = None) -> RunData:
    net = plan.network
    lakes = None if plan.layout is None else plan.layout.lakes
    return RunData(run_id, net.ids, net.downstream, plan.group_of, plan.group_worker, params,
                   options, int(batch_reaches), max_steps, lakes, dt)


def _on_workers(client: Any, addrs: list[str], fn: Any, *args: Any, tag: str,
                per_worker: Any = None) -> list[Any]:
    """Run ``fn`` once per partition worker (``per_worker(w)`` adds worker-specific
    arguments), placed on its worker (any other if it is gone)."""
    futs = [_submit(client, fn, *args, *(per_worker(w) if per_worker else ()), addr=a,
                    key=f"hydroscale-{tag}-{w}") for w, a in enumerate(addrs)]
    return client.gather(futs)


def _keep_checksums(client: Any, futs: dict[tuple[int, int], Any],
                    bufs: dict[tuple[int, int], Any], chunk: int, sums: list[Any],
                    weight: dict[str, int], pass_id: str, addrs: list[str],
                    home: np.ndarray) -> None:
    """Replace the results of ``chunk`` (whose dependents are all submitted) by one checksum
    task per result, on the result's worker, and forget the results and their buffers: Dask
    frees them once their dependents have run (and recomputes them from their tasks if a
    worker holding a later result is lost)."""
    seen: dict[str, tuple[Any, int, int]] = {}  # result key -> (future, groups, first group)
    for (g, k) in [key for key in futs if key[1] == chunk]:
        f = futs.pop((g, k))
        bufs.pop((g, k), None)
        prev = seen.get(f.key)
        seen[f.key] = (f, (prev[1] if prev else 0) + 1, prev[2] if prev else int(g))
    for f, n, g in seen.values():
        fut = _submit(client, checksum_task, f, addr=addrs[int(home[g])], priority=1,
                      key=f"hydroscale-sum-{pass_id}-{chunk}-{g}")
        sums.append(fut)
        weight[fut.key] = n


def _finish(client: Any, run_id: str, pass_id: str, futs: list[Any], progress: Any,
            expected: set[tuple[int, int]], attempts: int = 5) -> list[dict[str, Any]]:
    """Wait for every result (recomputed if a worker was lost), flush the writers of every
    worker and check that the output store recorded every task; returns per-worker figures
    (the first holds the checksum of all results).  Retries when a worker is lost meanwhile."""
    from distributed import wait

    for attempt in range(attempts):
        wait(futs)
        errs = [f for f in futs if f.status == "error"]
        if errs:
            raise RuntimeError(f"task {errs[0].key} failed: {errs[0].exception()!r}")
        where = client.who_has(futs)
        live = set(worker_addresses(client).values())
        mine: dict[str, list[Any]] = {a: [] for a in sorted(live)}
        for f in futs:
            holders = [a for a in where.get(f.key, ()) if a in live]
            if holders:
                mine[holders[0]].append(f)
        if sum(len(v) for v in mine.values()) < len(futs):
            logger.info("results lost meanwhile; waiting again (attempt %d)", attempt + 1)
            continue
        ffuts = {a: _submit(client, finish_task, run_id, pass_id, *fs, addr=a, strict=True,
                            key=f"hydroscale-finish-{pass_id}-{attempt}-{i}")
                 for i, (a, fs) in enumerate(mine.items())}
        lost = False
        while True:  # woken as the flushes end (polling every 50 ms cost up to 50 ms a pass)
            try:
                wait(list(ffuts.values()), timeout=1.0)
                break
            except TimeoutError:  # a pinned task never runs on a lost worker
                if set(ffuts) - set(worker_addresses(client).values()):
                    lost = True
                    client.cancel([f for f in ffuts.values() if not f.done()])
                    break
        if lost or any(f.status != "finished" for f in ffuts.values()):
            logger.info("a worker was lost while flushing; again (attempt %d)", attempt + 1)
            continue
        per = client.gather(list(ffuts.values()))
        missing = expected - progress.done() if progress is not None else set()
        if missing:
            logger.info("%d tasks not recorded yet (a worker was lost?); again", len(missing))
            continue
        return per
    raise RuntimeError(f"pass {pass_id}: could not finish after {attempts} attempts (workers "
                       "keep being lost?); run the same command again to resume")


class DistributedRouter(Closing):
    """A routing set-up resident on the workers of a Dask cluster; route passes reuse it.

    Construction scatters the run data once, builds on every worker the
    :class:`~hydroscale.routing.StagedRouter` of its own groups (on its device) and
    aggregates their path kernels with one common window; :meth:`route` then runs passes
    (forcing store -> output store) and :meth:`close` frees the workers.  The workers'
    routers are a cache: a worker that replaces a lost one rebuilds what it needs from the
    scattered run data, which this object keeps until :meth:`close`.

    Parameters
    ----------
    client, network, partition, params, options, routing : see :func:`route_distributed`.
    plan : a :func:`plan_waves` result to reuse.
    batch_reaches : groups hold at most about this many reaches (larger (wave, worker) sets
        are split, see :func:`plan_waves`), and each worker aggregates its kernels in batches
        of groups of at most this many reaches: this bounds device memory at set-up and per
        task.
    placement : ``"partition"`` (the partition's placement) or ``"basins"`` (every basin on
        one worker: no cross-worker transfers), see :func:`plan_waves`.
    max_steps : the longest pass this router will route (steps), if known: the ``"auto"``
        window is at most that long (longer taps never act).  A pass whose window leaves
        more than ``window_tolerance`` out of a path is refused before it starts
        (:class:`~hydroscale.routing.WindowTruncationError`).
    time_chunk : the time chunk passes will ask for (steps): what the set-up's run plan
        assumes (each pass plans again with its own).
    memory_limit : bytes (or ``"80GB"``) each worker may use; default what each worker
        reports (a GPU's memory, a CPU worker's Dask ``memory_limit`` or the host's
        available memory; ``$HYDROSCALE_MEMORY_LIMIT`` overrides it).  The run plan
        (:attr:`run_plan`, :func:`~hydroscale.routing.plan_run`) keeps every batch's kernels
        resident when they fit, else builds them as tasks need them within a budget, and
        lowers the time chunk if needed; a run that cannot fit is refused before
        aggregation (:class:`~hydroscale.routing.RunTooLargeError`).
    plan_only : stop once :attr:`run_plan` is known (the workers' routers are set up, no
        kernel is aggregated) and close: ``hydroscale route --plan``.
    lakes : level-pool lakes (:class:`~hydroscale.routing.Lakes` or
        :class:`~hydroscale.routing.LakeLayout`): the plan is cut at them
        (:func:`plan_waves`), the lakes of each (wave, worker) stepped by one task per time
        chunk in one fused loop, their elevation carried between chunks; lakes start at
        their ``ifd`` elevation.  Needs ``dt``.
    dt : the routing step (s), with lakes (:func:`route_distributed` takes the forcing's).
    """

    def __init__(
        self,
        client: Any,
        network: RiverNetwork,
        partition: Partition,
        params: Any = None,
        *,
        options: RoutingOptions | None = None,
        plan: WavePlan | None = None,
        batch_reaches: int = 262144,
        placement: str = "partition",
        max_steps: int | None = None,
        time_chunk: int = 365,
        memory_limit: int | str | None = None,
        plan_only: bool = False,
        lakes: Lakes | LakeLayout | None = None,
        dt: float | None = None,
        **routing: Any,
    ) -> None:
        tic = time.perf_counter()
        self.client = client
        if lakes is not None and dt is None:
            raise ValueError("routing with lakes needs dt, the routing step in seconds (lakes "
                             "are physical: their outflow depends on it)")
        if plan is not None and lakes is not None and plan.layout is None:
            raise ValueError("the plan given was not cut at the lakes: build it with "
                             "plan_waves(..., lakes=lakes) or leave plan out")
        self.plan = plan or plan_waves(network, partition, max_group_reaches=batch_reaches,
                                       placement=placement, lakes=lakes)
        if self.plan.layout is not None and dt is None:
            raise ValueError("the plan is cut at lakes: give dt, the routing step in seconds")
        self.addrs = map_workers(client, self.plan.n_workers)
        self.run_id = uuid.uuid4().hex[:10]
        o = self.options = RoutingOptions.build(options, **routing)
        self.irf, self.substeps, self.dtype = o.irf_name, o.substeps, o.dtype
        self.window_tolerance = o.window_tolerance
        if isinstance(params, str):
            raise TypeError(f"params must be [N, P] parameters or a callable, got the string "
                            f"{params!r}; an IRF is given as irf={params!r}")
        pv = params
        if params is not None and not callable(params):
            # every form hydroscale.route takes (mappings of scalars or arrays, DataArrays
            # aligned by reach id, [N, P] arrays), normalised the one way route does
            pv = np.asarray(params_tensor(network, o.spec, params).detach().cpu().numpy())
        self._run_data = _run_data(self.run_id, self.plan, pv, o, batch_reaches, max_steps,
                                   None if dt is None else float(dt))
        self._data = client.scatter(self._run_data, broadcast=True, hash=False)
        info = _on_workers(client, self.addrs, setup_task, self._data,
                           tag=f"setup-{self.run_id}", per_worker=lambda w: (w,))
        self.window = max(int(i["window"]) for i in info)
        self.memory_limit = None if memory_limit is None else parse_bytes(memory_limit)
        self._setup_info = info
        try:
            self.run_plan = self.plan_pass(int(max_steps or time_chunk), time_chunk)
        except Exception:
            client.run(teardown_task, self.run_id)
            raise
        self._closed = False
        if plan_only:  # the plan is all that was asked for: nothing aggregated
            self.close()
            return
        agg = _on_workers(client, self.addrs, aggregate_task, self._data, tag=
                          f"aggregate-{self.run_id}",
                          per_worker=lambda w: (w, self.window, self.run_plan.budget(w)))
        self.max_truncated_mass = max(a["max_truncated_mass"] for a in agg)
        self._truncated = {int(g): m for a in agg for g, m in a["truncated"].items()}
        self.worker_setup = [{**i, **a} for i, a in zip(info, agg)]
        self.setup_s = time.perf_counter() - tic
        p = self.plan
        self._definition = {
            "routing": {**o.describe(), "window": self.window},
            "batch_reaches": int(batch_reaches),
            "network": digest(p.network.ids, p.network.downstream), "params": None,
            "plan": digest(p.group_of, p.group_worker, p.order),
            "lakes": None if p.layout is None else digest(
                p.layout.lakes.ids, p.layout.lakes.reach_ids, p.layout.lakes.params,
                p.layout.lakes.ifd, np.float64(dt)),
        }
        self._params = pv  # digested on the first pass that writes a store
        logger.info("DistributedRouter %s: %d groups on %d workers set up in %.2f s "
                    "(window %d, max truncated mass %.3g)", self.run_id, self.plan.n_groups,
                    len(self.addrs), self.setup_s, self.window, self.max_truncated_mass)

    def plan_pass(self, n_steps: int, time_chunk: int) -> RunPlan:
        """The run plan (:func:`plan_run`) of a pass of ``n_steps`` steps cut in chunks of
        ``time_chunk``: kernel residency, the time chunk that fits and each worker's
        estimated peak against its memory (``memory_limit`` when given, else what each
        worker reported at set-up); raises :class:`~hydroscale.routing.RunTooLargeError`
        when nothing fits."""
        o = self.options
        limits = [(self.memory_limit, "memory_limit") if self.memory_limit is not None
                  else tuple(i["memory_limit"]) for i in self._setup_info]
        batches = [{"kernel_rows": i.get("kernel_rows", []),
                    "reaches": i.get("batch_reaches", []), "groups": i["sizes"],
                    "resident": i.get("resident", 0)}
                   for i in self._setup_info]
        store = o.storage_dtype or o.dtype
        return plan_run(batches, window=self.window, substeps=o.substeps,
                        n_steps=int(n_steps), time_chunk=int(time_chunk),
                        itemsize=store.itemsize, aggregate_itemsize=o.aggregate_dtype.itemsize,
                        limits=limits, held_chunks=2)

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
        resume: bool = True,
        baseline: Any = None,
        fuse: bool = True,
        on_progress: Any = None,
    ) -> RunSummary:
        """One pass from zero state: forcing -> discharge (see :func:`route_distributed`).

        ``fuse`` routes each unit of the plan (:meth:`WavePlan.units`: a worker's consecutive
        groups with no input from another worker in between) per time chunk in one task,
        instead of one task per group and chunk: the same results, fewer scheduler round
        trips (with ``placement="basins"`` one task per worker and chunk)."""
        if self._closed:
            raise RuntimeError("this DistributedRouter is closed")
        plan, client = self.plan, self.client
        forcing = _worker_forcing(forcing_store)
        steps = int(n_steps or forcing.n_steps)
        if steps > forcing.n_steps or steps < 1:
            raise ValueError(f"n_steps must lie in [1, {forcing.n_steps}], got {n_steps}")
        _chunks(steps, time_chunk)  # a bad time_chunk fails first
        run_plan = self.plan_pass(steps, time_chunk)
        if run_plan.time_chunk < run_plan.requested_time_chunk:  # lowered to fit
            logger.warning("time chunk %d steps does not fit the workers' memory: %d steps "
                           "(see the run plan)", time_chunk, run_plan.time_chunk)
            time_chunk = run_plan.time_chunk
        if [w.kernel_budget for w in run_plan.workers] != \
                [w.kernel_budget for w in self.run_plan.workers]:
            _on_workers(client, self.addrs, budget_task, self.run_id, tag=
                        f"budget-{uuid.uuid4().hex[:10]}",
                        per_worker=lambda w: (run_plan.budget(w),))
        self.run_plan = run_plan
        logger.info("%s", run_plan.table())
        chunks = _chunks(steps, time_chunk)
        if self._truncated:  # before the output store is touched
            trunc = np.full(plan.n_groups, np.nan)
            trunc[list(self._truncated)] = list(self._truncated.values())
            check_truncation(trunc, tolerance=self.window_tolerance, window=self.window,
                             run_steps=steps, clusters=plan.groups, what="route_distributed")
        if isinstance(forcing, ZarrForcing) and not forcing.opened:
            forcing.open(plan.network)  # a bad forcing store fails before the output is touched
        self.addrs = map_workers(client, plan.n_workers)  # restarted workers: new addresses
        self._ensure_data()
        pass_id = uuid.uuid4().hex[:10]
        g_n, c_n = plan.n_groups, len(chunks)
        base = None
        if baseline is not None:
            base = np.asarray(baseline, np.float64)
            if base.shape != (plan.network.n_reaches,) or not np.isfinite(base).all():
                raise ValueError(f"baseline must be [N={plan.network.n_reaches}] finite m³/s "
                                 f"in network order, got shape {base.shape}")
        output, progress, done, prepared = None, None, set(), None
        if output_store is not None:
            from ..io import RunProgress

            output = os.fspath(output_store)
            if self._definition["params"] is None:
                pv = self._params
                self._definition["params"] = digest(
                    np.asarray(pv(plan.network)) if callable(pv) else pv)
            definition = {**self._definition, "time_chunk": int(time_chunk), "n_steps": steps,
                          "reach_chunk": int(reach_chunk),
                          "forcing": forcing.identity(),
                          "baseline": None if base is None else digest(base)}
            meta = {
                "engine": "hydroscale.distributed", "irf": str(self.irf),
                "substeps": self.substeps, "window": self.window,
                "max_truncated_mass": self.max_truncated_mass, "time_chunk": int(time_chunk),
                "dtype": str(self.dtype), "forcing": forcing.describe(), "run_id": pass_id,
                "partition": {k: v for k, v in plan.summary().items()
                              if k != "reaches_per_worker"},
                "definition": definition, **(run_metadata or {}),
            }

            def create() -> None:
                from ..io import create_output_store

                create_output_store(output, plan.reach_ids, forcing.time[:steps],
                                    chunks=(int(reach_chunk), int(time_chunk)),
                                    interval_s=forcing.interval_s, run=meta,
                                    overwrite=overwrite, dtype=str(self.dtype).split(".")[-1],
                                    fingerprint=run_fingerprint(definition))

            prepared = prepare_output(
                output, definition, create, overwrite=overwrite, resume=resume,
                inputs=[forcing.store if isinstance(forcing, ZarrForcing) else None])
            done, progress = prepared.done, RunProgress(output)
        t0 = time.perf_counter()
        futs: dict[tuple[int, int], Any] = {}
        bufs: dict[tuple[int, int], Any] = {}
        # the checksums of released chunks (their results are dropped once the next chunk is
        # submitted: a pass holds two chunks of states and transfer buffers, not all of them)
        sums: list[Any] = []
        sum_weight: dict[str, int] = {}
        done_keys: set[tuple[int, int]] = set()
        try:
            first = restart_points(plan.upstream, c_n, done,
                                   progress.has_state if progress is not None else None)
            spec = PassSpec(pass_id, forcing, output, self.window, record=output is not None)
            n_done = sum(1 for g in range(g_n) for k in range(c_n) if (g, k) in done)
            reused = int(first.sum())
            summ_reuse = {"reused_tasks": reused, "recomputed_tasks": n_done - reused}
            if done:
                logger.info("pass %s resumes %s: %d tasks reused, %d finished ones routed "
                            "again, %d to route", pass_id, output, reused, n_done - reused,
                            g_n * c_n - reused)
            base_f = None if base is None else client.scatter(base, broadcast=True, hash=False)
            _on_workers(client, self.addrs, begin_task, self._data, spec,
                        tag=f"begin-{pass_id}")
            home = plan.group_worker
            units = plan.units() if fuse else [np.array([g]) for g in range(g_n)]
            for k, (a, b) in enumerate(chunks):
                for unit in units:
                    due = [int(g) for g in unit if k >= first[g]]
                    if not due:
                        continue
                    w, members = int(home[due[0]]), set(due)
                    ext: dict[str, Any] = {}
                    for g in due:
                        for u in (int(u) for u in plan.upstream[g]):
                            if u in members:
                                continue  # routed earlier in the same task
                            if home[u] == w:  # same worker: the result, by reference
                                ext.setdefault(futs[(u, k)].key, futs[(u, k)])
                                continue
                            if (u, k) not in bufs:  # another worker: the buffer, not the state
                                bufs[(u, k)] = _submit(
                                    client, buffer_task, futs[(u, k)], u,
                                    addr=self.addrs[int(home[u])],
                                    key=f"hydroscale-buffer-{pass_id}-{u}-{k}",
                                    priority=-(k * g_n + u))
                            ext.setdefault(bufs[(u, k)].key, bufs[(u, k)])
                    prevs = [futs[(g, k - 1)] if (g, k - 1) in futs
                             else SavedState(g, k - 1) if k else None for g in due]
                    ups = [[int(u) for u in plan.upstream[g]] for g in due]
                    fut = _submit(
                        client, route_unit_task, self._data, spec, due, ups, k, a, b, prevs,
                        base_f, *ext.values(), addr=self.addrs[w],
                        key=f"hydroscale-route-{pass_id}-{due[0]}+{len(due)}-{k}",
                        priority=-(k * g_n + due[0]))
                    for g in due:
                        futs[(g, k)] = fut
                if k:  # chunk k - 1 is needed by no later task: keep its checksums only
                    done_keys.update(key for key in futs if key[1] == k - 1)
                    _keep_checksums(client, futs, bufs, k - 1, sums, sum_weight, pass_id,
                                    self.addrs, home)
            results = [*sums, *{f.key: f for f in futs.values()}.values()]
            weight = dict(sum_weight)
            for f in futs.values():
                weight[f.key] = weight.get(f.key, 0) + 1
            _wait_logged(results, f"route {pass_id}", on_progress, weight)
            expected = done_keys | set(futs) if progress is not None else set()
            per = _finish(client, self.run_id, pass_id, results, progress, expected)
            lake_end = self._lake_ends(futs, c_n - 1, pass_id)
        except BaseException:
            self._abort(pass_id, [*futs.values(), *bufs.values(), *sums])
            if prepared is not None:
                prepared.rollback()  # a store replaced by overwrite comes back
            raise
        finally:
            futs.clear()
            bufs.clear()
            sums.clear()
            base_f = None
        if prepared is not None:
            prepared.complete()  # fails if the store was taken from this run meanwhile
        wall = time.perf_counter() - t0
        summ = RunSummary(
            kind="route", reaches=plan.network.n_reaches, steps=steps,
            time_chunk=int(time_chunk), chunks=c_n, groups=g_n, waves=plan.n_waves,
            workers=len(self.addrs), tasks=g_n * c_n - reused, setup_s=self.setup_s,
            wall_s=wall, reach_steps_per_s=plan.network.n_reaches * steps / wall,
            window=self.window,
            max_truncated_mass=0.0 if self.window >= steps else self.max_truncated_mass,
            checksum=float(sum(p["checksum"] for p in per)),
            peak_gpu_bytes=[max([p["peak_bytes"] for p in per if p["worker"] == a]
                                + [s["peak_bytes"]])
                            for a, s in zip(self.addrs, self.worker_setup)],
            per_worker=per, plan=plan.summary(), output_store=output, **summ_reuse,
            run_plan=run_plan.as_dict(),
            **({} if lake_end is None else dict(zip(
                ("lake_elevation_end", "lake_inflow_m3", "lake_outflow_m3"), lake_end))),
        )
        logger.info("%s", summ)
        return summ

    def _lake_ends(self, futs: dict[tuple[int, int], Any], last: int, pass_id: str
                   ) -> tuple[list[float], list[float], list[float]] | None:
        """The elevation ``[L]`` (m) of every lake after the pass and its inflow and outflow
        volumes over the pass (m³; batch member 0), read from the last chunk's results of
        the lake groups (NaN where a resumed pass reused that chunk, and volumes NaN where
        it resumed from a store that kept the elevations only); None without lakes."""
        plan = self.plan
        if plan.layout is None:
            return None
        from ._lake_tasks import lake_end_task

        lay = plan.layout
        out = np.full((lay.lakes.n_lakes, 3), np.nan)
        got = {int(g): _submit(self.client, lake_end_task, futs[(int(g), last)], int(g),
                               addr=self.addrs[int(plan.group_worker[g])],
                               key=f"hydroscale-lake-elevation-{pass_id}-{int(g)}")
               for g in np.flatnonzero(plan.group_lake) if (int(g), last) in futs}
        for g, fut in got.items():
            a, b = plan.rows[g]
            lakes = np.unique(lay.reach_lake[plan.order[a:b]])  # as the worker orders them
            out[lakes] = np.asarray(fut.result())[0]
        return out[:, 0].tolist(), out[:, 1].tolist(), out[:, 2].tolist()

    def _abort(self, pass_id: str, futures: list[Any], timeout: float = 120.0) -> None:
        """After a failed pass: stop it on every worker (queued writes and tasks not started
        are dropped) and wait for what is running to end, so that nothing of it is written
        to the output store once :meth:`route` has raised.  Best effort."""
        client = self.client
        try:
            client.run(abort_pass, self.run_id, pass_id)
            client.cancel(futures)
            deadline = time.monotonic() + timeout
            while sum(client.run(pass_busy, self.run_id, pass_id).values()):
                if time.monotonic() > deadline:
                    logger.warning("pass %s: tasks still running after %g s", pass_id, timeout)
                    break
                time.sleep(0.1)
        except Exception:  # noqa: BLE001 - the original error matters, not this one
            logger.warning("could not stop pass %s on every worker", pass_id, exc_info=True)

    def _ensure_data(self) -> None:
        """Scatter the run data again if no worker holds it any more: the scheduler's active
        memory manager may thin the broadcast copies down to one, which a worker restart then
        loses (the workers rebuild their routers from it)."""
        lost = self._data.status != "finished"
        if not lost:
            try:
                lost = not self.client.who_has(self._data).get(self._data.key)
            except CancelledError:  # the scheduler forgot it along with its last copy
                lost = True
        if lost:
            logger.info("run %s: its data went with a restarted worker; scattering it again",
                        self.run_id)
            self._data = self.client.scatter(self._run_data, broadcast=True, hash=False)

    def close(self) -> None:
        """Drop the run on every worker (frees their device memory)."""
        if not self._closed:
            self.client.run(teardown_task, self.run_id)
            self._data = self._run_data = None
            self._closed = True


def route_distributed(
    client: Any,
    network: RiverNetwork,
    partition: Partition,
    forcing_store: Any,
    output_store: Any,
    params: Any = None,
    time_chunk: int = 365,
    **keywords: Any,
) -> RunSummary:
    """Route a forcing store through ``network`` on the workers of ``client``.

    A worker lost during the run (killed, out of memory) costs time, not results: Dask
    recomputes what it held on the remaining workers (or its restarted process) and the
    output is identical.  An interrupted run (client stopped, a task failed) leaves an
    incomplete output store recording what finished; the same call again resumes it.

    Parameters
    ----------
    client : ``distributed.Client`` (see :func:`start_cluster`) with exactly
        ``partition.n_workers`` workers.
    network : the river network (N reaches).
    partition : its partition, placed on ``partition.n_workers`` workers.
    forcing_store : path of a Zarr forcing store (:func:`hydroscale.io.ingest`; rows in
        ``plan.reach_ids`` order are read as contiguous slices), a :class:`ZarrForcing` or a
        :class:`SyntheticForcing` (generated on the workers).  Runoff in m³/s per step.
    output_store : path of the Zarr output store to create (``(reach, time)`` discharge in
        the run's dtype in m³/s, rows in the plan's engine order, with reach ids, time, units and
        the run's metadata), or None to discard discharge (benchmarks; the checksum remains).
    params : the parameters in routing-step units, scattered once: every form
        :func:`hydroscale.route` takes (a mapping name -> scalar or ``[N]`` values, an
        ``[N, P]`` array in network order, DataArrays aligned by reach id); or a picklable
        callable ``params(network) -> [N, P]`` evaluated on each worker.
    time_chunk : steps per task; bounds per-worker memory (runoff, discharge and transfer
        buffers of one chunk, plus the carried state).
    **keywords : those of :class:`DistributedRouter` (``options``: the routing, a
        :class:`~hydroscale.routing.RoutingOptions` amended by routing keywords such as
        ``irf="muskingum"``, ``substeps=24``, ``window=``; ``plan``, ``batch_reaches``,
        ``placement``, ``lakes`` with ``dt``, by default the forcing's step) and those of
        its pass, :meth:`DistributedRouter.route` (below).
        ``window="auto"`` is the largest of the workers' auto windows, at most the run's
        length, so every worker uses the single-device router's window; a window that leaves
        more than ``window_tolerance`` of an in-cluster path's response out of the run is
        refused before the output store is touched.
    n_steps : route the first ``n_steps`` steps only (default all).
    reach_chunk : output store chunk along reaches.
    run_metadata : extra attributes stored under the output's ``run`` attribute.
    overwrite : replace an existing output store.
    resume : continue an incomplete output store written by the same run definition (the
        same network, parameters, IRF, sub-steps, window, dtype, partition, time chunk and
        forcing; another definition is refused): finished time chunks are reused.  A
        complete store is never touched without ``overwrite``.
    baseline : optional ``[N]`` constant discharge (m³/s, network order) added to every step
        written, e.g. the steady state ``accumulate(r0)`` when the forcing is ``r - r0``.
        With lakes: the warm start's discharge ``q0``, the forcing being ``r - r*`` of
        :meth:`~hydroscale.routing.LakeLayout.steady_inflow` (r* = 0 on lake reaches): the
        lakes start at the level releasing ``q0`` and are not offset.
    plan : a :func:`plan_waves` result to reuse.
    fuse : route each unit of the plan per chunk in one task (see
        :meth:`DistributedRouter.route`); False: one task per (group, chunk).
    on_progress : optional ``on_progress(n)``, called as routing tasks finish with the
        number of (group, time chunk) routings each did (e.g. a progress bar's ``update``).

    Returns
    -------
    RunSummary (``setup_s``: the set-up on the workers; ``wall_s``: the pass;
    ``reused_tasks``: tasks an interrupted run had finished).
    """
    passing = {k: keywords.pop(k) for k in list(keywords) if k in _PASS_KEYWORDS}
    forcing_store = _worker_forcing(forcing_store)  # a bad source fails before any set-up
    steps = int(passing.get("n_steps") or forcing_store.n_steps)
    if keywords.get("lakes") is not None and keywords.get("dt") is None:
        keywords["dt"] = forcing_store.interval_s
    with DistributedRouter(client, network, partition, params, max_steps=steps,
                           time_chunk=time_chunk,
                           **keywords) as dr:
        return dr.route(forcing_store, output_store, time_chunk, **passing)


# the keywords of route_distributed that belong to the pass (DistributedRouter.route)
_PASS_KEYWORDS = frozenset(inspect.signature(DistributedRouter.route).parameters) - {
    "self", "forcing_store", "output_store", "time_chunk"}


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
    forcing = _worker_forcing(forcing_store)
    steps = int(n_steps or forcing.n_steps)
    chunks = _chunks(steps, time_chunk)
    run_id = uuid.uuid4().hex[:10]
    output = None
    if output_store is not None:
        from ..io import create_output_store

        output = os.fspath(output_store)
        create_output_store(output, plan.reach_ids, forcing.time[:steps], variable=variable,
                            chunks=(int(reach_chunk), int(time_chunk)),
                            interval_s=forcing.interval_s,
                            run={"engine": "hydroscale.distributed.io_floor",
                                 "forcing": forcing.describe()}, overwrite=overwrite)
    data = client.scatter(_run_data(run_id, plan), broadcast=True, hash=False)
    info = _on_workers(client, addrs, setup_task, data, tag=f"setup-{run_id}",
                       per_worker=lambda w: (w,))
    spec = PassSpec(run_id, forcing, output)
    futs: list[Any] = []
    try:
        _on_workers(client, addrs, begin_task, data, spec, tag=f"begin-{run_id}")
        setup_s = time.perf_counter() - tic
        t0 = time.perf_counter()
        g_n = plan.n_groups
        for k, (a, b) in enumerate(chunks):
            for g in range(g_n):
                w = int(plan.group_worker[g])
                futs.append(_submit(client, copy_task, data, spec, g, k, a, b, addr=addrs[w],
                                    key=f"hydroscale-copy-{run_id}-{g}-{k}",
                                    priority=-(k * g_n + g)))
        _wait_logged(futs, f"io floor {run_id}")
        per = _finish(client, run_id, run_id, futs, None, set())
    finally:
        futs.clear()
        del data
        client.run(teardown_task, run_id)
    wall = time.perf_counter() - t0
    if output is not None:
        from ..io import mark_complete

        mark_complete(output)
    by_addr = dict(zip(addrs, info))
    for p in per:
        s = by_addr.get(p["worker"], {})
        p.update(setup_s=s.get("setup_s"), device=s.get("device"), groups=s.get("groups"))
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
