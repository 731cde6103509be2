"""The calibration planner: each worker's peak memory in one training iteration, estimated
before the first one, and the fastest way of keeping autograd graphs that fits.

A training iteration of the wave runtime (:mod:`hydroscale.distributed`) holds on each
worker's device, per group ``g`` of ``n_g`` reaches, ``e_g`` exits and ``i_g`` inlets, and
per batch ``u`` of groups (one router aggregates a batch's kernels at once) of ``n_u``
reaches, ``P_u`` path pairs and ``R_u`` kernel rows (``K`` window taps, ``f`` sub-steps,
``L = K f``, ``T`` steps, batch ``B``; ``s`` bytes per stored value, ``a`` per aggregation
value):

- **routers**: their path layouts and index tensors (measured at set-up) and the hop index
  tensors of the aggregation (:data:`PAIR_INDEX_BYTES` per pair, built at its first run);
- **kernels**: every batch's path kernels, detached, ``R_u K s``;
- **kernel graph** (``kernel_graph="keep"``): every batch's aggregation graph from the
  start of the iteration to its last group's backward: the sub-step kernels of every hop
  ``[P_u, L]`` (each saved once in ``a`` with the recursive hops of the Triton backend; in
  ``save_dtype`` with FFT hops) and the reaches' own kernels ``[n_u, L]`` (twice: the IRF's
  graph);
- **inflow** (rematerialised forward): every group's inlet inflow ``[B, i_g, f, T]``, kept
  from its forward to its backward; **buffers**: the exits' transfer buffers ``[B, e_g, f,
  T]`` (their outflow in the forward, their gradient in the backward) waiting for the group
  that reads them;
- **forward graphs** (``rematerialise=False``): every group's forward graph, its runoff
  ``[B, n_g, T]`` (saved by the path convolution) and its exit outflow ``[B, e_g, f, T]``
  (the discharge is not saved: the loss saves its gauges' rows only);
- per routing task (the largest group): its forward (:data:`TASK_REACH_ARRAYS` ``[B, n_g,
  T]`` arrays, :data:`TASK_CHANNEL_ARRAYS` ``[B, f, T]`` per exit and inlet), or its
  backward: the rematerialised forward and the gradients (:data:`BACKWARD_REACH_ARRAYS`, one
  more for a differentiable runoff, :data:`BACKWARD_CHANNEL_ARRAYS`);
- the kernel gradients of the groups gone backward, added up in their batch's leaf until
  its last group is done (at most the kernels' size again), then the backward through the
  largest batch's kernels: its gradients in ``a`` (``R_u K a``) and the hop gradients ``3
  n_u L a``, and with ``"recompute"`` its aggregation graph and outputs made again (``R_u K
  (3 a + s)``);
- the **work**: observations, parameters with their gradients and optimiser state, a runoff
  tensor held on the worker (what the work reports).

The four strategies, fastest first (one routing pass saved beats one aggregation saved):
``keep`` + no rematerialisation, ``recompute`` + no rematerialisation, ``keep`` +
rematerialisation, ``recompute`` + rematerialisation.  :func:`plan_calibration` estimates
the peak of each per worker (the largest of the set-up of the iteration's kernels, its
forward and its backward phases, group by group) and chooses the first that fits every
worker within :data:`~hydroscale.routing._run_plan.SLACK` of its limit, unless the caller
fixed ``kernel_graph`` or ``rematerialise``; an explicit choice that does not fit is logged
as a warning naming the estimate.  If no strategy fits it raises
:class:`~hydroscale.routing.RunTooLargeError`.

Calibrated against one H200 (``bench/calibration.py --workers 1 --reaches 3000000 --days
3650 --kernel-graph recompute --rematerialise yes``: f = 24, K = 14, float32 with float64
aggregation, 74 groups, 200 gauges): measured training peak 54.67 GB; from that
partition's group sizes, kernel rows and pairs, and the routers' bytes counted on a CPU (80 B
per kernel row), this module estimates 66.5 GB, an upper bound 22% above (and 113.6 GB for
``recompute`` without rematerialisation, 216 GB for ``keep`` + rematerialisation, 263 GB
for ``keep`` without: ``"auto"`` picks ``recompute`` without rematerialisation on 149.6 GB).
:func:`plan_device_calibration` estimates the one-device
:class:`~hydroscale.calibration.Calibrator` the same way (one group, everything kept).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ._memory import RunTooLargeError, estimate_engine_bytes, format_bytes
from ._run_plan import SLACK, TASK_CHANNEL_ARRAYS, TASK_REACH_ARRAYS, gb_cell

__all__ = ["CalibrationPlan", "CalibrationWorkerPlan", "STRATEGIES", "plan_calibration",
           "plan_device_calibration", "recursive_aggregation", "strategy_name"]

logger = logging.getLogger(__name__)

#: (kernel_graph, rematerialise), fastest first
STRATEGIES: tuple[tuple[str, bool], ...] = (
    ("keep", False), ("recompute", False), ("keep", True), ("recompute", True))
#: bytes per path pair of the aggregation's hop index tensors (destination slot, parent,
#: the pair's cluster: int64 each), built at a router's first aggregation
PAIR_INDEX_BYTES = 24
#: ``[B, n_g, T]`` arrays of a group's backward: the runoff its graph holds, the discharge
#: (then its gradient), the engine's temporaries
BACKWARD_REACH_ARRAYS = 3
#: ``[B, f, T]`` arrays per exit and inlet in a group's backward: the exit outflow, its
#: gradient seed, the gradient of the exit rows, the inlet inflow's gradient
BACKWARD_CHANNEL_ARRAYS = 4
#: hop-sized ``[n_g, L]`` arrays alive in an aggregation's backward (the gradient of a hop,
#: of its parent hop, and their sum) or besides its graph in the forward
HOP_ARRAYS = 3


def recursive_aggregation(options: Any, device: Any) -> bool:
    """Whether a router of ``options`` (:class:`~hydroscale.routing.RoutingOptions`) on
    ``device`` aggregates by the IRF's recursion (the Triton backend and an IRF with a
    recursive form), which saves every hop's kernels for the backward."""
    from ..kernels import select_backend

    return (options.spec.recursion is not None
            and select_backend(device, options.backend) == "triton")


