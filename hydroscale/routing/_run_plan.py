"""The run planner: each worker's peak memory, estimated before any routing task, and what to
keep resident so that it fits.

Used by the distributed runtime (one entry per worker) and the one-device route (one entry).
A routing pass holds, on each worker's device:

- the **path kernels** of its batches of groups (``wr [P_R, K]``, ``wu [P_U, K]``: one row
  per in-group path, per inlet / exit channel, ``K`` window taps; exact row counts come from
  the workers' routers at set-up);
- while a batch's kernels are **aggregated**, their aggregation-precision copies and the
  batch's sub-step reach kernels (``n x K f``);
- per routing task (a group over one time chunk of ``T_c`` steps): the runoff block, the
  discharge, the engine's output rows and the transfer buffers of its exits and inlets
  (``f`` channels each);
- the **carried state** (``K - 1`` steps per reach and inlet channel) of every (group, chunk)
  result the pass holds until its end.

:func:`plan_run` sums these per worker and chooses:

1. ``"resident"``: every batch's kernels built once at set-up and kept (fastest), if that fits;
2. else ``"per-batch"``: a batch's kernels built when its task runs and evicted (least
   recently used first) to stay within a kernel budget -- aggregation is cheap next to
   routing, so a run that does not fit resident costs a rebuild per batch and chunk;
3. the time chunk: the requested one, halved while the per-task working set does not fit.

If even one batch with a one-step chunk does not fit, :class:`RunTooLargeError` names the
estimate, the limit and the settings to change.  The estimates are upper bounds of the
arrays named above (the engines' small temporaries are in :data:`SLACK`); the run summary
reports them beside the measured peaks.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ._memory import RunTooLargeError, format_bytes

__all__ = ["RunPlan", "WorkerPlan", "plan_run"]

logger = logging.getLogger(__name__)

#: fraction of a worker's memory the plan may use (allocator fragmentation, CUDA context,
#: the engines' small temporaries)
SLACK = 0.85
#: copies of a batch's kernels alive while it is aggregated (aggregation precision twice --
#: the path sums and their gathered rows -- then the stored kernels)
AGGREGATION_COPIES = 3
#: ``[rows, T_c]`` arrays alive per routing task, per reach row (runoff, discharge, the
#: engine's output rows, its staged input) and per inlet / exit channel row (transfer
#: buffer in and out, inlet inflow, the exit rows of the output)
TASK_REACH_ARRAYS = 4
TASK_CHANNEL_ARRAYS = 3


def gb_cell(n: int | None) -> str:
    """Bytes as a plan table's cell: GB with two decimals, ``-`` where unknown."""
    return "-" if n is None else f"{n / 1e9:.2f}"


@dataclass
class WorkerPlan:
    """One worker's estimate (bytes) and what it keeps resident.

    ``routers``: what the worker's routers hold at set-up (their path layouts and index
    tensors; measured on a GPU, 0 where unknown); ``kernels``: every batch's kernels;
    ``largest_batch``: one batch's kernels and its aggregation peak; ``task``: one
    routing task's arrays at the plan's time chunk;
    ``state``: the carried states (and transfer buffers) the pass keeps; ``peak``: the
    estimated peak under the chosen residency; ``limit``: the memory it is compared with.
    """

    worker: int
    groups: int
    reaches: int
    routers: int
    kernels: int
    largest_batch: int
    aggregation: int
    task: int
    state: int
    peak: int
    limit: int | None
    limit_source: str
    kernel_budget: int | None  # None: every batch resident

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunPlan:
    """The plan of a pass: residency, time chunk and each worker's estimate."""

    residency: str  # "resident" or "per-batch"
    time_chunk: int
    requested_time_chunk: int
    window: int
    substeps: int
    n_steps: int
    workers: list[WorkerPlan] = field(default_factory=list)

    def budget(self, worker: int) -> int | None:
        """The kernel budget (bytes) of ``worker`` (None: keep every batch)."""
        return self.workers[worker].kernel_budget

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["workers"] = [w.as_dict() for w in self.workers]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunPlan:
        """The plan :meth:`as_dict` wrote."""
        return cls(**{**d, "workers": [WorkerPlan(**w) for w in d["workers"]]})

    def table(self) -> str:
        """The plan as text: one line per worker, in GB."""
        g = gb_cell
        lines = [
            f"plan: kernels {self.residency}, time chunk {self.time_chunk} steps"
            + (f" (asked {self.requested_time_chunk})"
               if self.time_chunk != self.requested_time_chunk else "")
            + f", window {self.window} steps, f = {self.substeps}, {self.n_steps} steps",
            "worker  groups   reaches  routers GB  kernels GB  batch GB  aggregation GB  "
            "task GB  state GB  peak GB  limit GB",
        ]
        for w in self.workers:
            lines.append(
                f"{w.worker:>6}  {w.groups:>6}  {w.reaches:>8}  {g(w.routers):>10}  "
                f"{g(w.kernels):>10}  "
                f"{g(w.largest_batch):>8}  {g(w.aggregation):>14}  {g(w.task):>7}  "
                f"{g(w.state):>8}  {g(w.peak):>7}  {g(w.limit):>8}")
        return "\n".join(lines)


