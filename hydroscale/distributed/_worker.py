"""What runs ON the workers: pure task functions over a worker-resident cache.

Every routing task is a pure function of its arguments (DESIGN §3)::

    route_task(data, spec, group, chunk, t0, t1, prev, *upstream) -> ChunkResult

- ``data`` (:class:`RunData`, scattered once to every worker) holds the network arrays, the
  group of every reach, the home worker of every group, the parameters and the router
  options; ``spec`` (:class:`PassSpec`) the pass: its id, forcing source, output store and
  the run's common kernel window;
- ``prev`` is the :class:`ChunkResult` of (group, chunk - 1) -- the carried state is an input
  -- or a :class:`SavedState` (read the state a previous, interrupted run saved in the output
  store) or None (zero state: nothing flowed before the first step);
- ``upstream`` are the results (or bare transfer buffers) of the upstream groups for the
  same chunk; the task returns its new state, its own transfer buffer and its checksum
  (``baseline``, an optional constant discharge per reach, is added to what is written).

:func:`route_unit_task` routes a *unit* (consecutive groups of one worker, see
:meth:`~hydroscale.distributed.WavePlan.units`) in one task, each group as ``route_task``.
So a lost worker's results are recomputed by Dask on any worker, and equal.  What a worker
keeps between tasks is a *cache* (:mod:`._cache`, the one worker cache) rebuilt on demand
from ``data``: per run id, a :class:`_WorkerRun` with the network, the groups, the
parameters on its device and one
:class:`~hydroscale.routing.StagedRouter` with its aggregated kernels per *batch* of groups.
Batches are cut from the groups of each group's home worker (the plan's placement), so a
batch has the same clusters -- and the same kernels, bit for bit -- on whichever worker
builds it.  Per pass a worker also keeps the opened forcing, a background writer and figures
(:class:`_PassState`); the figures are not inputs of any task.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..kernels import warm_up
from ..network import RiverNetwork
from ..routing import RivTreeCluster, RouterState, RoutingKernels, RoutingOptions, StagedRouter
from . import _cache as cache
from ._plan import batch_groups, group_sizes
from ._sizeof import ChunkResult, TransferBuffer

logger = logging.getLogger(__name__)


@dataclass
class RunData:
    """What every worker needs to (re)build a run: scattered once, ``broadcast=True``.

    Attributes
    ----------
    run_id : the run's id (cache key on the workers).
    ids, downstream : int64 ``[N]`` network arrays (:class:`RiverNetwork` form).
    group_of : int64 ``[N]`` group of every reach.
    group_worker : int64 ``[G]`` home (partition) worker of every group.
    params : ``[N, P]`` array, a callable ``params(network)``, or None (no routing: I/O floor).
    options : the routing (:class:`~hydroscale.routing.RoutingOptions`), or None.
    batch_reaches : a worker aggregates its kernels in batches of groups of at most this many
        reaches.
    max_steps : the longest pass of the run (steps), capping the ``"auto"`` window, if known.
    lakes : the network's level-pool lakes (:class:`~hydroscale.routing.Lakes`) when the plan
        is cut at them (its lake groups run :mod:`._lake_tasks`), else None.
    dt : the routing step (s), with lakes.
    """

    run_id: str
    ids: np.ndarray
    downstream: np.ndarray
    group_of: np.ndarray
    group_worker: np.ndarray
    params: Any = None
    options: RoutingOptions | None = None
    batch_reaches: int = 1 << 62
    max_steps: int | None = None
    lakes: Any = None
    dt: float | None = None

    def __sizeof__(self) -> int:
        arrays = [self.ids, self.downstream, self.group_of, self.group_worker]
        if isinstance(self.params, np.ndarray):
            arrays.append(self.params)
        return int(sum(a.nbytes for a in arrays)) + 512


@dataclass(frozen=True)
class PassSpec:
    """One pass (forcing -> output) of a run, sent with every task (small, picklable).

    ``forcing``: an unopened source (:class:`~hydroscale.distributed.ZarrForcing` or
    :class:`~hydroscale.distributed.SyntheticForcing`); ``output``: output store path or
    None; ``window``: the run's common kernel window (steps); ``record``: save each task's
    state and completion in the output store (:class:`~hydroscale.io.RunProgress`).
    """

    pass_id: str
    forcing: Any
    output: str | None
    window: int = 0
    record: bool = False


@dataclass(frozen=True)
class SavedState:
    """``prev`` of a task resuming after (group, chunk): read the state saved in the store."""

    group: int
    chunk: int


@dataclass
class _Writer:
    """Region writes of ``[n, T]`` discharge blocks into an output store
    (:class:`~hydroscale.io.OutputStore`) in a background thread, each followed (with
    ``progress``) by the task's state and completion marker.

    Zarr chunks shared by two groups' row ranges are written under a ``distributed.Lock``
    named after the store and the chunk (also across passes, e.g. a resumed run and a late
    task of the interrupted one); writes are idempotent: a recomputed task writes the same
    values again."""

    store: str
    worker: Any
    progress: Any = None
    pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(2))
    pending: list = field(default_factory=list)
    seconds: float = 0.0
    _out: Any = None
    _mutex: threading.Lock = field(default_factory=threading.Lock)
    _locks: dict = field(default_factory=dict)

    def _lock(self, name: str) -> Any:
        from distributed import Lock

        with self._mutex:
            if name not in self._locks:
                self._locks[name] = Lock(name, scheduler_rpc=self.worker.scheduler,
                                         loop=self.worker.loop)
            return self._locks[name]

    def _write(self, a: int, t0: int, block: np.ndarray, done: tuple[int, int] | None,
               state: np.ndarray | None) -> None:
        t = time.perf_counter()
        if state is not None:  # the state first: a marker promises both
            # the runoff history is the forcing's last K - 1 steps: read again on resume
            self.progress.save_state(*done, {"inflow_hist": state})
        if self._out is None:
            from ..io import OutputStore

            self._out = OutputStore(self.store)
        self._out.write(a, t0, block, lock=self._lock)
        if done is not None and self.progress is not None:
            self.progress.mark_done(*done)
        with self._mutex:
            self.seconds += time.perf_counter() - t

    def submit(self, a: int, t0: int, block: np.ndarray, done: tuple[int, int] | None = None,
               state: np.ndarray | None = None) -> None:
        self.pending.append(self.pool.submit(self._write, a, t0, block, done, state))
        finished = [f for f in self.pending if f.done()]
        for f in finished:
            f.result()
        self.pending = [f for f in self.pending if not f.done()]

    def flush(self) -> None:
        for f in self.pending:
            f.result()
        self.pending = []

    def abort(self) -> None:
        """Cancel the queued writes (running ones finish: see ``pending``)."""
        self.pool.shutdown(wait=False, cancel_futures=True)


@dataclass
class _PassState:
    """A worker's share of one pass: opened forcing, writer, figures."""

    forcing: Any
    writer: _Writer | None
    baseline: torch.Tensor | None = None
    timers: dict[str, float] = field(
        default_factory=lambda: {"read": 0.0, "route": 0.0, "d2h": 0.0})
    tasks: int = 0


