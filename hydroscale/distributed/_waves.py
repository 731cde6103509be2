"""What runs ON the workers for a wave run: forward waves, backward waves, a tree sum and a
step, over the groups of a :class:`~hydroscale.distributed.WavePlan` (DESIGN §3, "Backward
wave").  The runtime knows routing and autograd, not what is optimised: that is the *work*,
a picklable object given per worker by the driver (a calibration's objective, parameter
model, runoff source and optimiser; see :class:`WaveWork`).

Per run id a worker keeps a :class:`_WaveRun` in the one worker cache (:mod:`._cache`): the
network and its groups, one :class:`~hydroscale.routing.StagedRouter` per batch of its own
groups (up to ``batch_reaches`` reaches: a batch's kernels are aggregated in one set of
launches, and are one autograd leaf in which its groups' backwards add their gradients,
taken back through the aggregation once the batch's last group is done), the work, and the
per-pass state (kernels, the inlet inflow of every group, the partial value).  One pass is,
per worker: :func:`begin_task` (parameters and path kernels), one
:func:`forward_task` per group in topological order (the whole period in one task, from a
zero state), and when training one :func:`backward_task` per group in reverse order
(rematerialise the forward with autograd, or take the graph it kept; backpropagate the
group's objective and the gradients of its outgoing buffers; return the gradient of its
incoming buffers), :func:`end_task` (the parameters' backward; the payload of the tree sum),
then :func:`update_task` (the work's step).  :func:`call_task` runs a method of the work
(saving and loading its state, reading its parameters back).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from ..network import RiverNetwork
from ..routing import (
    LakeLayout,
    LakeNodes,
    RivTreeCluster,
    RoutingKernels,
    RoutingOptions,
    StagedRouter,
    recursive_aggregation,
    tensor_bytes,
)
from . import _cache as cache
from ._plan import batch_groups, group_sizes
from ._sizeof import TransferBuffer

__all__ = ["WaveContext", "WaveWork"]

logger = logging.getLogger(__name__)


@dataclass
class WaveContext:
    """What the work learns about its worker when the run is set up.

    ``rows``: int64 ``[n_own]`` global indices of the worker's reaches (sorted); ``mine``:
    its group ids; ``reaches(g)``: a group's reaches in its engine order."""

    network: RiverNetwork
    groups: RivTreeCluster
    mine: np.ndarray
    rows: np.ndarray
    device: torch.device
    dtype: torch.dtype
    worker_index: int

    def reaches(self, group: int) -> np.ndarray:
        a, b = (int(x) for x in self.groups.reach_ptr_cluster[group])
        return self.groups.order[a:b]


