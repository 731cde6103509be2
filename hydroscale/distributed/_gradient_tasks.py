"""What runs ON the workers for a distributed gradient (DESIGN §3, "Backward wave").

Each worker keeps, per calibration run id, a :class:`_GradRun` in an attribute of its Dask
worker object: the network and its groups, one :class:`~hydroscale.routing.StagedRouter` per
group of its own (so the path kernels of one group are one tensor, whose gradient is
exactly that group's), its slice of the parameter model, the runoff source, the
observations at the gauges of its groups, its optimiser, and the per-iteration state
(kernels, the inlet inflow of every group, partial loss, metrics).

One iteration is, per worker: :func:`begin_task` (parameters and path kernels), one
:func:`forward_task` per group in topological order (the whole time window in one task: a
calibration window is routed from a zero state, so there is no carried state to pipeline),
one :func:`backward_task` per group in reverse order (rematerialise the forward with
autograd, backpropagate the local loss and the gradients of the outgoing buffers, return the
gradient of the incoming buffers), :func:`end_task` (the parameter model's backward; the
payload of the tree reduction), then :func:`update_task` (optimiser step, per-iteration
snapshot, metrics).

Runoff sources
--------------
A source is a small picklable object; the client calls ``source.for_worker(plan, w)`` (when
it has that method) and ships the result to worker ``w``, which then calls:

``open(ctx: SourceContext) -> None``
    once at set-up (``ctx`` holds the network, the groups, this worker's group ids, the
    device and the router dtype);
``begin(windows) -> None`` (optional)
    called at the start of every pass with the pass's training windows: None (one series,
    the whole calibration period) or ``(starts, length)`` (int ``[B]`` first steps and the
    common length ``L``: batch element ``b`` covers steps ``starts[b] : starts[b] + L``);
``read(group, reaches) -> Tensor [B, n_g, T]``
    lateral inflow (m³/s per routing step) of the group's reaches (``reaches``: global reach
    indices in the group's engine order) on ``ctx.device``, over the whole calibration
    period (``T`` steps) or, with windows, ``[B, n_g, L]``; called without gradient, in the
    forward and again in the backward;
``backward(group, reaches, grad) -> None`` (optional; skipped when the source has a
    false ``differentiable`` attribute)
    receives ``dLoss/d(runoff)`` ``[B, n_g, T]`` of the group; a differentiable source
    recomputes its runoff with autograd and calls ``runoff.backward(grad)``, so that the
    gradients land in the ``.grad`` of its tensors;
``parameters() -> {"shared": [...], "local": [...]}`` (optional)
    trainable tensors: ``shared`` ones are replicated (the same values on every worker):
    their gradients are summed across workers in a tree and every worker applies the same
    update; ``local`` ones live on this worker only.  Both are stepped by the worker's
    optimiser and saved in its checkpoint and per-iteration snapshot files.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..calibration.losses import get_loss
from ..calibration.metrics import kge, nse
from ..irf import to_bounded
from ..network import RiverNetwork
from ..routing import RivTreeCluster, RoutingKernels, StagedRouter
from ._sizeof import TransferBuffer
from ._worker import _device, _peak, _sync, _worker

__all__ = ["ForcingSource", "SourceContext", "TensorSource"]

logger = logging.getLogger(__name__)

_ATTR = "_hydroscale_grad_runs"
STATE_FORMAT = "hydroscale-distributed-worker/1"


def loss_defined(loss: str, values: np.ndarray) -> np.ndarray:
    """bool ``[...]``: where the per-gauge loss is defined by the observations ``[..., T]``
    alone (two valid steps; non-zero variance for NSE and KGE; non-zero mean for KGE)."""
    ok = np.isfinite(values)
    n = ok.sum(-1)
    v = np.where(ok, values, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = v.sum(-1) / n
        var = (np.where(ok, values - mean[..., None], 0.0) ** 2).sum(-1) / n
    out = n >= 2
    if loss in ("nse", "kge"):
        out &= var > 0
    if loss == "kge":
        out &= mean != 0
    return out


def window_index(windows: tuple[np.ndarray, int]) -> np.ndarray:
    """int ``[B, L]`` steps of the windows ``(starts [B], L)``."""
    starts, length = windows
    return np.asarray(starts, np.int64)[:, None] + np.arange(int(length))


# ---------------------------------------------------------------------- runoff sources
@dataclass
class SourceContext:
    """What a runoff source learns about its worker when it is opened."""

    network: RiverNetwork
    groups: RivTreeCluster
    mine: np.ndarray
    device: torch.device
    dtype: torch.dtype


class TensorSource:
    """Runoff given as a tensor ``[N, T]`` or ``[B, N, T]`` (m³/s, network order).

    Each worker receives only the rows of its own groups.  With ``trainable=True`` every
    group's block is a worker-local trainable tensor: the backward accumulates
    ``dLoss/d(runoff)`` into its ``.grad`` (read back as ``gradient()["runoff"]`` of
    :class:`~hydroscale.distributed.DistributedGradient`), and the optimiser updates it.
    With training windows (``begin``) the windows are cut from the one series (``B = 1``).
    """

    def __init__(self, runoff: Any, *, trainable: bool = False) -> None:
        r = torch.as_tensor(runoff)
        if r.ndim == 2:
            r = r.unsqueeze(0)
        if r.ndim != 3:
            raise ValueError(f"runoff must be [N, T] or [B, N, T], got {tuple(r.shape)}")
        self.runoff = r.detach().cpu()
        self.trainable = bool(trainable)
        self._blocks: dict[int, torch.Tensor] = {}

    @property
    def differentiable(self) -> bool:
        return self.trainable

    @property
    def batch(self) -> int:
        return int(self.runoff.shape[0])

    @property
    def n_steps(self) -> int:
        return int(self.runoff.shape[-1])

    @property
    def n_reaches(self) -> int:
        return int(self.runoff.shape[1])

    def for_worker(self, plan: Any, worker: int) -> TensorSource:
        out = TensorSource.__new__(TensorSource)
        out.trainable = self.trainable
        out.runoff = None
        out._blocks = {}
        for g in plan.groups_of_worker(worker).tolist():
            a, b = (int(x) for x in plan.rows[g])
            idx = torch.as_tensor(plan.order[a:b])
            out._blocks[int(g)] = self.runoff.index_select(1, idx).clone()
        return out

    def open(self, ctx: SourceContext) -> None:
        self._blocks = {g: (nn.Parameter(x.to(ctx.device, ctx.dtype)) if self.trainable
                            else x.to(ctx.device, ctx.dtype)) for g, x in self._blocks.items()}

    def begin(self, windows: tuple[np.ndarray, int] | None) -> None:
        self._steps = None
        if windows is not None:
            if self.trainable:
                raise ValueError("a trainable TensorSource routes the whole period: no windows")
            x = next(iter(self._blocks.values()), None)
            if x is not None and x.shape[0] != 1:
                raise ValueError(f"windows cut one series; this runoff has a batch of "
                                 f"{x.shape[0]}")
            dev = x.device if x is not None else None
            self._steps = torch.as_tensor(window_index(windows), device=dev)

    def read(self, group: int, reaches: np.ndarray) -> torch.Tensor:
        x = self._blocks[int(group)].detach()
        steps = getattr(self, "_steps", None)
        return x if steps is None else x[0][:, steps].permute(1, 0, 2)

    def backward(self, group: int, reaches: np.ndarray, grad: torch.Tensor) -> None:
        if self.trainable:
            self._blocks[int(group)].backward(grad)

    def parameters(self) -> dict[str, list[torch.Tensor]]:
        local = [self._blocks[g] for g in sorted(self._blocks)] if self.trainable else []
        return {"shared": [], "local": local}

    def gradients(self, groups: Any) -> dict[int, np.ndarray]:
        """``dLoss/d(runoff)`` per group (zeros where none flowed back)."""
        out = {}
        for g in groups:
            x = self._blocks[int(g)]
            grad = x.grad if isinstance(x, nn.Parameter) and x.grad is not None else \
                torch.zeros_like(x)
            out[int(g)] = grad.detach().cpu().numpy()
        return out


class ForcingSource:
    """A forcing of :mod:`hydroscale.distributed` (:class:`SyntheticForcing` generated on
    the workers, or a :class:`ZarrForcing` store read by them), not differentiable."""

    def __init__(self, forcing: Any, n_steps: int | None = None) -> None:
        from ._forcing import as_forcing

        self.forcing = as_forcing(forcing)
        self.steps = int(n_steps or self.forcing.n_steps)
        self._opened: Any = None
        self._ctx: SourceContext | None = None

    @property
    def n_steps(self) -> int:
        return self.steps

    def __getstate__(self) -> dict[str, Any]:
        return {"forcing": self.forcing, "steps": self.steps}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.forcing, self.steps = state["forcing"], state["steps"]
        self._opened, self._ctx = None, None

    def open(self, ctx: SourceContext) -> None:
        self._opened = self.forcing.open(ctx.network)
        self._ctx = ctx
        self._windows: list[tuple[int, int]] = [(0, self.steps)]

    def begin(self, windows: tuple[np.ndarray, int] | None) -> None:
        self._windows = [(0, self.steps)] if windows is None else \
            [(int(a), int(a) + int(windows[1])) for a in windows[0]]

    def read(self, group: int, reaches: np.ndarray) -> torch.Tensor:
        ctx = self._ctx
        a, b = (int(x) for x in ctx.groups.reach_ptr_cluster[group])
        x = [self._opened.read(reaches, (a, b), t0, t1, ctx.device) for t0, t1 in self._windows]
        return torch.stack(x).to(ctx.dtype)


def _source_parameters(source: Any) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    fn = getattr(source, "parameters", None)
    if fn is None:
        return [], []
    p = fn()
    return list(p.get("shared", [])), list(p.get("local", []))


# ---------------------------------------------------------------------- parameter slices
class FreeSlice(nn.Module):
    """The rows of a :class:`~hydroscale.models.FreeParameters` held by one worker."""

    def __init__(self, raw: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> None:
        super().__init__()
        self.raw = nn.Parameter(raw.clone())
        self.register_buffer("low", low.clone())
        self.register_buffer("high", high.clone())

    def forward(self) -> torch.Tensor:
        return to_bounded(self.raw, self.low, self.high)


@dataclass
class _Gauges:
    """The gauges of one group: local rows in the group's order, gauge numbers, values."""

    local: torch.Tensor  # [k] rows in the group's engine order
    number: np.ndarray  # [k] gauge numbers (rows of the observations)
    values: np.ndarray  # [k, T] float64 on the host
    obs: torch.Tensor  # [k, T] on the device
    defined: torch.Tensor  # [k] bool: the loss is defined on the training period
    obs_w: torch.Tensor | None = None  # [B, k, L] the observations of this pass's windows
    defined_w: torch.Tensor | None = None  # [B, k] bool