@dataclass
class _WorkerRun:
    """A worker's cache of a run, built from :class:`RunData` on first use."""

    run_id: str
    device: torch.device
    network: RiverNetwork
    groups: RivTreeCluster
    data: RunData
    params: torch.Tensor | None = None
    batch_of: dict[int, tuple[int, int]] = field(default_factory=dict)
    batches: dict[tuple[int, int], list[int]] = field(default_factory=dict)
    routers: dict[tuple[int, int], StagedRouter] = field(default_factory=dict)
    kernels: dict[tuple[int, int], RoutingKernels] = field(default_factory=dict)
    kernel_budget: int | None = None  # bytes of kernels kept (None: every batch, resident)
    kernel_builds: int = 0
    kernel_bytes_of: dict[tuple[int, int], int] = field(default_factory=dict)
    lakes: Any = None  # LakeNodes of the lake groups (runs with lakes)
    lake_params: Any = None
    passes: dict[str, _PassState] = field(default_factory=dict)
    aborted: dict[str, _Writer | None] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)

    def close(self) -> None:
        """Drop the queued writes of every open pass (the cache forgets the run)."""
        for ps in self.passes.values():
            if ps.writer is not None:
                ps.writer.abort()


def _home_batches(data: RunData, groups: RivTreeCluster,
                  skip: np.ndarray | None = None) -> dict[tuple[int, int], list[int]]:
    """Batches ``(home worker, i) -> groups``: each home worker's groups in order, cut every
    ``batch_reaches`` reaches (or one group): what bounds device memory at aggregation.
    Groups marked in ``skip`` (lakes: no path kernels) are left out."""
    sizes = np.diff(groups.reach_ptr_cluster, axis=1).ravel()
    out: dict[tuple[int, int], list[int]] = {}
    for w in np.unique(data.group_worker).tolist():
        mine = [g for g in np.flatnonzero(data.group_worker == w).tolist()
                if skip is None or not skip[g]]
        for i, batch in enumerate(batch_groups(mine, sizes, int(data.batch_reaches))):
            out[(int(w), i)] = batch
    return out