class WaveWork(Protocol):
    """The worker's part of what a wave run optimises (documented protocol).

    ``open(ctx)``: set up on the worker (move tensors to ``ctx.device``, make the optimiser).
    ``bounds()``: ``(low, high)`` ``[n_own, P]`` or ``[P]``: every parameter the run may use
    (the kernel window is fitted or checked at the corners), or None.
    ``parameters(training)``: ``[n_own, P]`` routing parameters of the worker's reaches
    (``ctx.rows``), with autograd when training.
    ``begin(pass_args, training)``: start a pass (``pass_args`` from the driver, small).
    ``read(group, reaches)``: lateral inflow ``[B, n_g, T]`` of a group (without gradient).
    ``objective(group, q, record)``: the group's share of the value (a differentiable
    scalar, or None), from its discharge ``q`` ``[B, n_g, T]``; with ``record`` (once per
    pass and group, in the forward) it also keeps what the pass reports.
    ``contributes(group)``: whether the group's discharge enters the value itself (a group
    that does not, and whose exits receive no gradient, is skipped by the backward).
    ``input_backward(group, reaches, grad)``: ``dvalue/d(inflow)`` of a group (optional;
    only when ``differentiable_input`` is true).
    ``shared_parameters()`` / ``local_parameters()``: trainable tensors replicated on every
    worker (their gradients are summed across workers) / held here only.
    ``step(iteration, step)``: after the summed gradients are set: the optimiser step and
    whatever follows (a snapshot); ``report()``: the worker's small figures of the pass.
    ``lake_parameters(training)`` (optional, runs with lakes): the level-pool parameters
    ``[L, P]`` of all lakes (float64, SI, columns
    :data:`~hydroscale.routing.LEVEL_POOL_PARAMS`), with autograd when training: the lake
    groups of the worker route with them and backpropagate into them; default the lakes'
    own parameters (no gradient).
    """

    differentiable_input: bool

    def open(self, ctx: WaveContext) -> None: ...
    def bounds(self) -> tuple[torch.Tensor, torch.Tensor] | None: ...
    def parameters(self, training: bool) -> torch.Tensor: ...
    def begin(self, pass_args: Any, training: bool) -> None: ...
    def read(self, group: int, reaches: np.ndarray) -> torch.Tensor: ...
    def objective(self, group: int, q: torch.Tensor, record: bool) -> torch.Tensor | None: ...
    def contributes(self, group: int) -> bool: ...
    def shared_parameters(self) -> list[torch.Tensor]: ...
    def local_parameters(self) -> list[torch.Tensor]: ...
    def step(self, iteration: int, step: bool) -> None: ...
    def report(self) -> dict[str, Any]: ...


@dataclass
class _Graph:
    """One group's forward with autograd: the leaves and what the backward seeds."""

    x: torch.Tensor  # [B, n_g, T] inflow (a leaf requiring grad for a differentiable input)
    inflow: torch.Tensor | None  # [B, n_inlet, f, T] leaf
    kernels: RoutingKernels | None  # leaves (None for a group of lakes)
    part: torch.Tensor | None  # the group's share of the value
    out: torch.Tensor  # [B, n_exit, f, T] exit outflow


@dataclass
class _WaveRun:
    run_id: str
    ctx: WaveContext
    routers: dict[int, StagedRouter]  # per batch of groups (see batch_of)
    work: Any
    feeds: dict[int, list[tuple[int, torch.Tensor, torch.Tensor]]]
    kernel_graph: str
    remat: bool
    # per pass
    training: bool = False
    params_own: torch.Tensor | None = None
    p_leaf: torch.Tensor | None = None
    kern: dict[int, RoutingKernels] = field(default_factory=dict)
    kern_det: dict[int, RoutingKernels] = field(default_factory=dict)
    inflow: dict[int, torch.Tensor | None] = field(default_factory=dict)
    graphs: dict[int, _Graph] = field(default_factory=dict)
    value: torch.Tensor | None = None
    parts: dict[int, torch.Tensor] = field(default_factory=dict)  # the value per group
    timers: dict[str, float] = field(default_factory=dict)
    lakes: LakeNodes | None = None  # the lake groups' step (runs with lakes)
    lake_p: torch.Tensor | None = None  # the work's lake parameters [L, P] of the pass
    lake_leaf: torch.Tensor | None = None  # their leaf copy the lake groups read
    options: RoutingOptions | None = None  # the routing the run was set up with
    batch_of: dict[int, int] = field(default_factory=dict)  # group -> its batch
    batches: dict[int, list[int]] = field(default_factory=dict)  # batch -> its groups
    # per pass: each batch's kernels as one leaf (its groups' graphs accumulate their
    # gradients in it) and its groups still to go backward
    kern_leaf: dict[int, RoutingKernels] = field(default_factory=dict)
    pending: dict[int, int] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.ctx.device

    def tick(self, key: str, t0: float) -> None:
        cache.sync(self.device)
        self.timers[key] = self.timers.get(key, 0.0) + time.perf_counter() - t0

    def full(self, own: torch.Tensor) -> torch.Tensor:
        """``[N, P]`` with the worker's rows set (the routers read no other row)."""
        full = own.new_zeros(self.ctx.network.n_reaches, own.shape[1])
        return full.index_copy(0, torch.as_tensor(self.ctx.rows, device=own.device), own)

    def corners(self) -> list[torch.Tensor]:
        """``[N, P]`` float64 sets with the worker's rows at each corner of the work's
        bounds (none when the work has no bounds: the current parameters)."""
        from ..irf import bound_corners

        b = self.work.bounds()
        if b is None:
            with torch.no_grad():
                return [self.full(self.work.parameters(False)).to(torch.float64)]
        low, high = b
        return [self.full(c.to(self.device)) for c in
                bound_corners(low, high, int(self.ctx.rows.size))]