@dataclass
class _GradRun:
    run_id: str
    worker_index: int
    device: torch.device
    dtype: torch.dtype
    network: RiverNetwork
    groups: RivTreeCluster
    mine: np.ndarray
    routers: dict[int, StagedRouter]
    rows: np.ndarray  # [n_own] global reach indices of the worker's reaches (sorted)
    model: nn.Module
    shared_model: bool
    source: Any
    gauges: dict[int, _Gauges]
    feeds: dict[int, list[tuple[int, torch.Tensor, torch.Tensor]]]
    loss_name: str
    train: tuple[int, int]
    validation: tuple[int, int] | None
    warmup: int
    kernel_graph: str
    optimizer: torch.optim.Optimizer | None = None
    snapshot_dir: str | None = None
    # per iteration
    params_own: torch.Tensor | None = None
    p_leaf: torch.Tensor | None = None
    kern: dict[int, RoutingKernels] = field(default_factory=dict)
    kern_det: dict[int, RoutingKernels] = field(default_factory=dict)
    inflow: dict[int, torch.Tensor | None] = field(default_factory=dict)
    use: torch.Tensor | None = None
    windows: tuple[np.ndarray, int] | None = None
    norm: float = 1.0
    training: bool = False
    loss_sum: torch.Tensor | None = None
    metrics: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    sims: dict[int, np.ndarray] = field(default_factory=dict)
    keep_sims: bool = False
    timers: dict[str, float] = field(default_factory=dict)

    @property
    def shared_params(self) -> list[torch.Tensor]:
        s, _ = _source_parameters(self.source)
        return (list(self.model.parameters()) if self.shared_model else []) + s

    @property
    def local_params(self) -> list[torch.Tensor]:
        _, loc = _source_parameters(self.source)
        return ([] if self.shared_model else list(self.model.parameters())) + loc

    def reaches(self, g: int) -> np.ndarray:
        a, b = (int(x) for x in self.groups.reach_ptr_cluster[g])
        return self.groups.order[a:b]