def _ensure(data: RunData) -> _WorkerRun:
    """The worker's cache of ``data.run_id``, built now if missing (a new or restarted
    worker, or a worker taking over another's groups)."""
    run = cache.runs().get(data.run_id)
    if run is not None:
        return run
    dev = cache.device()
    net = RiverNetwork(data.ids, data.downstream)
    cs = RivTreeCluster(net, data.group_of)
    run = _WorkerRun(data.run_id, dev, net, cs, data)
    if data.lakes is not None:
        from ._lake_tasks import lake_nodes

        run.lakes = lake_nodes(data, net, cs, dev)
    run.batches = _home_batches(data, cs, None if run.lakes is None
                                else run.lakes.is_lake_cluster)
    run.batch_of = {g: key for key, gs in run.batches.items() for g in gs}
    if data.options is not None:
        p = data.params(net) if callable(data.params) else data.params
        run.params = torch.as_tensor(np.asarray(p) if not torch.is_tensor(p) else p,
                                     device=dev)
    return cache.put(data.run_id, run)


def _router(run: _WorkerRun, key: tuple[int, int], window: int | str) -> StagedRouter:
    with run.lock:
        if key not in run.routers:
            run.routers[key] = _new_router(run, key, window)
        return run.routers[key]


def _new_router(run: _WorkerRun, key: tuple[int, int], window: int | str) -> StagedRouter:
    return StagedRouter(run.groups, options=run.data.options, only=run.batches[key],
                        device=run.device, window=window)


_SETUP_THREADS = 4  # routers built at once on a GPU worker


def _setup_threads(device: torch.device, n_routers: int) -> int:
    """Threads building ``n_routers`` routers on ``device``: one on a CPU (torch's own
    threads are busy there), up to ``_SETUP_THREADS`` on a GPU."""
    return min(_SETUP_THREADS, n_routers) if device.type == "cuda" else 1


def _prepared_routers(run: _WorkerRun, keys: list[tuple[int, int]],
                      window: int | str) -> list[StagedRouter]:
    """The routers of batches ``keys`` with their layouts built (:meth:`StagedRouter.prepare`).

    On a GPU their index building is host work (numpy, kernel launches, a synchronisation
    per layout), so up to ``_SETUP_THREADS`` are built at once: numpy and torch release the
    GIL.  The structures they share on the clusters are built first, once."""
    missing = [k for k in keys if k not in run.routers]
    threads = _setup_threads(run.device, len(missing))
    if missing:
        run.groups.chain_key(engine_order=True)
        run.groups.on_device(run.device)

    def build(key: tuple[int, int]) -> tuple[tuple[int, int], StagedRouter]:
        return key, _new_router(run, key, window).prepare()

    if threads > 1:
        with ThreadPoolExecutor(threads, thread_name_prefix="hydroscale-setup") as ex:
            built = list(ex.map(build, missing))
    else:
        built = [build(k) for k in missing]
    with run.lock:
        for key, r in built:
            run.routers.setdefault(key, r)
        return [run.routers[k] for k in keys]


