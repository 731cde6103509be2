"""What a distributed calibration optimises, on each worker: the work of a wave run
(:class:`~hydroscale.distributed.WaveWork`).

:class:`GaugeWork` holds a worker's share of a calibration: the rows of its reaches of the
parameter model (or a replica of a shared model), the runoff source, the observations at the
gauges of its groups and the loss, and an optimiser whose state stays on the worker.  The
runtime asks it for the routing parameters, each group's lateral inflow and its share of the
loss; after the tree sum of the shared gradients it steps the optimiser and writes the
per-iteration snapshot from which a lost worker's run is restored.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..irf import to_bounded
from ..routing import tensor_bytes
from ._optim import make_optimizer
from ._sources import source_parameters, window_index
from ._summary import parameter_counts
from .losses import get_loss
from .metrics import kge, nse, volume_error

__all__ = ["FreeSlice", "GaugeWork", "STATE_FORMAT", "loss_defined"]

logger = logging.getLogger(__name__)

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


class GaugeWork:
    """A worker's share of a distributed calibration (see the module docstring).

    Parameters
    ----------
    model : :class:`FreeSlice` of the worker's rows, or the shared parameter model (a
        replica: its gradients are summed across workers).
    shared : whether ``model`` is the shared one (it is then called with the worker's rows).
    source : the runoff source (:mod:`~hydroscale.calibration._sources` protocol), cut for
        this worker.
    gauges : ``{group: (local rows, gauge numbers, values [k, T], defined [k])}``.
    loss : ``name``, ``warmup``, ``train`` and ``validation`` (step ranges after warm-up).
    optimizer : ``(name or callable, lr)``.
    snapshot_dir : folder of the per-iteration snapshots (every worker sees it), or None.
    edges : bin edges ``[P, bins + 1]`` of the parameter histograms reported after each
        step (:func:`~hydroscale.calibration._summary.parameter_counts` of the worker's
        reaches), or None (no histograms).
    lakes : for a run with lakes, ``(params [L, P], columns)``: the level-pool parameters
        of every lake (float64, SI) and the indices of the columns trained (e.g. the weir
        coefficient); those columns are a local parameter of the worker (only its own lakes
        get a gradient), the others stay fixed.
    """

    def __init__(self, model: nn.Module, shared: bool, source: Any,
                 gauges: dict[int, tuple], loss: dict[str, Any], optimizer: tuple[Any, float],
                 snapshot_dir: str | None, edges: np.ndarray | None = None,
                 lakes: tuple[np.ndarray, tuple[int, ...]] | None = None) -> None:
        self.edges = edges
        self._lake_args = lakes
        self.lake_free: nn.Parameter | None = None
        self.lr_override: float | None = None  # a learning rate set during the run
        self.model, self.shared = model, bool(shared)
        self.source = source
        self._gauge_args = gauges
        self.loss_name, self.warmup = loss["name"], int(loss["warmup"])
        self.train = tuple(loss["train"])
        self.validation = None if loss["validation"] is None else tuple(loss["validation"])
        self.optimizer_spec = optimizer
        self.snapshot_dir = snapshot_dir

    # ------------------------------------------------------------------ set-up
    @property
    def differentiable_input(self) -> bool:
        return (callable(getattr(self.source, "backward", None))
                and bool(getattr(self.source, "differentiable", True)))

    def open(self, ctx: Any) -> None:
        self.ctx = ctx
        dev, dtype = ctx.device, ctx.dtype
        self.model = self.model.to(dev)
        if self._lake_args is not None:
            base, cols = self._lake_args
            self.lake_base = torch.as_tensor(np.asarray(base, np.float64), device=dev)
            self.lake_cols = torch.as_tensor(np.asarray(cols, np.int64), device=dev)
            if self.lake_cols.numel():
                self.lake_free = nn.Parameter(self.lake_base[:, self.lake_cols].clone())
        self.source.open(ctx)
        self.gauges = {int(g): _Gauges(torch.as_tensor(loc, device=dev), np.asarray(number),
                                       np.asarray(values, np.float64),
                                       torch.as_tensor(values, device=dev, dtype=dtype),
                                       torch.as_tensor(defined, device=dev))
                       for g, (loc, number, values, defined) in self._gauge_args.items()}
        spec, lr = self.optimizer_spec
        self.optimizer = make_optimizer(spec, self.shared_parameters()
                                        + self.local_parameters(), lr)
        self.metrics: dict[int, dict[str, np.ndarray]] = {}
        self.sims: dict[int, np.ndarray] = {}
        self.counts: dict[str, np.ndarray] | None = None

    def memory_bytes(self) -> int:
        """Device bytes the work holds through a pass (for the calibration plan): its
        trainable tensors with their gradients and the optimiser's two moments, the model's
        buffers, the observations and what the source keeps on the device."""
        trained = tensor_bytes(*self.shared_parameters(), *self.local_parameters())
        held = tensor_bytes(*self.model.buffers(), *(g.obs for g in self.gauges.values()))
        source = getattr(self.source, "memory_bytes", None)
        return 4 * trained + held + (int(source()) if source is not None else 0)

    def set_lr(self, lr: float) -> float:
        """Learning rate ``lr`` for every following optimiser step (kept over a restore)."""
        self.lr_override = float(lr)
        for group in self.optimizer.param_groups:
            group["lr"] = float(lr)
        return float(lr)

    def lr(self) -> list[float]:
        """The optimiser's learning rate per parameter group."""
        return [float(g["lr"]) for g in self.optimizer.param_groups]

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's bounds for the worker's rows: every parameter it may produce."""
        low, high = self.model.low, self.model.high
        if self.shared and low.ndim == 2:
            rows = torch.as_tensor(self.ctx.rows, device=low.device)
            low, high = low.index_select(0, rows), high.index_select(0, rows)
        return low, high

    def parameters(self, training: bool) -> torch.Tensor:
        if self.shared:
            return self.model(rows=torch.as_tensor(self.ctx.rows, device=self.ctx.device))
        return self.model()

    def shared_parameters(self) -> list[torch.Tensor]:
        s, _ = source_parameters(self.source)
        return (list(self.model.parameters()) if self.shared else []) + s

    def local_parameters(self) -> list[torch.Tensor]:
        _, loc = source_parameters(self.source)
        lakes = [] if self.lake_free is None else [self.lake_free]
        return ([] if self.shared else list(self.model.parameters())) + loc + lakes

    def lake_parameters(self, training: bool) -> torch.Tensor | None:
        """The lakes' level-pool parameters ``[L, P]`` (the trained columns from
        :attr:`lake_free`), or None for a run without lakes."""
        if self._lake_args is None:
            return None
        if self.lake_free is None:
            return self.lake_base
        return self.lake_base.index_copy(1, self.lake_cols, self.lake_free)

    # ------------------------------------------------------------------ one pass
    def begin(self, pass_args: dict[str, Any], training: bool) -> None:
        """``pass_args``: ``use`` (bool ``[G]`` gauges in the loss), ``norm`` (the loss's
        denominator), ``windows`` (None or ``(starts [B], L)``), ``keep_sims`` and
        optionally ``watch`` (gauge numbers whose discharge is reported even without
        ``keep_sims``)."""
        dev = self.ctx.device
        self.use = torch.as_tensor(np.asarray(pass_args["use"], bool), device=dev)
        self.norm = float(pass_args["norm"])
        self.windows = pass_args["windows"]
        self.keep_sims = bool(pass_args["keep_sims"])
        self.watch = np.asarray(pass_args.get("watch", ()), np.int64)
        for gg in self.gauges.values():
            gg.obs_w = gg.defined_w = None
            if self.windows is not None:
                v = gg.values[:, window_index(self.windows)].transpose(1, 0, 2)  # [B, k, L]
                gg.obs_w = torch.as_tensor(v, device=dev, dtype=self.ctx.dtype)
                gg.defined_w = torch.as_tensor(
                    loss_defined(self.loss_name, v[..., self.warmup:]), device=dev)
        begin = getattr(self.source, "begin", None)
        if begin is not None:
            begin(self.windows)
        self.metrics, self.sims, self.counts = {}, {}, None

    def read(self, group: int, reaches: np.ndarray) -> torch.Tensor:
        return self.source.read(group, reaches)

    def input_backward(self, group: int, reaches: np.ndarray, grad: torch.Tensor) -> None:
        self.source.backward(group, reaches, grad)

    def contributes(self, group: int) -> bool:
        return int(group) in self.gauges

    def _observed(self, gg: _Gauges, b: int) -> tuple[torch.Tensor, torch.Tensor,
                                                      tuple[int, int]]:
        """Observations ``[B or 1, k, T]``, where the loss is defined ``[B, k]``, and the
        loss steps of this pass (the training period, or each window after its warm-up)."""
        if self.windows is None:
            return gg.obs[None], gg.defined[None].expand(b, -1), self.train
        return gg.obs_w, gg.defined_w, (self.warmup, int(self.windows[1]))

    def objective(self, group: int, q: torch.Tensor, record: bool) -> torch.Tensor | None:
        """This group's share of the loss: ``sum(per-gauge loss) / norm`` over its used
        (batch, gauge) pairs (only those are computed: no NaN enters the graph); with
        ``record``, its per-gauge metrics (and discharge at the gauges)."""
        gg = self.gauges.get(int(group))
        if gg is None:
            return None
        if record:
            with torch.no_grad():
                self._record(int(group), gg, q.detach())
        b = q.shape[0]
        obs, defined, (t0, t1) = self._observed(gg, b)
        use = self.use[torch.as_tensor(gg.number, device=q.device)]
        m = (defined & use[None]).reshape(-1)
        if not bool(m.any()):
            return None
        pick = torch.nonzero(m).flatten()
        k = gg.local.numel()
        s = q.index_select(1, gg.local)[..., t0:t1].reshape(b * k, -1).index_select(0, pick)
        o = obs.expand(b, -1, -1)[..., t0:t1].reshape(b * k, -1).index_select(0, pick)
        per = get_loss(self.loss_name)(s, o)
        per = torch.where(torch.isfinite(per.detach()), per, 0.0)
        return per.sum(dtype=torch.float64) / self.norm

    def _record(self, g: int, gg: _Gauges, q: torch.Tensor) -> None:
        s = q.index_select(1, gg.local).to(torch.float64)
        o, _, loss_steps = self._observed(gg, q.shape[0])
        o = o.to(torch.float64)
        out = {"number": gg.number}
        periods = ((("", self.train), ("val_", self.validation)) if self.windows is None
                   else (("", loss_steps),))
        for key, period in periods:
            if period is None:
                continue
            a, b = period
            out[key + "nse"] = nse(s[..., a:b], o[..., a:b]).mean(0).cpu().numpy()
            out[key + "kge"] = kge(s[..., a:b], o[..., a:b]).mean(0).cpu().numpy()
            out[key + "bias"] = volume_error(s[..., a:b].cpu().numpy(),
                                             o[..., a:b].cpu().numpy()).mean(0)
            if key:  # the validation loss (the training loss is the pass's value)
                ob = o[..., a:b].expand_as(s[..., a:b])
                out[key + "loss"] = get_loss(self.loss_name)(s[..., a:b], ob).mean(0
                                                                                ).cpu().numpy()
        self.metrics[g] = out
        if self.keep_sims:
            self.sims[g] = s.cpu().numpy()
        elif self.watch.size:
            pick = np.flatnonzero(np.isin(gg.number, self.watch))
            if pick.size:  # [B, k', T] of the watched gauges, with their numbers
                self.sims[g] = (gg.number[pick], s[:, torch.as_tensor(pick)].cpu().numpy())

    def step(self, iteration: int, step: bool) -> None:
        if step:
            self.optimizer.step()
            if self.snapshot_dir is not None:
                self._save(self._snapshot_path(iteration), iteration)
            if self.edges is not None:  # P x bins counts: small, whatever the reaches
                with torch.no_grad():
                    low, high = self.bounds()
                    self.counts = parameter_counts(self.parameters(False), low, high,
                                                   self.edges)

    def report(self) -> dict[str, Any]:
        out = {"metrics": list(self.metrics.values()), "sims": dict(self.sims),
               "counts": self.counts}
        self.sims = {}
        return out

    # ------------------------------------------------------------------ state files
    def _snapshot_path(self, iteration: int) -> str:
        return os.path.join(self.snapshot_dir,
                            f"worker-{self.ctx.worker_index:04d}-{iteration % 2}.pt")

    def _tensors(self) -> list[torch.Tensor]:
        shared, local = source_parameters(self.source)
        return shared + local + ([] if self.lake_free is None else [self.lake_free])

    def _save(self, path: str, iteration: int) -> str:
        """Write the worker's parameters and optimiser state with ``torch.save``
        (atomically): tensors, numbers and strings only, loadable with ``weights_only``."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = path + ".tmp"
        torch.save({
            "format": STATE_FORMAT, "iteration": int(iteration),
            "worker": self.ctx.worker_index, "rows": torch.as_tensor(self.ctx.rows),
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "source": [p.detach().cpu() for p in self._tensors()],
            "optimizer": self.optimizer.state_dict(),
        }, tmp)
        os.replace(tmp, path)
        return path

    def save(self, directory: str, iteration: int) -> str:
        """Write this worker's checkpoint file into ``directory``."""
        return self._save(os.path.join(directory, f"worker-{self.ctx.worker_index:04d}.pt"),
                          iteration)

    def snapshot(self, iteration: int) -> str | None:
        """Write the per-iteration snapshot now (after set-up or a load)."""
        if self.snapshot_dir is None:
            return None
        return self._save(self._snapshot_path(iteration), iteration)

    def restore(self, iteration: int) -> int:
        """Load this worker's snapshot of ``iteration`` (after a lost worker), keeping the
        learning rate this work was built with (a rate set after that snapshot holds)."""
        done = self.load(self._snapshot_path(iteration), iteration)
        if self.lr_override is not None:
            self.set_lr(self.lr_override)
        return done

    def load(self, path: str, iteration: int) -> int:
        """Restore parameters and optimiser state from a file written by :meth:`save` or a
        snapshot."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"{path} is not a {STATE_FORMAT} file (format "
                             f"{state.get('format')!r})")
        if int(state["iteration"]) != int(iteration):
            raise ValueError(f"{path} holds iteration {state['iteration']}, expected "
                             f"{iteration}")
        if not np.array_equal(state["rows"].numpy(), self.ctx.rows):
            raise ValueError(f"{path} holds the parameters of other reaches than worker "
                             f"{self.ctx.worker_index} routes: resume with the same partition "
                             "and number of workers")
        with torch.no_grad():
            self.model.load_state_dict(state["model"])
            src = self._tensors()
            if len(src) != len(state["source"]):
                raise ValueError(f"{path} holds {len(state['source'])} source tensors, the "
                                 f"source has {len(src)}")
            for p, v in zip(src, state["source"]):
                p.copy_(v.to(p.device, p.dtype))
        self.optimizer.load_state_dict(state["optimizer"])
        return int(state["iteration"])

    # ------------------------------------------------------------------ read-back
    def model_state(self) -> dict[str, Any]:
        """The worker's model: its rows and raw values (free parameters) or its state dict
        (shared model), on the host."""
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        return {"rows": self.ctx.rows, "shared": self.shared, "state": state}

    def gradients(self) -> dict[str, Any]:
        """The gradients of the last backward (before any step): ``model`` (rows of free
        parameters, or the shared model's summed gradients), ``source`` (the summed
        gradients of its shared tensors) and, for a trainable tensor source, ``runoff``."""
        out: dict[str, Any] = {"rows": self.ctx.rows}
        out["model"] = {k: (p.grad if p.grad is not None else torch.zeros_like(p))
                        .detach().cpu() for k, p in self.model.named_parameters()}
        shared, _ = source_parameters(self.source)
        out["source"] = [(p.grad if p.grad is not None else torch.zeros_like(p)).detach().cpu()
                         for p in shared]
        if self.lake_free is not None:
            g = self.lake_free.grad
            out["lakes"] = (g if g is not None else torch.zeros_like(self.lake_free)
                            ).detach().cpu()
        grads = getattr(self.source, "gradients", None)
        if grads is not None:
            out["runoff"] = {g: (self.ctx.reaches(g), v)
                             for g, v in grads(self.ctx.mine.tolist()).items()}
        return out

    def source_model_state(self) -> dict[str, torch.Tensor]:
        """The runoff model of a :class:`~hydroscale.calibration.RunoffModelSource` (every
        worker holds the same replica), on the host."""
        model = getattr(self.source, "model", None)
        if not isinstance(model, nn.Module):
            raise TypeError(f"this calibration has a {type(self.source).__name__} runoff "
                            "source, not a RunoffModelSource")
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}