def _source_tensors(run: _GradRun) -> list[torch.Tensor]:
    shared, local = _source_parameters(run.source)
    return shared + local


def _runs() -> dict[str, _GradRun]:
    w = _worker()
    if not hasattr(w, _ATTR):
        setattr(w, _ATTR, {})
    return getattr(w, _ATTR)


def _get(run_id: str) -> _GradRun:
    runs = _runs()
    if run_id not in runs:
        raise RuntimeError(f"gradient run {run_id!r} is not set up on worker "
                           f"{_worker().address} (was the worker restarted?)")
    return runs[run_id]


def _tick(run: _GradRun, key: str, t0: float) -> None:
    _sync(run.device)
    run.timers[key] = run.timers.get(key, 0.0) + time.perf_counter() - t0


# ---------------------------------------------------------------------- set-up
def setup_task(run_id: str, worker_index: int, ids: np.ndarray, downstream: np.ndarray,
               group_of: np.ndarray, mine: np.ndarray, options: dict[str, Any],
               model: dict[str, Any], source: Any, gauges: dict[str, Any],
               loss: dict[str, Any], optimizer: Any, snapshot_dir: str | None
               ) -> dict[str, Any]:
    """Build the worker's part of a gradient run; returns its auto window and timings."""
    t = time.perf_counter()
    dev = _device()
    dtype = options["dtype"]
    net = RiverNetwork(ids, downstream)
    cs = RivTreeCluster(net, group_of)
    mine = np.asarray(mine, np.int64)
    opts = {k: options[k] for k in ("substeps", "dtype", "storage_dtype", "backend",
                                    "precision", "allow_unstable")}
    window = options["window"]
    routers = {int(g): StagedRouter(cs, options["irf"], only=[int(g)], device=dev,
                                    window=window, **opts) for g in mine.tolist()}
    rows = np.sort(np.concatenate([cs.cluster_reaches(int(g)) for g in mine.tolist()])) \
        if mine.size else np.zeros(0, np.int64)
    if model["kind"] == "free":
        module: nn.Module = FreeSlice(model["raw"], model["low"], model["high"])
    else:
        module = model["module"]
    module = module.to(dev)
    source.open(SourceContext(net, cs, mine, dev, dtype))
    obs = {}
    for g, (loc, number, values, defined) in gauges.items():
        obs[int(g)] = _Gauges(torch.as_tensor(loc, device=dev), np.asarray(number),
                              np.asarray(values, np.float64),
                              torch.as_tensor(values, device=dev, dtype=dtype),
                              torch.as_tensor(defined, device=dev))
    # exits of every own group -> (downstream group, local exit rows, its local inlet rows)
    feeds: dict[int, list] = {}
    for g in mine.tolist():
        e0, e1 = (int(x) for x in cs.exit_ptr_cluster[g])
        inl = cs.exit_inlet[e0:e1]
        dst = cs.cluster_of[cs.inlet_reach[inl]]
        lst = []
        for d in np.unique(dst).tolist():
            sel = np.flatnonzero(dst == d)
            lst.append((int(d), torch.as_tensor(sel, device=dev),
                        torch.as_tensor(inl[sel] - int(cs.inlet_ptr_cluster[d, 0]),
                                        device=dev)))
        feeds[int(g)] = lst
    run = _GradRun(run_id, int(worker_index), dev, dtype, net, cs, mine, routers, rows, module,
                   model["kind"] != "free", source, obs, feeds, loss["name"],
                   tuple(loss["train"]),
                   None if loss["validation"] is None else tuple(loss["validation"]),
                   int(loss["warmup"]), options.get("kernel_graph", "keep"),
                   snapshot_dir=snapshot_dir)
    params = run.shared_params + run.local_params
    if callable(optimizer):
        run.optimizer = optimizer(params)
    else:
        name, lr = optimizer
        run.optimizer = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}[name](params, lr=lr)
    _runs()[run_id] = run
    out: dict[str, Any] = {"device": str(dev), "groups": int(mine.size),
                           "reaches": int(rows.size)}
    if window == "auto":
        with torch.no_grad():
            full = _full_params(run, _own_params(run))
        out["window"] = max((r.auto_window(full.to(torch.float64)) for r in routers.values()),
                            default=2)
    else:
        out["window"] = int(window)
    _sync(dev)
    out["setup_s"] = time.perf_counter() - t
    return out


