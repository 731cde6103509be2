"""The calibration loop shared by the single-device and the distributed calibrators.

:class:`CalibrationLoop` holds what does not depend on where the routing runs: the
iteration loop with its :class:`CalibrationControl` (pause, resume, stop, and the steering
requests: a new learning rate, a checkpoint now), listeners (the dashboard), the history and
per-gauge metrics of every iteration, the run's action log (every steering action with the
iteration it took effect at), what the page shows of a few watched gauges' hydrographs,
gauge sampling, and the writing, naming, checking and pruning of checkpoint files.  A
subclass provides :meth:`step` (one iteration, ending with :meth:`_finish_step`),
:meth:`state_dict`, ``_set_lr`` (the optimiser's next step uses the new rate) and
``_parameter_counts`` (and, for what it writes beside a checkpoint, ``_save_beside``).

Hydrographs on the page: the scheduler-side state stays bounded because only the gauges
someone clicked are watched (at most :data:`MAX_WATCHED`, the most recent ones); for those
the loop keeps the latest simulated series and sends it after each iteration.  The first
guess (discharge at every gauge with the parameters the run started from, ``[G, T]``
float32) stays on the client; the observations are the client's already.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._control import CalibrationControl
from ._options import CalibrationOptions
from ._summary import histogram_edges, parameter_counts, reduce_series
from .observations import GaugeObservations, Period

__all__ = ["CalibrationLoop", "HISTORY_KEYS", "MAX_WATCHED", "checked_periods",
           "latest_checkpoint", "read_checkpoint"]

logger = logging.getLogger(__name__)

#: per-iteration history; ``lr`` is the learning rate of the iteration's optimiser step
HISTORY_KEYS = ("iteration", "loss", "val_loss", "nse_median", "nse_min", "kge_median",
                "val_nse_median", "val_kge_median", "val_nse_min", "lr", "seconds")
#: most gauges whose hydrographs the loop follows for the page at once
MAX_WATCHED = 8
_STATES = {"pause": "paused", "resume": "running", "stop": "stopped"}


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
        self.lr = float(cal.lr)
        self.actions: list[dict[str, Any]] = []  # the run's steering log (see _log_action)
        self.end_reason: str | None = None
        self.first_guess: np.ndarray | None = None  # [G, T] float32, see the docstring
        self._watch_lock = threading.Lock()
        self._watched: list[int] = []  # gauge numbers, most recently clicked last
        self._current: dict[int, np.ndarray] = {}  # gauge number -> latest series [T]
        self._edges: np.ndarray | None = None

    # ------------------------------------------------------------------ steering
    def _set_lr(self, lr: float) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _parameter_counts(self) -> dict[str, np.ndarray] | None:
        """Histogram counts of the current parameters (see :func:`parameter_counts`)."""
        return None

    def _log_action(self, action: str, **details: Any) -> dict[str, Any]:
        """Append ``action`` to :attr:`actions` (and tell the listeners): ``iteration`` is the
        last completed iteration; the action applies from the next one."""
        entry = {"iteration": int(self.iteration), "action": action,
                 "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **details}
        self.actions.append(entry)
        logger.info("calibration action at iteration %d: %s %s", self.iteration, action,
                    details or "")
        self._emit({"kind": "action", **entry})
        return entry

    def _apply_requests(self) -> None:
        """Apply the control's queued requests (learning rate, checkpoint), in order."""
        for action, args in self.control.take_requests():
            source = str(args.get("source", "api"))
            if action == "lr":
                old, new = self.lr, float(args["lr"])
                self._set_lr(new)
                self.lr = new
                self._log_action("lr", lr_from=old, lr_to=new, source=source)
            elif action == "checkpoint":
                if self.checkpoint_dir is None:
                    self._log_action("checkpoint", path=None, source=source,
                                     note="no checkpoint_dir: nothing written")
                else:
                    self._log_action("checkpoint", path=str(self.save_checkpoint()),
                                     source=source)
            else:
                logger.warning("unknown calibration request %r ignored", action)

    # ------------------------------------------------------------------ watched gauges
    def watch(self, gauge_id: int) -> dict[str, Any]:
        """Follow the hydrograph of the gauge at reach ``gauge_id`` (the oldest watched gauge
        is dropped beyond :data:`MAX_WATCHED`); returns :meth:`hydrograph`."""
        hits = np.flatnonzero(self.observations.ids == int(gauge_id))
        if not hits.size:
            raise ValueError(f"no gauge at reach id {gauge_id}; gauges are at reach ids "
                             f"{self.observations.ids[:10].tolist()}...")
        k = int(hits[0])
        with self._watch_lock:
            if k in self._watched:
                self._watched.remove(k)
            self._watched.append(k)
            for old in self._watched[:-MAX_WATCHED]:
                self._current.pop(old, None)
            del self._watched[:-MAX_WATCHED]
        return self.hydrograph(k)

    def watched(self) -> list[int]:
        """Gauge numbers whose hydrographs are followed."""
        with self._watch_lock:
            return list(self._watched)

    def _keep_current(self, series: dict[int, np.ndarray]) -> None:
        """The latest discharge ``[T]`` of watched gauges (gauge number -> series)."""
        with self._watch_lock:
            for k, v in series.items():
                if k in self._watched:
                    self._current[int(k)] = np.asarray(v, np.float32)

    def hydrograph(self, k: int, parts: tuple[str, ...] = ("observed", "first", "current")
                   ) -> dict[str, Any]:
        """Gauge number ``k``'s series for the page (each at most
        :data:`~hydroscale.calibration._summary.MAX_POINTS` points, steps of the
        observations): ``observed``, ``first`` (first guess), ``current`` (latest iteration;
        None until one ran while the gauge was watched), with the training and validation
        periods (step ranges)."""
        with self._watch_lock:
            cur = self._current.get(int(k))
        src = {"observed": lambda: self.observations.values[k],
               "first": lambda: None if self.first_guess is None else self.first_guess[k],
               "current": lambda: cur}
        out: dict[str, Any] = {"gauge": int(self.observations.ids[k]),
                               "iteration": int(self.iteration)}
        for name in parts:
            v = src[name]()
            if v is None:
                out[name] = None
                continue
            t, y = reduce_series(v)
            out[name] = {"step": t.tolist(), "value": [_finite(x) for x in y]}
        if "observed" in parts:
            out["train"] = [self.train.start, self.train.stop]
            out["validation"] = (None if self.validation is None
                                 else [self.validation.start, self.validation.stop])
            out["warmup"] = int(self.warmup)
        return out

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
                "rng": self._rng_state(), "history": self._history_state(),
                "lr": self.lr, "actions": [dict(a) for a in self.actions]}

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
            "iteration": self.iteration, "loss": loss, "seconds": seconds, "lr": self.lr,
            "nse_median": _nanstat(np.nanmedian, g_nse), "nse_min": _nanstat(np.nanmin, g_nse),
            "kge_median": _nanstat(np.nanmedian, g_kge),
            "val_nse_median": float("nan"), "val_kge_median": float("nan"),
            "val_nse_min": float("nan"), "val_loss": float("nan"),
        }
        if "val_nse" in self.gauge_metrics:
            v_nse = self.gauge_metrics["val_nse"]
            rec["val_nse_median"] = _nanstat(np.nanmedian, v_nse)
            rec["val_nse_min"] = _nanstat(np.nanmin, v_nse)
            rec["val_kge_median"] = _nanstat(np.nanmedian, self.gauge_metrics["val_kge"])
            if "val_loss" in self.gauge_metrics:  # over the gauges that enter the loss
                v_loss = self.gauge_metrics["val_loss"][self.usable_gauges]
                rec["val_loss"] = _nanstat(np.mean, v_loss)
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
        self._emit(self._start_event(int(n_iterations)))
        reason = "done"
        while self.iteration < n_iterations:
            self._apply_requests()
            if self.control.paused:
                self._emit({"kind": "status", "state": "paused", "iteration": self.iteration})
                self._log_action("pause")
                while not self.control.wait_while_paused(timeout=0.5):
                    self._apply_requests()
                    if self.control.stopped:
                        break
                self._apply_requests()
                if not self.control.stopped:
                    self._emit({"kind": "status", "state": "running",
                                "iteration": self.iteration})
                    self._log_action("resume")
            if self.control.stopped:
                reason = "stopped"
                self._log_action("stop")
                break
            self.step()
            if target_nse is not None:
                g = self.gauge_metrics["nse"][self.usable_gauges]
                if np.all(g >= target_nse):
                    reason = "target"
                    break
        self._apply_requests()  # a learning rate asked for at the very end is still logged
        self.end_reason = reason
        if self.checkpoint_dir is not None:
            self.save_checkpoint()
        logger.info("calibration ended (%s) at iteration %d", reason, self.iteration)
        self._emit({"kind": "end", "reason": reason, "iteration": self.iteration})
        return self.history

    def add_listener(self, fn: Callable[[dict[str, Any]], None]) -> None:
        """Call ``fn(event)`` for each event: ``kind`` = start, iteration, status, end (and
        progress for the distributed calibrator)."""
        self.listeners.append(fn)

    def _start_event(self, total: int) -> dict[str, Any]:
        """What the page needs once: gauges (ids and, when the network has ``lat``/``lon``,
        their coordinates), periods, learning rate, and the parameter histograms of the
        parameters the run starts from."""
        ev: dict[str, Any] = {"kind": "start", "iteration": self.iteration, "total": total,
                              "gauge_ids": self.observations.ids.tolist(),
                              "engine": self.engine_name, "lr": self.lr,
                              "actions": [dict(a) for a in self.actions]}
        attrs = self.network.attrs
        if "lat" in attrs and "lon" in attrs:
            at = self.network.index_of(self.observations.ids)
            ev["gauge_lat"] = np.asarray(attrs["lat"], np.float64)[at].tolist()
            ev["gauge_lon"] = np.asarray(attrs["lon"], np.float64)[at].tolist()
        model = self.model
        try:
            self._edges = histogram_edges(model.low, model.high)
            with torch.no_grad():
                first = parameter_counts(model(), model.low, model.high, self._edges)
        except (AttributeError, TypeError, ValueError):  # a model without bounds: no panel
            logger.info("no parameter histograms: the model has no bounds", exc_info=True)
            self._edges = None
        else:
            ev["params"] = {"names": list(self.spec.params), "edges": self._edges.tolist(),
                            "n": int(self.network.n_reaches),
                            **{k: v.tolist() for k, v in first.items()}}
        return ev

    def _emit(self, event: dict[str, Any]) -> None:
        if event["kind"] == "iteration":
            extra: dict[str, Any] = {f"gauge_{k}": v.tolist()
                                     for k, v in self.gauge_metrics.items()}
            counts = self._parameter_counts() if self._edges is not None else None
            if counts is not None:
                extra["params"] = {k: np.asarray(v).tolist() for k, v in counts.items()}
            with self._watch_lock:
                watched = list(self._watched)
            extra["hydrographs"] = [self.hydrograph(k, ("current",)) for k in watched]
            event = {**event, **extra}
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
        if "lr" in state and float(state["lr"]) != self.lr:
            self.lr = float(state["lr"])
            self._set_lr(self.lr)
        self.actions = [dict(a) for a in state.get("actions", [])]
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
        n = len(state["iteration"])  # keys added later (lr, val_nse_min) read as NaN
        self.history = {k: [float(x) for x in state[k]] if k in state else [float("nan")] * n
                        for k in HISTORY_KEYS}
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


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None
