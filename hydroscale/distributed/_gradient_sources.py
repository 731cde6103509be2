"""Runoff sources of the distributed gradient (:mod:`._gradient_tasks`), read on the workers.

The protocol
------------
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

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..network import RiverNetwork
from ..routing import RivTreeCluster

__all__ = ["ForcingSource", "SourceContext", "TensorSource", "source_parameters",
           "window_index"]


def window_index(windows: tuple[np.ndarray, int]) -> np.ndarray:
    """int ``[B, L]`` steps of the windows ``(starts [B], L)``."""
    starts, length = windows
    return np.asarray(starts, np.int64)[:, None] + np.arange(int(length))


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


def source_parameters(source: Any) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    fn = getattr(source, "parameters", None)
    if fn is None:
        return [], []
    p = fn()
    return list(p.get("shared", [])), list(p.get("local", []))