def _get(run_id: str) -> _WaveRun:
    return cache.get(run_id)


# ---------------------------------------------------------------------- set-up
def setup_task(run_id: str, worker_index: int, ids: np.ndarray, downstream: np.ndarray,
               group_of: np.ndarray, mine: np.ndarray, options: RoutingOptions,
               waves: dict[str, Any], work: Any) -> dict[str, Any]:
    """Build this worker's part of a wave run; returns its auto window, timings and what the
    calibration planner needs (:func:`_plan_facts`).

    ``waves``: ``kernel_graph`` (``"keep"``/``"recompute"``/``"auto"``),
    ``rematerialise`` (bool or ``"auto"``; the choice of ``"auto"`` comes later, from the
    calibration plan, see :func:`strategy_task`),
    ``max_steps`` (the longest routed series, capping the auto window) and, for a plan cut
    at lakes, ``lakes`` (:class:`~hydroscale.routing.Lakes`) and ``dt`` (s)."""
    t = time.perf_counter()
    dev = cache.device()
    net = RiverNetwork(ids, downstream)
    cs = RivTreeCluster(net, group_of)
    mine = np.asarray(mine, np.int64)
    nodes = None
    if waves.get("lakes") is not None:
        nodes = LakeNodes(cs, LakeLayout.build(net, waves["lakes"]), dt=float(waves["dt"]),
                          substeps=options.substeps, device=dev)
    before = torch.cuda.memory_allocated(dev) if dev.type == "cuda" else 0
    # one router per batch of groups (up to batch_reaches reaches): its kernels are
    # aggregated in one set of launches, not one per group; with the layouts of its groups
    # (else built at the first pass): measured here
    linear = [int(g) for g in mine.tolist() if nodes is None or not nodes.is_lake_cluster[g]]
    batches = dict(enumerate(batch_groups(
        linear, np.diff(cs.reach_ptr_cluster, axis=1).ravel(),
        int(waves["batch_reaches"]))))
    routers = {b: StagedRouter(cs, options=options, only=gs, device=dev).prepare()
               for b, gs in batches.items()}
    cache.sync(dev)
    resident = (int(torch.cuda.memory_allocated(dev) - before) if dev.type == "cuda"
                else tensor_bytes(*routers.values()))
    rows = np.sort(np.concatenate([cs.cluster_reaches(int(g)) for g in mine.tolist()])) \
        if mine.size else np.zeros(0, np.int64)
    ctx = WaveContext(net, cs, mine, rows, dev, options.dtype, int(worker_index))
    work.open(ctx)
    # exits of every own group -> (downstream group, local exit rows, its local inlet rows)
    feeds: dict[int, list] = {}
    for g in mine.tolist():
        e0, e1 = (int(x) for x in cs.exit_ptr_cluster[g])
        inl = cs.exit_inlet[e0:e1]
        dst = cs.cluster_of[cs.inlet_reach[inl]]
        feeds[int(g)] = [(int(d), torch.as_tensor(np.flatnonzero(dst == d), device=dev),
                          torch.as_tensor(inl[dst == d] - int(cs.inlet_ptr_cluster[d, 0]),
                                          device=dev))
                         for d in np.unique(dst).tolist()]
    # the calibration plan's strategy is set once the window is known (strategy_task);
    # until then (and where none is planned) today's default: keep + rematerialise
    kg, remat = waves["kernel_graph"], waves["rematerialise"]
    run = _WaveRun(run_id, ctx, routers, work, feeds, "keep" if kg == "auto" else kg,
                   True if remat == "auto" else bool(remat), lakes=nodes, options=options,
                   batch_of={g: b for b, gs in batches.items() for g in gs},
                   batches=batches)
    cache.runs()[run_id] = run
    out: dict[str, Any] = {"device": str(dev), "groups": int(mine.size),
                           "reaches": int(rows.size)}
    out.update(_plan_facts(run, resident))
    if options.window == "auto":  # fitted for every parameter the run may use
        out["window"] = max((r.auto_window(c, max_steps=waves.get("max_steps"))
                             for c in run.corners() for r in routers.values()), default=2)
    else:
        out["window"] = int(options.window)
    cache.sync(dev)
    out["setup_s"] = time.perf_counter() - t
    return out