def window_task(run_id: str, window: int) -> bool:
    """Fix the common window of every router of the run."""
    for r in _get(run_id).routers.values():
        r.window = int(window)
    return True


def teardown_task(run_id: str) -> bool:
    """Forget the run on this worker (frees its device memory)."""
    run = _runs().pop(run_id, None)
    if run is not None and run.device.type == "cuda":
        del run
        torch.cuda.empty_cache()
    return True


def _own_params(run: _GradRun) -> torch.Tensor:
    """Parameters ``[n_own, P]`` of the worker's reaches (``run.rows``)."""
    if run.shared_model:
        return run.model(rows=torch.as_tensor(run.rows, device=run.device))
    return run.model()


def _full_params(run: _GradRun, own: torch.Tensor) -> torch.Tensor:
    """``[N, P]`` with the worker's rows set (the routers read no other row)."""
    n = run.network.n_reaches
    full = own.new_zeros(n, own.shape[1])
    return full.index_copy(0, torch.as_tensor(run.rows, device=own.device), own)


# ---------------------------------------------------------------------- one iteration
def begin_task(run_id: str, iteration: int, use: np.ndarray, norm: float, training: bool,
               keep_sims: bool = False, windows: tuple[np.ndarray, int] | None = None) -> bool:
    """Start a pass: the source's windows, parameters of the worker's reaches and every
    group's kernels (kept with their autograd graph when training with
    ``kernel_graph="keep"``)."""
    t0 = time.perf_counter()
    run = _get(run_id)
    run.training = bool(training)
    run.use = torch.as_tensor(np.asarray(use, bool), device=run.device)
    run.norm = float(norm)
    run.windows = windows
    for gg in run.gauges.values():
        gg.obs_w = gg.defined_w = None
        if windows is not None:
            v = gg.values[:, window_index(windows)].transpose(1, 0, 2)  # [B, k, L]
            gg.obs_w = torch.as_tensor(v, device=run.device, dtype=run.dtype)
            gg.defined_w = torch.as_tensor(loss_defined(run.loss_name, v[..., run.warmup:]),
                                           device=run.device)
    begin = getattr(run.source, "begin", None)
    if begin is not None:
        begin(windows)
    run.keep_sims = bool(keep_sims)
    run.loss_sum = torch.zeros((), dtype=torch.float64, device=run.device)
    run.metrics, run.sims, run.inflow = {}, {}, {}
    run.kern, run.kern_det = {}, {}
    run.timers = {}
    run.optimizer.zero_grad(set_to_none=True)
    if run.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(run.device)
    with torch.set_grad_enabled(run.training):
        own = _own_params(run)
    run.params_own = own
    run.p_leaf = _full_params(run, own.detach()).requires_grad_(run.training)
    keep = run.training and run.kernel_graph == "keep"
    for g, r in run.routers.items():
        with torch.set_grad_enabled(keep):
            k = r.aggregate(run.p_leaf)
        if keep:
            run.kern[g] = k
        run.kern_det[g] = _detached(k)
    _tick(run, "aggregate", t0)
    return True