def _kernel_bytes(k: RoutingKernels) -> int:
    return int(k.wr.numel() * k.wr.element_size() + k.wu.numel() * k.wu.element_size())


def _kernels(run: _WorkerRun, key: tuple[int, int], window: int) -> RoutingKernels:
    """The kernels of batch ``key`` with ``window`` taps, aggregated now if not kept.  With a
    kernel budget (the run plan's ``"per-batch"`` residency) the least recently used
    batches are dropped first so that the kernels kept stay within it."""
    with run.lock:
        k = run.kernels.pop(key, None)  # re-inserted last: the dict's order is the LRU order
        if k is None or k.window != int(window):
            r = _router(run, key, int(window))
            if run.kernel_budget is not None:
                # room for this batch's kernels (known exactly before they are built)
                own = run.kernel_bytes_of.get(key) or r.kernel_rows() * int(window) * (
                    run.data.options.storage_dtype or run.data.options.dtype).itemsize
                _evict(run, run.kernel_budget - own)
            r.window = int(window)
            with torch.no_grad():
                k = r.aggregate(run.params)
            run.kernel_builds += 1
            run.kernel_bytes_of[key] = _kernel_bytes(k)
        run.kernels[key] = k
        return k


def _evict(run: _WorkerRun, keep: int) -> None:
    """Drop the least recently used kernels until at most ``keep`` bytes remain."""
    held = sum(_kernel_bytes(k) for k in run.kernels.values())
    while run.kernels and held > keep:
        old = next(iter(run.kernels))
        held -= _kernel_bytes(run.kernels.pop(old))


def _pass(run: _WorkerRun, spec: PassSpec) -> _PassState:
    with run.lock:
        ps = run.passes.get(spec.pass_id)
        if ps is None:
            if spec.pass_id in run.aborted:
                raise RuntimeError(f"pass {spec.pass_id} was aborted (an earlier task failed)")
            progress = None
            if spec.record and spec.output is not None:
                from ..io import RunProgress

                progress = RunProgress(spec.output)
            writer = None if spec.output is None else _Writer(spec.output, cache.this_worker(),
                                                              progress)
            ps = _PassState(spec.forcing.open(run.network), writer)
            run.passes[spec.pass_id] = ps
        return ps


def setup_task(data: RunData, worker: int) -> dict[str, Any]:
    """Build the run's cache and the routers of home worker ``worker``'s batches; returns the
    local window (``"auto"``: the window covering its own paths), what the run planner needs
    (kernel rows and reaches per batch, ``[reaches, exits, inlets]`` per group, the memory
    this worker may use) and timings."""
    t = time.perf_counter()
    phases: dict[str, float] = {}  # seconds per phase, the device synchronised at each end
    since = [t]

    def lap(name: str) -> None:
        cache.sync(run.device)
        phases[name] = time.perf_counter() - since[0]
        since[0] = time.perf_counter()

    run = _ensure(data)
    lap("cache")
    mine = np.flatnonzero(data.group_worker == int(worker))
    cs = run.groups
    out: dict[str, Any] = {"device": str(run.device), "groups": int(mine.size)}
    out["sizes"] = group_sizes(cs, mine).tolist()
    out["memory_limit"] = cache.memory_limit(run.device)
    if data.options is not None:
        window = data.options.window
        keys = [k for k in run.batches if k[0] == int(worker)]
        before = torch.cuda.memory_allocated(run.device) if run.device.type == "cuda" else 0
        # the kernel compiler's state loads beside the routers (not in the first aggregation)
        warm = threading.Thread(target=warm_up, args=(run.device,), daemon=True,
                                name="hydroscale-warm-up")
        warm.start()
        # with the layouts of their groups: measured here, not at the first task
        routers = _prepared_routers(run, keys, window)
        warm.join()
        lap("routers")
        out["routers"] = len(routers)
        out["resident"] = (int(torch.cuda.memory_allocated(run.device) - before)
                           if run.device.type == "cuda" else 0)
        out["kernel_rows"] = [r.kernel_rows() for r in routers]
        out["batch_reaches"] = [int(sum(cs.reach_ptr_cluster[g, 1] - cs.reach_ptr_cluster[g, 0]
                                        for g in run.batches[k])) for k in keys]
        if window == "auto":
            p = run.params.to(torch.float64)
            out["window"] = max((r.auto_window(p, max_steps=data.max_steps) for r in routers),
                                default=2)
        else:
            out["window"] = int(window)
        lap("window")
    cache.sync(run.device)
    out["setup_s"] = time.perf_counter() - t
    out["phases_s"] = phases
    return out