def _plan_facts(run: _WaveRun, resident: int) -> dict[str, Any]:
    """What the calibration planner needs of this worker
    (:func:`~hydroscale.routing.plan_calibration`): per own group ``[reaches, exits,
    inlets]``, per batch of groups (one router, one aggregation) ``[reaches, kernel rows,
    path pairs]``, the bytes the routers hold, the work's (its optional
    ``memory_bytes()``), whether the runoff is differentiable, and the memory this worker
    may use."""
    cs = run.ctx.groups
    reach_count = np.diff(cs.reach_ptr_cluster, axis=1).ravel()
    work_bytes = getattr(run.work, "memory_bytes", None)
    return {"sizes": group_sizes(cs, run.ctx.mine).tolist(),
            "batches": [[int(reach_count[run.batches[b]].sum()), int(r.kernel_rows()),
                         int(r.plan.n_pairs)] for b, r in run.routers.items()],
            "resident": int(resident),
            "work_bytes": int(work_bytes()) if work_bytes is not None else 0,
            "differentiable_input": bool(getattr(run.work, "differentiable_input", False)),
            "recursive": recursive_aggregation(run.options, run.device),
            "memory_limit": cache.memory_limit(run.device)}


def strategy_task(run_id: str, kernel_graph: str, rematerialise: bool) -> bool:
    """Set how the run's training passes keep their autograd graphs (the calibration plan's
    choice: ``kernel_graph`` ``"keep"``/``"recompute"``, ``rematerialise``)."""
    run = _get(run_id)
    run.kernel_graph, run.remat = str(kernel_graph), bool(rematerialise)
    return True


def window_task(run_id: str, window: int) -> bool:
    """Fix the common window of every router of the run."""
    for r in _get(run_id).routers.values():
        r.window = int(window)
    return True


def truncation_task(run_id: str) -> dict[int, float]:
    """The truncated mass (float64) of every group of this worker above its router's
    tolerance, at the worst corner of the work's bounds, with the run's window."""
    run = _get(run_id)
    over: dict[int, float] = {}
    for p in run.corners():
        for b, r in run.routers.items():
            with torch.no_grad():
                kern = r.aggregate(p, agg_dtype=torch.float64, check=False)
            for g in run.batches[b]:
                m = float(np.nan_to_num(kern.truncated_mass[g]))
                if m > r.window_tolerance:
                    over[g] = max(over.get(g, 0.0), m)
    return over


def teardown_task(run_id: str) -> bool:
    """Forget the run on this worker (frees its device memory)."""
    return cache.drop(run_id)


def call_task(run_id: str, method: str, *args: Any) -> Any:
    """``work.<method>(*args)`` on this worker's run (its state, read-backs)."""
    return getattr(_get(run_id).work, method)(*args)


