"""Gradient calibration of a parameter model against gauges, on one device.

:class:`Calibrator` routes the runoff with the parameters of a
:class:`~hydroscale.models.ParameterModel`, computes a loss at the gauges over the training
period (after warm-up), backpropagates through the router into the model, and steps a torch
optimiser.  It writes checkpoints (model, optimiser state, iteration, RNG states, history) that
:meth:`Calibrator.load_checkpoint` restores exactly, so a resumed run follows the uninterrupted
trajectory.  A :class:`CalibrationControl` pauses, resumes or stops it between iterations, and
listeners (the dashboard) receive one event per iteration.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..irf import bound_corners
from ..models import ParameterModel
from ..network import RiverNetwork
from ..routing import (
    CalibrationPlan,
    LevelRouter,
    RivTreeCluster,
    RoutingOptions,
    StagedRouter,
    available_bytes,
    get_engine,
    parse_bytes,
    plan_device_calibration,
    recursive_aggregation,
    select_engine,
    tensor_bytes,
)
from ._control import CalibrationControl
from ._loop import CalibrationLoop, checked_periods, latest_checkpoint, read_checkpoint
from ._optim import make_optimizer
from ._options import CalibrationOptions, calibrator_options
from ._summary import parameter_counts
from .losses import gauge_loss, get_loss
from .metrics import kge, nse, volume_error
from .observations import GaugeObservations

__all__ = ["Calibrator", "CHECKPOINT_FORMAT", "latest_checkpoint"]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "hydroscale-calibration/1"

Router = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Calibrator(CalibrationLoop):
    """Calibrate ``model`` so that routed discharge matches ``observations``.

    Parameters
    ----------
    network : the river network (N reaches).
    runoff : lateral inflow ``[N, T]`` or ``[B, N, T]`` (m³/s averaged per routing step), on
        the observations' time axis.
    observations : gauges by reach id, ``[G, T]`` (NaN where missing).
    model : parameter model returning ``[N, P]`` (its IRF is the routing IRF).
    options : the routing (:class:`~hydroscale.routing.RoutingOptions`: substeps, window,
        dtype, allow_unstable, ...).  The window holds for every parameter the optimiser may
        reach: ``"auto"`` is fitted at the corners of the model's bounds (at most the
        period's length), a given window is checked there
        (:class:`~hydroscale.routing.WindowTruncationError` before the first iteration).
    calibration : :class:`~hydroscale.calibration.CalibrationOptions` (loss, warm-up,
        periods, optimiser, learning rate, gauge fraction, checkpoints, seed).
    **keywords : routing or calibration options by name (they amend the two objects).
    engine : ``"auto"`` (the best registered engine for the device, see
        :func:`hydroscale.routing.select_engine`), a registered engine name, or a callable
        ``router(runoff [B, N, T], params [N, P]) -> Q [B, N, T]``.  The ``"levels"`` engine
        (:class:`~hydroscale.routing.LevelRouter`) and the block-sparse ``"torch"``/``"triton"``
        engines (:class:`~hydroscale.routing.StagedRouter`) are built once and reused.
    engine_options : the partition of the block-sparse engines: ``cluster_of`` or
        ``max_reaches`` (routing options given here amend ``options``).
    control : a :class:`CalibrationControl` (a new one when None).
    device : where to route (default: the model's device).
    memory_limit : bytes (or ``"80GB"``) the calibration may use on the device; default
        what it has (:func:`~hydroscale.routing.available_bytes`:
        ``$HYDROSCALE_MEMORY_LIMIT``, a GPU's free memory, the host's available memory).
        An iteration's peak is estimated before the first
        (:func:`~hydroscale.routing.plan_device_calibration`, :attr:`memory_plan`); one
        that cannot fit raises :class:`~hydroscale.routing.RunTooLargeError`.
    """

    def __init__(
        self,
        network: RiverNetwork,
        runoff: Any,
        observations: GaugeObservations,
        model: ParameterModel,
        *,
        options: RoutingOptions | None = None,
        calibration: CalibrationOptions | None = None,
        engine: str | Router = "auto",
        engine_options: dict[str, Any] | None = None,
        control: CalibrationControl | None = None,
        device: Any = None,
        memory_limit: int | str | None = None,
        **keywords: Any,
    ) -> None:
        routing, cal, eng_opts = calibrator_options(model, options, calibration,
                                                    engine_options, keywords)
        self.routing, self.calibration = routing, cal
        self.network = network
        self.model = model
        self.spec = routing.spec
        if model.n_reaches != network.n_reaches:
            raise ValueError(f"the model has {model.n_reaches} reaches, the network "
                             f"{network.n_reaches}")
        self.loss_name = cal.loss
        self.device = torch.device(device) if device is not None else _module_device(model)
        self.dtype = dtype = routing.dtype
        r = torch.as_tensor(runoff)
        if r.ndim == 2:
            r = r.unsqueeze(0)
        if r.ndim != 3 or r.shape[1] != network.n_reaches:
            raise ValueError(f"runoff must be [N={network.n_reaches}, T] or [B, N, T], got "
                             f"{tuple(torch.as_tensor(runoff).shape)}")
        if r.shape[-1] != observations.n_steps:
            raise ValueError(f"runoff has {r.shape[-1]} steps, the observations "
                             f"{observations.n_steps}; put them on one time axis")
        self.runoff = r.to(self.device, dtype)
        self.observations = observations
        self.gauges = observations.index_in(network)
        self._gauges_t = torch.as_tensor(self.gauges, device=self.device)
        self._obs = torch.as_tensor(observations.values, device=self.device, dtype=dtype)
        self.warmup = cal.warmup
        self.train, self.validation = checked_periods(observations, cal)
        counts = observations.valid_counts(slice(self.train.start + self.warmup,
                                                 self.train.stop))
        if np.all(counts < 2):
            raise ValueError("no gauge has two observed steps in the training period after "
                             "warm-up")
        if np.any(counts < 2):
            logger.warning("%d gauge(s) have fewer than two observations in the training "
                           "period and do not count in the loss: reach ids %s",
                           int((counts < 2).sum()), observations.ids[counts < 2][:10].tolist())
        self.usable_gauges = counts >= 2
        self._init_loop(cal, control)
        self.substeps = routing.substeps
        self.allow_unstable = routing.allow_unstable
        self.engine_options = eng_opts
        self.router, self.engine_name = self._make_router(engine)
        #: the memory plan of an iteration (:class:`~hydroscale.routing.CalibrationPlan`)
        self.memory_plan = self._plan_memory(memory_limit)
        self.optimizer = make_optimizer(cal.optimizer, list(self.model.parameters()), cal.lr)
        logger.info("Calibrator: %d reaches, %d gauges, engine %s, loss %s",
                    network.n_reaches, len(self.gauges), self.engine_name, cal.loss)

    # ------------------------------------------------------------------ set-up
    def _make_router(self, engine: str | Router) -> tuple[Router, str]:
        opts = dict(self.engine_options)
        if callable(engine):
            return engine, getattr(engine, "__name__", type(engine).__name__)
        name = select_engine(self.device, None if engine == "auto" else engine).name
        # the window holds for every parameter the optimiser may reach: checked (or fitted)
        # at the corners of the model's bounds, over the whole routed period
        steps = self.observations.n_steps
        if name == "levels":  # built once: its index tensors and window are reused
            _no_options(opts, "levels")
            router = LevelRouter(self.network, options=self.routing, device=self.device)
            router.fit_window(self._corners(), steps,
                              "calibration (levels engine, model bounds)")
            return router, "levels"
        if name in ("torch", "triton"):
            cluster_of = opts.pop("cluster_of", None)
            max_reaches = int(opts.pop("max_reaches", 512))
            _no_options(opts, name)
            if cluster_of is None:
                from ..partition import partition_network

                cluster_of = partition_network(self.network,
                                               max_reaches=max_reaches).cluster_of
            router = StagedRouter(RivTreeCluster(self.network, cluster_of),
                                  options=self.routing.replace(backend=name),
                                  device=self.device)
            router.fit_window(self._corners(), steps, "calibration (model bounds)")
            return router, name
        spec = get_engine(name)
        net, irf, f = self.network, self.spec, self.substeps

        def route(runoff: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
            return spec.fn(net, runoff, irf, params, f, allow_unstable=self.allow_unstable,
                           **opts)

        return route, name

    def _plan_memory(self, memory_limit: int | str | None) -> CalibrationPlan:
        """The iteration's memory plan on the device; refuses one that cannot fit."""
        limit = ((parse_bytes(memory_limit), "memory_limit") if memory_limit is not None
                 else available_bytes(self.device))
        work = (tensor_bytes(self.runoff, self._obs, *self.model.buffers())
                + 4 * tensor_bytes(*self.model.parameters()))  # value, grad, 2 moments
        r, o = self.router, self.routing
        block = isinstance(r, StagedRouter)
        store = o.storage_dtype or o.dtype
        return plan_device_calibration(
            n_reaches=self.network.n_reaches, n_steps=self.observations.n_steps,
            batch=int(self.runoff.shape[0]), substeps=o.substeps,
            window=getattr(r, "window", None),
            kernel_rows=r.kernel_rows() if block else None,
            pairs=r.plan.n_pairs if block else None,
            n_exits=r.clusters.n_exits if block else 0,
            routers=tensor_bytes(r) if isinstance(r, (StagedRouter, LevelRouter)) else 0,
            work=work, itemsize=store.itemsize, aggregate_itemsize=o.aggregate_dtype.itemsize,
            recursive=block and recursive_aggregation(r.options, self.device),
            engine=self.engine_name, limit=limit, what=f"calibration on {self.device}")

    def _corners(self) -> list[torch.Tensor]:
        """The corners of the model's bounds ``[N, P]`` on the device (float64)."""
        return [c.to(self.device) for c in bound_corners(self.model.low, self.model.high,
                                                         self.network.n_reaches)]

    # ------------------------------------------------------------------ one iteration
    def simulate(self) -> torch.Tensor:
        """Discharge at the gauges ``[B, G, T]`` with the current parameters (differentiable)."""
        params = self.model()
        q = self.router(self.runoff, params.to(self.device))
        return q.index_select(1, self._gauges_t)

    def step(self) -> dict[str, Any]:
        """One iteration (forward, loss, backward, optimiser step); returns its record.

        The record holds the loss and the training/validation metrics of the parameters
        routed in this iteration (before the optimiser updates them): ``iteration``,
        ``loss``, ``nse_median``, ``nse_min``, ``kge_median``, ``val_nse_median``,
        ``val_kge_median``, ``seconds`` (and ``device_memory``, peak bytes, on CUDA);
        per-gauge values are in :attr:`gauge_metrics`.
        """
        t0 = time.perf_counter()
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        sim = self.simulate()
        use = torch.as_tensor(self._sample_gauges(), device=self.device)
        tr = self.train
        loss = gauge_loss(self.loss_name, sim[:, use, tr], self._obs[use, tr], self.warmup)
        loss.backward()
        self.optimizer.step()
        self.iteration += 1
        sim = sim.detach()
        self._keep_sims(sim)
        rec = self._sim_record(sim, float(loss.detach()), time.perf_counter() - t0)
        return self._finish_step(rec)

    def _keep_sims(self, sim: torch.Tensor) -> None:
        """The first guess (first iteration of the run) and the watched gauges' latest
        series, batch member 0 (see :class:`CalibrationLoop`)."""
        if self.first_guess is None:
            self.first_guess = sim[0].to(torch.float32).cpu().numpy()
        watched = self.watched()
        if watched:
            rows = sim[0, torch.as_tensor(watched, device=sim.device)].cpu().numpy()
            self._keep_current(dict(zip(watched, rows)))

    def _set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def _parameter_counts(self) -> dict[str, np.ndarray] | None:
        with torch.no_grad():
            return parameter_counts(self.model(), self.model.low, self.model.high, self._edges)

    def _metrics(self, sim: torch.Tensor, period: slice) -> tuple[np.ndarray, ...]:
        """Per-gauge NSE, KGE, relative volume error and loss ``[G]`` over ``period``."""
        a = period.start + self.warmup
        s = sim[..., a : period.stop].to(torch.float64)
        o = self._obs[..., a : period.stop].to(torch.float64)
        g_nse = nse(s, o).mean(0).cpu().numpy()
        g_kge = kge(s, o).mean(0).cpu().numpy()
        g_bias = volume_error(s.cpu().numpy(), o.cpu().numpy()).mean(0)
        g_loss = get_loss(self.loss_name)(s, o.expand_as(s)).mean(0).cpu().numpy()
        return g_nse, g_kge, g_bias, g_loss

    def _sim_record(self, sim: torch.Tensor, loss: float, seconds: float) -> dict[str, Any]:
        metrics = dict(zip(("nse", "kge", "bias"), self._metrics(sim, self.train)))
        if self.validation is not None:
            metrics.update(zip(("val_nse", "val_kge", "val_bias", "val_loss"),
                               self._metrics(sim, self.validation)))
        rec = self._record(loss, seconds, metrics)
        if self.device.type == "cuda":
            rec["device_memory"] = float(torch.cuda.max_memory_allocated(self.device))
        return rec

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs, as tensors, numbers, strings, lists and dicts."""
        return {**self._loop_state(CHECKPOINT_FORMAT), "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict()}

    def load_checkpoint(self, path: str | Path | None = None) -> int:
        """Restore a checkpoint (default: the latest in ``checkpoint_dir``); returns its
        iteration.  Loaded with ``weights_only=True``: no arbitrary object is unpickled."""
        path = Path(path) if path is not None else self._checkpoint_path(None)
        state = read_checkpoint(path)  # read first, without pickle: then checked
        self._check_checkpoint(path, state, CHECKPOINT_FORMAT)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        return self._resume_loop(path, state)


def _module_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _no_options(opts: dict[str, Any], engine: str) -> None:
    if opts:
        raise ValueError(f"engine {engine!r} does not take options {sorted(opts)}")
