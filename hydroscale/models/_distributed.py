"""The hybrid pipelines on the distributed runtime (DESIGN §3, "Backward wave").

:meth:`HybridPipeline.distributed <hydroscale.models.HybridPipeline.distributed>` turns a
pipeline into a :class:`~hydroscale.calibration.DistributedCalibrator`, whose
:class:`~hydroscale.distributed.DistributedGradient` routes the river groups on the workers
in forward and backward waves:

- the routing parameter model: :class:`~hydroscale.models.FreeParameters` are sliced per
  worker (each worker holds and steps the rows of its reaches); an
  :class:`~hydroscale.models.AttributeMLP` is replicated, its gradients summed across the
  workers in a tree and the same update applied everywhere;
- known lateral inflow (routing calibration, learned routing): a
  :class:`~hydroscale.distributed.TensorSource`, each worker receiving the rows of its groups;
- a runoff model (runoff + routing): a :class:`RunoffModelSource`: the runoff model is
  replicated on every worker (a *shared* tensor set: gradients tree-summed, the same Adam
  update everywhere), each worker gets the forcings and static attributes of only the cells
  that feed its reaches and the interpolation weights of only its groups
  (:meth:`CatchmentInterpolator.split`); the backward wave hands each group's
  ``dLoss/d(lateral inflow)`` to the source, which recomputes that group's runoff with
  autograd (rematerialisation) and backpropagates it into the runoff model.

One iteration routes one window: the whole training period from a zero state, its first
``warmup`` steps left out of the loss (the pipeline's :class:`Windows` gives the warm-up; the
runtime does not draw sliding windows).  The per-gauge loss of ``"vnmse"``/``"nse"`` is then
divided by the gauge's variance over the training period after warm-up, which both
normalisations of the pipeline (``"gauge"`` with that ``scale_period``, and ``"window"``)
coincide with; a single-device pipeline with that one window gives the same loss, gradients
and Adam steps.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import numpy as np
import torch
from torch import nn

from .interpolation import CatchmentInterpolator
from .runoff import RunoffModel

__all__ = ["RunoffModelSource", "distributed_calibrator", "pull_runoff_model"]

logger = logging.getLogger(__name__)


class RunoffModelSource:
    """A runoff model and a catchment interpolator as a runoff source of the distributed
    gradient (the protocol of :mod:`hydroscale.distributed._gradient_tasks`).

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
    def open(self, ctx: Any) -> None:
        """Move the model, the worker's forcings and cell indices to ``ctx.device``."""
        dev = ctx.device
        self.model = self.model.to(dev)
        self.forcings = self.forcings.to(dev)
        self.static = None if self.static is None else self.static.to(dev)
        self._groups = {g: (p, c.to(dev)) for g, (p, c) in self._groups.items()}
        self._dtype = ctx.dtype

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


def _slice(period: Any) -> Any:
    return slice(*period) if isinstance(period, tuple) else period


def pull_runoff_model(calibrator: Any, model: RunoffModel) -> RunoffModel:
    """Copy the runoff model trained on the workers of ``calibrator`` (a
    :class:`~hydroscale.calibration.DistributedCalibrator` over a :class:`RunoffModelSource`;
    every worker holds the same replica) into ``model`` and return it."""
    eng = calibrator.engine
    state = calibrator.client.submit(_runoff_state_task, eng.run_id, workers=[eng.addrs[0]],
                                     allow_other_workers=False, pure=False).result()
    model.load_state_dict(state)
    return model


def _runoff_state_task(run_id: str) -> dict[str, torch.Tensor]:
    from ..distributed._gradient_tasks import _get  # the worker's run of this id

    source = _get(run_id).source
    if not isinstance(source, RunoffModelSource):
        raise TypeError(f"run {run_id} has a {type(source).__name__} runoff source, not a "
                        "RunoffModelSource")
    return {k: v.detach().cpu() for k, v in source.model.state_dict().items()}


def distributed_calibrator(
    pipeline: Any,
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
    """A :class:`~hydroscale.calibration.DistributedCalibrator` running ``pipeline`` (a
    :class:`~hydroscale.models.HybridPipeline`) on the workers of ``client``; see
    :meth:`HybridPipeline.distributed <hydroscale.models.HybridPipeline.distributed>`."""
    from ..calibration import DistributedCalibrator

    stage = pipeline.routing
    if pipeline.runoff_model is not None:
        static = pipeline.static
        source: Any = RunoffModelSource(pipeline.runoff_model, stage.interpolator,
                                        pipeline.forcings, static)
    else:
        from ..distributed import TensorSource

        source = TensorSource(pipeline.lateral)
    obs = pipeline.observations
    tr = obs.period(_slice(train))
    validation = None if validation is None else obs.period(_slice(validation))
    warmup = pipeline.windows.warmup
    if pipeline.normalise == "gauge" and pipeline.scale_period != (tr.start + warmup, tr.stop):
        logger.info("distributed: the loss of each gauge is divided by its variance over the "
                    "training period after warm-up %s, not over scale_period %s",
                    (tr.start + warmup, tr.stop), pipeline.scale_period)
    opts = stage.options
    options = {"backend": opts["backend"], **(engine_options or {})}
    return DistributedCalibrator(
        client, stage.network, source, obs, pipeline.param_model, partition=partition,
        max_reaches=max_reaches, substeps=opts["substeps"], window=opts["window"],
        loss=pipeline.loss_name, warmup=warmup, train=tr, validation=validation,
        optimizer=optimizer, lr=lr, checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every, seed=seed, control=control, dtype=opts["dtype"],
        allow_unstable=opts["allow_unstable"], engine_options=options)