# ---------------------------------------------------------------------- one pass
def begin_task(run_id: str, pass_args: Any, training: bool) -> bool:
    """Start a pass: the work's pass arguments, the parameters of the worker's reaches and
    every group's kernels (kept with their autograd graph when training with
    ``kernel_graph="keep"``)."""
    t0 = time.perf_counter()
    run = _get(run_id)
    run.training = bool(training)
    run.work.begin(pass_args, run.training)
    run.value, run.parts = None, {}
    run.inflow, run.graphs, run.kern, run.kern_det, run.timers = {}, {}, {}, {}, {}
    run.kern_leaf, run.pending = {}, {b: len(gs) for b, gs in run.batches.items()}
    for p in run.work.shared_parameters() + run.work.local_parameters():
        p.grad = None
    if run.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(run.device)
    with torch.set_grad_enabled(run.training):
        own = run.work.parameters(run.training)
    run.params_own = own
    run.p_leaf = run.full(own.detach()).requires_grad_(run.training)
    if run.lakes is not None:
        lake_fn = getattr(run.work, "lake_parameters", None)
        with torch.set_grad_enabled(run.training):
            run.lake_p = None if lake_fn is None else lake_fn(run.training)
        lp = (torch.as_tensor(run.lakes.layout.lakes.params) if run.lake_p is None
              else run.lake_p.detach())
        run.lake_leaf = lp.to(run.device, torch.float64).requires_grad_(
            run.training and run.lake_p is not None and run.lake_p.requires_grad)
    keep = run.training and run.kernel_graph == "keep"
    run.tick("begin", t0)  # the work's pass, its parameters
    t0 = time.perf_counter()
    for b, r in run.routers.items():
        with torch.set_grad_enabled(keep):
            k = r.aggregate(run.p_leaf)
        if keep:
            run.kern[b] = k
        run.kern_det[b] = _detached(k)
        if run.training:  # the leaf the groups' graphs read (their gradients add up in it)
            run.kern_leaf[b] = _detached(k, grad=True)
    run.tick("aggregate", t0)
    return True


def _detached(k: RoutingKernels, grad: bool = False) -> RoutingKernels:
    return RoutingKernels(k.wr.detach().requires_grad_(grad),
                          k.wu.detach().requires_grad_(grad and k.wu.numel() > 0),
                          k.window, k.truncated_mass)


def _inflow(run: _WaveRun, g: int, upstream: tuple) -> torch.Tensor | None:
    outflows = {u.group: u.data.to(run.device) for u in upstream if u is not None}
    if not outflows:
        return None
    if g not in run.batch_of:  # a group of lakes
        return run.lakes.inflow_for(g, outflows)
    return run.routers[run.batch_of[g]].inflow_for(g, outflows)


