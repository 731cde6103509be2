"""A thread-safe pause/resume/stop switch shared by a calibration loop and its controllers."""

from __future__ import annotations

import threading

__all__ = ["CalibrationControl"]


class CalibrationControl:
    """Flags a running calibration checks between iterations.

    Any thread (the dashboard, a notebook cell, a signal handler) may call :meth:`pause`,
    :meth:`resume` or :meth:`stop`; the calibration loop calls :meth:`wait_while_paused` before
    each iteration.  A stop wins over a pause and cannot be undone.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._paused = False
        self._stopped = False

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
            self._cond.wait_for(lambda: not self._paused or self._stopped, timeout=timeout)
            return not self._stopped and not self._paused