def _detached(k: RoutingKernels, grad: bool = False) -> RoutingKernels:
    return RoutingKernels(k.wr.detach().requires_grad_(grad),
                          k.wu.detach().requires_grad_(grad and k.wu.numel() > 0),
                          k.window, k.truncated_mass)


def _observed(run: _GradRun, gg: _Gauges, b: int) -> tuple[torch.Tensor, torch.Tensor,
                                                           tuple[int, int]]:
    """Observations ``[B or 1, k, T]``, where the loss is defined ``[B, k]``, and the loss
    steps of this pass (the training period, or each window after its warm-up)."""
    if run.windows is None:
        return gg.obs[None], gg.defined[None].expand(b, -1), run.train
    return gg.obs_w, gg.defined_w, (run.warmup, int(run.windows[1]))


def _group_loss(run: _GradRun, g: int, q: torch.Tensor) -> torch.Tensor | None:
    """This group's share of the loss: ``sum(per-gauge loss) / norm`` over its used
    (batch, gauge) pairs (only those are computed: no NaN enters the graph)."""
    gg = run.gauges.get(g)
    if gg is None:
        return None
    b = q.shape[0]
    obs, defined, (t0, t1) = _observed(run, gg, b)
    use = run.use[torch.as_tensor(gg.number, device=run.device)]
    m = (defined & use[None]).reshape(-1)
    if not bool(m.any()):
        return None
    pick = torch.nonzero(m).flatten()
    k = gg.local.numel()
    s = q.index_select(1, gg.local)[..., t0:t1].reshape(b * k, -1).index_select(0, pick)
    o = obs.expand(b, -1, -1)[..., t0:t1].reshape(b * k, -1).index_select(0, pick)
    per = get_loss(run.loss_name)(s, o)
    per = torch.where(torch.isfinite(per.detach()), per, 0.0)
    return per.sum(dtype=torch.float64) / run.norm


