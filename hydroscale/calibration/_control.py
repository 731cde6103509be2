"""A thread-safe pause/resume/stop switch shared by a calibration loop and its controllers, with
a queue of one-shot steering requests (a new learning rate, a checkpoint now) that the loop
applies between iterations."""

from __future__ import annotations

import math
import threading
from typing import Any

__all__ = ["CalibrationControl"]


class CalibrationControl:
    """Flags a running calibration checks between iterations.

    Any thread (the dashboard, a notebook cell, a signal handler) may call :meth:`pause`,
    :meth:`resume` or :meth:`stop`; the calibration loop calls :meth:`wait_while_paused` before
    each iteration.  A stop wins over a pause and cannot be undone.  :meth:`set_lr` and
    :meth:`checkpoint` queue requests that the loop takes with :meth:`take_requests` before
    its next iteration (also while paused) and records in its history.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._paused = False
        self._stopped = False
        self._requests: list[tuple[str, Any]] = []

    def pause(self) -> None:
        """Hold the loop before its next iteration (no effect once stopped)."""
        with self._cond:
            if not self._stopped:
                self._paused = True
            self._cond.notify_all()

    def resume(self) -> None:
        """Let a paused loop continue."""
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def stop(self) -> None:
        """End the loop after the current iteration (a checkpoint is written)."""
        with self._cond:
            self._stopped = True
            self._paused = False
            self._cond.notify_all()

    def apply(self, command: str) -> None:
        """Apply ``"pause"``, ``"resume"`` or ``"stop"`` (e.g. received from the dashboard)."""
        actions = {"pause": self.pause, "resume": self.resume, "stop": self.stop}
        try:
            actions[command]()
        except KeyError:
            raise ValueError(f"unknown command {command!r}; use one of {sorted(actions)}") from None

    def set_lr(self, lr: float, source: str = "api") -> None:
        """Ask for learning rate ``lr`` (> 0, finite) from the next optimiser step on."""
        lr = float(lr)
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"the learning rate must be a finite number > 0, got {lr!r}")
        self._queue("lr", {"lr": lr, "source": source})

    def checkpoint(self, source: str = "api") -> None:
        """Ask for a checkpoint before the next iteration (at once while paused)."""
        self._queue("checkpoint", {"source": source})

    def _queue(self, action: str, args: dict[str, Any]) -> None:
        with self._cond:
            self._requests.append((action, args))
            self._cond.notify_all()

    def take_requests(self) -> list[tuple[str, dict[str, Any]]]:
        """The queued requests ``(action, arguments)`` in order; the queue is emptied."""
        with self._cond:
            out, self._requests = self._requests, []
            return out

    @property
    def paused(self) -> bool:
        with self._cond:
            return self._paused

    @property
    def stopped(self) -> bool:
        with self._cond:
            return self._stopped

    @property
    def state(self) -> str:
        """``"running"``, ``"paused"`` or ``"stopped"``."""
        with self._cond:
            return "stopped" if self._stopped else "paused" if self._paused else "running"

    def wait_while_paused(self, timeout: float | None = None) -> bool:
        """Block while paused (at most ``timeout`` seconds); True if the loop may go on."""
        with self._cond:
            self._cond.wait_for(lambda: not self._paused or self._stopped
                                or bool(self._requests), timeout=timeout)
            return not self._stopped and not self._paused
