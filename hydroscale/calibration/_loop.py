"""The calibration loop shared by the single-device and the distributed calibrators.

:class:`CalibrationLoop` holds what does not depend on where the routing runs: the
iteration loop with its :class:`CalibrationControl` (pause, resume, stop), listeners (the
dashboard), the history and per-gauge metrics of every iteration, gauge sampling, and the
writing, naming, checking and pruning of checkpoint files.  A subclass provides
:meth:`step` (one iteration, ending with :meth:`_finish_step`) and :meth:`state_dict` (and,
for what it writes beside a checkpoint, ``_save_beside``).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._control import CalibrationControl
from ._options import CalibrationOptions
from .observations import GaugeObservations, Period

__all__ = ["CalibrationLoop", "HISTORY_KEYS", "checked_periods", "latest_checkpoint",
           "read_checkpoint"]

logger = logging.getLogger(__name__)

HISTORY_KEYS = ("iteration", "loss", "nse_median", "nse_min", "kge_median",
                "val_nse_median", "val_kge_median", "seconds")


class CalibrationLoop:
    """Iteration loop, listeners, history and checkpoint bookkeeping (see module docstring).

    Subclasses call :meth:`_init_loop` and set ``usable_gauges`` (bool ``[G]``: the gauges
    that may enter the loss), ``observations`` and ``engine_name``.
    """

    engine_name: str = ""
    usable_gauges: np.ndarray

    def _init_loop(self, cal: CalibrationOptions, control: CalibrationControl | None) -> None:
        self.gauge_fraction = float(cal.gauge_fraction)
        self.generator = torch.Generator().manual_seed(int(cal.seed))
        self.control = control or CalibrationControl()
        self.checkpoint_dir = None if cal.checkpoint_dir is None else Path(cal.checkpoint_dir)
        self.checkpoint_every = int(cal.checkpoint_every)
        self.keep = int(cal.keep)
        self.iteration = 0
        self.history: dict[str, list[float]] = {k: [] for k in HISTORY_KEYS}
        self.gauge_metrics: dict[str, np.ndarray] = {}
        self.listeners: list[Callable[[dict[str, Any]], None]] = []

    # ------------------------------------------------------------------ one iteration
    def step(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _save_beside(self, path: Path) -> None:
        """What a subclass writes next to checkpoint ``path`` first (nothing by default)."""

    def save_checkpoint(self, path: str | Path | None = None) -> Path:
        """Write :meth:`state_dict` with ``torch.save`` (atomically, after what the
        subclass writes beside it) and prune old checkpoints."""
        path = Path(path) if path is not None else self.checkpoint_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._save_beside(path)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)
        logger.info("checkpoint %s (iteration %d)", path, self.iteration)
        self._prune(path)
        return path

    def _loop_state(self, fmt: str) -> dict[str, Any]:
        """The loop's part of a checkpoint (format, iteration, IRF, network size, gauges,
        RNG states, history)."""
        return {"format": fmt, "iteration": self.iteration, "irf": self.spec.name,
                "n_reaches": self.network.n_reaches,
                "gauge_ids": torch.as_tensor(self.observations.ids),
                "rng": self._rng_state(), "history": self._history_state()}

    def _sample_gauges(self) -> np.ndarray:
        """bool ``[G]``: the usable gauges, or a seeded random ``gauge_fraction`` of them."""
        use = self.usable_gauges.copy()
        if self.gauge_fraction < 1:
            idx = torch.as_tensor(np.flatnonzero(use))
            k = max(1, int(round(self.gauge_fraction * idx.numel())))
            pick = idx[torch.randperm(idx.numel(), generator=self.generator)[:k]]
            use = np.zeros_like(use)
            use[pick.numpy()] = True
        return use

    def _record(self, loss: float, seconds: float, metrics: dict[str, np.ndarray]
                ) -> dict[str, Any]:
        """The iteration's record from per-gauge ``nse``/``kge`` (and ``val_nse``/``val_kge``)
        ``[G]``; keeps them in :attr:`gauge_metrics`."""
        self.gauge_metrics = {k: np.asarray(v) for k, v in metrics.items()}
        g_nse, g_kge = self.gauge_metrics["nse"], self.gauge_metrics["kge"]
        rec: dict[str, Any] = {
            "iteration": self.iteration, "loss": loss, "seconds": seconds,
            "nse_median": _nanstat(np.nanmedian, g_nse), "nse_min": _nanstat(np.nanmin, g_nse),
            "kge_median": _nanstat(np.nanmedian, g_kge),
            "val_nse_median": float("nan"), "val_kge_median": float("nan"),
        }
        if "val_nse" in self.gauge_metrics:
            rec["val_nse_median"] = _nanstat(np.nanmedian, self.gauge_metrics["val_nse"])
            rec["val_kge_median"] = _nanstat(np.nanmedian, self.gauge_metrics["val_kge"])
        return rec

    def _finish_step(self, rec: dict[str, Any]) -> dict[str, Any]:
        """Append ``rec`` to the history, write a due checkpoint, tell the listeners."""
        for key in HISTORY_KEYS:
            self.history[key].append(rec[key])
        if self.checkpoint_dir is not None and self.checkpoint_every > 0 \
                and self.iteration % self.checkpoint_every == 0:
            self.save_checkpoint()
        self._emit({"kind": "iteration", **rec})
        return rec

    # ------------------------------------------------------------------ the loop
    def run(self, n_iterations: int, *, target_nse: float | None = None) -> dict[str, list]:
        """Iterate until ``n_iterations`` in total (counting resumed ones), a stop from the
        control, or (when ``target_nse`` is given) every usable gauge's training NSE reaching
        it.  Writes a final checkpoint when a checkpoint directory is set.  Returns
        :attr:`history`."""
        self._emit({"kind": "start", "iteration": self.iteration, "total": int(n_iterations),
                    "gauge_ids": self.observations.ids.tolist(), "engine": self.engine_name})
        reason = "done"
        while self.iteration < n_iterations:
            if self.control.paused:
                self._emit({"kind": "status", "state": "paused", "iteration": self.iteration})
                logger.info("calibration paused at iteration %d", self.iteration)
                while not self.control.wait_while_paused(timeout=0.5):
                    if self.control.stopped:
                        break
                if not self.control.stopped:
                    self._emit({"kind": "status", "state": "running",
                                "iteration": self.iteration})
            if self.control.stopped:
                reason = "stopped"
                break
            self.step()
            if target_nse is not None:
                g = self.gauge_metrics["nse"][self.usable_gauges]
                if np.all(g >= target_nse):
                    reason = "target"
                    break
        if self.checkpoint_dir is not None:
            self.save_checkpoint()
        logger.info("calibration ended (%s) at iteration %d", reason, self.iteration)
        self._emit({"kind": "end", "reason": reason, "iteration": self.iteration})
        return self.history

    def add_listener(self, fn: Callable[[dict[str, Any]], None]) -> None:
        """Call ``fn(event)`` for each event: ``kind`` = start, iteration, status, end (and
        progress for the distributed calibrator)."""
        self.listeners.append(fn)

    def _emit(self, event: dict[str, Any]) -> None:
        if event["kind"] == "iteration":
            event = {**event, "gauge_nse": self.gauge_metrics["nse"].tolist(),
                     "gauge_kge": self.gauge_metrics["kge"].tolist()}
        for fn in list(self.listeners):
            try:
                fn(event)
            except Exception:  # a broken display must not kill a long calibration
                logger.exception("calibration listener %r failed", fn)

    # ------------------------------------------------------------------ checkpoint files
    def checkpoint_path(self, iteration: int | None = None) -> Path:
        if self.checkpoint_dir is None:
            raise ValueError("no checkpoint_dir was given")
        it = self.iteration if iteration is None else iteration
        return self.checkpoint_dir / f"calibration-{it:08d}.pt"

    def _prune(self, path: Path) -> None:
        """Keep the last ``keep`` checkpoints of ``checkpoint_dir`` (and their worker
        folders)."""
        if self.checkpoint_dir is None or self.keep <= 0 or path.parent != self.checkpoint_dir:
            return
        for p in sorted(self.checkpoint_dir.glob("calibration-*.pt"))[: -self.keep]:
            p.unlink(missing_ok=True)
            workers = p.with_suffix(".workers")
            if workers.is_dir():
                shutil.rmtree(workers, ignore_errors=True)

    def _checkpoint_path(self, path: str | Path | None) -> Path:
        """``path``, or the latest checkpoint in ``checkpoint_dir``."""
        if path is None:
            path = latest_checkpoint(self.checkpoint_dir)
            if path is None:
                raise FileNotFoundError(f"no checkpoint in {self.checkpoint_dir}")
        return Path(path)

    def _check_checkpoint(self, path: Path, state: dict[str, Any], fmt: str) -> None:
        """Check that ``state`` is a ``fmt`` checkpoint of this IRF, network and gauges."""
        if state.get("format") != fmt:
            raise ValueError(f"{path} is not a {fmt} checkpoint (format "
                             f"{state.get('format')!r})")
        if state["irf"] != self.spec.name or state["n_reaches"] != self.network.n_reaches:
            raise ValueError(f"{path} holds {state['irf']} parameters of {state['n_reaches']} "
                             f"reaches; this calibrator routes {self.spec.name} on "
                             f"{self.network.n_reaches}")
        if not np.array_equal(state["gauge_ids"].numpy(), self.observations.ids):
            raise ValueError(f"{path} was written with other gauges")

    def _resume_loop(self, path: Path, state: dict[str, Any]) -> int:
        """Restore the loop's RNG states, iteration and history from ``state``."""
        self._set_rng_state(state["rng"])
        self.iteration = int(state["iteration"])
        self._set_history(state["history"])
        logger.info("resumed from %s at iteration %d", path, self.iteration)
        return self.iteration

    def _rng_state(self) -> dict[str, Any]:
        rng: dict[str, Any] = {"torch": torch.get_rng_state(),
                               "generator": self.generator.get_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return rng

    def _set_rng_state(self, rng: dict[str, Any]) -> None:
        torch.set_rng_state(rng["torch"])
        self.generator.set_state(rng["generator"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])

    def _history_state(self) -> dict[str, torch.Tensor]:
        return {k: torch.tensor(v, dtype=torch.float64) for k, v in self.history.items()}

    def _set_history(self, state: dict[str, torch.Tensor]) -> None:
        self.history = {k: [float(x) for x in state[k]] for k in HISTORY_KEYS}
        self.history["iteration"] = [int(x) for x in self.history["iteration"]]


def checked_periods(observations: GaugeObservations, cal: CalibrationOptions
                    ) -> tuple[Period, Period | None]:
    """The training and validation periods of ``cal`` on ``observations``' steps, each longer
    than the warm-up plus one step (else a ``ValueError`` naming the period)."""
    train = observations.period(cal.train)
    validation = None if cal.validation is None else observations.period(cal.validation)
    for name, p in (("train", train), ("validation", validation)):
        if p is not None and p.stop - p.start <= cal.warmup + 1:
            raise ValueError(f"the {name} period ({p.stop - p.start} steps) must be longer "
                             f"than warmup + 1 = {cal.warmup + 1} steps")
    return train, validation


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint file, read with ``weights_only=True``: tensors, numbers, strings and
    containers only, no arbitrary object is unpickled."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)


def latest_checkpoint(directory: str | Path | None) -> Path | None:
    """The checkpoint with the highest iteration in ``directory`` (None when there is none)."""
    if directory is None or not Path(directory).is_dir():
        return None
    found = sorted(Path(directory).glob("calibration-*.pt"))
    return found[-1] if found else None


def _nanstat(fn: Callable[[np.ndarray], Any], x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(fn(x)) if x.size else float("nan")
