"""Distributed gradient of a gauge loss w.r.t. routing parameters and runoff (DESIGN §3).

:class:`DistributedGradient` sets a calibration up on the workers of a Dask cluster (the
network, one router per group, the worker's slice of the parameter model, the runoff source,
the observations at the gauges of its groups, and an optimiser whose state stays on the
worker) and runs iterations, all tasks submitted at once and pinned to their group's worker:

1. *forward waves*: one task per group in topological order routes the whole calibration
   window (no time chunking: a calibration window is routed from a zero state) from the
   transfer buffers of its upstream groups, adds the loss at its gauges and returns its own
   buffer;
2. *backward waves*: one task per group in reverse order receives the gradients of its
   exits (the results of the downstream groups' backward tasks), rematerialises its forward
   with autograd, backpropagates them with its local loss, accumulates the gradient of its
   path kernels into the parameters (and of its runoff into the source) and returns the
   gradient of its inlet inflow for the upstream groups;
3. the loss (a sum of per-group scalars: per-gauge losses / number of gauges) and the
   gradients of shared tensors (an :class:`~hydroscale.models.AttributeMLP`, a runoff
   model) are summed in a binary tree of tasks over the workers, never through the client;
4. every worker steps its optimiser: free per-reach parameters are sliced per worker (Adam
   over the worker's rows, exactly the rows of the single-device Adam); shared tensors get
   the same summed gradient, hence the same update, everywhere.

The client receives the loss, per-gauge metrics and per-worker figures (small).  After each
step every worker writes a snapshot of its parameters and optimiser state (two files per
worker, alternating); if a worker dies mid-iteration, the cluster is waited for, the run is
set up again, the snapshot of the last completed iteration is loaded and the iteration is
redone: the trajectory is that of an undisturbed run.  The snapshot folder must be visible
to every worker (a local disk for a local cluster, a shared file system otherwise).

Runoff comes from a *source* on the workers (protocol in :mod:`._gradient_sources`):
:class:`TensorSource` (a tensor, optionally trainable) or :class:`ForcingSource` (a Zarr
store or synthetic forcing read on the workers); a differentiable source (an LSTM and a
catchment interpolator) receives ``dLoss/d(runoff)`` of each group.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..calibration.losses import get_loss
from ..calibration.observations import GaugeObservations, Period
from ..irf import get_irf
from ..network import RiverNetwork
from ..partition import Partition
from ..routing import WindowTruncationError, check_truncation
from ._gradient_sources import ForcingSource, TensorSource, window_index
from ._gradient_tasks import (
    backward_task,
    begin_task,
    end_task,
    forward_task,
    gradient_task,
    load_task,
    loss_defined,
    model_task,
    save_task,
    setup_task,
    snapshot_task,
    sum_task,
    teardown_task,
    truncation_task,
    update_task,
    window_task,
)
from ._plan import WavePlan, map_workers, plan_waves
from ._recovery import wait_for_workers, worker_addresses

__all__ = ["DistributedGradient", "ForcingSource", "TensorSource", "IterationInterrupted"]

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]


class IterationInterrupted(RuntimeError):
    """A worker of the run left the cluster during an iteration.  Redone from the last
    snapshot when a snapshot folder is set; raised when it cannot be (no snapshot folder,
    or ``max_recoveries`` spent).  Compare :class:`~hydroscale.distributed.WorkersLost`:
    the cluster did not get its workers back in time."""


def _addresses(client: Any) -> list[str]:
    return list(worker_addresses(client).values())


class DistributedGradient:
    """A gradient calibration resident on the workers of a Dask cluster.

    Parameters
    ----------
    client : ``distributed.Client`` with exactly ``partition.n_workers`` workers.
    network : the river network (N reaches).
    partition : its partition placed on the workers
        (:func:`hydroscale.partition.partition_network` with ``n_workers``).
    model : a :class:`~hydroscale.models.ParameterModel` returning ``[N, P]`` (its IRF is the
        routing IRF): :class:`~hydroscale.models.FreeParameters` are sliced per worker, any
        other model (:class:`~hydroscale.models.AttributeMLP`) is replicated and its
        gradients are tree-summed.
    observations : gauges by reach id, ``[G, T]`` (NaN where missing) on the runoff's steps.
    source : runoff: a :class:`TensorSource`, a :class:`ForcingSource`, any object following
        the source protocol (:mod:`._gradient_sources`), or an array ``[N, T]``/``[B, N, T]``
        (m³/s per routing step) wrapped in a :class:`TensorSource`.
    substeps, window, dtype, storage_dtype, backend, precision, allow_unstable,
    aggregate_dtype, window_tolerance : as :class:`~hydroscale.routing.StagedRouter`
        (``window="auto"``: the largest of the workers' auto windows at the corners of the
        model's bounds, at most the period's length: exact for every parameter the
        calibration may reach; a given window is checked there, and one that cuts off more
        than ``window_tolerance`` raises :class:`~hydroscale.routing.WindowTruncationError`
        before the first iteration).
    loss : ``"nse"``, ``"kge"`` or ``"vnmse"``: the loss is the mean of the per-gauge loss
        over the used gauges (and batch), exactly as :class:`~hydroscale.calibration.
        Calibrator`, computed as a sum of per-group parts.
    warmup, train, validation : as :class:`~hydroscale.calibration.Calibrator`.
    optimizer, lr : ``"adam"``/``"sgd"`` and its learning rate, or a picklable callable
        ``params -> torch.optim.Optimizer`` (run on every worker).
    plan, placement, batch_reaches : as :class:`~hydroscale.distributed.DistributedRouter`
        (``batch_reaches`` bounds the reaches of one group, hence of one task).
    kernel_graph : ``"keep"`` (the path kernels' autograd graph is kept from the start of
        the iteration to each group's backward: one aggregation per iteration) or
        ``"recompute"`` (aggregated again in the backward: less memory, more time).
    rematerialise : the backward of a group routes it again with autograd (True: only the
        inlet inflow of every group is kept between the waves), or takes the autograd graph
        its forward kept (False: one routing pass less per iteration, the graphs of all the
        worker's groups in memory at the end of the forward waves).
    snapshot_dir : folder of the per-iteration snapshots (visible to every worker); default a
        new temporary folder (local clusters); False: no snapshots (no recovery).
    worker_timeout : seconds to wait for lost workers to come back.
    max_recoveries : recoveries allowed per iteration before giving up.
    poll : seconds between checks of the cluster's workers while waiting.
    """

    def __init__(
        self,
        client: Any,
        network: RiverNetwork,
        partition: Partition,
        model: Any,
        observations: GaugeObservations,
        source: Any,
        *,
        substeps: int = 1,
        window: int | str = "auto",
        loss: str = "nse",
        warmup: int = 0,
        train: Period | slice | None = None,
        validation: Period | slice | None = None,
        optimizer: str | Callable[..., torch.optim.Optimizer] = "adam",
        lr: float = 0.05,
        dtype: torch.dtype = torch.float32,
        storage_dtype: torch.dtype | None = None,
        backend: str = "auto",
        precision: str | None = None,
        allow_unstable: bool = False,
        aggregate_dtype: torch.dtype = torch.float64,
        window_tolerance: float = 1e-6,
        plan: WavePlan | None = None,
        placement: str = "partition",
        batch_reaches: int = 262144,
        kernel_graph: str = "keep",
        rematerialise: bool = True,
        snapshot_dir: str | os.PathLike | bool | None = None,
        worker_timeout: float = 120.0,
        max_recoveries: int = 3,
        poll: float = 0.2,
    ) -> None:
        from ..models import FreeParameters, ParameterModel

        tic = time.perf_counter()
        if not isinstance(model, ParameterModel):
            raise TypeError(f"model must be a ParameterModel, got {type(model).__name__}")
        if model.n_reaches != network.n_reaches:
            raise ValueError(f"the model has {model.n_reaches} reaches, the network "
                             f"{network.n_reaches}")
        get_loss(loss)
        if kernel_graph not in ("keep", "recompute"):
            raise ValueError(f"kernel_graph must be 'keep' or 'recompute', got {kernel_graph!r}")
        if not isinstance(optimizer, str) and not callable(optimizer):
            raise ValueError(f"optimizer must be 'adam', 'sgd' or a callable, got {optimizer!r}")
        if isinstance(optimizer, str) and optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam', 'sgd' or a callable, got {optimizer!r}")
        self.client, self.network, self.model = client, network, model
        self.spec = get_irf(model.spec)
        self.free = isinstance(model, FreeParameters)
        self.source = source if hasattr(source, "read") else TensorSource(source)
        steps = getattr(self.source, "n_steps", observations.n_steps)
        if steps != observations.n_steps:
            raise ValueError(f"the runoff has {steps} steps, the observations "
                             f"{observations.n_steps}; put them on one time axis")
        if getattr(self.source, "n_reaches", network.n_reaches) != network.n_reaches:
            raise ValueError(f"the runoff has {self.source.n_reaches} reaches, the network "
                             f"{network.n_reaches}")
        self.batch = int(getattr(self.source, "batch", 1))
        self.observations = observations
        self.gauges = observations.index_in(network)
        self.loss_name, self.warmup = loss, int(warmup)
        self.train = observations.period(train)
        self.validation = None if validation is None else observations.period(validation)
        for name, p in (("train", self.train), ("validation", self.validation)):
            if p is not None and p.stop - p.start <= self.warmup + 1:
                raise ValueError(f"the {name} period ({p.stop - p.start} steps) must be longer "
                                 f"than warmup + 1 = {self.warmup + 1} steps")
        a = self.train.start + self.warmup
        self.defined = loss_defined(loss, np.asarray(observations.values, np.float64)[
            :, a : self.train.stop])
        if not self.defined.any():
            raise ValueError(f"loss {loss!r} is undefined at every gauge in the training period "
                             "after warm-up (fewer than two observations, or no variance)")
        self.plan = plan or plan_waves(network, partition, max_group_reaches=batch_reaches,
                                       placement=placement)
        self.n_workers = self.plan.n_workers
        downstream: list[list[int]] = [[] for _ in range(self.plan.n_groups)]
        for g in range(self.plan.n_groups):
            for u in self.plan.upstream[g].tolist():
                downstream[int(u)].append(g)
        self.downstream = downstream
        self.options = {"irf": self.spec.name, "substeps": int(substeps), "window": window,
                        "dtype": dtype, "storage_dtype": storage_dtype, "backend": backend,
                        "precision": precision, "allow_unstable": allow_unstable,
                        "aggregate_dtype": aggregate_dtype, "kernel_graph": kernel_graph,
                        "rematerialise": bool(rematerialise),
                        "window_tolerance": float(window_tolerance),
                        "max_steps": int(observations.n_steps)}
        self.optimizer = optimizer if callable(optimizer) else (optimizer, float(lr))
        if snapshot_dir is False:
            self.snapshot_dir = None
        elif snapshot_dir is None:
            self.snapshot_dir = tempfile.mkdtemp(prefix="hydroscale-snapshots-")
        else:
            self.snapshot_dir = os.fspath(snapshot_dir)
            Path(self.snapshot_dir).mkdir(parents=True, exist_ok=True)
        self.worker_timeout, self.max_recoveries = float(worker_timeout), int(max_recoveries)
        self.poll = float(poll)
        self.iteration = 0
        self.recoveries = 0
        self._passes = 0
        self.progress: Progress | None = None
        self._window = window
        self.run_id = ""
        self.addrs: list[str] = []
        self._setup()
        self._snapshot()
        self.setup_s = time.perf_counter() - tic
        logger.info("DistributedGradient %s: %d groups, %d waves on %d workers, %d gauges, "
                    "set up in %.2f s (window %d)", self.run_id, self.plan.n_groups,
                    self.plan.n_waves, self.n_workers, len(self.gauges), self.setup_s,
                    self.window)

    # ------------------------------------------------------------------ set-up
    def _submit(self, fn: Any, *args: Any, worker: int, key: str, priority: int = 0) -> Any:
        return self.client.submit(fn, *args, workers=[self.addrs[worker]],
                                  allow_other_workers=False, pure=False, key=key,
                                  priority=priority)

    def _on_workers(self, fn: Any, *args: Any, tag: str, per_worker: Any = None) -> list[Any]:
        futs = [self._submit(fn, *args, *(per_worker(w) if per_worker else ()), worker=w,
                             key=f"hydroscale-grad-{tag}-{uuid.uuid4().hex[:6]}-{w}")
                for w in range(self.n_workers)]
        return self.client.gather(futs)

    def _model_payload(self, rows: np.ndarray) -> dict[str, Any]:
        m = self.model
        if not self.free:
            return {"kind": "shared", "module": m}
        idx = torch.as_tensor(rows)
        low = m.low if m.low.ndim == 1 else m.low.index_select(0, idx)
        high = m.high if m.high.ndim == 1 else m.high.index_select(0, idx)
        return {"kind": "free", "raw": m.raw.detach().cpu().index_select(0, idx),
                "low": low.detach().cpu(), "high": high.detach().cpu()}

    def _gauge_payload(self, worker: int) -> dict[int, tuple]:
        plan = self.plan
        cs = plan.groups
        g_of = plan.group_of[self.gauges]
        out = {}
        for g in plan.groups_of_worker(worker).tolist():
            k = np.flatnonzero(g_of == g)
            if not k.size:
                continue
            loc = cs.position[self.gauges[k]] - int(plan.rows[g, 0])
            out[int(g)] = (loc, k, np.asarray(self.observations.values[k], np.float64),
                           self.defined[k])
        return out

    def _setup(self) -> None:
        client, plan = self.client, self.plan
        self.addrs = map_workers(client, self.n_workers)
        self.run_id = uuid.uuid4().hex[:10]
        net = plan.network
        arrays = client.scatter([net.ids, net.downstream, plan.group_of], broadcast=True,
                                hash=False)
        cs = plan.groups
        mine = [plan.groups_of_worker(w) for w in range(self.n_workers)]
        rows = [np.sort(np.concatenate([cs.cluster_reaches(int(g)) for g in m]))
                if m.size else np.zeros(0, np.int64) for m in mine]
        loss = {"name": self.loss_name, "warmup": self.warmup,
                "train": (self.train.start + self.warmup, self.train.stop),
                "validation": None if self.validation is None else
                (self.validation.start + self.warmup, self.validation.stop)}
        sources = [self.source.for_worker(plan, w) if hasattr(self.source, "for_worker")
                   else self.source for w in range(self.n_workers)]
        info = self._on_workers(
            setup_task, self.run_id, tag=f"setup-{self.run_id}",
            per_worker=lambda w: (w, *arrays, mine[w], self.options,
                                  self._model_payload(rows[w]), sources[w],
                                  self._gauge_payload(w), loss, self.optimizer,
                                  self.snapshot_dir))
        arrays = None  # the workers hold what they built
        if self._window == "auto":
            self._window = max(int(i["window"]) for i in info)
        self.window = int(self._window)
        self._on_workers(window_task, self.run_id, self.window, tag=f"window-{self.run_id}")
        self.worker_setup = info
        steps = self.observations.n_steps
        if self.window < steps:  # the window must hold for every parameter within bounds
            over = {int(g): m for d in self._on_workers(truncation_task, self.run_id,
                                                          tag=f"trunc-{self.run_id}")
                    for g, m in d.items()}
            if over:
                trunc = np.full(self.plan.n_groups, np.nan)
                trunc[list(over)] = list(over.values())
                try:
                    check_truncation(trunc, tolerance=self.options["window_tolerance"],
                                     window=self.window, run_steps=steps,
                                     clusters=self.plan.groups,
                                     what="distributed calibration (model bounds)")
                except WindowTruncationError:
                    self.close()
                    raise

    def _snapshot(self) -> None:
        if self.snapshot_dir is not None:
            self._on_workers(snapshot_task, self.run_id, self.iteration,
                             tag=f"snapshot-{self.run_id}")

    # ------------------------------------------------------------------ one iteration
    def usable(self) -> np.ndarray:
        """bool ``[G]``: gauges whose loss is defined (see ``loss``)."""
        return self.defined.copy()

    def _graph(self, tag: str, use: np.ndarray, norm: float, training: bool, step: bool,
               keep_sims: bool, windows: tuple[np.ndarray, int] | None
               ) -> tuple[list[tuple[str, int, Any]], list[Any]]:
        plan, g_n, w_n = self.plan, self.plan.n_groups, self.n_workers
        rid, it = self.run_id, self.iteration
        watched: list[tuple[str, int, Any]] = []
        begin = [self._submit(begin_task, rid, it, use, norm, training, keep_sims, windows,
                              worker=w, key=f"hydroscale-grad-begin-{tag}-{w}")
                 for w in range(w_n)]
        fwd: dict[int, Any] = {}
        for g in range(g_n):
            w = int(plan.group_worker[g])
            ups = [fwd[int(u)] for u in plan.upstream[g] if plan.n_exits(int(u))]
            fwd[g] = self._submit(forward_task, rid, g, begin[w], *ups, worker=w,
                                  key=f"hydroscale-grad-fwd-{tag}-{g}", priority=g_n - g)
            watched.append(("forward", g, fwd[g]))
        last = fwd
        if training:
            bwd: dict[int, Any] = {}
            for g in range(g_n - 1, -1, -1):
                w = int(plan.group_worker[g])
                deps = [bwd[d] for d in self.downstream[g]] or [fwd[g]]
                bwd[g] = self._submit(backward_task, rid, g, *deps, worker=w,
                                      key=f"hydroscale-grad-bwd-{tag}-{g}", priority=g)
                watched.append(("backward", g, bwd[g]))
            last = bwd
        ends = [self._submit(end_task, rid, *[last[int(g)] for g in plan.groups_of_worker(w)],
                             worker=w, key=f"hydroscale-grad-end-{tag}-{w}")
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
                                                key=f"hydroscale-grad-sum-{tag}-{depth}-{i}")))
                else:
                    nxt.append(level[i])
            level, depth = nxt, depth + 1
        root = level[0][1]
        updates = [self._submit(update_task, rid, root, it + 1, step, worker=w,
                                key=f"hydroscale-grad-update-{tag}-{w}") for w in range(w_n)]
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
                        raise RuntimeError(f"distributed gradient: task {f.key} {f.status}: "
                                           f"{err!r}") from err
                    ph, g = phase_of.pop(id(f))
                    if ph in left:
                        left[ph][waves[g]] -= 1
                pending = list(rest)
                del done, rest
                self._report(left, shown)
                if pending and time.monotonic() - checked >= self.poll:
                    self._check_workers()  # a scheduler round trip: at most every `poll` s
                    checked = time.monotonic()
        except IterationInterrupted:
            self.client.cancel(pending)
            raise

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

    def _norm(self, use: np.ndarray, windows: tuple[np.ndarray, int] | None) -> float:
        """The number of (batch, gauge) losses averaged: the loss's denominator."""
        if windows is None:
            use = use & self.defined
            return float(self.batch * use.sum())
        starts, length = windows
        if self.batch != 1:
            raise ValueError(f"windows cut one runoff series; the source has a batch of "
                             f"{self.batch}")
        if int(length) <= self.warmup + 1:
            raise ValueError(f"windows must be longer than warmup + 1 = {self.warmup + 1} "
                             f"steps, got {length}")
        idx = window_index(windows)
        if idx.size and (idx.min() < 0 or idx.max() >= self.observations.n_steps):
            raise ValueError(f"windows (starts {np.asarray(starts).tolist()[:5]}..., length "
                             f"{length}) must lie in the {self.observations.n_steps} steps")
        v = np.asarray(self.observations.values, np.float64)[:, idx][..., self.warmup:]
        return float((loss_defined(self.loss_name, v) & use[:, None]).sum())

    def iterate(self, use: np.ndarray | None = None, *, training: bool = True,
                step: bool = True, keep_sims: bool = False,
                windows: tuple[np.ndarray, int] | None = None) -> dict[str, Any]:
        """One pass: forward (and backward when ``training``; optimiser step when ``step``).

        Parameters
        ----------
        use : bool ``[G]`` gauges counted in the loss (default all).
        training, step, keep_sims : backward; optimiser step; return the discharge at the
            gauges.
        windows : None (route the whole period; loss over the training period after
            warm-up) or ``(starts [B], L)``: a batch of ``B`` windows of ``L`` steps cut from
            the one runoff series (the source is told, see the source protocol), each
            routed from a zero state, the loss over steps ``[warmup, L)`` of every window
            (training and validation periods are then the caller's business).

        Returns
        -------
        dict: ``loss`` (float), per-gauge ``nse``, ``kge`` (and ``val_nse``, ``val_kge``)
        ``[G]`` of the routed parameters, ``peak_bytes`` and ``timers`` per worker, ``sims``
        ``[B, G, T or L]`` (with ``keep_sims``), ``seconds``, ``recoveries``.
        """
        t0 = time.perf_counter()
        use = np.ones(len(self.gauges), bool) if use is None else np.asarray(use, bool)
        if windows is not None:
            windows = (np.asarray(windows[0], np.int64).ravel(), int(windows[1]))
        norm = self._norm(use, windows)
        if norm == 0:
            raise ValueError("no usable gauge is selected for the loss")
        if windows is None:
            use = use & self.defined
        attempt = 0
        while True:
            self._passes += 1  # task keys are unique per pass: Dask reuses a known key
            tag = f"{self.run_id}-{self.iteration}-{self._passes}"
            watched, updates = self._graph(tag, use, norm, training, step, keep_sims,
                                           windows)
            try:
                self._wait(watched)
                per = self.client.gather(updates)
                break
            except IterationInterrupted as err:
                self.client.cancel(updates)
                updates.clear()
                attempt += 1
                if self.snapshot_dir is None or attempt > self.max_recoveries:
                    raise
                logger.warning("iteration %d: %s; recovering from the snapshot of iteration "
                               "%d (attempt %d)", self.iteration + 1, err, self.iteration,
                               attempt)
            self._recover()
        if training and step:
            self.iteration += 1
        out = self._assemble(per, keep_sims, windows)
        out["seconds"] = time.perf_counter() - t0
        out["recoveries"] = attempt
        return out

    def _assemble(self, per: list[dict[str, Any]], keep_sims: bool,
                  windows: tuple[np.ndarray, int] | None) -> dict[str, Any]:
        g_n = len(self.gauges)
        out: dict[str, Any] = {"loss": per[0]["loss"],
                               "peak_bytes": [p["peak_bytes"] for p in per],
                               "timers": [p["timers"] for p in per]}
        keys = ("nse", "kge")
        if self.validation is not None and windows is None:
            keys += ("val_nse", "val_kge")
        for k in keys:
            out[k] = np.full(g_n, np.nan)
        for p in per:
            for m in p["metrics"]:
                for k in keys:
                    out[k][m["number"]] = m[k]
        if keep_sims:
            t = self.observations.n_steps if windows is None else windows[1]
            b = self.batch if windows is None else len(windows[0])
            sims = np.full((b, g_n, t), np.nan)
            for p in per:
                for g, s in p["sims"].items():
                    k = np.flatnonzero(self.plan.group_of[self.gauges] == g)
                    sims[:, k] = s
            out["sims"] = sims
        return out

    def _recover(self) -> None:
        old = self.run_id
        addrs = wait_for_workers(self.client, self.n_workers, timeout=self.worker_timeout)
        for a in set(self.addrs) & set(addrs):  # free the survivors' old state, best effort
            try:
                self.client.submit(teardown_task, old, workers=[a], pure=False).result(
                    timeout=self.worker_timeout)
            except Exception:  # noqa: BLE001 - a survivor that fails here is replaced below
                logger.warning("teardown of run %s on %s failed", old, a, exc_info=True)
        self._setup()
        self._on_workers(load_task, self.run_id, None, self.iteration,
                         tag=f"restore-{self.run_id}")
        self.recoveries += 1
        logger.info("recovered: run %s (was %s) at iteration %d", self.run_id, old,
                    self.iteration)

    # ------------------------------------------------------------------ conveniences
    def loss(self, use: np.ndarray | None = None, *,
             windows: tuple[np.ndarray, int] | None = None) -> float:
        """The loss of the current parameters (forward only)."""
        return self.iterate(use, training=False, step=False, windows=windows)["loss"]

    def gradient(self, use: np.ndarray | None = None, *,
                 windows: tuple[np.ndarray, int] | None = None) -> dict[str, Any]:
        """Forward and backward without an update; returns ``loss`` and the gradients:
        ``model`` (mapping name -> gradient of the client model's tensor: ``raw`` ``[N, P]``
        for free parameters, the summed gradients for a shared model), ``source`` (the
        summed gradients of the source's shared tensors) and, for a trainable
        :class:`TensorSource`, ``runoff`` ``[B, N, T]``."""
        res = self.iterate(use, training=True, step=False, windows=windows)
        per = self._on_workers(gradient_task, self.run_id, tag=f"grad-{self.run_id}")
        out: dict[str, Any] = {"loss": res["loss"]}
        if self.free:
            raw = torch.zeros_like(self.model.raw.detach().cpu())
            for p in per:
                raw[torch.as_tensor(p["rows"])] = p["model"]["raw"].to(raw.dtype)
            out["model"] = {"raw": raw}
        else:
            out["model"] = dict(per[0]["model"])
        out["source"] = list(per[0]["source"])
        if "runoff" in per[0]:
            r = np.zeros((self.batch, self.network.n_reaches, self.observations.n_steps))
            for p in per:
                for reaches, v in p["runoff"].values():
                    r[:, reaches] = v
            out["runoff"] = r
        return out

    def update_model(self, model: Any = None) -> Any:
        """Copy the workers' parameters into ``model`` (default the client's model)."""
        model = self.model if model is None else model
        per = self._on_workers(model_task, self.run_id, tag=f"model-{self.run_id}")
        with torch.no_grad():
            if self.free:
                for p in per:
                    rows = torch.as_tensor(p["rows"], device=model.raw.device)
                    model.raw[rows] = p["state"]["raw"].to(model.raw.device, model.raw.dtype)
            else:
                model.load_state_dict(per[0]["state"])
        return model

    def save(self, directory: str | os.PathLike) -> list[str]:
        """Every worker writes its parameters and optimiser state into ``directory``."""
        d = os.fspath(directory)
        Path(d).mkdir(parents=True, exist_ok=True)
        return self._on_workers(save_task, self.run_id, d, self.iteration,
                                tag=f"save-{self.run_id}")

    def load(self, directory: str | os.PathLike, iteration: int) -> None:
        """Every worker restores its file of ``directory`` (written by :meth:`save` at
        ``iteration``); the run continues from ``iteration``."""
        d = os.fspath(directory)
        self._on_workers(load_task, self.run_id, tag=f"load-{self.run_id}",
                         per_worker=lambda w: (os.path.join(d, f"worker-{w:04d}.pt"),
                                               int(iteration)))
        self.iteration = int(iteration)
        self._snapshot()

    def close(self) -> None:
        """Forget the run on every worker."""
        if self.run_id:
            try:
                self._on_workers(teardown_task, self.run_id, tag=f"teardown-{self.run_id}")
            finally:
                self.run_id = ""

    def __enter__(self) -> DistributedGradient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
