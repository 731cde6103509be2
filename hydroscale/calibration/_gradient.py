"""The gradient of a gauge loss w.r.t. routing parameters and runoff, on the workers of a Dask
cluster (DESIGN §3, "Backward wave").

:class:`DistributedGradient` sets a calibration up as a wave run of the distributed runtime
(:class:`~hydroscale.distributed.WaveRuntime`): per worker, a
:class:`~hydroscale.calibration._objective.GaugeWork` holds the worker's slice of the
parameter model (free per-reach parameters are sliced per worker; any other model, e.g. an
:class:`~hydroscale.models.AttributeMLP`, is replicated and its gradients tree-summed), the
runoff source, the observations at the gauges of its groups, and an optimiser whose state
stays on the worker.  Each iteration routes forward waves, adds the loss at the gauges of
every group, backpropagates in backward waves, sums the loss and the shared gradients in a
tree and steps every worker's optimiser: free parameters with exactly the rows of the
single-device Adam, shared tensors with the same summed gradient, hence the same update,
everywhere.

The client receives the loss, per-gauge metrics and per-worker figures (small).  After each
step every worker writes a snapshot of its parameters and optimiser state (two files per
worker, alternating); if a worker dies mid-iteration, the cluster is waited for, the run is
set up again, the snapshot of the last completed iteration is loaded and the iteration is
redone: the trajectory is that of an undisturbed run.  The snapshot folder must be visible
to every worker (a local disk for a local cluster, a shared file system otherwise).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._closing import Closing
from ..distributed import IterationInterrupted, WaveRuntime
from ..network import RiverNetwork
from ..partition import Partition
from ..routing import RoutingOptions
from ._loop import checked_periods
from ._objective import FreeSlice, GaugeWork, loss_defined
from ._options import CalibrationOptions, build_options
from ._sources import as_runoff_source, window_index
from ._summary import histogram_edges
from .observations import GaugeObservations

__all__ = ["DistributedGradient", "IterationInterrupted"]

logger = logging.getLogger(__name__)

# the keywords of a DistributedGradient that configure its wave run (WaveRuntime's defaults)
_RUNTIME_KEYWORDS = ("plan", "placement", "batch_reaches", "kernel_graph", "rematerialise",
                     "memory_limit", "worker_timeout", "max_recoveries", "poll", "lakes", "dt",
                     "train_lakes")


class DistributedGradient(Closing):
    """A gradient calibration resident on the workers of a Dask cluster.

    Parameters
    ----------
    client : ``distributed.Client`` with exactly ``partition.n_workers`` workers.
    network : the river network (N reaches).
    partition : its partition placed on the workers
        (:func:`hydroscale.partition.partition_network` with ``n_workers``).
    model : a :class:`~hydroscale.models.ParameterModel` returning ``[N, P]`` (its IRF is the
        routing IRF): :class:`~hydroscale.models.FreeParameters` are sliced per worker, any
        other model is replicated and its gradients tree-summed.
    observations : gauges by reach id, ``[G, T]`` (NaN where missing) on the runoff's steps.
    source : runoff: a :class:`~hydroscale.calibration.TensorSource`, a forcing source of
        :mod:`hydroscale.io` (read on the workers), any object following the source protocol
        (:mod:`hydroscale.calibration._sources`), or an array ``[N, T]``/``[B, N, T]`` (m³/s
        per routing step) wrapped in a TensorSource (see
        :func:`~hydroscale.calibration.as_runoff_source`).
    options : the routing (:class:`~hydroscale.routing.RoutingOptions`; its IRF is the
        model's).  ``window="auto"``: the largest of the workers' auto windows at the
        corners of the model's bounds, at most the period's length: exact for every
        parameter the calibration may reach; a given window is checked there, and one that
        cuts off more than ``window_tolerance`` raises
        :class:`~hydroscale.routing.WindowTruncationError` before the first iteration.
    calibration : :class:`~hydroscale.calibration.CalibrationOptions` (``loss``,
        ``warmup``, ``train``, ``validation``, ``optimizer``, ``lr`` are used here: the loss
        is the mean of the per-gauge loss over the used gauges (and batch), exactly as
        :class:`~hydroscale.calibration.Calibrator`, computed as a sum of per-group parts).
    snapshot_dir : folder of the per-iteration snapshots (visible to every worker); default a
        new temporary folder (local clusters); False: no snapshots (no recovery).
    **keywords : routing or calibration options by name (they amend the two objects), and
        the keywords of the wave run, passed to
        :class:`~hydroscale.distributed.WaveRuntime` (its defaults): ``plan``,
        ``placement``, ``batch_reaches``, ``kernel_graph``, ``rematerialise`` (both
        ``"auto"`` by default: the fastest way of keeping graphs that the calibration plan
        finds to fit, see :attr:`memory_plan`), ``memory_limit``,
        ``worker_timeout``, ``max_recoveries``, ``poll``; ``lakes`` (level-pool
        :class:`~hydroscale.routing.Lakes` routed as lake groups) with ``dt`` (the routing
        step, s) and ``train_lakes`` (names of the level-pool parameters trained, e.g.
        ``("weir_coefficient",)``: a local parameter of the worker of each lake;
        :meth:`gradient` returns their gradient as ``lakes`` ``[L, k]``).
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
        options: RoutingOptions | None = None,
        calibration: CalibrationOptions | None = None,
        snapshot_dir: str | os.PathLike | bool | None = None,
        **keywords: Any,
    ) -> None:
        from ..models import FreeParameters, ParameterModel

        tic = time.perf_counter()
        if not isinstance(model, ParameterModel):
            raise TypeError(f"model must be a ParameterModel, got {type(model).__name__}")
        if model.n_reaches != network.n_reaches:
            raise ValueError(f"the model has {model.n_reaches} reaches, the network "
                             f"{network.n_reaches}")
        routing, cal, runtime = build_options(options, calibration,
                                              {"irf": model.spec, **keywords},
                                              accept=_RUNTIME_KEYWORDS)
        self.routing, self.calibration = routing, cal
        self.client, self.network, self.model = client, network, model
        self.spec = routing.spec
        self.free = isinstance(model, FreeParameters)
        self.source = as_runoff_source(source)
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
        self.loss_name, self.warmup = cal.loss, cal.warmup
        self.train, self.validation = checked_periods(observations, cal)
        a = self.train.start + self.warmup
        self.defined = loss_defined(self.loss_name, np.asarray(observations.values,
                                                               np.float64)[:, a:self.train.stop])
        if not self.defined.any():
            raise ValueError(f"loss {self.loss_name!r} is undefined at every gauge in the "
                             "training period after warm-up (fewer than two observations, or "
                             "no variance)")
        if snapshot_dir is False:
            self.snapshot_dir = None
        elif snapshot_dir is None:
            self.snapshot_dir = tempfile.mkdtemp(prefix="hydroscale-snapshots-")
        else:
            self.snapshot_dir = os.fspath(snapshot_dir)
            Path(self.snapshot_dir).mkdir(parents=True, exist_ok=True)
        self.iteration = 0
        self.progress = None
        try:  # the parameter histograms the workers report after each step
            self.edges: np.ndarray | None = histogram_edges(model.low, model.high)
        except (AttributeError, TypeError, ValueError):
            self.edges = None
        lakes = runtime.get("lakes")
        train = tuple(runtime.pop("train_lakes", ()))
        self.lake_columns = self._lake_columns(lakes, train)
        self.runtime = WaveRuntime(
            client, network, partition, routing, self._work, max_steps=observations.n_steps,
            recoverable=self.snapshot_dir is not None, batch=self.batch,
            label="distributed calibration (model bounds)", **runtime)
        self.plan, self.n_workers = self.runtime.plan, self.runtime.n_workers
        self._snapshot()
        self.setup_s = time.perf_counter() - tic
        logger.info("DistributedGradient %s: %d groups, %d waves on %d workers, %d gauges, "
                    "set up in %.2f s (window %d, %s)", self.run_id, self.plan.n_groups,
                    self.plan.n_waves, self.n_workers, len(self.gauges), self.setup_s,
                    self.window, self.memory_plan.strategy)

    # ------------------------------------------------------------------ the workers' work
    @property
    def run_id(self) -> str:
        return self.runtime.run_id

    @property
    def window(self) -> int:
        return self.runtime.window

    @property
    def memory_plan(self) -> Any:
        """The calibration plan (:class:`~hydroscale.routing.CalibrationPlan`): the strategy
        chosen and every worker's estimated peak."""
        return self.runtime.memory_plan

    @property
    def addrs(self) -> list[str]:
        return self.runtime.addrs

    @property
    def worker_setup(self) -> list[dict[str, Any]]:
        return self.runtime.worker_setup

    @property
    def recoveries(self) -> int:
        return self.runtime.recoveries

    @staticmethod
    def _lake_columns(lakes: Any, train: tuple[str, ...]) -> tuple[int, ...] | None:
        """Column indices of the trained level-pool parameters (None without lakes)."""
        from ..routing import LEVEL_POOL_PARAMS

        if lakes is None:
            if train:
                raise ValueError(f"train_lakes={list(train)} needs lakes=")
            return None
        bad = [c for c in train if c not in LEVEL_POOL_PARAMS]
        if bad:
            raise ValueError(f"train_lakes names unknown level-pool parameters {bad}; the "
                             f"parameters are {list(LEVEL_POOL_PARAMS)}")
        return tuple(LEVEL_POOL_PARAMS.index(c) for c in train)

    def _model_part(self, rows: np.ndarray) -> tuple[Any, bool]:
        m = self.model
        if not self.free:
            return m, True
        idx = torch.as_tensor(rows)
        low = m.low if m.low.ndim == 1 else m.low.index_select(0, idx)
        high = m.high if m.high.ndim == 1 else m.high.index_select(0, idx)
        return FreeSlice(m.raw.detach().cpu().index_select(0, idx), low.detach().cpu(),
                         high.detach().cpu()), False

    def _gauge_part(self, plan: Any, worker: int) -> dict[int, tuple]:
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

    def _work(self, plan: Any, worker: int) -> GaugeWork:
        """Worker ``worker``'s share (built on the client, shipped once)."""
        cs = plan.groups
        mine = plan.groups_of_worker(worker)
        rows = (np.sort(np.concatenate([cs.cluster_reaches(int(g)) for g in mine]))
                if mine.size else np.zeros(0, np.int64))
        model, shared = self._model_part(rows)
        source = (self.source.for_worker(plan, worker)
                  if hasattr(self.source, "for_worker") else self.source)
        loss = {"name": self.loss_name, "warmup": self.warmup,
                "train": (self.train.start + self.warmup, self.train.stop),
                "validation": None if self.validation is None else
                (self.validation.start + self.warmup, self.validation.stop)}
        cal = self.calibration
        lakes = None
        if plan.layout is not None:
            lakes = (np.asarray(plan.layout.lakes.params, np.float64), self.lake_columns)
        work = GaugeWork(model, shared, source, self._gauge_part(plan, worker), loss,
                         (cal.optimizer, float(cal.lr)), self.snapshot_dir, self.edges,
                         lakes)
        work.lr_override = getattr(self, "_lr", None)  # restored with the snapshot
        return work

    @property
    def lr(self) -> float:
        """The learning rate of the workers' optimisers (see :meth:`set_lr`)."""
        return float(getattr(self, "_lr", self.calibration.lr))

    def set_lr(self, lr: float) -> None:
        """Every worker's optimiser steps with learning rate ``lr`` from its next step on
        (a run set up again after a lost worker keeps it: its snapshot holds it too)."""
        self._lr = float(lr)
        self.runtime.call("set_lr", self._lr)

    def _snapshot(self) -> None:
        if self.snapshot_dir is not None:
            self.runtime.call("snapshot", self.iteration)

    # ------------------------------------------------------------------ one iteration
    def usable(self) -> np.ndarray:
        """bool ``[G]``: gauges whose loss is defined (see ``loss``)."""
        return self.defined.copy()

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
                windows: tuple[np.ndarray, int] | None = None,
                watch: Any = ()) -> dict[str, Any]:
        """One pass: forward (and backward when ``training``; optimiser step when ``step``).

        Parameters
        ----------
        use : bool ``[G]`` gauges counted in the loss (default all).
        training, step, keep_sims : backward; optimiser step; return the discharge at the
            gauges.
        watch : gauge numbers whose discharge is returned without ``keep_sims``
            (``watched``: number -> ``[B, T]``), a few for the dashboard.
        windows : None (route the whole period; loss over the training period after
            warm-up) or ``(starts [B], L)``: a batch of ``B`` windows of ``L`` steps cut from
            the one runoff series (the source is told, see the source protocol), each
            routed from a zero state, the loss over steps ``[warmup, L)`` of every window
            (training and validation periods are then the caller's business).

        Returns
        -------
        dict: ``loss`` (float), per-gauge ``nse``, ``kge`` (and ``val_nse``, ``val_kge``)
        ``[G]`` of the routed parameters (and ``bias``, ``val_bias``: relative volume error;
        ``val_loss``: the per-gauge loss on the validation period),
        ``peak_bytes`` and ``timers`` per worker, ``planned_peak_bytes`` (the memory plan's
        estimate per worker), ``strategy`` (its ``kernel_graph+remat`` choice), ``sims``
        ``[B, G, T or L]`` (with
        ``keep_sims``), ``watched``, ``param_counts`` (histograms of the parameters after the
        step, summed over workers; None without a step), ``seconds``, ``recoveries``.
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
        self.runtime.progress = self.progress
        pass_args = {"use": use, "norm": norm, "windows": windows, "keep_sims": keep_sims,
                     "watch": np.asarray(watch, np.int64)}
        per, attempts = self.runtime.run_pass(pass_args, training=training, step=step,
                                              iteration=self.iteration + 1)
        if training and step:
            self.iteration += 1
        out = self._assemble(per, keep_sims, windows)
        plan = self.memory_plan
        if plan is not None:
            out["planned_peak_bytes"] = plan.peaks()
            out["strategy"] = plan.strategy
        out["seconds"] = time.perf_counter() - t0
        out["recoveries"] = attempts
        return out

    def _assemble(self, per: list[dict[str, Any]], keep_sims: bool,
                  windows: tuple[np.ndarray, int] | None) -> dict[str, Any]:
        g_n = len(self.gauges)
        out: dict[str, Any] = {"loss": per[0]["value"],
                               "peak_bytes": [p["peak_bytes"] for p in per],
                               "timers": [p["timers"] for p in per]}
        keys = ("nse", "kge", "bias")
        if self.validation is not None and windows is None:
            keys += ("val_nse", "val_kge", "val_bias", "val_loss")
        for k in keys:
            out[k] = np.full(g_n, np.nan)
        for p in per:
            for m in p["metrics"]:
                for k in keys:
                    out[k][m["number"]] = m[k]
        counts = [p["counts"] for p in per if p.get("counts") is not None]
        out["param_counts"] = ({k: sum(c[k] for c in counts) for k in counts[0]}
                               if counts else None)
        out["watched"] = {}
        if not keep_sims:
            for p in per:
                for numbers, s in p["sims"].values():
                    out["watched"].update({int(n): s[:, i] for i, n in enumerate(numbers)})
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
        :class:`~hydroscale.calibration.TensorSource`, ``runoff`` ``[B, N, T]``."""
        res = self.iterate(use, training=True, step=False, windows=windows)
        per = self.runtime.call("gradients")
        out: dict[str, Any] = {"loss": res["loss"]}
        if self.free:
            raw = torch.zeros_like(self.model.raw.detach().cpu())
            for p in per:
                raw[torch.as_tensor(p["rows"])] = p["model"]["raw"].to(raw.dtype)
            out["model"] = {"raw": raw}
        else:
            out["model"] = dict(per[0]["model"])
        out["source"] = list(per[0]["source"])
        if "lakes" in per[0]:  # each lake's gradient is on its worker only: summed
            out["lakes"] = torch.stack([p["lakes"] for p in per]).sum(0)
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
        per = self.runtime.call("model_state")
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
        return self.runtime.call("save", d, self.iteration)

    def load(self, directory: str | os.PathLike, iteration: int) -> None:
        """Every worker restores its file of ``directory`` (written by :meth:`save` at
        ``iteration``); the run continues from ``iteration``."""
        d = os.fspath(directory)
        self.runtime.call("load", per_worker=lambda w: (os.path.join(d, f"worker-{w:04d}.pt"),
                                                        int(iteration)))
        self.iteration = int(iteration)
        self._snapshot()

    def close(self) -> None:
        """Forget the run on every worker."""
        self.runtime.close()