def aggregate_task(data: RunData, worker: int, window: int,
                   kernel_budget: int | None = None) -> dict[str, Any]:
    """Aggregate the path kernels of home worker ``worker``'s batches with the common window
    (keeping at most ``kernel_budget`` bytes of them, None: all); returns the largest
    truncated mass and that of every group above the routers' ``window_tolerance``
    (``{group: mass}``, for the client's exactness check)."""
    t = time.perf_counter()
    run = _ensure(data)
    run.kernel_budget = None if kernel_budget is None else int(kernel_budget)
    if run.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(run.device)
    worst, over = 0.0, {}
    first = None  # seconds of the first batch: the kernels' loading in a fresh process
    for key in [k for k in run.batches if k[0] == int(worker)]:
        k = _kernels(run, key, window)
        if first is None:
            cache.sync(run.device)
            first = time.perf_counter() - t
        m = np.nan_to_num(k.truncated_mass, nan=0.0)
        if m.size:
            worst = max(worst, float(m.max()))
            tol = run.routers[key].window_tolerance
            over.update({int(g): float(m[g]) for g in np.flatnonzero(m > tol)})
    if run.device.type == "cuda":
        # the aggregations' temporaries, once at the end: after every batch, handing them
        # back only made the next batch allocate them again from the driver
        torch.cuda.empty_cache()
    cache.sync(run.device)
    total = time.perf_counter() - t
    first = first or 0.0
    return {"aggregate_s": total,
            "aggregate_phases_s": {"first_batch": first, "other_batches": total - first},
            "max_truncated_mass": worst, "truncated": over,
            "peak_bytes": cache.peak_bytes(run.device),
            "kernel_bytes": int(sum(_kernel_bytes(k) for k in run.kernels.values()))}


def budget_task(run_id: str, kernel_budget: int | None, dask_worker: Any = None) -> bool:
    """Set the kernel budget of run ``run_id`` on this worker (the run plan of a new pass),
    dropping kernels above it now (a task, or ``client.run``)."""
    run = cache.runs(dask_worker).get(run_id)
    if run is None:
        return False
    with run.lock:
        run.kernel_budget = None if kernel_budget is None else int(kernel_budget)
        if run.kernel_budget is not None:
            _evict(run, run.kernel_budget)
    if run.device.type == "cuda":
        torch.cuda.empty_cache()
    return True


def begin_task(data: RunData, spec: PassSpec) -> bool:
    """Open the pass on this worker now (a bad forcing source fails here, before routing)."""
    run = _ensure(data)
    _pass(run, spec)
    if run.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(run.device)
    return True