def plan_run(
    batches: list[dict[str, Any]],
    *,
    window: int,
    substeps: int,
    n_steps: int,
    time_chunk: int,
    itemsize: int = 4,
    aggregate_itemsize: int = 4,
    limits: list[tuple[int | None, str]] | None = None,
    batch: int = 1,
    held_chunks: int | None = None,
) -> RunPlan:
    """Plan a pass from each worker's batches.

    Parameters
    ----------
    batches : one dict per worker: ``{"kernel_rows": [rows per batch], "reaches": [reaches
        per batch], "groups": [[reaches, exits, inlets] per group]}`` (what the
        distributed runtime's set-up reports).
    window, substeps : K (routing steps) and f.
    n_steps, time_chunk : the pass's length and the requested chunk (steps).
    itemsize, aggregate_itemsize : bytes per stored kernel tap / per aggregation value.
    limits : per worker ``(bytes or None, where the figure comes from)``; None: unlimited.
    batch : forcing batch size B (independent series routed together).
    held_chunks : how many chunks' states a worker holds at once (default all of the
        pass's: the distributed runtime keeps every (group, chunk) result until the pass
        ends; 1 for the one-device route, which carries one state).

    Raises
    ------
    RunTooLargeError : when no residency and time chunk fit a worker.
    """
    k, f = int(window), int(substeps)
    n_w = len(batches)
    limits = limits or [(None, "unknown")] * n_w
    chunk = max(1, min(int(time_chunk), int(n_steps)))

    def task_bytes(w: dict[str, Any], tc: int) -> int:
        g = np.asarray(w["groups"], dtype=np.int64).reshape(-1, 3)
        if not g.size:
            return 0
        rows = TASK_REACH_ARRAYS * g[:, 0] + TASK_CHANNEL_ARRAYS * f * (g[:, 1] + g[:, 2])
        return int(rows.max()) * tc * itemsize * batch

    def state_bytes(w: dict[str, Any], tc: int) -> int:
        g = np.asarray(w["groups"], dtype=np.int64).reshape(-1, 3)
        chunks = -(-int(n_steps) // tc) if held_chunks is None else int(held_chunks)
        per_chunk = int((g[:, 0] + f * g[:, 2]).sum()) * (k - 1) * itemsize * batch
        buffers = int(g[:, 1].sum()) * f * tc * itemsize * batch
        return chunks * per_chunk + 2 * buffers

    def worker_plan(i: int, tc: int, resident: bool) -> WorkerPlan:
        w = batches[i]
        rows = np.asarray(w["kernel_rows"], dtype=np.int64)
        kb = rows * k * itemsize
        n_red = np.asarray(w["reaches"], dtype=np.int64)
        agg = (rows * k * (2 * aggregate_itemsize + itemsize)
               + n_red * k * f * 8) if rows.size else np.zeros(1, np.int64)
        kernels, largest = int(kb.sum()), int(kb.max()) if kb.size else 0
        # a task also holds its group's taps packed for the block kernels (at most a batch's)
        task, state = task_bytes(w, tc) + largest, state_bytes(w, tc)
        routers = int(w.get("resident", 0))  # held throughout, like the carried state
        # what aggregating a batch holds beyond the kernels it leaves
        over = int((agg - kb).max()) if rows.size else 0
        limit, source = limits[i]
        if resident:
            # set-up: every batch aggregated in turn, the earlier ones kept
            peak = max(kernels - largest + int(agg.max()), kernels + task) + state + routers
            budget = None
        elif limit is None:
            peak = max(int(agg.max()), largest + task) + state + routers
            budget = None
        else:
            # the kernels kept fill the budget; a batch aggregated while the others are kept
            # adds its temporaries (the worker evicts down to budget - its kernels first)
            budget = max(largest, int(limit * SLACK) - state - routers - max(task, over))
            peak = budget + max(task, over) + state + routers
        return WorkerPlan(i, len(w["groups"]), int(n_red.sum()), routers, kernels, largest,
                          int(agg.max()), task, state, int(peak), limit, source, budget)

    def fits(p: WorkerPlan) -> bool:
        return p.limit is None or p.peak <= p.limit * SLACK

    tc = chunk
    while True:
        plans = [worker_plan(i, tc, True) for i in range(n_w)]
        if all(fits(p) for p in plans):
            return RunPlan("resident", tc, chunk, k, f, int(n_steps), plans)
        plans = [worker_plan(i, tc, False) for i in range(n_w)]
        if all(fits(p) for p in plans):
            return RunPlan("per-batch", tc, chunk, k, f, int(n_steps), plans)
        if tc == 1:
            break
        tc = max(1, tc // 2)
    worst = max(plans, key=lambda p: p.peak / max(1, p.limit or 1))
    raise RunTooLargeError(
        f"the run does not fit worker {worst.worker}: even with its path kernels built one "
        f"batch at a time and a 1-step time chunk it needs {format_bytes(worst.peak)} "
        f"(largest batch's kernels {format_bytes(worst.largest_batch)}, their aggregation "
        f"{format_bytes(worst.aggregation)}, carried state {format_bytes(worst.state)}) but "
        f"may use {format_bytes(int((worst.limit or 0) * SLACK))} of "
        f"{format_bytes(worst.limit or 0)} ({worst.limit_source}): lower batch_reaches "
        f"(the reaches aggregated at once), the window (routing.window) or substeps, use more "
        f"workers, or raise memory_limit"
    )