def _route(run: _WaveRun, g: int, x: torch.Tensor, inflow: torch.Tensor | None,
           kernels: RoutingKernels | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Group ``g`` over the whole period from a zero state (lakes: from their ``ifd``
    elevation, with the pass's lake parameters): discharge ``[B, n_g, T]`` and exit outflow
    ``[B, n_exit, f, T]``."""
    if g in run.batch_of:  # kernels: its batch's
        q, out, _ = run.routers[run.batch_of[g]].forward_chunk(g, x, inflow, None, kernels)
        return q, out
    nodes = run.lakes
    node_run = nodes.run_of(g)
    lp = nodes.params(run.lake_leaf)
    h0 = nodes.initial_elevation(node_run, int(x.shape[0]), lp)
    q, out, _ = nodes.step(node_run, x, inflow, h0, lp, out_dtype=run.ctx.dtype)
    return q, out


def _forward_graph(run: _WaveRun, g: int, inflow: torch.Tensor | None, record: bool
                   ) -> tuple[_Graph, torch.Tensor]:
    """Route group ``g`` with autograd from leaf copies of its inputs and its batch's kernel
    leaf (shared by the batch's groups); returns the graph and the discharge ``[B, n_g,
    T]``."""
    x = run.work.read(g, run.ctx.reaches(g)).detach().requires_grad_(
        bool(run.work.differentiable_input))
    if inflow is not None:
        inflow = inflow.detach().requires_grad_(True)
    kd = run.kern_leaf[run.batch_of[g]] if g in run.batch_of else None
    with torch.enable_grad():
        q, out = _route(run, g, x, inflow, kd)
        part = run.work.objective(g, q, record)
    return _Graph(x, inflow, kd, part, out), q


def forward_task(run_id: str, group: int, begin: Any, *upstream: TransferBuffer | None
                 ) -> TransferBuffer | None:
    """Route group ``group`` over the whole period from the upstream buffers; add its share
    of the value; keep its inflow for the backward (or, without rematerialisation, its
    autograd graph); return its exits' buffer."""
    t0 = time.perf_counter()
    run = _get(run_id)
    g = int(group)
    inflow = _inflow(run, g, upstream)
    if run.training and not run.remat:
        graph, _ = _forward_graph(run, g, inflow, True)
        run.graphs[g] = graph
        part, out = graph.part, graph.out.detach()
    else:
        x = run.work.read(g, run.ctx.reaches(g))
        with torch.no_grad():
            q, out = _route(run, g, x, inflow, run.kern_det.get(run.batch_of.get(g)))
            part = run.work.objective(g, q, True)
        if run.training:
            run.inflow[g] = inflow
    if part is not None:
        run.parts[g] = part.detach().to(torch.float64)
    run.tick("forward", t0)
    # the exit channels are a view of the group's whole output: copy them, so that the
    # buffer does not keep the discharge of every reach alive while downstream groups wait
    return TransferBuffer(g, 0, out.clone()) if out.shape[1] else None


def backward_task(run_id: str, group: int, *downstream: Any) -> TransferBuffer | None:
    """Backpropagate through group ``group``: rematerialise its forward with autograd (or
    take the graph kept by the forward), seed it with its objective and the gradients of its
    exits (from the downstream groups' results), accumulate the gradient of its kernels into
    the parameters and of its inflow into the work; return the gradient of its inlet inflow
    ``[B, n_inlet, f, T]``."""
    t0 = time.perf_counter()
    run = _get(run_id)
    g = int(group)
    grads = {d.group: d.data.to(run.device) for d in downstream
             if isinstance(d, TransferBuffer) and d.chunk < 0}
    graph = run.graphs.pop(g, None)
    if graph is None and not grads and not run.work.contributes(g):
        run.inflow.pop(g, None)  # nothing reaches the value through this group
        run.tick("backward", t0)
        _group_done(run, g)
        return None
    if graph is None:
        graph, _ = _forward_graph(run, g, run.inflow.pop(g, None), False)
    roots, seeds = [], []
    if graph.part is not None and graph.part.requires_grad:
        roots.append(graph.part)
        seeds.append(torch.ones_like(graph.part))
    if grads and graph.out.requires_grad:  # (a lake group may depend on no leaf)
        seed = torch.zeros_like(graph.out)
        for d, loc_exit, loc_inlet in run.feeds[g]:
            if d in grads:
                seed.index_copy_(1, loc_exit, grads[d].index_select(1, loc_inlet)
                                 .to(seed.dtype))
        roots.append(graph.out)
        seeds.append(seed)
    if not roots:  # nothing reaches the value through this group
        run.tick("backward", t0)
        _group_done(run, g)
        return None
    torch.autograd.backward(roots, seeds)
    del roots, seeds
    if graph.x.grad is not None:
        run.work.input_backward(g, run.ctx.reaches(g), graph.x.grad)
    run.tick("backward", t0)
    _group_done(run, g)
    inflow = graph.inflow
    if inflow is None or inflow.grad is None:
        return None
    return TransferBuffer(g, -1, inflow.grad.detach())


def _group_done(run: _WaveRun, g: int) -> None:
    """Count group ``g``'s backward as done; after the last group of its batch, take the
    batch's kernel gradients (accumulated in its leaf by its groups) back through its
    aggregation, kept (``kernel_graph="keep"``) or run again with the graph
    (``"recompute"``), into the parameters: one backward per batch, not per group."""
    b = run.batch_of.get(g)
    if b is None:  # a group of lakes: its gradient is in the lakes' leaf
        return
    run.pending[b] -= 1
    if run.pending[b]:
        return
    t1 = time.perf_counter()
    leaf, kern = run.kern_leaf.pop(b, None), run.kern.pop(b, None)
    grads = [] if leaf is None else [leaf.wr.grad, leaf.wu.grad]
    if any(gr is not None for gr in grads):
        if kern is None:  # kernel_graph="recompute": aggregate again, with the graph
            with torch.enable_grad():
                kern = run.routers[b].aggregate(run.p_leaf)
            run.tick("reaggregate", t1)  # (a share of kernel_backward)
        pairs = [(w, gr) for w, gr in zip((kern.wr, kern.wu), grads)
                 if gr is not None and w.requires_grad]
        if pairs:
            torch.autograd.backward([w for w, _ in pairs],
                                    [gr.to(w.dtype) for w, gr in pairs])
    del kern, leaf, grads
    run.tick("kernel_backward", t1)


def end_task(run_id: str, *done: Any) -> dict[str, Any]:
    """After the worker's last backward (or forward): its partial value and the gradients
    of the shared parameters (the payload of the tree sum)."""
    t0 = time.perf_counter()
    run = _get(run_id)
    if run.training and run.p_leaf is not None and run.p_leaf.grad is not None:
        idx = torch.as_tensor(run.ctx.rows, device=run.device)
        run.params_own.backward(run.p_leaf.grad.index_select(0, idx).to(run.params_own.dtype))
    if run.training and run.lake_leaf is not None and run.lake_leaf.grad is not None:
        run.lake_p.backward(run.lake_leaf.grad.to(run.lake_p.dtype))
    shared = []
    if run.training:
        shared = [(p.grad if p.grad is not None else torch.zeros_like(p)).detach().cpu()
                  for p in run.work.shared_parameters()]
    run.tick("end", t0)
    # the groups' parts summed in group order: the same bits whatever order the tasks of
    # one wave ran in on this worker (a recovered iteration equals the undisturbed one)
    parts = [run.parts[g] for g in sorted(run.parts)]
    run.value = torch.stack(parts).sum() if parts else torch.zeros((), dtype=torch.float64)
    return {"value": float(run.value.item()), "shared": shared}


def sum_task(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """One node of the tree sum: ``a + b`` (value and shared gradients)."""
    return {"value": a["value"] + b["value"],
            "shared": [x + y for x, y in zip(a["shared"], b["shared"])]}


def update_task(run_id: str, total: dict[str, Any], iteration: int, step: bool
                ) -> dict[str, Any]:
    """Set the summed shared gradients, let the work step (``step``); return the total
    value, the work's report and this worker's figures."""
    t0 = time.perf_counter()
    run = _get(run_id)
    if run.training:
        for p, gsum in zip(run.work.shared_parameters(), total["shared"]):
            p.grad = gsum.to(p.device, p.dtype).clone()
        for p in run.work.local_parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
    run.work.step(int(iteration), bool(step and run.training))
    run.kern, run.kern_det, run.inflow, run.graphs = {}, {}, {}, {}
    run.kern_leaf, run.pending = {}, {}
    run.p_leaf = run.params_own = run.lake_p = run.lake_leaf = None
    run.tick("update", t0)
    return {"value": float(total["value"]), **run.work.report(),
            "peak_bytes": cache.peak_bytes(run.device), "timers": dict(run.timers)}
