"""What runs ON the workers: the worker-resident run state and the task functions.

Each worker keeps, per run id, a :class:`_WorkerRun` in an attribute of the Dask worker
object: the network and its groups (built once from arrays scattered once), a
:class:`~hydroscale.routing.StagedRouter` over the worker's own groups with its kernels on
the worker's device, the carried state of each group, the opened forcing source and a
background writer that region-writes discharge blocks into the output Zarr store.

Tasks are pinned to the worker holding their group; a chunk's task depends on the previous
chunk's task of the same group (so the carried state advances in order) and on the transfer
buffers of the upstream groups for the same chunk.
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

from ..network import RiverNetwork
from ..routing import RivTreeCluster, RouterState, RoutingKernels, StagedRouter
from ._sizeof import TransferBuffer

logger = logging.getLogger(__name__)

_ATTR = "_hydroscale_runs"


@dataclass
class _Writer:
    """Region writes of ``[n, T]`` discharge blocks into an output store, in a background
    thread.  Zarr chunks shared by two groups' row ranges are written under a
    ``distributed.Lock`` named after the chunk (read-modify-write of one chunk at a time);
    the chunk-aligned middle of a block needs no lock."""

    store: str
    run_id: str
    worker: Any
    pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(2))
    pending: list = field(default_factory=list)
    seconds: float = 0.0
    _arr: Any = None
    _mutex: threading.Lock = field(default_factory=threading.Lock)
    _locks: dict = field(default_factory=dict)

    def _lock(self, name: str) -> Any:
        from distributed import Lock

        with self._mutex:
            if name not in self._locks:
                self._locks[name] = Lock(name, scheduler_rpc=self.worker.scheduler,
                                         loop=self.worker.loop)
            return self._locks[name]

    def _array(self) -> Any:
        if self._arr is None:
            import zarr

            root = zarr.open_group(self.store, mode="r+")
            self._arr = root[root.attrs["variable"]]
        return self._arr

    def _write(self, a: int, t0: int, block: np.ndarray) -> None:
        t = time.perf_counter()
        arr = self._array()
        rc = int(arr.chunks[0])
        b = a + block.shape[0]
        t1 = t0 + block.shape[1]
        cuts = sorted({a, b, *range((a + rc - 1) // rc * rc, b, rc)})
        for lo, hi in zip(cuts[:-1], cuts[1:]):
            part = block[lo - a : hi - a]
            aligned = lo % rc == 0 and (hi % rc == 0 or hi == arr.shape[0])
            if aligned:
                arr[lo:hi, t0:t1] = part
            else:
                name = f"hydroscale-{self.run_id}-{lo // rc}-{t0}"
                with self._lock(name):
                    arr[lo:hi, t0:t1] = part
        with self._mutex:
            self.seconds += time.perf_counter() - t

    def submit(self, a: int, t0: int, block: np.ndarray) -> None:
        self.pending.append(self.pool.submit(self._write, a, t0, block))
        done = [f for f in self.pending if f.done()]
        for f in done:
            f.result()
        self.pending = [f for f in self.pending if not f.done()]

    def flush(self) -> None:
        for f in self.pending:
            f.result()
        self.pending = []


@dataclass
class _WorkerRun:
    """A worker's part of a run: built once by :func:`setup_task`, reused by every pass
    (:func:`begin_task` resets the per-pass forcing, writer, carried states and figures)."""

    run_id: str
    device: torch.device
    network: RiverNetwork
    groups: RivTreeCluster
    mine: np.ndarray
    routers: list[StagedRouter] = field(default_factory=list)
    router_of: dict[int, int] = field(default_factory=dict)
    params: torch.Tensor | None = None
    kernels: list[RoutingKernels] = field(default_factory=list)
    forcing: Any = None
    states: dict[int, RouterState] = field(default_factory=dict)
    writer: _Writer | None = None
    checksum: torch.Tensor | None = None
    timers: dict[str, float] = field(default_factory=dict)
    tasks: int = 0


def _worker() -> Any:
    from distributed import get_worker

    return get_worker()


def _runs() -> dict[str, _WorkerRun]:
    w = _worker()
    if not hasattr(w, _ATTR):
        setattr(w, _ATTR, {})
    return getattr(w, _ATTR)


def _get(run_id: str) -> _WorkerRun:
    runs = _runs()
    if run_id not in runs:
        raise RuntimeError(f"run {run_id!r} is not set up on worker {_worker().address} "
                           "(was the worker restarted? route again)")
    return runs[run_id]


def _device() -> torch.device:
    if torch.cuda.is_available():
        # Dask-CUDA sets CUDA_VISIBLE_DEVICES per worker so that its GPU is device 0
        return torch.device("cuda", 0)
    return torch.device("cpu")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def setup_task(run_id: str, ids: np.ndarray, downstream: np.ndarray, group_of: np.ndarray,
               mine: np.ndarray, router_options: dict[str, Any] | None,
               params: Any) -> dict[str, Any]:
    """Build the worker's run: network, groups, router over ``mine``; returns its local
    window (``"auto"``: the window covering its own paths) and timings."""
    t = time.perf_counter()
    dev = _device()
    net = RiverNetwork(ids, downstream)
    cs = RivTreeCluster(net, group_of)
    run = _WorkerRun(run_id, dev, net, cs, np.asarray(mine, np.int64))
    out: dict[str, Any] = {"device": str(dev), "groups": int(run.mine.size)}
    if router_options is not None:
        opts = dict(router_options)
        window = opts.pop("window")
        irf = opts.pop("irf")
        batch = int(opts.pop("batch_reaches"))
        # one StagedRouter per batch of groups (at most ``batch`` reaches, or one group): the
        # kernel aggregation of a batch is what bounds the worker's device memory at set-up
        sizes = np.diff(cs.reach_ptr_cluster[run.mine], axis=1).ravel()
        batches: list[list[int]] = [[]]
        acc = 0
        for g, n in zip(run.mine.tolist(), sizes.tolist()):
            if batches[-1] and acc + n > batch:
                batches.append([])
                acc = 0
            batches[-1].append(g)
            acc += n
        for i, gs in enumerate(b for b in batches if b):
            run.routers.append(StagedRouter(cs, irf, only=gs, device=dev, window=window,
                                            **opts))
            run.router_of.update({g: i for g in gs})
        p = params(net) if callable(params) else params
        run.params = torch.as_tensor(np.asarray(p) if not torch.is_tensor(p) else p,
                                     device=dev)
        out["routers"] = len(run.routers)
        if window == "auto":
            out["window"] = max(
                (r.auto_window(run.params.to(torch.float64)) for r in run.routers), default=2)
        else:
            out["window"] = int(window)
    _runs()[run_id] = run
    _sync(dev)
    out["setup_s"] = time.perf_counter() - t
    return out


def aggregate_task(run_id: str, window: int) -> dict[str, Any]:
    """Aggregate the path kernels of the worker's groups with the run's common window."""
    t = time.perf_counter()
    run = _get(run_id)
    run.kernels = []
    worst = 0.0
    for r in run.routers:
        r.window = int(window)
        with torch.no_grad():
            k = r.aggregate(run.params)
        run.kernels.append(k)
        if np.isfinite(k.truncated_mass).any():
            worst = max(worst, float(np.nanmax(k.truncated_mass)))
        if run.device.type == "cuda":
            torch.cuda.empty_cache()  # the aggregation's temporaries, before the next batch
    _sync(run.device)
    return {"aggregate_s": time.perf_counter() - t, "max_truncated_mass": worst,
            "peak_bytes": _peak(run.device)}


def begin_task(run_id: str, pass_id: str, forcing: Any, output_store: str | None) -> bool:
    """Start a pass: open the forcing on this worker, a writer for the output store, zero
    carried states (nothing flowed before the first step) and figures."""
    run = _get(run_id)
    run.forcing = forcing.open(run.network)
    run.writer = None if output_store is None else _Writer(output_store, pass_id, _worker())
    run.states = {}
    run.checksum = torch.zeros((), dtype=torch.float64, device=run.device)
    run.timers = {"read": 0.0, "route": 0.0, "d2h": 0.0}
    run.tasks = 0
    if run.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(run.device)
    return True


def _peak(dev: torch.device) -> int:
    return int(torch.cuda.max_memory_allocated(dev)) if dev.type == "cuda" else 0


def route_task(run_id: str, group: int, chunk: int, t0: int, t1: int, prev: Any,
               *upstream: TransferBuffer | None) -> TransferBuffer | None:
    """Route group ``group`` over steps ``t0:t1``: read its forcing block, add the upstream
    buffers, advance its carried state, write its discharge; returns its exits' buffer."""
    run = _get(run_id)
    dev, cs = run.device, run.groups
    a, b = (int(x) for x in cs.reach_ptr_cluster[group])
    reaches = cs.order[a:b]
    tic = time.perf_counter()
    x = run.forcing.read(reaches, (a, b), t0, t1, dev)
    run.timers["read"] += time.perf_counter() - tic
    tic = time.perf_counter()
    i = run.router_of[int(group)]
    router = run.routers[i]
    outflows = {u.group: u.data.to(dev) for u in upstream if u is not None}
    inflow = router.inflow_for(group, outflows) if outflows else None
    with torch.no_grad():
        q, out, new = router.forward_chunk(group, x[None], inflow, run.states.get(group),
                                           run.kernels[i])
    run.states[group] = new
    run.checksum += q.sum(dtype=torch.float64)
    _sync(dev)
    run.timers["route"] += time.perf_counter() - tic
    if run.writer is not None:
        tic = time.perf_counter()
        block = q[0].to("cpu", torch.float32).numpy()
        run.timers["d2h"] += time.perf_counter() - tic
        run.writer.submit(a, t0, block)
    run.tasks += 1
    return TransferBuffer(int(group), int(chunk), out) if out.shape[1] else None