def strategy_name(kernel_graph: str, rematerialise: bool) -> str:
    """``"keep+remat"``, ``"recompute+no-remat"``, ..."""
    return f"{kernel_graph}+{'remat' if rematerialise else 'no-remat'}"


@dataclass
class CalibrationWorkerPlan:
    """One worker's estimate (bytes) of a training iteration.

    ``routers``, ``kernels``, ``kernel_graph`` (every batch's, with ``"keep"``), ``inflow``
    (kept between the waves), ``buffers`` (transfer buffers), ``forward_graphs`` (every
    group's, without rematerialisation; beyond its inflow), ``aggregation`` (the largest
    batch's aggregation temporaries), ``task`` (the largest forward task), ``backward`` (the
    largest group's routing backward and the largest batch's kernel backward, with
    ``"keep"``) and ``recompute`` (what
    ``"recompute"`` adds to it), ``work``; ``peaks``: the estimated peak of each strategy
    (:func:`strategy_name` keys); ``peak``: the chosen one's; ``limit``: what it is compared
    with (None: unknown) and where that comes from.
    """

    worker: int
    groups: int
    reaches: int
    routers: int
    kernels: int
    kernel_graph: int
    inflow: int
    buffers: int
    forward_graphs: int
    aggregation: int
    task: int
    backward: int
    recompute: int
    work: int
    peaks: dict[str, int]
    peak: int
    limit: int | None
    limit_source: str

    def fits(self, name: str) -> bool:
        return self.limit is None or self.peaks[name] <= self.limit * SLACK

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CalibrationPlan:
    """The memory plan of a calibration: the strategy chosen and each worker's estimate.

    ``kernel_graph`` / ``rematerialise``: the strategy the run uses; ``chosen``: how
    (``"auto"``: the fastest that fits; ``"given"``: fixed by the caller; ``"unknown
    limit"``: the default, keep + rematerialise, where no limit is known); ``fits``: whether
    its estimate is within every worker's limit.
    """

    kernel_graph: str
    rematerialise: bool
    chosen: str
    fits: bool
    window: int
    substeps: int
    n_steps: int
    batch: int
    engine: str = "waves"
    workers: list[CalibrationWorkerPlan] = field(default_factory=list)

    @property
    def strategy(self) -> str:
        return strategy_name(self.kernel_graph, self.rematerialise)

    def peaks(self) -> list[int]:
        """The chosen strategy's estimated peak per worker (bytes)."""
        return [w.peak for w in self.workers]

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["workers"] = [w.as_dict() for w in self.workers]
        d["strategy"] = self.strategy
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CalibrationPlan:
        """The plan :meth:`as_dict` wrote."""
        d = {k: v for k, v in d.items() if k != "strategy"}
        return cls(**{**d, "workers": [CalibrationWorkerPlan(**w) for w in d["workers"]]})

    def table(self) -> str:
        """The plan as text: the strategy, one line per worker in GB, and every strategy's
        estimated peak per worker."""
        g = gb_cell
        how = {"auto": "the fastest that fits", "given": "as given",
               "unknown limit": "the default: no memory limit known"}.get(self.chosen,
                                                                          self.chosen)
        lines = [
            f"plan: calibration ({self.engine}), kernel_graph {self.kernel_graph}, "
            f"rematerialise {'yes' if self.rematerialise else 'no'} ({how}"
            f"{'' if self.fits else '; DOES NOT FIT'}), window {self.window} steps, "
            f"f = {self.substeps}, {self.n_steps} steps, batch {self.batch}",
            "worker  groups   reaches  routers GB  kernels GB  kernel graph GB  inflow GB  "
            "buffers GB  fwd graphs GB  task GB  backward GB  recompute GB  work GB  "
            "peak GB  limit GB",
        ]
        for w in self.workers:
            lines.append(
                f"{w.worker:>6}  {w.groups:>6}  {w.reaches:>8}  {g(w.routers):>10}  "
                f"{g(w.kernels):>10}  {g(w.kernel_graph):>15}  {g(w.inflow):>9}  "
                f"{g(w.buffers):>10}  {g(w.forward_graphs):>13}  {g(w.task):>7}  "
                f"{g(w.backward):>11}  {g(w.recompute):>12}  {g(w.work):>7}  "
                f"{g(w.peak):>7}  {g(w.limit):>8}")
        lines.append("peak GB per strategy (per worker):")
        for kg, remat in STRATEGIES:
            name = strategy_name(kg, remat)
            if all(name in w.peaks for w in self.workers):
                mark = " <- chosen" if name == self.strategy else ""
                ok = "fits" if all(w.fits(name) for w in self.workers) else "does not fit"
                lines.append(f"  {name:<20} " + "  ".join(g(w.peaks[name])
                                                          for w in self.workers)
                             + f"  ({ok}){mark}")
        return "\n".join(lines)