def _metrics(run: _GradRun, g: int, q: torch.Tensor) -> None:
    gg = run.gauges.get(g)
    if gg is None:
        return
    s = q.index_select(1, gg.local).to(torch.float64)
    o, _, loss_steps = _observed(run, gg, q.shape[0])
    o = o.to(torch.float64)
    out = {"number": gg.number}
    periods = (("", run.train), ("val_", run.validation)) if run.windows is None else \
        (("", loss_steps),)
    for key, period in periods:
        if period is None:
            continue
        a, b = period
        out[key + "nse"] = nse(s[..., a:b], o[..., a:b]).mean(0).cpu().numpy()
        out[key + "kge"] = kge(s[..., a:b], o[..., a:b]).mean(0).cpu().numpy()
    run.metrics[g] = out
    if run.keep_sims:
        run.sims[g] = s.cpu().numpy()


def _inflow(run: _GradRun, g: int, upstream: tuple) -> torch.Tensor | None:
    outflows = {u.group: u.data.to(run.device) for u in upstream if u is not None}
    return run.routers[g].inflow_for(g, outflows) if outflows else None


def forward_task(run_id: str, group: int, begin: Any, *upstream: TransferBuffer | None
                 ) -> TransferBuffer | None:
    """Route group ``group`` over the whole window from the upstream buffers; keep its
    inflow (for the backward), add its share of the loss; return its exits' buffer."""
    t0 = time.perf_counter()
    run = _get(run_id)
    g = int(group)
    x = run.source.read(g, run.reaches(g))
    inflow = _inflow(run, g, upstream)
    with torch.no_grad():
        q, out, _ = run.routers[g].forward_chunk(g, x, inflow, None, run.kern_det[g])
        part = _group_loss(run, g, q)
        if part is not None:
            run.loss_sum += part
        _metrics(run, g, q)
    if run.training:
        run.inflow[g] = inflow
    _tick(run, "forward", t0)
    # the exit channels are a view of the group's whole output: copy them, so that the
    # buffer does not keep the discharge of every reach alive while downstream groups wait
    return TransferBuffer(g, 0, out.clone()) if out.shape[1] else None


