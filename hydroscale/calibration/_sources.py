"""Runoff sources of a distributed calibration, read on the workers.

:class:`TensorSource` (in memory, optionally trainable), :class:`ForcingSource` (a forcing
store or synthetic forcing read on the workers) and :class:`RunoffModelSource` (a runoff
model and a catchment interpolator, trained with the routing).

The protocol
------------
A source is a small picklable object; the client calls ``source.for_worker(plan, w)`` (when
it has that method) and ships the result to worker ``w``, which then calls:

``open(ctx) -> None``
    once at set-up (``ctx`` is the run's :class:`~hydroscale.distributed.WaveContext`: the
    network, the groups, this worker's group ids, the device and the router dtype);
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

import copy
import logging
from typing import Any

import numpy as np
import torch
from torch import nn

from ..distributed import WaveContext
from ..io import as_forcing
from ..models import CatchmentInterpolator, RunoffModel
from ..routing import tensor_bytes

__all__ = ["ForcingRunoff", "RunoffModelSource", "TensorSource", "as_runoff_source",
           "pull_runoff_model", "source_parameters", "window_index"]

logger = logging.getLogger(__name__)


def window_index(windows: tuple[np.ndarray, int]) -> np.ndarray:
    """int ``[B, L]`` steps of the windows ``(starts [B], L)``."""
    starts, length = windows
    return np.asarray(starts, np.int64)[:, None] + np.arange(int(length))


class TensorSource:
    """Runoff given as a tensor ``[N, T]`` or ``[B, N, T]`` (m³/s, network order).

    Each worker receives only the rows of its own groups.  With ``trainable=True`` every
    group's block is a worker-local trainable tensor: the backward accumulates
    ``dLoss/d(runoff)`` into its ``.grad`` (read back as ``gradient()["runoff"]`` of
    :class:`~hydroscale.calibration.DistributedGradient`), and the optimiser updates it.
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

    def open(self, ctx: WaveContext) -> None:
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

    def memory_bytes(self) -> int:
        """Device bytes of the runoff blocks beyond the trainable ones (those are counted
        with the parameters)."""
        if self.trainable:
            return 0
        return tensor_bytes(*self._blocks.values())

    def gradients(self, groups: Any) -> dict[int, np.ndarray]:
        """``dLoss/d(runoff)`` per group (zeros where none flowed back)."""
        out = {}
        for g in groups:
            x = self._blocks[int(g)]
            grad = x.grad if isinstance(x, nn.Parameter) and x.grad is not None else \
                torch.zeros_like(x)
            out[int(g)] = grad.detach().cpu().numpy()
        return out


class ForcingRunoff:
    """A forcing source of :mod:`hydroscale.io` (a :class:`~hydroscale.io.ZarrForcing`
    store read by the workers, a :class:`~hydroscale.io.SyntheticForcing` generated on them)
    as runoff of a calibration; not differentiable.  :func:`as_runoff_source` wraps one."""

    def __init__(self, forcing: Any, n_steps: int | None = None) -> None:
        self.forcing = as_forcing(forcing)
        self.steps = int(n_steps or self.forcing.n_steps)
        self._opened: Any = None
        self._ctx: WaveContext | None = None

    @property
    def n_steps(self) -> int:
        return self.steps

    def __getstate__(self) -> dict[str, Any]:
        return {"forcing": self.forcing, "steps": self.steps}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.forcing, self.steps = state["forcing"], state["steps"]
        self._opened, self._ctx = None, None

    def open(self, ctx: WaveContext) -> None:
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


def as_runoff_source(runoff: Any) -> Any:
    """A runoff source (the protocol above) from a source, a forcing of
    :mod:`hydroscale.io` (or a forcing store's path), or an array ``[N, T]``/``[B, N, T]``
    (a :class:`TensorSource`)."""
    import os

    from ..io import ArrayForcing, SyntheticForcing, ZarrForcing

    if isinstance(runoff, ArrayForcing):  # cut per worker, as a tensor
        return TensorSource(runoff.values)
    if isinstance(runoff, (ZarrForcing, SyntheticForcing, str, os.PathLike)):
        return ForcingRunoff(runoff)
    if hasattr(runoff, "read"):
        return runoff
    return TensorSource(runoff)


def source_parameters(source: Any) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    fn = getattr(source, "parameters", None)
    if fn is None:
        return [], []
    p = fn()
    return list(p.get("shared", [])), list(p.get("local", []))