def _prev_state(prev: Any, ps: _PassState, spec: PassSpec, run: _WorkerRun, group: int,
                t0: int, router: StagedRouter) -> RouterState | None:
    """The state carried into (group, chunk starting at ``t0``)."""
    if prev is None:
        return None
    if not isinstance(prev, SavedState):
        return RouterState(prev.runoff_hist.to(run.device), prev.inflow_hist.to(run.device))
    from ..io import RunProgress

    # saved: the inlets' transfer inflow; the runoff history is the forcing's last K - 1
    # steps before t0 (zeros before step 0), read again: the same values, cast the same way
    z = RunProgress(spec.output).load_state(prev.group, prev.chunk)
    a, b = (int(x) for x in run.groups.reach_ptr_cluster[group])
    k1 = int(spec.window) - 1
    lo = max(0, t0 - k1)
    hist = torch.zeros(1, b - a, k1, device=run.device, dtype=router.dtype)
    if t0 > lo:
        x = ps.forcing.read(_reaches(run, a, b, ps.forcing), (a, b), lo, t0, run.device)
        hist[0, :, k1 - (t0 - lo):] = x.to(router.dtype)
    return RouterState(hist, torch.from_numpy(z["inflow_hist"]).to(run.device, router.dtype))


def _baseline(run: _WorkerRun, ps: _PassState, baseline: np.ndarray, a: int, b: int,
              dtype: torch.dtype) -> torch.Tensor:
    with run.lock:
        if ps.baseline is None:  # engine order, on the device, once per pass
            ps.baseline = torch.as_tensor(np.asarray(baseline)[run.groups.order],
                                          device=run.device, dtype=dtype)
    return ps.baseline[a:b, None]


def _reaches(run: _WorkerRun, a: int, b: int, forcing: Any) -> np.ndarray | torch.Tensor:
    """The global indices of engine rows ``a:b``, as the forcing source reads them: on the
    device for a source that generates there (``index_on_device``)."""
    if getattr(forcing, "index_on_device", False):
        return run.groups.on_device(run.device)["order"][a:b]
    return run.groups.order[a:b]


def upstream_outflows(upstream: tuple, dev: torch.device) -> dict[int, torch.Tensor]:
    """``{upstream group: its exits' outflow on dev}`` from upstream results or bare
    transfer buffers (None: nothing flowed)."""
    outflows = {}
    for u in upstream:
        buf = u.buffer if isinstance(u, ChunkResult) else u
        if buf is not None:
            outflows[buf.group] = buf.data.to(dev)
    return outflows


def block_checksum(x: torch.Tensor) -> torch.Tensor:
    """The float64 sum of a block ``[..., n, T]``: each row summed over time in the block's
    dtype, the row sums added in float64.  One read of the block (``x.sum(dtype=float64)``
    casts the whole block first: three passes over ~44 GB per 3M-reach decade); a float32
    block's checksum is then within ~1e-7 relative of the float64 sum, a float64 block's
    exact to rounding."""
    return x.sum(-1).sum(dtype=torch.float64)


def route_task(data: RunData, spec: PassSpec, group: int, chunk: int, t0: int, t1: int,
               prev: Any, baseline: np.ndarray | None,
               *upstream: ChunkResult | TransferBuffer | None) -> ChunkResult:
    """Route group ``group`` over steps ``t0:t1``: read its forcing block, add the upstream
    buffers, advance the carried state ``prev``, write its discharge (plus ``baseline``
    ``[N]`` m³/s in network order, if given) in the background; returns the new state, its
    exits' buffer and the chunk's checksum (of the discharge written)."""
    run = _ensure(data)
    ps = _pass(run, spec)
    if run.lakes is not None and run.lakes.is_lake_cluster[int(group)]:
        from ._lake_tasks import route_lake_group

        return route_lake_group(run, ps, spec, int(group), chunk, t0, t1, prev, baseline,
                                upstream)
    dev, cs = run.device, run.groups
    a, b = (int(x) for x in cs.reach_ptr_cluster[group])
    key = run.batch_of[int(group)]
    kernels = _kernels(run, key, spec.window)
    router = run.routers[key]
    tic = time.perf_counter()
    x = ps.forcing.read(_reaches(run, a, b, ps.forcing), (a, b), t0, t1, dev)
    ps.timers["read"] += time.perf_counter() - tic
    tic = time.perf_counter()
    state = _prev_state(prev, ps, spec, run, int(group), int(t0), router)
    outflows = upstream_outflows(upstream, dev)
    inflow = router.inflow_for(group, outflows) if outflows else None
    with torch.no_grad():
        q, out, new = router.forward_chunk(group, x[None], inflow, state, kernels)
        if baseline is not None:
            q = q + _baseline(run, ps, baseline, a, b, q.dtype)
    checksum = block_checksum(q)
    ps.timers["route"] += time.perf_counter() - tic
    if ps.writer is not None:
        tic = time.perf_counter()
        block = q[0].to("cpu").numpy()  # the run's dtype, as the store holds it
        ps.timers["d2h"] += time.perf_counter() - tic
        ps.writer.submit(a, t0, block, (int(group), int(chunk)),
                         # on the host here, right after the discharge's copy (the device
                         # is idle then): a copy in the writer thread would wait for every
                         # kernel queued meanwhile
                         new.inflow_hist.detach().cpu().numpy() if spec.record else None)
    ps.tasks += 1
    buf = TransferBuffer(int(group), int(chunk), out) if out.shape[1] else None
    return ChunkResult(int(group), int(chunk), new.runoff_hist, new.inflow_hist, buf, checksum)


