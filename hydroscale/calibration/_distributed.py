"""Gradient calibration on the workers of a Dask cluster, with the Calibrator's interface.

:class:`DistributedCalibrator` drives a :class:`~hydroscale.calibration.DistributedGradient`
(forward and backward waves, tree-summed loss and shared gradients, optimisers on the
workers) with the loop of :class:`~hydroscale.calibration.Calibrator`: the same ``run``,
``step``, ``history``, ``gauge_metrics``, listeners, :class:`CalibrationControl` and
checkpoints, so the dashboard page (:func:`~hydroscale.calibration.dashboard.attach_dashboard`)
shows and steers it the same way.  It also emits ``progress`` events (forward/backward wave
``k`` of ``n``) and puts the peak device memory of every worker in each iteration's record.

Checkpoint ``calibration-<iteration>.pt`` holds the iteration, RNG states and history (written
by the client); the folder ``calibration-<iteration>.workers`` beside it holds one file per
worker with its parameters and optimiser state, written by the worker itself.  All files are
``torch.save`` dicts of tensors, numbers and strings (``weights_only=True`` loads them).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._closing import Closing
from ..network import RiverNetwork
from ..routing import RoutingOptions
from ._control import CalibrationControl
from ._gradient import DistributedGradient
from ._loop import CalibrationLoop, read_checkpoint
from ._options import CalibrationOptions, calibrator_options
from .observations import GaugeObservations

__all__ = ["DISTRIBUTED_CHECKPOINT_FORMAT", "DistributedCalibrator"]

logger = logging.getLogger(__name__)

DISTRIBUTED_CHECKPOINT_FORMAT = "hydroscale-distributed-calibration/1"


class DistributedCalibrator(CalibrationLoop, Closing):
    """Calibrate ``model`` against ``observations`` on the workers of ``client``.

    Parameters
    ----------
    client : ``distributed.Client`` (see :func:`hydroscale.distributed.start_cluster`).
    network : the river network (N reaches).
    runoff : lateral inflow ``[N, T]``/``[B, N, T]`` (m³/s per routing step, on the
        observations' steps), or a runoff source (a forcing source of :mod:`hydroscale.io`
        is read on the workers; a differentiable source trains with the routing, see
        :mod:`hydroscale.calibration._sources`).
    observations, model, options, calibration, control, **keywords : as
        :class:`~hydroscale.calibration.Calibrator` (the optimiser may be a picklable
        callable run on every worker).
    partition : a :class:`~hydroscale.partition.Partition` placed on the cluster's workers;
        default ``partition_network(network, max_reaches=max_reaches, n_workers=W)``.
    engine_options : more options of :class:`DistributedGradient` (``plan``,
        ``placement``, ``batch_reaches``, ``kernel_graph``, ``rematerialise`` (both
        ``"auto"``: the calibration plan's choice, :attr:`memory_plan`), ``memory_limit``,
        ``worker_timeout``, ...; routing options given here amend ``options``).
    snapshot_dir : per-iteration snapshots for worker-loss recovery (default
        ``<checkpoint_dir>/snapshots``, or a temporary folder without ``checkpoint_dir``;
        every worker must see it).
    """

    engine_name = "distributed"

    def __init__(
        self,
        client: Any,
        network: RiverNetwork,
        runoff: Any,
        observations: GaugeObservations,
        model: Any,
        *,
        partition: Any = None,
        max_reaches: int = 512,
        options: RoutingOptions | None = None,
        calibration: CalibrationOptions | None = None,
        control: CalibrationControl | None = None,
        engine_options: dict[str, Any] | None = None,
        snapshot_dir: str | Path | None = None,
        **keywords: Any,
    ) -> None:
        from ..distributed import worker_addresses

        routing, cal, eng_opts = calibrator_options(model, options, calibration,
                                                    engine_options, keywords)
        self.routing, self.calibration = routing, cal
        self.network, self.model = network, model
        self.spec = routing.spec
        self.observations = observations
        self._init_loop(cal, control)
        if partition is None:
            from ..partition import partition_network

            partition = partition_network(network, max_reaches=int(max_reaches),
                                          n_workers=len(worker_addresses(client)))
        self.partition = partition
        if snapshot_dir is None and self.checkpoint_dir is not None:
            snapshot_dir = self.checkpoint_dir / "snapshots"
        self.engine = DistributedGradient(
            client, network, partition, model, observations, runoff, options=routing,
            calibration=cal, snapshot_dir=snapshot_dir, **eng_opts)
        self.engine.progress = self._progress
        self.usable_gauges = self.engine.usable()
        self.loss_name, self.warmup = cal.loss, cal.warmup
        self.train, self.validation = self.engine.train, self.engine.validation
        self.client = client
        logger.info("DistributedCalibrator: %d reaches, %d gauges, %d workers, loss %s",
                    network.n_reaches, len(observations), self.engine.n_workers, cal.loss)

    @property
    def memory_plan(self) -> Any:
        """The calibration plan (:class:`~hydroscale.routing.CalibrationPlan`) of the run:
        the strategy chosen for keeping graphs and every worker's estimated peak."""
        return self.engine.memory_plan

    # ------------------------------------------------------------------ one iteration
    def _progress(self, phase: str, wave: int, waves: int) -> None:
        done = getattr(self.engine.runtime, "groups_done", None) or {}
        self._emit({"kind": "progress", "phase": phase, "wave": wave, "waves": waves,
                    "iteration": self.iteration + 1,
                    "workers": [{"worker": a, **{ph: [int(x) for x in d[w]]
                                                 for ph, d in done.items()}}
                                for w, a in enumerate(self.engine.addrs)] if done else []})

    def _set_lr(self, lr: float) -> None:
        self.engine.set_lr(lr)

    def _parameter_counts(self) -> dict[str, np.ndarray] | None:
        return getattr(self, "_counts", None)

    def step(self) -> dict[str, Any]:
        """One iteration on the workers (forward waves, backward waves, tree reduction,
        optimiser steps); returns its record (as :meth:`Calibrator.step`, plus
        ``worker_memory``: peak device bytes per worker, 0 on CPU, beside the memory plan's
        estimate, and ``recoveries``)."""
        use = self._sample_gauges()
        first = self.first_guess is None  # the first iteration returns every gauge's series
        watched = self.watched()
        res = self.engine.iterate(use, training=True, step=True, keep_sims=first,
                                  watch=watched)
        self.iteration = self.engine.iteration
        if first:
            sims = res.pop("sims")
            self.first_guess = np.asarray(sims[0], np.float32)
            res["watched"] = {k: sims[:, k] for k in watched}
        self._keep_current({k: s[0] for k, s in res["watched"].items()})
        self._counts = res.get("param_counts")
        metrics = {k: res[k] for k in ("nse", "kge", "bias", "val_nse", "val_kge", "val_bias",
                                       "val_loss") if k in res}
        rec = self._record(res["loss"], res["seconds"], metrics)
        planned = res.get("planned_peak_bytes") or [None] * len(res["peak_bytes"])
        rec["worker_memory"] = [{"worker": a, "peak_bytes": int(b), "planned_bytes": p}
                                for a, b, p in zip(self.engine.addrs, res["peak_bytes"],
                                                   planned)]
        rec["worker_timers"] = [{"worker": a, **{k: float(v) for k, v in t.items()}}
                                for a, t in zip(self.engine.addrs, res["timers"])]
        rec["device_memory"] = float(max(res["peak_bytes"], default=0))
        rec["recoveries"] = res["recoveries"]
        return self._finish_step(rec)

    def simulate(self) -> torch.Tensor:
        """Discharge at the gauges ``[B, G, T]`` (float64, m³/s) with the current parameters
        (a forward pass on the workers; not differentiable)."""
        res = self.engine.iterate(training=False, step=False, keep_sims=True)
        return torch.as_tensor(res["sims"])

    def update_model(self) -> Any:
        """Copy the workers' parameters into :attr:`model` and return it."""
        return self.engine.update_model(self.model)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The client's part of a checkpoint (the workers write theirs, see
        :meth:`save_checkpoint`)."""
        return {**self._loop_state(DISTRIBUTED_CHECKPOINT_FORMAT),
                "n_workers": self.engine.n_workers,
                "groups": torch.as_tensor(self.engine.plan.group_of)}

    def _save_beside(self, path: Path) -> None:
        """Every worker writes its parameters and optimiser state into ``<path
        stem>.workers/`` (every worker must see the checkpoint folder)."""
        self.engine.save(path.with_suffix(".workers"))

    def load_checkpoint(self, path: str | Path | None = None) -> int:
        """Restore a checkpoint (default: the latest in ``checkpoint_dir``) written with the
        same partition on as many workers; returns its iteration."""
        path = Path(path) if path is not None else self._checkpoint_path(None)
        state = read_checkpoint(path)  # read first, without pickle: then checked
        self._check_checkpoint(path, state, DISTRIBUTED_CHECKPOINT_FORMAT)
        if state["n_workers"] != self.engine.n_workers or not np.array_equal(
                state["groups"].numpy(), self.engine.plan.group_of):
            raise ValueError(f"{path} was written on {state['n_workers']} workers with another "
                             f"wave plan; resume with the same partition on "
                             f"{state['n_workers']} workers")
        self.engine.load(path.with_suffix(".workers"), int(state["iteration"]))
        return self._resume_loop(path, state)

    def close(self) -> None:
        """Free the workers."""
        self.engine.close()
