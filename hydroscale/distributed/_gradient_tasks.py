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
autograd, or, with ``rematerialise=False``, take the graph the forward kept; backpropagate
the local loss and the gradients of the outgoing buffers, return the gradient of the
incoming buffers), :func:`end_task` (the parameter model's backward; the
payload of the tree reduction), then :func:`update_task` (optimiser step, per-iteration
snapshot, metrics).

Runoff comes from a *source* (:mod:`._gradient_sources`, which documents the protocol).
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
from ..irf import bound_corners, to_bounded
from ..network import RiverNetwork
from ..routing import RivTreeCluster, RoutingKernels, StagedRouter
from ._gradient_sources import SourceContext, source_parameters, window_index
from ._sizeof import TransferBuffer
from ._worker import _device, _peak, _sync, _worker

__all__ = ["loss_defined"]

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
    remat: bool
    optimizer: torch.optim.Optimizer | None = None
    snapshot_dir: str | None = None
    # per iteration
    params_own: torch.Tensor | None = None
    p_leaf: torch.Tensor | None = None
    kern: dict[int, RoutingKernels] = field(default_factory=dict)
    kern_det: dict[int, RoutingKernels] = field(default_factory=dict)
    inflow: dict[int, torch.Tensor | None] = field(default_factory=dict)
    graphs: dict[int, Any] = field(default_factory=dict)
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
        s, _ = source_parameters(self.source)
        return (list(self.model.parameters()) if self.shared_model else []) + s

    @property
    def local_params(self) -> list[torch.Tensor]:
        _, loc = source_parameters(self.source)
        return ([] if self.shared_model else list(self.model.parameters())) + loc

    def reaches(self, g: int) -> np.ndarray:
        a, b = (int(x) for x in self.groups.reach_ptr_cluster[g])
        return self.groups.order[a:b]


def _source_tensors(run: _GradRun) -> list[torch.Tensor]:
    shared, local = source_parameters(run.source)
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
                                    "precision", "allow_unstable", "aggregate_dtype",
                                    "window_tolerance")}
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
                   int(loss["warmup"]), options["kernel_graph"], options["rematerialise"],
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
    if window == "auto":  # fitted for every parameter within the model's bounds
        cap = options.get("max_steps")
        out["window"] = max((r.auto_window(c, max_steps=cap) for c in _corners(run)
                             for r in routers.values()), default=2)
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


def _corners(run: _GradRun) -> list[torch.Tensor]:
    """``[N, P]`` float64 parameter sets with the worker's rows at each corner of the model's
    bounds (the extremes a calibration may reach; other rows are read by no router here)."""
    low, high = run.model.low, run.model.high
    rows = torch.as_tensor(run.rows, device=low.device)
    if low.ndim == 2 and low.shape[0] != rows.numel():  # a shared model's per-reach bounds
        low, high = low.index_select(0, rows), high.index_select(0, rows)
    return [_full_params(run, c.to(run.device)) for c in
            bound_corners(low, high, int(rows.numel()))]


def truncation_task(run_id: str) -> dict[int, float]:
    """The truncated mass of every group of this worker above its router's tolerance, at
    the worst corner of the model's bounds, with the run's window: ``{group: mass}``."""
    run = _get(run_id)
    over: dict[int, float] = {}
    for p in _corners(run):
        for g, r in run.routers.items():
            with torch.no_grad():
                kern = r.aggregate(p, agg_dtype=torch.float64, check=False)
                m = float(np.nan_to_num(kern.truncated_mass[g]))
            if m > r.window_tolerance:
                over[g] = max(over.get(g, 0.0), m)
    return over


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
    run.metrics, run.sims, run.inflow, run.graphs = {}, {}, {}, {}
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


@dataclass
class _Graph:
    """One group's forward with autograd: the leaves and what the backward seeds."""

    x: torch.Tensor  # [B, n_g, T] runoff (a leaf requiring grad for a differentiable source)
    inflow: torch.Tensor | None  # [B, n_inlet, f, T] leaf
    kernels: RoutingKernels  # leaves
    part: torch.Tensor | None  # the group's share of the loss
    out: torch.Tensor  # [B, n_exit, f, T] exit outflow


def _differentiable(run: _GradRun) -> bool:
    return (callable(getattr(run.source, "backward", None))
            and getattr(run.source, "differentiable", True))