def route_unit_task(data: RunData, spec: PassSpec, groups: list[int],
                    upstream_of: list[list[int]], chunk: int, t0: int, t1: int,
                    prevs: list[Any], baseline: np.ndarray | None,
                    *external: list[ChunkResult] | ChunkResult | TransferBuffer | None
                    ) -> list[ChunkResult]:
    """Route a *unit* -- consecutive groups of one worker, in topological order -- over one
    chunk in ONE task: each group exactly as :func:`route_task`, the buffers between groups
    of the unit passed in memory.  Fewer, coarser tasks: a worker's waves no longer wait for
    a scheduler round trip each.

    ``upstream_of[i]`` are the upstream groups of ``groups[i]``; ``prevs[i]`` its carried
    state as for :func:`route_task`, or the previous chunk's unit result (a list) holding
    it; ``external`` the results (unit lists, single results or bare buffers) of upstream
    groups outside the unit.  Returns the groups' :class:`ChunkResult` in order.
    """
    have: dict[int, Any] = {}
    for e in external:
        for r in (e if isinstance(e, list) else [e]):
            if r is not None:
                have[int(r.group)] = r
    out: list[ChunkResult] = []
    for g, ups, prev in zip(groups, upstream_of, prevs):
        if isinstance(prev, list):
            prev = next(r for r in prev if r.group == g)
        res = route_task(data, spec, int(g), chunk, t0, t1, prev, baseline,
                         *(have.get(int(u)) for u in ups))
        have[int(g)] = res
        out.append(res)
    return out


def buffer_task(result: ChunkResult | list[ChunkResult],
                group: int | None = None) -> TransferBuffer | None:
    """The transfer buffer of a result (of ``group`` in a unit's list of results): what
    crosses to another worker (not the state)."""
    if isinstance(result, list):
        result = next(r for r in result if r.group == group)
    return result.buffer


def copy_task(data: RunData, spec: PassSpec, group: int, chunk: int, t0: int,
              t1: int) -> torch.Tensor:
    """The I/O floor: read the group's forcing block and write it to the output store,
    through the device (host -> device -> host), without routing; returns its checksum."""
    run = _ensure(data)
    ps = _pass(run, spec)
    cs = run.groups
    a, b = (int(x) for x in cs.reach_ptr_cluster[group])
    tic = time.perf_counter()
    x = ps.forcing.read(_reaches(run, a, b, ps.forcing), (a, b), t0, t1, run.device)
    ps.timers["read"] += time.perf_counter() - tic
    if ps.writer is not None:
        ps.writer.submit(a, t0, x.to("cpu").numpy())
    ps.tasks += 1
    return block_checksum(x)


@dataclass(frozen=True)
class Checksum:
    """The checksum of (group, chunk): what a pass keeps of a result it no longer needs."""

    group: int
    chunk: int
    value: float