def backward_task(run_id: str, group: int, *downstream: Any) -> TransferBuffer | None:
    """Backpropagate through group ``group``: rematerialise its forward with autograd, seed
    it with its local loss and the gradients of its exits (from the downstream groups'
    results), accumulate the gradient of its kernels into the parameters and of its runoff
    into the source; return the gradient of its inlet inflow ``[B, n_inlet, f, T]``."""
    t0 = time.perf_counter()
    run = _get(run_id)
    g = int(group)
    router = run.routers[g]
    grads = {d.group: d.data.to(run.device) for d in downstream
             if isinstance(d, TransferBuffer) and d.chunk < 0}
    has_gauges = g in run.gauges
    if not grads and not has_gauges:  # nothing reaches the loss through this group
        run.kern.pop(g, None)
        run.inflow.pop(g, None)
        _tick(run, "backward", t0)
        return None
    reaches = run.reaches(g)
    differentiable = (callable(getattr(run.source, "backward", None))
                      and getattr(run.source, "differentiable", True))
    x = run.source.read(g, reaches).detach().requires_grad_(differentiable)
    inflow = run.inflow.pop(g, None)
    if inflow is not None:
        inflow = inflow.detach().requires_grad_(True)
    kd = _detached(run.kern_det[g], grad=True)
    with torch.enable_grad():
        q, out, _ = router.forward_chunk(g, x, inflow, None, kd)
        roots, seeds = [], []
        part = _group_loss(run, g, q)
        if part is not None:
            roots.append(part)
            seeds.append(torch.ones_like(part))
        if grads:
            seed = torch.zeros_like(out)
            for d, loc_exit, loc_inlet in run.feeds[g]:
                if d in grads:
                    seed.index_copy_(1, loc_exit, grads[d].index_select(1, loc_inlet)
                                     .to(seed.dtype))
            roots.append(out)
            seeds.append(seed)
        if roots:
            torch.autograd.backward(roots, seeds)
    _tick(run, "backward", t0)
    t1 = time.perf_counter()
    kern = run.kern.pop(g, None)
    if kern is None:  # kernel_graph="recompute": aggregate again, with the graph
        with torch.enable_grad():
            kern = router.aggregate(run.p_leaf)
    pairs = [(w, gr) for w, gr in zip((kern.wr, kern.wu), (kd.wr.grad, kd.wu.grad))
             if gr is not None]
    if pairs:
        torch.autograd.backward([w for w, _ in pairs], [gr.to(w.dtype) for w, gr in pairs])
    del kern
    if differentiable and x.grad is not None:
        run.source.backward(g, reaches, x.grad)
    _tick(run, "kernel_backward", t1)
    if inflow is None or inflow.grad is None:
        return None
    return TransferBuffer(g, -1, inflow.grad.detach())


def end_task(run_id: str, *done: Any) -> dict[str, Any]:
    """After the worker's last backward (or forward): its partial loss and the gradients of
    the shared parameters (the payload of the tree reduction)."""
    t0 = time.perf_counter()
    run = _get(run_id)
    if run.training and run.p_leaf is not None and run.p_leaf.grad is not None:
        idx = torch.as_tensor(run.rows, device=run.device)
        run.params_own.backward(run.p_leaf.grad.index_select(0, idx).to(run.params_own.dtype))
    shared = []
    if run.training:
        shared = [(p.grad if p.grad is not None else torch.zeros_like(p)).detach().cpu()
                  for p in run.shared_params]
    _tick(run, "end", t0)
    return {"loss": float(run.loss_sum.item()), "shared": shared}