def _groups(w: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """A worker's report as ``[G, 3]`` group sizes ``[reaches, exits, inlets]`` and ``[U,
    3]`` aggregation units ``[reaches, kernel rows, pairs]``: its ``batches`` (the groups one
    router aggregates at once), or one unit per group from per-group ``kernel_rows`` and
    ``pairs``."""
    g = np.asarray(w.get("groups", []), dtype=np.int64).reshape(-1, 3)
    if "batches" in w:
        return g, np.asarray(w["batches"], dtype=np.int64).reshape(-1, 3)
    rows = np.asarray(w.get("kernel_rows", np.zeros(len(g))), dtype=np.int64).reshape(-1)
    pairs = np.asarray(w.get("pairs", np.zeros(len(g))), dtype=np.int64).reshape(-1)
    if rows.size != len(g) or pairs.size != len(g):
        raise ValueError(f"a worker's report needs one kernel_rows and pairs entry per group: "
                         f"{len(g)} groups, {rows.size} kernel_rows, {pairs.size} pairs")
    return g, np.stack([g[:, 0], rows, pairs], axis=1)


def _worker_plan(i: int, w: dict[str, Any], limit: tuple[int | None, str], *, k: int, f: int,
                 t: int, b: int, item: int, agg: int, save: int, recursive: bool,
                 differentiable_input: bool) -> CalibrationWorkerPlan:
    g, units = _groups(w)
    n, e, inl = g[:, 0], g[:, 1], g[:, 2]
    un, rows, pairs = units[:, 0], units[:, 1], units[:, 2]
    length = k * f
    bt = b * t * item  # bytes of one [B, 1, T] row
    # the aggregation graph of each unit (a batch of groups): every hop's sub-step kernels,
    # saved once (recursive hops) or each extended hop's input in the save dtype (FFT
    # hops), and the reaches' own kernels with the IRF's graph
    if recursive:
        graph = (pairs + 2 * un) * length * agg
    else:
        graph = np.maximum(pairs - un, 0) * length * save + 2 * un * length * agg
    outputs = rows * k * (3 * agg + item)  # the step kernels, joined, gathered, stored
    hops = HOP_ARRAYS * un * length * agg
    agg_temp = outputs + hops  # an aggregation without graph, beyond the kernels it leaves
    fwd_task = (TASK_REACH_ARRAYS * n + TASK_CHANNEL_ARRAYS * f * (e + inl)) * bt
    reach_arrays = BACKWARD_REACH_ARRAYS + (1 if differentiable_input else 0)
    # a group's backward routes it; its kernels' gradients add up in its unit's leaf (held
    # until the unit's last group is done: at most every unit's, ``kernels`` again), then
    # go back through the unit's aggregation with its hop gradients and, with "recompute",
    # its graph made again
    bwd_routing = (reach_arrays * n + BACKWARD_CHANNEL_ARRAYS * f * (e + inl)) * bt
    kernel_bwd = rows * k * agg + hops
    top = lambda a: int(a.max()) if a.size else 0  # noqa: E731
    routers = int(w.get("resident", 0)) + int(pairs.sum()) * PAIR_INDEX_BYTES
    kernels = int((rows * k * item).sum())
    work = int(w.get("work", 0))
    inflow = int((inl * f).sum()) * bt
    buffers = int((e * f).sum()) * bt
    fwd_graphs = int((n + e * f).sum()) * bt
    keep_graph = int(graph.sum())
    bwd_keep = top(bwd_routing) + top(kernel_bwd)
    bwd_recompute = top(bwd_routing) + top(kernel_bwd + graph + outputs)
    base = routers + kernels + work
    peaks = {}
    for kg, remat in STRATEGIES:
        held = base + buffers + inflow + (keep_graph if kg == "keep" else 0) \
            + (0 if remat else fwd_graphs)
        begin = base + (keep_graph if kg == "keep" else 0) + top(agg_temp)
        forward = held + top(fwd_task)
        backward = held + kernels + (bwd_keep if kg == "keep" else bwd_recompute)
        peaks[strategy_name(kg, remat)] = max(begin, forward, backward)
    return CalibrationWorkerPlan(
        worker=i, groups=len(g), reaches=int(n.sum()), routers=routers, kernels=kernels,
        kernel_graph=keep_graph, inflow=inflow, buffers=buffers, forward_graphs=fwd_graphs,
        aggregation=top(agg_temp), task=top(fwd_task), backward=bwd_keep,
        recompute=bwd_recompute - bwd_keep, work=work, peaks=peaks, peak=0,
        limit=None if limit[0] is None else int(limit[0]), limit_source=str(limit[1]))


def _choose(plans: list[CalibrationWorkerPlan], kernel_graph: str, rematerialise: Any,
            what: str) -> tuple[str, bool, str, bool]:
    """(kernel_graph, rematerialise, chosen, fits) for the workers' estimates."""
    if kernel_graph not in ("auto", "keep", "recompute"):
        raise ValueError(f"kernel_graph must be 'auto', 'keep' or 'recompute', got "
                         f"{kernel_graph!r}")
    if rematerialise != "auto" and not isinstance(rematerialise, (bool, np.bool_)):
        raise ValueError(f"rematerialise must be 'auto', True or False, got {rematerialise!r}")
    allowed = [(kg, r) for kg, r in STRATEGIES
               if kernel_graph in ("auto", kg) and rematerialise in ("auto", r)]
    fits = [(kg, r) for kg, r in STRATEGIES
            if all(p.fits(strategy_name(kg, r)) for p in plans)]
    if not fits:
        _refuse(plans, what)
    if all(p.limit is None for p in plans):
        kg = "keep" if kernel_graph == "auto" else kernel_graph
        r = True if rematerialise == "auto" else bool(rematerialise)
        both = kernel_graph != "auto" and rematerialise != "auto"
        return kg, r, "given" if both else "unknown limit", True
    given = kernel_graph != "auto" or rematerialise != "auto"
    for kg, r in allowed:
        if (kg, r) in fits:
            return kg, r, "given" if given else "auto", True
    # the caller's choice does not fit, another would: kept, with a warning
    kg, r = allowed[-1]
    name = strategy_name(kg, r)
    worst = max(plans, key=lambda p: p.peaks[name] / max(1, p.limit or 1))
    better = strategy_name(*fits[0])
    logger.warning(
        "%s: kernel_graph=%s, rematerialise=%s is estimated at %s on worker %d, above the "
        "%s it may use of %s (%s); %s would fit (estimated %s): leave kernel_graph and "
        "rematerialise to 'auto' to use it", what, kg, r, format_bytes(worst.peaks[name]),
        worst.worker, format_bytes(int((worst.limit or 0) * SLACK)),
        format_bytes(worst.limit or 0), worst.limit_source, better,
        format_bytes(worst.peaks[better]))
    return kg, r, "given", False


def _refuse(plans: list[CalibrationWorkerPlan], what: str) -> None:
    name = strategy_name("recompute", True)  # the leanest
    worst = max(plans, key=lambda p: p.peaks[name] / max(1, p.limit or 1))
    raise RunTooLargeError(
        f"{what} does not fit worker {worst.worker}: even with the kernels aggregated again "
        f"in the backward (kernel_graph='recompute') and each group's forward routed again "
        f"(rematerialise=True) an iteration needs {format_bytes(worst.peaks[name])} "
        f"(routers {format_bytes(worst.routers)}, path kernels "
        f"{format_bytes(worst.kernels)}, inflow and transfer buffers "
        f"{format_bytes(worst.inflow + worst.buffers)}, the largest routing task "
        f"{format_bytes(worst.task)}, the largest backward "
        f"{format_bytes(worst.backward + worst.recompute)}) but may use "
        f"{format_bytes(int((worst.limit or 0) * SLACK))} of "
        f"{format_bytes(worst.limit or 0)} ({worst.limit_source}): lower batch_reaches "
        f"(routing.max_reaches: reaches per group), the window (routing.window) or "
        f"substeps, calibrate on shorter windows, use more workers, or raise memory_limit")


def plan_calibration(
    workers: list[dict[str, Any]],
    *,
    window: int,
    substeps: int,
    n_steps: int,
    batch: int = 1,
    itemsize: int = 4,
    aggregate_itemsize: int = 8,
    save_itemsize: int | None = None,
    recursive: bool = False,
    differentiable_input: bool = False,
    limits: list[tuple[int | None, str]] | None = None,
    kernel_graph: str = "auto",
    rematerialise: Any = "auto",
    what: str = "the calibration",
) -> CalibrationPlan:
    """Estimate each worker's peak in a training iteration and choose the strategy.

    Parameters
    ----------
    workers : one dict per worker (what the wave runtime's set-up reports): ``groups``
        ``[[reaches, exits, inlets] per group]``, ``batches`` ``[[reaches, kernel rows,
        pairs] per batch]`` (the groups one router aggregates at once; or ``kernel_rows``
        and ``pairs`` per group: a batch each), ``resident`` (bytes its routers hold) and
        ``work`` (bytes of its work).
    window, substeps, n_steps, batch : K (steps), f, T (steps routed per pass), B.
    itemsize, aggregate_itemsize : bytes per stored value (runoff, kernels) and per value
        of the aggregation; ``save_itemsize``: of the sub-step kernels the FFT hops save
        (default the narrower of the two).
    recursive : the aggregation extends paths by the IRF's recursion (Triton backend):
        every hop's kernels are saved in the aggregation dtype.
    differentiable_input : the runoff is differentiable (its gradient is one more array).
    limits : per worker ``(bytes or None, where the figure comes from)``.
    kernel_graph, rematerialise : ``"auto"`` (the fastest strategy that fits) or fixed.
    what : the run, in messages.

    Raises
    ------
    RunTooLargeError : no strategy fits a worker.
    """
    n_w = len(workers)
    limits = limits or [(None, "unknown")] * n_w
    save = int(save_itemsize or min(itemsize, aggregate_itemsize))
    plans = [_worker_plan(i, w, limits[i], k=int(window), f=int(substeps), t=int(n_steps),
                          b=int(batch), item=int(itemsize), agg=int(aggregate_itemsize),
                          save=save, recursive=bool(recursive),
                          differentiable_input=bool(differentiable_input))
             for i, w in enumerate(workers)]
    kg, remat, chosen, fits = _choose(plans, kernel_graph, rematerialise, what)
    for p in plans:
        p.peak = p.peaks[strategy_name(kg, remat)]
    plan = CalibrationPlan(kg, remat, chosen, fits, int(window), int(substeps), int(n_steps),
                           int(batch), "waves", plans)
    logger.info("%s\n%s", what, plan.table())
    return plan


def plan_device_calibration(
    *,
    n_reaches: int,
    n_steps: int,
    batch: int,
    substeps: int,
    window: int | None,
    kernel_rows: int | None,
    pairs: int | None,
    n_exits: int = 0,
    routers: int = 0,
    work: int = 0,
    itemsize: int = 4,
    aggregate_itemsize: int = 8,
    save_itemsize: int | None = None,
    recursive: bool = False,
    engine: str = "torch",
    limit: tuple[int | None, str] = (None, "unknown"),
    what: str = "the calibration",
) -> CalibrationPlan:
    """The plan of a one-device :class:`~hydroscale.calibration.Calibrator`: one worker,
    one group (the whole network), every graph kept through the iteration (``keep``, no
    rematerialisation: it routes the network once, with autograd).

    A block-sparse engine (``kernel_rows`` and ``pairs`` of its router given) is counted as
    a group of the wave runtime whose exit buffer is the router's transfer buffer
    (``n_exits`` exits); the network's runoff is held (``work`` includes it) and its
    discharge ``[B, N, T]`` and the runoff gathered per batch are kept for the backward.
    Another engine (``kernel_rows`` None) is bounded by three times its routing
    (:func:`~hydroscale.routing.estimate_engine_bytes`: its values, their graph and
    gradients), a coarse figure.

    Raises :class:`RunTooLargeError` (naming the settings to change) when it does not fit.
    """
    b, t, f = int(batch), int(n_steps), int(substeps)
    bt = b * t * int(itemsize)
    if kernel_rows is None:
        import torch

        dtype = torch.float64 if itemsize == 8 else torch.float32
        route = estimate_engine_bytes(engine, int(n_reaches), t, f, b, dtype)
        peak = int(routers) + int(work) + 3 * route
        plans = [CalibrationWorkerPlan(
            worker=0, groups=1, reaches=int(n_reaches), routers=int(routers), kernels=0,
            kernel_graph=0, inflow=0, buffers=0, forward_graphs=route, aggregation=0,
            task=route, backward=route, recompute=0, work=int(work),
            peaks={strategy_name("keep", False): peak}, peak=peak,
            limit=limit[0], limit_source=str(limit[1]))]
    else:
        w = {"groups": [[int(n_reaches), int(n_exits), 0]], "kernel_rows": [int(kernel_rows)],
             "pairs": [int(pairs or 0)], "resident": int(routers), "work": int(work)}
        p = _worker_plan(0, w, limit, k=int(window or 1), f=f, t=t, b=b, item=int(itemsize),
                         agg=int(aggregate_itemsize),
                         save=int(save_itemsize or min(itemsize, aggregate_itemsize)),
                         recursive=bool(recursive), differentiable_input=False)
        # one pass over the whole network: the gathered runoff and the discharge are kept
        p.forward_graphs += int(n_reaches) * bt
        name = strategy_name("keep", False)
        held = p.routers + p.kernels + p.work + p.kernel_graph + p.buffers + p.forward_graphs
        p.peaks = {name: max(held + p.task, held + p.backward,
                             p.routers + p.kernels + p.work + p.kernel_graph + p.aggregation)}
        p.peak = p.peaks[name]
        plans = [p]
    fits = plans[0].fits(strategy_name("keep", False))
    plan = CalibrationPlan("keep", False, "given", fits, int(window or 0), f, t, b, engine,
                           plans)
    if not fits:
        w0 = plans[0]
        raise RunTooLargeError(
            f"{what} does not fit its device: an iteration on one device "
            f"({engine} engine) needs {format_bytes(w0.peak)} (routers "
            f"{format_bytes(w0.routers)}, path kernels {format_bytes(w0.kernels)} and their "
            f"graph {format_bytes(w0.kernel_graph)}, the network's forward graph "
            f"{format_bytes(w0.forward_graphs + w0.buffers)}, its backward "
            f"{format_bytes(w0.backward)}, runoff, observations and parameters "
            f"{format_bytes(w0.work)}) but may use {format_bytes(int((w0.limit or 0) * SLACK))}"
            f" of {format_bytes(w0.limit or 0)} ({w0.limit_source}): calibrate on a cluster "
            f"(--cluster local-cuda or local-cpu: its wave runtime rematerialises group by "
            f"group), lower the window (routing.window) or substeps, route fewer steps, "
            f"or raise memory_limit")
    logger.info("%s\n%s", what, plan.table())
    return plan