def copy_task(run_id: str, group: int, chunk: int, t0: int, t1: int) -> None:
    """The I/O floor: read the group's forcing block and write it to the output store,
    through the device (host -> device -> host), without routing."""
    run = _get(run_id)
    cs = run.groups
    a, b = (int(x) for x in cs.reach_ptr_cluster[group])
    tic = time.perf_counter()
    x = run.forcing.read(cs.order[a:b], (a, b), t0, t1, run.device)
    run.timers["read"] += time.perf_counter() - tic
    run.checksum += x.sum(dtype=torch.float64)
    if run.writer is not None:
        run.writer.submit(a, t0, x.to("cpu").numpy())
    run.tasks += 1


def finish_task(run_id: str, *last: Any) -> dict[str, Any]:
    """End a pass: wait for the worker's pending writes; return its figures."""
    run = _get(run_id)
    tic = time.perf_counter()
    if run.writer is not None:
        run.writer.flush()
        run.writer.pool.shutdown()
    _sync(run.device)
    out = {
        "tasks": run.tasks,
        "read_s": run.timers["read"],
        "route_s": run.timers["route"],
        "d2h_s": run.timers["d2h"],
        "write_s": run.writer.seconds if run.writer is not None else 0.0,
        "flush_wait_s": time.perf_counter() - tic,
        "checksum": float(run.checksum.item()),
        "peak_bytes": _peak(run.device),
        "state_bytes": int(sum(s.runoff_hist.numel() * s.runoff_hist.element_size()
                               + s.inflow_hist.numel() * s.inflow_hist.element_size()
                               for s in run.states.values())),
    }
    run.writer, run.forcing, run.states = None, None, {}
    return out


def teardown_task(run_id: str) -> bool:
    """Forget the run on this worker (frees its device memory)."""
    run = _runs().pop(run_id, None)
    if run is not None and run.device.type == "cuda":
        del run
        torch.cuda.empty_cache()
    return True