def sum_task(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """One node of the tree reduction: ``a + b`` (loss and shared gradients)."""
    return {"loss": a["loss"] + b["loss"],
            "shared": [x + y for x, y in zip(a["shared"], b["shared"])]}


def update_task(run_id: str, total: dict[str, Any], iteration: int, step: bool
                ) -> dict[str, Any]:
    """Apply the summed shared gradients and step the worker's optimiser (``step``); write
    the per-iteration snapshot; return the total loss, this worker's gauge metrics and
    figures."""
    t0 = time.perf_counter()
    run = _get(run_id)
    if run.training:
        for p, gsum in zip(run.shared_params, total["shared"]):
            p.grad = gsum.to(p.device, p.dtype).clone()
        for p in run.local_params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
    if step and run.training:
        run.optimizer.step()
        if run.snapshot_dir is not None:
            save_state(run, _snapshot_path(run.snapshot_dir, run.worker_index, iteration),
                       iteration)
    run.kern, run.kern_det, run.inflow = {}, {}, {}
    run.p_leaf = run.params_own = None
    _tick(run, "update", t0)
    out = {
        "loss": float(total["loss"]),
        "metrics": list(run.metrics.values()),
        "sims": dict(run.sims),
        "peak_bytes": _peak(run.device),
        "timers": dict(run.timers),
    }
    run.sims = {}
    return out


# ---------------------------------------------------------------------- state files
def _snapshot_path(directory: str, worker: int, iteration: int) -> str:
    return os.path.join(directory, f"worker-{worker:04d}-{iteration % 2}.pt")


def _state(run: _GradRun, iteration: int) -> dict[str, Any]:
    return {
        "format": STATE_FORMAT,
        "iteration": int(iteration),
        "worker": run.worker_index,
        "rows": torch.as_tensor(run.rows),
        "model": {k: v.detach().cpu() for k, v in run.model.state_dict().items()},
        "source": [p.detach().cpu() for p in _source_tensors(run)],
        "optimizer": run.optimizer.state_dict(),
    }


def save_state(run: _GradRun, path: str, iteration: int) -> str:
    """Write the worker's parameters and optimiser state with ``torch.save`` (atomically):
    tensors, numbers and strings only, loadable with ``weights_only=True``."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = path + ".tmp"
    torch.save(_state(run, iteration), tmp)
    os.replace(tmp, path)
    return path


def save_task(run_id: str, directory: str, iteration: int) -> str:
    """Write this worker's checkpoint file into ``directory``."""
    run = _get(run_id)
    return save_state(run, os.path.join(directory, f"worker-{run.worker_index:04d}.pt"),
                      iteration)


def snapshot_task(run_id: str, iteration: int) -> str | None:
    """Write the per-iteration snapshot now (after set-up or a load)."""
    run = _get(run_id)
    if run.snapshot_dir is None:
        return None
    return save_state(run, _snapshot_path(run.snapshot_dir, run.worker_index, iteration),
                      iteration)


def load_task(run_id: str, path: str | None, iteration: int) -> int:
    """Restore parameters and optimiser state from a checkpoint file (``path``) or, when
    None, from this worker's snapshot of ``iteration``."""
    run = _get(run_id)
    if path is None:
        path = _snapshot_path(run.snapshot_dir, run.worker_index, iteration)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != STATE_FORMAT:
        raise ValueError(f"{path} is not a {STATE_FORMAT} file (format {state.get('format')!r})")
    if int(state["iteration"]) != int(iteration):
        raise ValueError(f"{path} holds iteration {state['iteration']}, expected {iteration}")
    if not np.array_equal(state["rows"].numpy(), run.rows):
        raise ValueError(f"{path} holds the parameters of other reaches than worker "
                         f"{run.worker_index} routes: resume with the same partition and "
                         "number of workers")
    with torch.no_grad():
        run.model.load_state_dict(state["model"])
        src = _source_tensors(run)
        if len(src) != len(state["source"]):
            raise ValueError(f"{path} holds {len(state['source'])} source tensors, the source "
                             f"has {len(src)}")
        for p, v in zip(src, state["source"]):
            p.copy_(v.to(p.device, p.dtype))
    run.optimizer.load_state_dict(state["optimizer"])
    return int(state["iteration"])


# ---------------------------------------------------------------------- read-back
def model_task(run_id: str) -> dict[str, Any]:
    """The worker's model: its rows and raw values (free parameters) or its state dict
    (shared model), on the host."""
    run = _get(run_id)
    state = {k: v.detach().cpu() for k, v in run.model.state_dict().items()}
    return {"rows": run.rows, "shared": run.shared_model, "state": state}


def gradient_task(run_id: str) -> dict[str, Any]:
    """The gradients of the last backward (before any step): ``raw`` ``[n_own, P]`` rows of
    free parameters, or the shared model's (summed) gradients, the summed gradients of the
    source's shared tensors, and the runoff gradients of a :class:`TensorSource`
    (``trainable=True``)."""
    run = _get(run_id)
    out: dict[str, Any] = {"rows": run.rows}
    named = dict(run.model.named_parameters())
    out["model"] = {k: (p.grad if p.grad is not None else torch.zeros_like(p)).detach().cpu()
                    for k, p in named.items()}
    shared, _ = _source_parameters(run.source)
    out["source"] = [(p.grad if p.grad is not None else torch.zeros_like(p)).detach().cpu()
                     for p in shared]
    grads = getattr(run.source, "gradients", None)
    if grads is not None:
        out["runoff"] = {g: (run.reaches(g), v) for g, v in grads(run.mine.tolist()).items()}
    return out
