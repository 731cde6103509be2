"""Hybrid training pipelines on one device (DiffHydro-style), built from reusable stages.

Three pipelines share one :class:`HybridPipeline` class and differ in what is learned:

- :func:`routing_calibration` — known lateral inflow, free per-reach routing parameters;
- :func:`learned_routing` — known lateral inflow, routing parameters from reach attributes
  through an MLP (trained on some basins' gauges, validated on unseen basins);
- :func:`runoff_routing` — forcings -> :class:`~hydroscale.models.runoff.RunoffModel` (LSTM)
  -> :class:`~hydroscale.models.interpolation.CatchmentInterpolator` -> routing -> gauges.

Training draws sliding windows (:class:`Windows`): each window starts ``warmup`` steps before
its loss period, from a zero routing state and a fresh LSTM state, so the warm-up absorbs the
initial conditions; the loss is the variance-normalised MSE at the gauges by default
(``"vnmse"`` of :mod:`hydroscale.calibration.losses`; ``"nse"`` and ``"kge"`` also); metrics
are NSE and KGE per gauge (:mod:`hydroscale.calibration.metrics`).

The squared errors of ``"vnmse"`` and ``"nse"`` are divided by each gauge's observed variance
over a fixed period (``normalise="gauge"``, the default; the training period in practice):
the NSE* of Kratzert et al. (2019).  Dividing by the variance of each training window instead
(``normalise="window"``) lets dry windows of small, flashy basins carry weights hundreds of
times larger than wet ones whenever windows are shorter than the seasonal cycle, which makes
the gradient noisy exactly at those gauges.

Routing goes through :class:`RoutingStage`, which routes the whole network with one
:class:`~hydroscale.routing.StagedRouter` (``staged=False``) or cluster by cluster in wave
order through :meth:`~hydroscale.routing.StagedRouter.forward_chunk`, with per-worker
routers that hold only their clusters and per-cluster interpolator subsets
(``staged=True``): the steps the distributed runtime runs, so that both give the same loss.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..irf import bound_corners
from ..models import CatchmentInterpolator, RunoffModel
from ..network import RiverNetwork
from ..routing import RivTreeCluster, Routed, RoutingOptions, StagedRouter
from ._options import CalibrationOptions
from .losses import gauge_loss, get_loss
from .metrics import kge, nse
from .observations import GaugeObservations

__all__ = [
    "HybridPipeline",
    "RoutingStage",
    "SyntheticTwin",
    "Windows",
    "learned_routing",
    "routing_calibration",
    "runoff_routing",
    "synthetic_twin",
    "twin_tau",
    "split_by_basin",
]

logger = logging.getLogger(__name__)

_VNMSE_EPS = 0.1  # m³/s, the default eps of calibration.losses.vnmse


# ---------------------------------------------------------------------- gauges, windows
def _slice(period: Any) -> Any:
    return slice(*period) if isinstance(period, tuple) else period


def split_by_basin(
    network: RiverNetwork, observations: GaugeObservations, fraction: float = 0.3,
    seed: int = 0,
) -> tuple[GaugeObservations, GaugeObservations]:
    """(training, held-out) gauges, holding out all gauges of about ``fraction`` of the gauged
    basins, so that the held-out basins are unseen in training (learned routing)."""
    basins = np.asarray(network.basin)[observations.index_in(network)]
    ub = np.unique(basins)
    if ub.size < 2:
        raise ValueError("split_by_basin needs gauges in at least two basins; all gauges are "
                         f"in the basin of outlet id {network.ids[ub[0]]}")
    rng = np.random.default_rng(seed)
    n_out = min(max(1, round(fraction * ub.size)), ub.size - 1)
    held = np.isin(basins, rng.choice(ub, size=n_out, replace=False))
    return observations.subset(observations.ids[~held]), observations.subset(
        observations.ids[held])


def _steps(obs: GaugeObservations, period: Any) -> tuple[int, int]:
    """A :class:`Period`, slice or ``(start, stop)`` as step indices."""
    if isinstance(period, tuple):
        period = slice(*period)
    s = obs.period(period)
    return int(s.start), int(s.stop)


@dataclass(frozen=True)
class Windows:
    """Sliding training windows: ``warmup`` steps (not in the loss) then ``length`` steps.

    Attributes
    ----------
    length : steps of each window that enter the loss.
    warmup : steps simulated before them (routing memory, LSTM spin-up).
    stride : steps between consecutive window starts.
    """

    length: int
    warmup: int = 0
    stride: int = 1

    def __post_init__(self) -> None:
        if self.length < 1 or self.warmup < 0 or self.stride < 1:
            raise ValueError(f"need length >= 1, warmup >= 0 and stride >= 1, got "
                             f"{self.length}, {self.warmup}, {self.stride}")

    @property
    def total(self) -> int:
        return self.length + self.warmup

    def starts(self, period: tuple[int, int]) -> np.ndarray:
        """Starts ``s`` of all windows whose loss steps ``[s + warmup, s + total)`` lie in
        ``period`` (the warm-up may reach before it, not before step 0)."""
        a, b = period
        first = max(a - self.warmup, 0)
        last = b - self.total
        if last < first:
            raise ValueError(f"period {period} is shorter than one window ({self.length} "
                             f"steps after {self.warmup} of warm-up)")
        return np.arange(first, last + 1, self.stride, dtype=np.int64)


# ---------------------------------------------------------------------- routing stage
class RoutingStage(Routed):
    """Lateral inflow (or runoff depth, with an interpolator) -> discharge ``[B, N, T]``.

    Parameters
    ----------
    network : the river network (N reaches).
    options : the routing (:class:`~hydroscale.routing.RoutingOptions`; ``**routing``
        keywords build or amend it: ``irf``, ``substeps``, ``window``, ``dtype``,
        ``backend``, ``allow_unstable``, ...).  ``window`` is K in routing steps or
        ``"auto"``: fitted once, the same for all routers, for every parameter a calibration
        may reach (:meth:`fit_window`, which a :class:`HybridPipeline` calls with the corners
        of its parameter model's bounds; else at the first call, from the parameters given).
        A window that cuts off more than ``window_tolerance`` of an in-cluster path of a
        routed series raises :class:`~hydroscale.routing.WindowTruncationError`.  The
        attribute ``window`` is None until it is fitted.
    cluster_of : ``[N]`` cluster id per reach (topological ids, e.g. from
        :func:`hydroscale.partition.partition_network`) or a
        :class:`~hydroscale.routing.RivTreeCluster`; default one cluster.
    staged : route cluster by cluster (``True``, the distributed runtime's steps) or the whole
        network at once (``False``).
    worker_of : ``[C]`` worker of each cluster for ``staged`` (default all on worker 0): one
        router per worker holding only its clusters, as on the Dask workers.
    interpolator : optional: inputs are runoff depths on its source cells (mm per step),
        interpolated per cluster when ``staged``.
    device : where the routers live.
    """

    def __init__(
        self,
        network: RiverNetwork,
        options: RoutingOptions | None = None,
        *,
        cluster_of: Any = None,
        staged: bool = False,
        worker_of: Any = None,
        interpolator: CatchmentInterpolator | None = None,
        device: Any = None,
        **routing: Any,
    ) -> None:
        self._set_options(options, routing, device)
        if isinstance(cluster_of, RivTreeCluster):
            cs = cluster_of
        elif cluster_of is None:
            cs = RivTreeCluster.single(network)
        else:
            cs = RivTreeCluster(network, cluster_of)
        if interpolator is not None and interpolator.n_reaches != network.n_reaches:
            raise ValueError(f"the interpolator maps to {interpolator.n_reaches} reaches, the "
                             f"network has {network.n_reaches}")
        self.network, self.clusters, self.staged = network, cs, bool(staged)
        self.interpolator = interpolator
        opts = {"options": self.options, "device": self.device}
        if not self.staged:
            self.routers = {0: StagedRouter(cs, **opts)}
            self.worker_of = np.zeros(cs.n_clusters, dtype=np.int64)
            return
        wo = (np.zeros(cs.n_clusters, dtype=np.int64) if worker_of is None
              else np.asarray(worker_of, dtype=np.int64))
        if wo.shape != (cs.n_clusters,):
            raise ValueError(f"worker_of must be [C={cs.n_clusters}], got {wo.shape}")
        self.worker_of = wo
        self.routers = {int(w): StagedRouter(cs, only=np.flatnonzero(wo == w), **opts)
                        for w in np.unique(wo)}
        self._reaches = [torch.as_tensor(cs.cluster_reaches(c), device=self.device)
                         for c in range(cs.n_clusters)]
        self._interp = (None if interpolator is None else interpolator.split(
            [cs.cluster_reaches(c) for c in range(cs.n_clusters)]))
        # clusters in (wave, engine) order: upstream buffers are ready before they are needed
        self._schedule = [int(c) for w in range(cs.n_waves) for c in cs.clusters_in_wave(w)]

    def fit_window(self, param_sets: Any, run_steps: int | None = None) -> int:
        """Fix one window for all routers that holds for every parameter set in
        ``param_sets`` (e.g. :func:`hydroscale.irf.bound_corners` of the parameter model's
        bounds) over series of up to ``run_steps`` steps; check it there
        (:class:`~hydroscale.routing.WindowTruncationError`).  Returns the window."""
        sets = [torch.as_tensor(p).detach().to(self.device) for p in param_sets]
        if self.window is None:
            k = max(r.auto_window(p, max_steps=run_steps) for r in self.routers.values()
                    for p in sets)
            self.window = max(1, min(k, int(run_steps)) if run_steps else k)
            for r in self.routers.values():
                r.window = self.window
            self.options = self.options.replace(window=self.window)
        for r in self.routers.values():
            r.fit_window(sets, run_steps, "the routing stage (parameter bounds)")
        return int(self.window)

    def __call__(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Discharge ``[B, N, T]`` (m³/s) from lateral inflow ``[B, N, T]`` (m³/s) or, with an
        interpolator, runoff depth ``[B, C, T]`` (mm per step); ``params [N, P]``."""
        if self.window is None:
            self.fit_window([params], int(x.shape[-1]))
        if not self.staged:
            lat = x if self.interpolator is None else self.interpolator(x)
            return self.routers[0](lat, params)
        kern = {w: r.aggregate(params) for w, r in self.routers.items()}
        b, t = x.shape[0], x.shape[-1]
        n = self.network.n_reaches
        outflow: dict[int, torch.Tensor] = {}
        parts, where = [], []
        for c in self._schedule:
            w = int(self.worker_of[c])
            router = self.routers[w]
            if self._interp is None:
                r = x.index_select(1, self._reaches[c])
            else:
                sub = self._interp[c]
                r = sub(sub.select_cells(x))
            inflow = router.inflow_for(c, outflow)
            q, out, _ = router.forward_chunk(c, r, inflow, None, kern[w])
            outflow[c] = out
            parts.append(q)
            where.append(self._reaches[c])
        q_all = torch.cat(parts, dim=1)
        idx = torch.cat(where)
        return q_all.new_zeros(b, n, t).index_copy(1, idx, q_all)

    @property
    def truncated_mass(self) -> np.ndarray:
        """Per-cluster truncated kernel mass of the last aggregation (max over routers)."""
        tm = [r.truncated_mass for r in self.routers.values() if r.truncated_mass is not None]
        return np.fmax.reduce(tm) if tm else np.array([])


# ---------------------------------------------------------------------- pipeline
@dataclass
class History:
    """Training record per iteration: training loss, validation loss (NaN between checks),
    and the wall time of the whole fit (s)."""

    loss: list[float] = field(default_factory=list)
    validation: list[float] = field(default_factory=list)
    seconds: float = 0.0


class HybridPipeline(nn.Module):
    """Inputs -> (runoff model) -> (interpolation) -> routing -> discharge at gauges -> loss.

    Build it with :func:`routing_calibration`, :func:`learned_routing` or
    :func:`runoff_routing`.

    Parameters
    ----------
    routing : the :class:`RoutingStage` (with an interpolator for a runoff model).
    param_model : a :class:`~hydroscale.models.ParameterModel`; ``param_model()`` gives the
        routing parameters ``[N, P]`` (routing-step units).
    observations : training gauges (:class:`~hydroscale.calibration.GaugeObservations`, by
        reach id, on the time axis of the inputs).
    windows : the training windows.
    lateral : ``[N, T]`` known lateral inflow (m³/s), or None with a runoff model.
    runoff_model, forcings ``[C, T, F]``, static ``[C, S]`` : the runoff part.
    loss : a loss of :mod:`hydroscale.calibration.losses` (``"vnmse"``, ``"nse"``, ``"kge"``).
    normalise : ``"gauge"``: ``"vnmse"``/``"nse"`` divide the squared error of each gauge by its
        observed variance over ``scale_period`` (fixed weights, see the module docstring);
        ``"window"``: by the variance of each window (the loss of
        :func:`~hydroscale.calibration.losses.gauge_loss`).  Default ``"gauge"``, and
        ``"window"`` for ``"kge"`` (a per-window statistic).
    scale_period : the period (:class:`Period`, slice or ``(start, stop)``) of the gauge
        variances for ``normalise="gauge"``; default every step of ``observations``.  Pass
        the training period so that no validation data enters the loss.
    """

    def __init__(
        self,
        routing: RoutingStage,
        param_model: nn.Module,
        observations: GaugeObservations,
        *,
        windows: Windows,
        lateral: Any = None,
        runoff_model: RunoffModel | None = None,
        forcings: Any = None,
        static: Any = None,
        loss: str = "vnmse",
        normalise: str | None = None,
        scale_period: Any = None,
    ) -> None:
        super().__init__()
        if (lateral is None) == (runoff_model is None):
            raise ValueError("give either lateral inflow [N, T] or a runoff model with forcings")
        get_loss(loss)
        normalise = normalise or ("window" if loss == "kge" else "gauge")
        if normalise not in ("gauge", "window") or (loss == "kge" and normalise == "gauge"):
            raise ValueError(f"normalise must be 'gauge' or 'window' ('window' only for loss "
                             f"'kge'), got {normalise!r} with loss {loss!r}")
        self.routing, self.param_model, self.runoff_model = routing, param_model, runoff_model
        self.observations, self.windows, self.loss_name = observations, windows, loss
        self.normalise = normalise
        self.scale_period = _steps(observations, (None, None) if scale_period is None
                                   else scale_period)
        dev, dt = routing.device, routing.dtype
        self.dtype = dt
        n = routing.network.n_reaches
        t = lambda a: None if a is None else torch.as_tensor(a, device=dev, dtype=dt)  # noqa: E731
        self.lateral, self.forcings, self.static = t(lateral), t(forcings), t(static)
        if self.lateral is not None and (self.lateral.ndim != 2 or self.lateral.shape[0] != n):
            raise ValueError(f"lateral must be [N={n}, T], got {tuple(self.lateral.shape)}")
        if runoff_model is not None:
            if routing.interpolator is None:
                raise ValueError("a runoff model needs a RoutingStage with an interpolator")
            want = routing.interpolator.n_cells
            if self.forcings is None or self.forcings.ndim != 3 or self.forcings.shape[0] != want:
                got = None if self.forcings is None else tuple(self.forcings.shape)
                raise ValueError(f"forcings must be [C={want}, T, F], got {got}")
        self.n_steps = int((self.lateral if self.lateral is not None else self.forcings).shape[1])
        if observations.n_steps != self.n_steps:
            raise ValueError(f"the observations have {observations.n_steps} steps, the inputs "
                             f"{self.n_steps}")
        low, high = getattr(param_model, "low", None), getattr(param_model, "high", None)
        if low is not None and high is not None:  # exact for every parameter within bounds
            routing.fit_window(bound_corners(low, high, n), self.n_steps)

    # ------------------------------------------------------------------ simulation
    def params(self) -> torch.Tensor:
        """Routing parameters ``[N, P]`` (routing-step units)."""
        return self.param_model()

    def simulate(self, starts: Sequence[int], length: int) -> torch.Tensor:
        """Discharge ``[B, N, length]`` (m³/s) of windows starting at ``starts`` (zero initial
        routing state and fresh runoff-model state in every window)."""
        idx = torch.as_tensor(np.asarray(starts)[:, None] + np.arange(length),
                              device=self.routing.device)
        if self.lateral is not None:
            x = self.lateral[:, idx].permute(1, 0, 2)  # [B, N, L]
        else:
            f = self.forcings[:, idx].permute(1, 0, 2, 3)  # [B, C, L, F]
            x = self.runoff_model(f, self.static).to(self.dtype)
        return self.routing(x, self.params())

    def _gauge_rows(self, obs: GaugeObservations) -> torch.Tensor:
        return torch.as_tensor(obs.index_in(self.routing.network), device=self.routing.device)

    def gauge_scale(self, observations: GaugeObservations | None = None) -> np.ndarray:
        """``[G]`` the divisor of each gauge's mean squared error for ``normalise="gauge"``:
        ``(σ_g + ε)²`` for ``"vnmse"`` (ε = 0.1 m³/s as in
        :func:`~hydroscale.calibration.losses.vnmse`) and ``σ_g²`` for ``"nse"``, with σ_g the
        standard deviation of the gauge's observations over :attr:`scale_period` (NaN where
        fewer than two are valid)."""
        g = observations or self.observations
        a, b = self.scale_period
        v = g.values[:, a:b]
        n = np.isfinite(v).sum(-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.nansum(v, -1) / n
            sd = np.sqrt(np.nansum((v - mean[:, None]) ** 2, -1) / n)
        sd = np.where(n >= 2, sd, np.nan)
        return (sd + _VNMSE_EPS) ** 2 if self.loss_name == "vnmse" else sd ** 2

    def loss(self, sim: torch.Tensor, obs: Any, warmup: int,
             observations: GaugeObservations | None = None) -> torch.Tensor:
        """The training loss of ``sim`` against ``obs`` ``[..., G, T]`` at the gauges of
        ``observations`` (default the training gauges), first ``warmup`` steps left out; the
        mean over gauges (and leading axes) of the per-gauge losses.  NaN observations are
        ignored; gauges without a valid step or scale are left out of the mean."""
        if self.normalise == "window":
            return gauge_loss(self.loss_name, sim, obs, warmup)
        s = sim[..., warmup:]
        o = torch.as_tensor(obs, dtype=s.dtype, device=s.device)[..., warmup:]
        valid = ~torch.isnan(o)
        n = valid.sum(-1)
        err = torch.where(valid, s - torch.nan_to_num(o), 0.0).square().sum(-1) / n
        scale = torch.as_tensor(self.gauge_scale(observations), dtype=s.dtype, device=s.device)
        per = err / scale
        ok = torch.isfinite(per.detach()) & (n > 0)
        if not bool(ok.any()):
            raise ValueError(f"loss {self.loss_name!r} is undefined at every gauge (no valid "
                             f"observation after {warmup} warm-up steps, or no observed "
                             f"variance in the scale period {self.scale_period})")
        return torch.where(ok, per, 0.0).sum() / ok.sum()

    def window_loss(self, starts: Sequence[int],
                    observations: GaugeObservations | None = None) -> torch.Tensor:
        """The loss at the gauges over the windows starting at ``starts`` (warm-up excluded)."""
        g = observations or self.observations
        w = self.windows
        q = self.simulate(starts, w.total).index_select(1, self._gauge_rows(g))
        idx = np.asarray(starts)[:, None] + np.arange(w.total)
        obs = torch.as_tensor(g.values[:, idx], device=q.device).permute(1, 0, 2)
        return self.loss(q, obs, w.warmup, g)

    @torch.no_grad()
    def evaluate(self, period: Any, observations: GaugeObservations | None = None,
                 ) -> dict[str, Any]:
        """Loss, NSE ``[G]``, KGE ``[G]`` and the simulation ``[G, T_p]`` over ``period``
        (a :class:`Period`, slice or ``(start, stop)``), simulated as one window from
        ``warmup`` steps before it, at ``observations`` (default the training gauges)."""
        g = observations or self.observations
        a, b = _steps(g, period)
        s = max(a - self.windows.warmup, 0)
        q = self.simulate([s], b - s)[0].index_select(0, self._gauge_rows(g)).double().cpu()
        o = torch.as_tensor(g.values[:, s:b])
        loss = float(self.loss(q, o, a - s, g))
        q, o = q[:, a - s :], o[:, a - s :]
        return {"loss": loss, "nse": nse(q, o).numpy(), "kge": kge(q, o).numpy(),
                "sim": q.numpy()}

    # ------------------------------------------------------------------ distributed
    def distributed(
        self,
        client: Any,
        *,
        train: Any,
        validation: Any = None,
        partition: Any = None,
        max_reaches: int = 512,
        optimizer: Any = "adam",
        lr: float = 1e-2,
        checkpoint_dir: Any = None,
        checkpoint_every: int = 0,
        seed: int = 0,
        control: Any = None,
        engine_options: dict[str, Any] | None = None,
    ) -> Any:
        """This pipeline on the workers of a Dask ``client``: a
        :class:`~hydroscale.calibration.DistributedCalibrator` (``run``, ``step``,
        ``history``, checkpoints, the dashboard page) over the same network, routing
        options, parameter model, runoff model or lateral inflow, gauges and loss.

        Each iteration routes the whole ``train`` period (a :class:`Period`, slice or
        ``(start, stop)``) as one window from a zero state, its first ``windows.warmup``
        steps out of the loss; a runoff model is replicated on the workers and its gradients
        summed across them (see :class:`~hydroscale.calibration.RunoffModelSource`).
        ``partition`` (placed on the cluster's workers; default ``partition_network(network,
        max_reaches=max_reaches, n_workers=W)``), ``optimizer``, ``lr``, ``checkpoint_dir``,
        ``checkpoint_every``, ``seed``, ``control`` and ``engine_options`` are those of
        :class:`~hydroscale.calibration.DistributedCalibrator`.  Read the trained weights
        back with its ``update_model()`` (routing parameters) and
        :func:`hydroscale.calibration.pull_runoff_model` (runoff model).

        The windows are exact on both sides (fitted or checked for every parameter within
        the model's bounds), so the loss, the gradients and the steps agree with this
        pipeline's to rounding, whatever the grouping."""
        from ._distributed import DistributedCalibrator
        from ._sources import RunoffModelSource, TensorSource

        stage = self.routing
        if self.runoff_model is not None:
            source: Any = RunoffModelSource(self.runoff_model, stage.interpolator,
                                            self.forcings, self.static)
        else:
            source = TensorSource(self.lateral)
        obs = self.observations
        tr = obs.period(_slice(train))
        validation = None if validation is None else obs.period(_slice(validation))
        warmup = self.windows.warmup
        if self.normalise == "gauge" and self.scale_period != (tr.start + warmup, tr.stop):
            logger.info("distributed: the loss of each gauge is divided by its variance over "
                        "the training period after warm-up %s, not over scale_period %s",
                        (tr.start + warmup, tr.stop), self.scale_period)
        cal = CalibrationOptions(loss=self.loss_name, warmup=warmup, train=tr,
                                 validation=validation, optimizer=optimizer, lr=lr,
                                 checkpoint_dir=checkpoint_dir,
                                 checkpoint_every=checkpoint_every, seed=seed)
        return DistributedCalibrator(
            client, stage.network, source, obs, self.param_model, partition=partition,
            max_reaches=max_reaches, options=stage.options, calibration=cal, control=control,
            engine_options=engine_options)

    # ------------------------------------------------------------------ training
    def fit(
        self,
        n_iter: int,
        *,
        train_period: Any,
        batch: int = 4,
        lr: float = 1e-2,
        optimizer: torch.optim.Optimizer | None = None,
        validate: tuple[Any, GaugeObservations | None] | None = None,
        every: int = 10,
        seed: int = 0,
    ) -> History:
        """Adam (or ``optimizer``) on ``batch`` random windows per iteration drawn from
        ``train_period``; validation loss every ``every`` iterations (and at the end) on
        ``validate = (period, observations or None for the training gauges)``."""
        starts = self.windows.starts(_steps(self.observations, train_period))
        params = [p for p in self.parameters() if p.requires_grad]
        opt = optimizer or torch.optim.Adam(params, lr=lr)
        rng = np.random.default_rng(seed)
        hist = History()
        t0 = time.perf_counter()
        for it in range(n_iter):
            pick = rng.choice(starts, size=min(batch, starts.size), replace=False)
            opt.zero_grad()
            loss = self.window_loss(pick)
            loss.backward()
            opt.step()
            hist.loss.append(float(loss.detach()))
            v = float("nan")
            if validate is not None and ((it + 1) % every == 0 or it == n_iter - 1):
                v = self.evaluate(validate[0], validate[1])["loss"]
                logger.info("iteration %d: loss %.4g, validation %.4g", it, hist.loss[-1], v)
            hist.validation.append(v)
        hist.seconds = time.perf_counter() - t0
        return hist


# ---------------------------------------------------------------------- the three pipelines
def routing_calibration(
    routing: RoutingStage, param_model: nn.Module, lateral: Any,
    observations: GaugeObservations, *, windows: Windows, loss: str = "vnmse",
    normalise: str | None = None, scale_period: Any = None,
) -> HybridPipeline:
    """Routing-only calibration: known lateral inflow ``[N, T]`` (m³/s), free per-reach
    parameters (:class:`~hydroscale.models.FreeParameters`)."""
    return HybridPipeline(routing, param_model, observations, windows=windows, lateral=lateral,
                          loss=loss, normalise=normalise, scale_period=scale_period)


def learned_routing(
    routing: RoutingStage, param_model: nn.Module, lateral: Any,
    observations: GaugeObservations, *, windows: Windows, loss: str = "vnmse",
    normalise: str | None = None, scale_period: Any = None,
) -> HybridPipeline:
    """Learned routing: known lateral inflow, parameters from reach attributes through an MLP
    (:class:`~hydroscale.models.AttributeMLP`), trained on some basins' gauges so that it
    transfers to basins without them (validate with :func:`split_by_basin`)."""
    return HybridPipeline(routing, param_model, observations, windows=windows, lateral=lateral,
                          loss=loss, normalise=normalise, scale_period=scale_period)


def runoff_routing(
    routing: RoutingStage, param_model: nn.Module, runoff_model: RunoffModel, forcings: Any,
    observations: GaugeObservations, *, windows: Windows, static: Any = None,
    loss: str = "vnmse", normalise: str | None = None, scale_period: Any = None,
) -> HybridPipeline:
    """Runoff + routing: forcings ``[C, T, F]`` -> ``runoff_model`` (mm per step) ->
    ``routing.interpolator`` (m³/s) -> routing with ``param_model`` -> gauges."""
    return HybridPipeline(routing, param_model, observations, windows=windows,
                          runoff_model=runoff_model, forcings=forcings, static=static, loss=loss,
                          normalise=normalise, scale_period=scale_period)


# ---------------------------------------------------------------------- synthetic twin
@dataclass
class SyntheticTwin:
    """A synthetic problem with a known, LSTM-free truth (see :func:`synthetic_twin`).

    Attributes
    ----------
    network : N reaches (``continental_forest``) with attributes ``length`` (m) and ``slope``
        (an index in [0, 1]).
    interpolator : cells -> reaches (daily steps).
    forcings : ``[C, T, 2]`` precipitation and PET (mm/day).
    static : ``[C, 2]`` cell attributes (bucket capacity in mm, recession per day).
    depth : ``[C, T]`` truth runoff depth (mm/day, :class:`~.runoff.BucketModel`).
    lateral : ``[N, T]`` truth lateral inflow (m³/s).
    attributes : ``[N, 2]`` reach attributes (length in km, slope index in [0, 1]).
    irf, params : the truth routing (``[N, P]``, routing-step units).
    discharge : ``[N, T]`` truth discharge (m³/s, float64 oracle).
    observations : truth discharge at the gauges (most-drained reaches of each basin).
    """

    network: RiverNetwork
    interpolator: CatchmentInterpolator
    forcings: np.ndarray
    static: np.ndarray
    depth: np.ndarray
    lateral: np.ndarray
    attributes: np.ndarray
    irf: str
    params: np.ndarray
    discharge: np.ndarray
    observations: GaugeObservations


def twin_tau(attributes: Any) -> Any:
    """Truth linear-storage time constant (days) of :func:`synthetic_twin` from reach
    attributes ``[N, 2]`` (length km, slope index): slow on long, flat reaches."""
    a = attributes
    return 0.2 + 0.3 * a[..., 0] * (1.6 - a[..., 1])


def synthetic_twin(
    n_reaches: int = 120,
    n_steps: int = 730,
    *,
    grid: tuple[int, int] = (6, 6),
    n_gauges: int = 12,
    basin_cap: int = 30,
    seed: int = 0,
) -> SyntheticTwin:
    """Build a seeded synthetic twin: forcings on a grid of 10 km cells, bucket-model runoff,
    interpolation to non-overlapping box catchments (partial cell overlaps), linear-storage
    routing whose time constant follows reach attributes (:func:`twin_tau`), discharge by the
    float64 oracle, and ``n_gauges`` gauges taken round-robin over basins (largest upstream
    area first)."""
    from ..models.runoff import BucketModel, synthetic_forcings
    from ..network import continental_forest  # lazy: only twins need the generator
    from ..routing import route_oracle

    rng = np.random.default_rng(seed)
    net = continental_forest(n_reaches, seed=seed, cap=basin_cap)
    n = net.n_reaches
    nx, ny = grid
    size = 10.0  # km
    x0, y0 = np.meshgrid(np.arange(nx) * size, np.arange(ny) * size)
    cells = np.stack([x0.ravel(), y0.ravel(), x0.ravel() + size, y0.ravel() + size], axis=1)
    n_cells = cells.shape[0]
    # catchments: the domain cut into n boxes, neighbours in network order side by side
    cols = int(np.ceil(np.sqrt(n * nx / ny)))
    rows = int(np.ceil(n / cols))
    w, h = nx * size / cols, ny * size / rows
    k = np.arange(n)
    cx, cy = k % cols, k // cols
    boxes = np.stack([cx * w, cy * h, (cx + 1) * w, (cy + 1) * h], axis=1)
    interp = CatchmentInterpolator.from_boxes(cells, boxes, step_seconds=86400.0,
                                              length_unit="km")
    # smooth cell attributes: capacity and recession vary across the domain
    gx, gy = (cells[:, 0] + size / 2) / (nx * size), (cells[:, 1] + size / 2) / (ny * size)
    ph = rng.uniform(0, 2 * np.pi, 2)
    capacity = 40.0 + 120.0 * 0.5 * (1 + np.sin(2.5 * gx + ph[0]) * np.cos(2.0 * gy))
    recession = 0.02 + 0.13 * 0.5 * (1 + np.cos(3.0 * gy + ph[1]) * np.sin(2.0 * gx + 1.0))
    static = np.stack([capacity, recession], axis=1)
    forcings = synthetic_forcings(n_cells, n_steps, seed=seed)
    with torch.no_grad():
        f = torch.as_tensor(forcings, dtype=torch.float64)[None]
        depth = BucketModel(capacity, recession)(f)[0]
        lateral = interp(depth).numpy()
    length_km = np.asarray(net.attrs["length"], dtype=np.float64) / 1000.0
    slope = rng.uniform(0.0, 1.0, n)
    net = RiverNetwork(net.ids, net.downstream, {**net.attrs, "slope": slope})
    attributes = np.stack([length_km, slope], axis=1)
    tau = twin_tau(attributes)[:, None]
    q = np.asarray(route_oracle(net, lateral, "linear_storage", tau))
    # upstream area: accumulate catchment areas down the network, level by level
    area = interp.catchment_area_km2()
    ptr, order, down = net.level_ptr, net.topo_order, net.downstream
    for lv in range(net.n_levels):
        idx = order[ptr[lv] : ptr[lv + 1]]
        d = down[idx]
        ok = d >= 0
        np.add.at(area, d[ok], area[idx[ok]])
    # gauges spread over basins: round-robin over basins, most-drained reaches first
    basin = np.asarray(net.basin)
    by_area = np.argsort(-area, kind="stable")
    rank = np.empty(n, dtype=np.int64)
    for b in np.unique(basin):
        members = by_area[basin[by_area] == b]
        rank[members] = np.arange(members.size)
    pick = np.lexsort((-area, rank))[: min(n_gauges, n)]
    gauges_at = np.sort(pick)
    return SyntheticTwin(
        network=net, interpolator=interp, forcings=forcings, static=static,
        depth=depth.numpy(), lateral=lateral, attributes=attributes, irf="linear_storage",
        params=tau, discharge=q,
        observations=GaugeObservations(net.ids[gauges_at], q[gauges_at]),
    )
