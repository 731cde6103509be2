"""The client side of a wave run: forward and backward waves over the groups of a wave plan,
a tree sum across workers, and a step on every worker (DESIGN §3, "Backward wave").

:class:`WaveRuntime` sets a run up on the workers of a Dask cluster (the network, one router
per batch of a worker's groups, the kernel window fitted or checked for every parameter the
run may use, and per worker a picklable *work* object that says what is optimised, see
:mod:`._waves`) and runs passes, all tasks submitted at once and pinned to their group's
worker:

1. *forward waves*: one task per group in topological order routes the whole period from
   the transfer buffers of its upstream groups, adds its share of the value (the work's
   objective) and returns its own buffer;
2. *backward waves* (training): one task per group in reverse order receives the gradients
   of its exits, rematerialises its forward with autograd, backpropagates, accumulates the
   gradient of its kernels (into the parameters once its batch's last group is done) and
   returns the gradient of its inlet inflow;
3. the value and the gradients of the shared tensors are summed in a binary tree of tasks
   over the workers, never through the client;
4. every worker's work steps (its optimiser, whose state stays on the worker).

The client receives each worker's small report.  A worker lost during a pass raises
:class:`IterationInterrupted`; with ``recoverable`` the runtime waits for the cluster, sets
the run up again, restores every worker's work from its snapshot of the last completed step
(the work's ``restore(iteration)``) and redoes the pass: the trajectory is that of an
undisturbed run.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np

from ..network import RiverNetwork
from ..partition import Partition
from ..routing import (
    CalibrationPlan,
    RoutingOptions,
    RunTooLargeError,
    WindowTruncationError,
    check_truncation,
    format_bytes,
    is_out_of_memory,
    parse_bytes,
    plan_calibration,
)
from ._plan import WavePlan, map_workers, plan_waves
from ._recovery import wait_for_workers, worker_addresses
from ._waves import (
    backward_task,
    begin_task,
    call_task,
    end_task,
    forward_task,
    setup_task,
    strategy_task,
    sum_task,
    teardown_task,
    truncation_task,
    update_task,
    window_task,
)

__all__ = ["IterationInterrupted", "WaveRuntime"]

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]


class IterationInterrupted(RuntimeError):
    """A worker of the run left the cluster during a pass.  Redone from the last snapshot
    when the run is recoverable; raised when it cannot be (not recoverable, or
    ``max_recoveries`` spent).  Compare :class:`~hydroscale.distributed.WorkersLost`: the
    cluster did not get its workers back in time."""


def _addresses(client: Any) -> list[str]:
    return list(worker_addresses(client).values())


class WaveRuntime:
    """A wave run resident on the workers of a Dask cluster (see the module docstring).

    Parameters
    ----------
    client : ``distributed.Client`` with exactly ``partition.n_workers`` workers.
    network, partition : the river network and its partition placed on the workers.
    options : the routing (:class:`~hydroscale.routing.RoutingOptions`); ``window="auto"``
        is the largest of the workers' auto windows at the corners of their work's bounds,
        at most ``max_steps``; a given window is checked there
        (:class:`~hydroscale.routing.WindowTruncationError` before the first pass).
    work_for : ``work_for(plan, worker) -> work``: the picklable work of a worker
        (:class:`~hydroscale.distributed.WaveWork`), called again when a lost worker's run
        is set up anew.
    max_steps : the longest series a pass routes (steps).
    plan, placement, batch_reaches : the wave plan (default :func:`plan_waves` of the
        partition with groups of at most ``batch_reaches`` reaches and ``placement``); a
        worker's groups are also aggregated in batches of at most ``batch_reaches``
        reaches.
    kernel_graph : ``"keep"`` (the kernels' autograd graph is kept from the start of a pass
        to its batch's last backward: one aggregation per pass), ``"recompute"`` (the batch
        is aggregated again, with the graph, after its last backward) or ``"auto"``
        (default: the calibration plan's choice, see below).
    rematerialise : True: the backward of a group routes it again with autograd (only the
        inlet inflow of every group is kept between the waves); False: it takes the graph
        its forward kept (one routing pass less, the graphs of all the worker's groups in
        memory); ``"auto"`` (default): the plan's choice.
    memory_limit : bytes (or ``"80GB"``) each worker may use in the calibration plan;
        default what each worker reports (``$HYDROSCALE_MEMORY_LIMIT``, a GPU's memory, a
        CPU worker's Dask ``memory_limit``).  At set-up, once the window is known,
        :func:`~hydroscale.routing.plan_calibration` estimates every worker's peak in a
        training pass of ``batch`` series of ``max_steps`` steps for the four ways of
        keeping graphs and picks the fastest that fits (:attr:`memory_plan`, logged);
        a value given for ``kernel_graph``/``rematerialise`` is kept (a warning when it
        does not fit), and :class:`~hydroscale.routing.RunTooLargeError` is raised when
        nothing fits.  With no limit known: ``"keep"`` and rematerialisation.
    batch : the series routed together per pass (B), for the plan.
    recoverable : restore from the work's snapshots when a worker is lost.
    worker_timeout, max_recoveries, poll : seconds to wait for lost workers, recoveries
        allowed per pass, seconds between checks of the cluster while waiting.
    label : what the run is, in error messages (e.g. ``"distributed calibration (model
        bounds)"``).
    lakes, dt : level-pool lakes (:class:`~hydroscale.routing.Lakes` or a
        :class:`~hydroscale.routing.LakeLayout`) and the routing step (s): the plan is cut
        at them (:func:`plan_waves`); a group of lakes is stepped in one fused loop per pass,
        from the lakes' ``ifd`` elevation, with the work's ``lake_parameters`` (see
        :class:`~hydroscale.distributed.WaveWork`), and its backward passes through them.
    """

    def __init__(
        self,
        client: Any,
        network: RiverNetwork,
        partition: Partition,
        options: RoutingOptions,
        work_for: Callable[[WavePlan, int], Any],
        *,
        max_steps: int | None = None,
        plan: WavePlan | None = None,
        placement: str = "partition",
        batch_reaches: int = 262144,
        kernel_graph: str = "auto",
        rematerialise: bool | str = "auto",
        memory_limit: int | str | None = None,
        batch: int = 1,
        recoverable: bool = True,
        worker_timeout: float = 120.0,
        max_recoveries: int = 3,
        poll: float = 0.2,
        label: str = "the wave run",
        lakes: Any = None,
        dt: float | None = None,
    ) -> None:
        if kernel_graph not in ("auto", "keep", "recompute"):
            raise ValueError(f"kernel_graph must be 'auto', 'keep' or 'recompute', got "
                             f"{kernel_graph!r}")
        if rematerialise != "auto" and not isinstance(rematerialise, (bool, np.bool_)):
            raise ValueError(f"rematerialise must be 'auto', True or False, got "
                             f"{rematerialise!r}")
        self.client, self.network = client, network
        self.options, self.label = options, label
        self.work_for = work_for
        if lakes is not None and dt is None:
            raise ValueError("a wave run with lakes needs dt, the routing step in seconds")
        if plan is not None and lakes is not None and plan.layout is None:
            raise ValueError("the plan given was not cut at the lakes: build it with "
                             "plan_waves(..., lakes=lakes) or leave plan out")
        self.plan = plan or plan_waves(network, partition, max_group_reaches=batch_reaches,
                                       placement=placement, lakes=lakes)
        self.n_workers = self.plan.n_workers
        downstream: list[list[int]] = [[] for _ in range(self.plan.n_groups)]
        for g in range(self.plan.n_groups):
            for u in self.plan.upstream[g].tolist():
                downstream[int(u)].append(g)
        self.downstream = downstream
        self.waves = {"kernel_graph": kernel_graph,
                      "rematerialise": rematerialise if rematerialise == "auto"
                      else bool(rematerialise),
                      "max_steps": None if max_steps is None else int(max_steps),
                      "batch_reaches": int(batch_reaches),
                      "lakes": None if self.plan.layout is None else self.plan.layout.lakes,
                      "dt": None if dt is None else float(dt)}
        self.max_steps = max_steps
        self.recoverable = bool(recoverable)
        self.worker_timeout, self.max_recoveries = float(worker_timeout), int(max_recoveries)
        self.poll = float(poll)
        self.progress: Progress | None = None
        #: groups done per worker in the running (or last) pass, by phase: ``{"forward":
        #: [[done, total] per worker], "backward": [...]}`` (for a progress display)
        self.groups_done: dict[str, list[list[int]]] = {}
        self._window = options.window
        self._passes = 0
        self.recoveries = 0
        self.run_id = ""
        self.addrs: list[str] = []
        self.window = 0
        self.worker_setup: list[dict[str, Any]] = []
        self.memory_limit = None if memory_limit is None else parse_bytes(memory_limit)
        self.batch = int(batch)
        #: the calibration plan of the run (set at set-up; see ``memory_limit``)
        self.memory_plan: CalibrationPlan | None = None
        self.setup()

    # ------------------------------------------------------------------ set-up
    def _submit(self, fn: Any, *args: Any, worker: int, key: str, priority: int = 0) -> Any:
        return self.client.submit(fn, *args, workers=[self.addrs[worker]],
                                  allow_other_workers=False, pure=False, key=key,
                                  priority=priority)

    def _on_workers(self, fn: Any, *args: Any, tag: str, per_worker: Any = None) -> list[Any]:
        futs = [self._submit(fn, *args, *(per_worker(w) if per_worker else ()), worker=w,
                             key=f"hydroscale-waves-{tag}-{uuid.uuid4().hex[:6]}-{w}")
                for w in range(self.n_workers)]
        return self.client.gather(futs)

    def call(self, method: str, *args: Any, per_worker: Any = None) -> list[Any]:
        """``work.<method>(*args, *per_worker(w))`` on every worker; their results."""
        return self._on_workers(call_task, self.run_id, method, *args,
                                tag=f"call-{method}-{self.run_id}", per_worker=per_worker)

    def setup(self) -> None:
        """Set the run up on the workers (again after a loss: new run id)."""
        client, plan = self.client, self.plan
        self.addrs = map_workers(client, self.n_workers)
        self.run_id = uuid.uuid4().hex[:10]
        net = plan.network
        arrays = client.scatter([net.ids, net.downstream, plan.group_of], broadcast=True,
                                hash=False)
        options = self.options.replace(window=self._window)
        info = self._on_workers(
            setup_task, self.run_id, tag=f"setup-{self.run_id}",
            per_worker=lambda w: (w, *arrays, plan.groups_of_worker(w), options, self.waves,
                                  self.work_for(plan, w)))
        arrays = None  # the workers hold what they built
        if self._window == "auto":
            self._window = max(int(i["window"]) for i in info)
        self.window = int(self._window)
        self._on_workers(window_task, self.run_id, self.window, tag=f"window-{self.run_id}")
        self.worker_setup = info
        if self.max_steps is None or self.window < int(self.max_steps):
            self._check_window()
        try:
            self.memory_plan = self.plan_memory()
        except Exception:
            self.close()
            raise
        kg, remat = self.memory_plan.kernel_graph, self.memory_plan.rematerialise
        self._on_workers(strategy_task, self.run_id, kg, remat,
                         tag=f"strategy-{self.run_id}")

    def plan_memory(self, n_steps: int | None = None, batch: int | None = None,
                    memory_limit: int | str | None = None) -> CalibrationPlan:
        """The calibration plan (:func:`~hydroscale.routing.plan_calibration`) of a training
        pass of ``batch`` series (default the run's) of ``n_steps`` steps (default
        ``max_steps``; the window where unknown) from what the workers reported at set-up,
        against ``memory_limit`` (default the run's, else each worker's own figure)."""
        o = self.options
        limit = self.memory_limit if memory_limit is None else parse_bytes(memory_limit)
        limits = [(limit, "memory_limit") if limit is not None
                  else tuple(i["memory_limit"]) for i in self.worker_setup]
        workers = [{"groups": i["sizes"], "batches": i["batches"],
                    "resident": i["resident"], "work": i["work_bytes"]}
                   for i in self.worker_setup]
        store = o.storage_dtype or o.dtype
        steps = n_steps or self.max_steps or self.window
        return plan_calibration(
            workers, window=self.window, substeps=o.substeps, n_steps=int(steps),
            batch=int(batch or self.batch), itemsize=store.itemsize,
            aggregate_itemsize=o.aggregate_dtype.itemsize,
            save_itemsize=min(o.dtype.itemsize, o.aggregate_dtype.itemsize),
            recursive=any(i["recursive"] for i in self.worker_setup),
            differentiable_input=any(i["differentiable_input"] for i in self.worker_setup),
            limits=limits, kernel_graph=self.waves["kernel_graph"],
            rematerialise=self.waves["rematerialise"], what=self.label)

    def _check_window(self) -> None:
        """Refuse, before any pass, a window that cuts off more than the tolerance of an
        in-cluster path for some parameter the run may use."""
        over = {int(g): m for d in self._on_workers(truncation_task, self.run_id,
                                                      tag=f"trunc-{self.run_id}")
                for g, m in d.items()}
        if not over:
            return
        trunc = np.full(self.plan.n_groups, np.nan)
        trunc[list(over)] = list(over.values())
        try:
            check_truncation(trunc, tolerance=self.options.window_tolerance,
                             window=self.window, run_steps=self.max_steps,
                             clusters=self.plan.groups, what=self.label)
        except WindowTruncationError:
            self.close()
            raise

    # ------------------------------------------------------------------ one pass
    def _graph(self, tag: str, pass_args: Any, training: bool, step: bool, iteration: int
               ) -> tuple[list[tuple[str, int, Any]], list[Any]]:
        plan, g_n, w_n = self.plan, self.plan.n_groups, self.n_workers
        rid = self.run_id
        watched: list[tuple[str, int, Any]] = []
        begin = [self._submit(begin_task, rid, pass_args, training, worker=w,
                              key=f"hydroscale-waves-begin-{tag}-{w}") for w in range(w_n)]
        fwd: dict[int, Any] = {}
        for g in range(g_n):
            w = int(plan.group_worker[g])
            ups = [fwd[int(u)] for u in plan.upstream[g] if plan.n_exits(int(u))]
            fwd[g] = self._submit(forward_task, rid, g, begin[w], *ups, worker=w,
                                  key=f"hydroscale-waves-fwd-{tag}-{g}", priority=g_n - g)
            watched.append(("forward", g, fwd[g]))
        last = fwd
        if training:
            bwd: dict[int, Any] = {}
            for g in range(g_n - 1, -1, -1):
                w = int(plan.group_worker[g])
                deps = [bwd[d] for d in self.downstream[g]] or [fwd[g]]
                bwd[g] = self._submit(backward_task, rid, g, *deps, worker=w,
                                      key=f"hydroscale-waves-bwd-{tag}-{g}", priority=g)
                watched.append(("backward", g, bwd[g]))
            last = bwd
        ends = [self._submit(end_task, rid, *[last[int(g)] for g in plan.groups_of_worker(w)],
                             worker=w, key=f"hydroscale-waves-end-{tag}-{w}")
                for w in range(w_n)]
        level = list(enumerate(ends))
        depth = 0
        while len(level) > 1:  # pairwise, by worker index: the same sums whatever the timing
            nxt = []
            for i in range(0, len(level), 2):
                if i + 1 < len(level):
                    w, a = level[i]
                    b = level[i + 1][1]
                    nxt.append((w, self._submit(sum_task, a, b, worker=w,
                                                key=f"hydroscale-waves-sum-{tag}-{depth}-{i}")))
                else:
                    nxt.append(level[i])
            level, depth = nxt, depth + 1
        root = level[0][1]
        updates = [self._submit(update_task, rid, root, iteration, step, worker=w,
                                key=f"hydroscale-waves-update-{tag}-{w}") for w in range(w_n)]
        watched += [("update", w, f) for w, f in enumerate(updates)]
        return watched, updates

    def _check_workers(self) -> None:
        gone = set(self.addrs) - set(_addresses(self.client))
        if gone:
            raise IterationInterrupted(f"worker(s) {sorted(gone)} left the cluster")

    def _wait(self, watched: list[tuple[str, int, Any]]) -> None:
        from distributed import wait

        waves = self.plan.group_wave
        n_waves = self.plan.n_waves
        left = {"forward": np.bincount(waves, minlength=n_waves),
                "backward": np.bincount(waves, minlength=n_waves)}
        shown = {"forward": 0, "backward": 0}
        gw = self.plan.group_worker
        total = np.bincount(gw, minlength=self.n_workers)
        # groups done per worker in each phase of the running pass: [[done, total], ...]
        self.groups_done = {ph: [[0, int(t)] for t in total] for ph in left}
        phase_of = {id(f): (ph, g) for ph, g, f in watched}
        pending = [f for _, _, f in watched]
        watched.clear()  # completed futures are dropped: their results can be released
        checked = time.monotonic()
        try:
            while pending:
                try:
                    done, rest = wait(pending, timeout=self.poll, return_when="FIRST_COMPLETED")
                except TimeoutError:
                    done, rest = set(), pending
                for f in done:
                    if f.status != "finished":
                        self._check_workers()
                        err = f.exception() if f.status == "error" else None
                        if is_out_of_memory(err):
                            raise RunTooLargeError(self._out_of_memory(f.key, err)) from err
                        raise RuntimeError(f"wave run: task {f.key} {f.status}: {err!r}"
                                           ) from err
                    ph, g = phase_of.pop(id(f))
                    if ph in left:
                        left[ph][waves[g]] -= 1
                        self.groups_done[ph][int(gw[g])][0] += 1
                pending = list(rest)
                del done, rest
                self._report(left, shown)
                if pending and time.monotonic() - checked >= self.poll:
                    self._check_workers()  # a scheduler round trip: at most every `poll` s
                    checked = time.monotonic()
        except IterationInterrupted:
            self.client.cancel(pending)
            raise

    def _out_of_memory(self, key: str, err: BaseException) -> str:
        """The message of a task that ran out of device memory: the plan's strategy and
        estimate beside the limit, and the settings to change."""
        p = self.memory_plan
        plan = "no memory plan was made"
        if p is not None:
            peaks = ", ".join(format_bytes(w.peak) for w in p.workers)
            limits = ", ".join("unknown" if w.limit is None else format_bytes(w.limit)
                               for w in p.workers)
            plan = (f"the memory plan ({p.strategy}, {p.chosen}) estimated {peaks} per worker "
                    f"against {limits}")
        return (f"{self.label}: task {key} ran out of device memory ({err}); {plan}: leave "
                f"kernel_graph and rematerialise to 'auto', set memory_limit below the "
                f"device's memory, lower batch_reaches (routing.max_reaches), the window or "
                f"substeps, calibrate on shorter windows or use more workers")

    def _report(self, left: dict[str, np.ndarray], shown: dict[str, int]) -> None:
        """Call :attr:`progress` with the waves completed, in each phase's order."""
        if self.progress is None:
            return
        n_waves = self.plan.n_waves
        for ph in ("forward", "backward"):
            order = range(n_waves) if ph == "forward" else range(n_waves - 1, -1, -1)
            k = 0
            for wv in order:
                if left[ph][wv] > 0:
                    break
                k += 1
            if k != shown[ph]:
                shown[ph] = k
                self.progress(ph, k, n_waves)

    def run_pass(self, pass_args: Any, *, training: bool, step: bool, iteration: int
                 ) -> tuple[list[dict[str, Any]], int]:
        """One pass: forward waves (and backward waves when ``training``; the work's step
        when ``step``), ``iteration`` being the step it completes.  Returns every worker's
        report (``value``: the summed value, the work's report, ``peak_bytes``, ``timers``)
        and the number of recoveries it took."""
        attempt = 0
        while True:
            self._passes += 1  # task keys are unique per pass: Dask reuses a known key
            tag = f"{self.run_id}-{iteration}-{self._passes}"
            watched, updates = self._graph(tag, pass_args, training, step, iteration)
            try:
                self._wait(watched)
                return self.client.gather(updates), attempt
            except IterationInterrupted as err:
                self.client.cancel(updates)
                updates.clear()
                attempt += 1
                if not self.recoverable or attempt > self.max_recoveries:
                    raise
                logger.warning("pass for step %d: %s; recovering from the snapshot of step "
                               "%d (attempt %d)", iteration, err, iteration - 1, attempt)
            self._recover(iteration - 1)

    def _recover(self, iteration: int) -> None:
        old = self.run_id
        addrs = wait_for_workers(self.client, self.n_workers, timeout=self.worker_timeout)
        for a in set(self.addrs) & set(addrs):  # free the survivors' old state, best effort
            try:
                self.client.submit(teardown_task, old, workers=[a], pure=False).result(
                    timeout=self.worker_timeout)
            except Exception:  # noqa: BLE001 - a survivor that fails here is replaced below
                logger.warning("teardown of run %s on %s failed", old, a, exc_info=True)
        self.setup()
        self.call("restore", iteration)
        self.recoveries += 1
        logger.info("recovered: run %s (was %s) at step %d", self.run_id, old, iteration)

    def close(self) -> None:
        """Forget the run on every worker."""
        if self.run_id:
            try:
                self._on_workers(teardown_task, self.run_id, tag=f"teardown-{self.run_id}")
            finally:
                self.run_id = ""