def _forward_graph(run: _GradRun, g: int, inflow: torch.Tensor | None
                   ) -> tuple[_Graph, torch.Tensor]:
    """Route group ``g`` with autograd from leaf copies of its inputs and kernels; returns
    the graph and the discharge ``[B, n_g, T]``."""
    x = run.source.read(g, run.reaches(g)).detach().requires_grad_(_differentiable(run))
    if inflow is not None:
        inflow = inflow.detach().requires_grad_(True)
    kd = _detached(run.kern_det[g], grad=True)
    with torch.enable_grad():
        q, out, _ = run.routers[g].forward_chunk(g, x, inflow, None, kd)
        part = _group_loss(run, g, q)
    return _Graph(x, inflow, kd, part, out), q


def forward_task(run_id: str, group: int, begin: Any, *upstream: TransferBuffer | None
                 ) -> TransferBuffer | None:
    """Route group ``group`` over the whole window from the upstream buffers; add its share
    of the loss; keep its inflow for the backward (or, without rematerialisation, its
    autograd graph); return its exits' buffer."""
    t0 = time.perf_counter()
    run = _get(run_id)
    g = int(group)
    inflow = _inflow(run, g, upstream)
    if run.training and not run.remat:
        graph, q = _forward_graph(run, g, inflow)
        run.graphs[g] = graph
        part, out, q = graph.part, graph.out.detach(), q.detach()
    else:
        x = run.source.read(g, run.reaches(g))
        with torch.no_grad():
            q, out, _ = run.routers[g].forward_chunk(g, x, inflow, None, run.kern_det[g])
            part = _group_loss(run, g, q)
        if run.training:
            run.inflow[g] = inflow
    with torch.no_grad():
        if part is not None:
            run.loss_sum += part.detach()
        _metrics(run, g, q)
    _tick(run, "forward", t0)
    # the exit channels are a view of the group's whole output: copy them, so that the
    # buffer does not keep the discharge of every reach alive while downstream groups wait
    return TransferBuffer(g, 0, out.clone()) if out.shape[1] else None


def backward_task(run_id: str, group: int, *downstream: Any) -> TransferBuffer | None:
    """Backpropagate through group ``group``: rematerialise its forward with autograd (or
    take the graph kept by the forward), seed it with its local loss and the gradients of
    its exits (from the downstream groups' results), accumulate the gradient of its kernels
    into the parameters and of its runoff into the source; return the gradient of its inlet
    inflow ``[B, n_inlet, f, T]``."""
    t0 = time.perf_counter()
    run = _get(run_id)
    g = int(group)
    grads = {d.group: d.data.to(run.device) for d in downstream
             if isinstance(d, TransferBuffer) and d.chunk < 0}
    graph = run.graphs.pop(g, None)
    if not grads and g not in run.gauges:  # nothing reaches the loss through this group
        run.kern.pop(g, None)
        run.inflow.pop(g, None)
        _tick(run, "backward", t0)
        return None
    if graph is None:
        graph, _ = _forward_graph(run, g, run.inflow.pop(g, None))
    roots, seeds = [], []
    if graph.part is not None:
        roots.append(graph.part)
        seeds.append(torch.ones_like(graph.part))
    if grads:
        seed = torch.zeros_like(graph.out)
        for d, loc_exit, loc_inlet in run.feeds[g]:
            if d in grads:
                seed.index_copy_(1, loc_exit, grads[d].index_select(1, loc_inlet)
                                 .to(seed.dtype))
        roots.append(graph.out)
        seeds.append(seed)
    if roots:
        torch.autograd.backward(roots, seeds)
    _tick(run, "backward", t0)
    t1 = time.perf_counter()
    kern = run.kern.pop(g, None)
    if kern is None:  # kernel_graph="recompute": aggregate again, with the graph
        with torch.enable_grad():
            kern = run.routers[g].aggregate(run.p_leaf)
    kd = graph.kernels
    pairs = [(w, gr) for w, gr in zip((kern.wr, kern.wu), (kd.wr.grad, kd.wu.grad))
             if gr is not None]
    if pairs:
        torch.autograd.backward([w for w, _ in pairs], [gr.to(w.dtype) for w, gr in pairs])
    del kern
    if graph.x.grad is not None:
        run.source.backward(g, run.reaches(g), graph.x.grad)
    _tick(run, "kernel_backward", t1)
    inflow = graph.inflow
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
    run.kern, run.kern_det, run.inflow, run.graphs = {}, {}, {}, {}
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
    shared, _ = source_parameters(run.source)
    out["source"] = [(p.grad if p.grad is not None else torch.zeros_like(p)).detach().cpu()
                     for p in shared]
    grads = getattr(run.source, "gradients", None)
    if grads is not None:
        out["runoff"] = {g: (run.reaches(g), v) for g, v in grads(run.mine.tolist()).items()}
    return out