class RunoffModelSource:
    """A runoff model and a catchment interpolator as a runoff source of the distributed
    gradient (the protocol above).

    Parameters
    ----------
    model : the :class:`~hydroscale.models.RunoffModel` (e.g. an LSTM); it must be
        deterministic (no active dropout): the runoff is recomputed in the backward.
    interpolator : cells -> reaches (network order), mm per step -> m³/s.
    forcings : ``[C, T, F]`` on the interpolator's cells (model units).
    static : ``[C, S]`` static attributes, or None for a model without them.

    On the client the object holds everything; :meth:`for_worker` cuts out what a worker
    needs: the cells feeding its reaches (forcings, static attributes) and one interpolator
    per group of its own (:meth:`CatchmentInterpolator.split`), with a copy of the model.
    """

    differentiable = True
    batch = 1

    def __init__(self, model: RunoffModel, interpolator: CatchmentInterpolator | None,
                 forcings: Any, static: Any = None) -> None:
        f = torch.as_tensor(forcings).detach().cpu()
        s = None if static is None else torch.as_tensor(static).detach().cpu()
        if f.ndim != 3 or f.shape[-1] != model.n_forcings:
            raise ValueError(f"forcings must be [C, T, F={model.n_forcings}], got "
                             f"{tuple(f.shape)}")
        if interpolator is not None and f.shape[0] != interpolator.n_cells:
            raise ValueError(f"forcings have {f.shape[0]} cells, the interpolator "
                             f"{interpolator.n_cells}")
        if (s is None) != (model.n_static == 0) or (
                s is not None and tuple(s.shape) != (f.shape[0], model.n_static)):
            got = None if s is None else tuple(s.shape)
            raise ValueError(f"static must be [C={f.shape[0]}, S={model.n_static}] (None when "
                             f"the model has no static attributes), got {got}")
        drop = [m.p for m in model.modules() if isinstance(m, nn.Dropout) and m.p > 0]
        drop += [m.dropout for m in model.modules()
                 if isinstance(m, nn.RNNBase) and m.dropout > 0 and m.num_layers > 1]
        if drop and model.training:
            raise ValueError(f"the runoff model has active dropout (p={drop[0]}): the "
                             "distributed backward recomputes the runoff, which must give the "
                             "forward's values; use dropout=0 or model.eval()")
        self.model, self.interpolator = model, interpolator
        self.forcings, self.static = f, s
        self.steps = int(f.shape[1])
        self.reaches_total = None if interpolator is None else interpolator.n_reaches
        self._groups: dict[int, tuple[CatchmentInterpolator, torch.Tensor]] = {}
        self._dtype = torch.float32

    @property
    def n_steps(self) -> int:
        return self.steps

    @property
    def n_reaches(self) -> int | None:
        return self.reaches_total

    def for_worker(self, plan: Any, worker: int) -> RunoffModelSource:
        """The part of worker ``worker`` of a wave plan (see the class docstring)."""
        groups = [int(g) for g in plan.groups_of_worker(worker)]
        reaches = [plan.order[int(plan.rows[g, 0]) : int(plan.rows[g, 1])] for g in groups]
        parts = self.interpolator.split(reaches)
        cells = (np.unique(np.concatenate([p.source_cells for p in parts])) if parts
                 else np.zeros(0, np.int64))
        idx = torch.as_tensor(cells)
        out = RunoffModelSource(copy.deepcopy(self.model), None,
                                self.forcings.index_select(0, idx),
                                None if self.static is None else self.static.index_select(0, idx))
        out.reaches_total = self.reaches_total
        out._groups = {g: (p, torch.as_tensor(np.searchsorted(cells, p.source_cells)))
                       for g, p in zip(groups, parts)}
        logger.debug("worker %d: %d groups, %d of %d cells", worker, len(groups), cells.size,
                     self.forcings.shape[0])
        return out

    # ------------------------------------------------------------------ worker side
    def open(self, ctx: WaveContext) -> None:
        """Move the model, the worker's forcings and cell indices to ``ctx.device``."""
        dev = ctx.device
        self.model = self.model.to(dev)
        self.forcings = self.forcings.to(dev)
        self.static = None if self.static is None else self.static.to(dev)
        self._groups = {g: (p, c.to(dev)) for g, (p, c) in self._groups.items()}
        self._dtype = ctx.dtype

    def memory_bytes(self) -> int:
        """Device bytes of the forcings and static attributes (the model's parameters are
        counted with the trainable tensors)."""
        return tensor_bytes(self.forcings, self.static)

    def _runoff(self, group: int, reaches: np.ndarray) -> torch.Tensor:
        if group not in self._groups:
            raise RuntimeError(f"group {group} is not one of this worker's groups "
                               f"{sorted(self._groups)}")
        part, cells = self._groups[group]
        if not np.array_equal(part.reach_index, reaches):
            raise RuntimeError(f"group {group}: the interpolator was split for other reaches "
                               "than the router routes (wave plan changed?)")
        f = self.forcings.index_select(0, cells).unsqueeze(0)
        s = None if self.static is None else self.static.index_select(0, cells)
        depth = self.model(f, s).to(self._dtype)  # [1, cells of the group, T], mm per step
        return part(depth)  # [1, n_g, T], m³/s

    def read(self, group: int, reaches: np.ndarray) -> torch.Tensor:
        """Lateral inflow ``[1, n_g, T]`` (m³/s) of the group's reaches, without gradient."""
        with torch.no_grad():
            return self._runoff(int(group), reaches)

    def backward(self, group: int, reaches: np.ndarray, grad: torch.Tensor) -> None:
        """Recompute the group's inflow with autograd and backpropagate ``grad`` into the
        model's ``.grad`` (summed over the worker's groups)."""
        with torch.enable_grad():
            r = self._runoff(int(group), reaches)
            r.backward(grad.to(r.dtype))

    def parameters(self) -> dict[str, list[torch.Tensor]]:
        """The model's trainable tensors, replicated on every worker (``shared``)."""
        return {"shared": [p for p in self.model.parameters() if p.requires_grad],
                "local": []}


def pull_runoff_model(calibrator: Any, model: RunoffModel) -> RunoffModel:
    """Copy the runoff model trained on the workers of ``calibrator`` (a
    :class:`~hydroscale.calibration.DistributedCalibrator` over a :class:`RunoffModelSource`;
    every worker holds the same replica) into ``model`` and return it."""
    state = calibrator.engine.runtime.call("source_model_state")[0]
    model.load_state_dict(state)
    return model