def checksum_task(result: ChunkResult | list[ChunkResult]) -> list[Checksum]:
    """The float64 checksums of a routing task's result(s), per (group, chunk): what a pass
    keeps of a chunk whose states and transfer buffers are no longer needed."""
    rs = result if isinstance(result, list) else [result]
    return [Checksum(r.group, r.chunk, float(r.checksum.double())) for r in rs]


def finish_task(run_id: str, pass_id: str, *results: Any) -> dict[str, Any]:
    """End a pass on this worker: wait for its pending writes; return its figures and the
    checksum of ``results`` (the pass's results held here, or their :class:`Checksum`),
    summed in (group, chunk) order: the same bits however the tasks were cut."""
    tic = time.perf_counter()
    results = tuple(r for x in results for r in (x if isinstance(x, list) else [x]))
    keyed = sorted((r.group, r.chunk, float(r.checksum.double()) if isinstance(
        r, ChunkResult) else r.value) for r in results if isinstance(r, (ChunkResult, Checksum)))
    bare = [r for r in results if torch.is_tensor(r)]  # the I/O floor's per-task checksums
    sums = [torch.tensor(v, dtype=torch.float64) for _, _, v in keyed]
    sums += [s.double().cpu() for s in bare]
    checksum = float(torch.stack(sums).sum()) if sums else 0.0
    last: dict[int, ChunkResult] = {}
    for r in results:
        if isinstance(r, ChunkResult) and r.chunk >= last.get(r.group, r).chunk:
            last[r.group] = r
    out = {"worker": cache.this_worker().address, "checksum": checksum, "results": len(results),
           "tasks": 0, "read_s": 0.0, "route_s": 0.0, "d2h_s": 0.0, "write_s": 0.0,
           "peak_bytes": 0,
           "state_bytes": int(sum(r.runoff_hist.numel() * r.runoff_hist.element_size()
                                  + r.inflow_hist.numel() * r.inflow_hist.element_size()
                                  for r in last.values()))}
    run = cache.runs().get(run_id)
    ps = None if run is None else run.passes.pop(pass_id, None)
    if ps is not None:
        if ps.writer is not None:
            ps.writer.flush()
            ps.writer.pool.shutdown()
        cache.sync(run.device)
        out.update(tasks=ps.tasks, read_s=ps.timers["read"], route_s=ps.timers["route"],
                   d2h_s=ps.timers["d2h"],
                   write_s=ps.writer.seconds if ps.writer is not None else 0.0,
                   peak_bytes=cache.peak_bytes(run.device),
                   host_peak_bytes=cache.host_peak_bytes(),
                   kernel_builds=run.kernel_builds)
    out["flush_wait_s"] = time.perf_counter() - tic
    return out


def abort_pass(run_id: str, pass_id: str, dask_worker: Any = None) -> bool:
    """Drop a failed pass on this worker (``client.run``): queued writes are cancelled."""
    run = cache.runs(dask_worker).get(run_id)
    if run is None:
        return False
    with run.lock:
        ps = run.passes.pop(pass_id, None)
        run.aborted[pass_id] = None if ps is None else ps.writer
    if ps is not None and ps.writer is not None:
        ps.writer.abort()
    return ps is not None


def pass_busy(run_id: str, pass_id: str, dask_worker: Any = None) -> int:
    """Tasks of a pass still executing on this worker, plus its writes still running
    (``client.run``): an aborted pass is over once every worker says 0."""
    n = sum(1 for ts in dask_worker.state.executing if pass_id in str(ts.key))
    run = cache.runs(dask_worker).get(run_id)
    writer = None if run is None else run.aborted.get(pass_id)
    if writer is not None:
        n += sum(1 for f in writer.pending if not f.done())
    return n


def teardown_task(run_id: str, dask_worker: Any = None) -> bool:
    """Forget the run on this worker (frees its device memory); run with ``client.run``."""
    cache.drop(run_id, dask_worker)
    return True
