"""One writer per output: a lock file that every run on every host sharing the file system
respects (DESIGN §3, "One writer per output store").

A run that writes an output store (or an output folder) first takes its lock: the file
``<store>.lock`` beside the store (beside it, not in it: ``overwrite`` moves the store itself
aside).  The lock file is JSON: the holder's host, pid, process start, command, start time and
a heartbeat (seconds since the epoch) that a background thread renews every
:data:`HEARTBEAT_S` seconds.  It is created atomically (a hard link of a finished file, so a
reader never sees a half-written lock).

A second writer, with or without ``overwrite``, is refused at once
(:class:`StoreLockedError`, naming the holder).  A lock whose holder is dead is taken over,
with a log line: on the same host when its pid is gone (or is another process now), on any
host when its heartbeat is older than the lease, :data:`LEASE_S` seconds (hosts sharing a
file system must keep their clocks within a fraction of it).  A holder whose lock was taken
over (its heartbeat stalled past the lease, or someone removed the file) learns it at its
next :meth:`StoreLock.check`, and fails (:class:`StoreChangedError`) instead of reporting
success.

``HYDROSCALE_LOCK_LEASE_S`` and ``HYDROSCALE_LOCK_HEARTBEAT_S`` override the two periods
(tests, slow shared file systems).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

__all__ = [
    "HEARTBEAT_S",
    "LEASE_S",
    "StoreChangedError",
    "StoreLock",
    "StoreLockedError",
    "check_not_nested",
    "lock_path",
]

logger = logging.getLogger(__name__)

#: seconds without a heartbeat after which a lock counts as abandoned (any host)
LEASE_S = 120.0
#: seconds between two heartbeats of a held lock
HEARTBEAT_S = 10.0


class StoreLockedError(RuntimeError):
    """Another live run writes this output: nothing was moved, created or written."""


class StoreChangedError(RuntimeError):
    """The output was changed under a run (its lock taken over or removed): the run's
    result is not whole and is not reported as a success."""


def _lease() -> float:
    return float(os.environ.get("HYDROSCALE_LOCK_LEASE_S", LEASE_S))


def _heartbeat() -> float:
    return float(os.environ.get("HYDROSCALE_LOCK_HEARTBEAT_S", HEARTBEAT_S))


def _norm(path: Any) -> str:
    return os.path.abspath(os.fspath(path)).rstrip(os.sep) or os.sep


def lock_path(store: Any) -> str:
    """The lock file of ``store``: ``<store>.lock`` beside it."""
    return _norm(store) + ".lock"


def _proc_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), else None: tells
    a live holder from another process that reuses its pid."""
    try:
        with open(f"/proc/{int(pid)}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds")


def _read(path: str) -> dict[str, Any] | None:
    """The lock's content, or None when the file is gone; ``{}`` when it is unreadable."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _why_dead(info: dict[str, Any], path: str, lease: float) -> str | None:
    """Why the holder of a lock is gone (None: it may be alive)."""
    now = time.time()
    beat = info.get("heartbeat")
    if not isinstance(beat, (int, float)):
        try:
            beat = os.path.getmtime(path)
        except OSError:
            return "the lock file is gone"
    age = now - float(beat)
    if age > lease:
        return f"no heartbeat for {age:.0f} s (lease {lease:g} s)"
    if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int):
        pid = int(info["pid"])
        if not _pid_alive(pid):
            return f"process {pid} is gone"
        start = info.get("proc_start")
        if start is not None and _proc_start(pid) not in (None, start):
            return f"pid {pid} is another process now"
    return None


def _describe(info: dict[str, Any], path: str) -> str:
    if not info:
        return f"an unreadable lock file {path}"
    beat = info.get("heartbeat")
    age = f", last heartbeat {time.time() - float(beat):.0f} s ago" if isinstance(
        beat, (int, float)) else ""
    cmd = f", command {info['command']!r}" if info.get("command") else ""
    return (f"host {info.get('host')!r}, pid {info.get('pid')}, started "
            f"{info.get('started', '?')}{age}{cmd}")


@dataclass
class StoreLock:
    """A held lock on an output (see the module docstring); release it with
    :meth:`release` or use it as a context manager.

    Attributes
    ----------
    target : the locked store or folder (absolute path).
    path : the lock file.
    token : this holder's random id (also recorded in the store it writes).
    info : the JSON content written (host, pid, proc_start, command, started, heartbeat).
    """

    target: str
    path: str
    token: str
    info: dict[str, Any]
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    lost: str | None = None

    # ------------------------------------------------------------------ taking it
    @classmethod
    def acquire(cls, target: Any, *, what: str = "output store",
                path: str | None = None) -> StoreLock:
        """Take the lock of ``target`` (default file ``<target>.lock``), or raise
        :class:`StoreLockedError` naming the live holder.  A dead holder's lock is taken
        over with a warning."""
        target = _norm(target)
        path = path or lock_path(target)
        lease = _lease()
        now = time.time()
        info = {"host": socket.gethostname(), "pid": os.getpid(),
                "proc_start": _proc_start(os.getpid()),
                "command": " ".join(os.path.basename(a) if i == 0 else a
                                    for i, a in enumerate(sys.argv))[:300],
                "started": _iso(now), "heartbeat": now, "token": uuid.uuid4().hex,
                "target": target}
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        for _ in range(3):
            if cls._create(path, info):
                lock = cls(target, path, info["token"], info)
                lock._start()
                logger.debug("locked %s (%s)", target, path)
                return lock
            held = _read(path)
            if held is None:
                continue  # released meanwhile: try again
            why = _why_dead(held, path, lease)
            if why is None:
                raise StoreLockedError(
                    f"the {what} {target!r} is being written by another run "
                    f"({_describe(held, path)}; lock file {path}); nothing was moved or "
                    "written. Wait for that run to finish or stop it, or write to another "
                    f"path. A lock whose holder died is taken over at once on the same host, "
                    f"and on any host after {lease:g} s without a heartbeat.")
            stale = f"{path}.stale-{uuid.uuid4().hex[:8]}"
            try:
                os.rename(path, stale)  # one taker wins; the others see the file gone
            except FileNotFoundError:
                continue
            logger.warning("taking over the lock of %s from a dead run (%s: %s)", target,
                           _describe(held, path), why)
            try:
                os.remove(stale)
            except OSError:
                pass
        raise StoreLockedError(f"could not take the lock {path} of {target!r}: other runs "
                               "keep taking it; try again")

    @staticmethod
    def _create(path: str, info: dict[str, Any]) -> bool:
        """Create ``path`` holding ``info`` atomically; False if it exists."""
        tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(info, fh)
        try:
            os.link(tmp, path)  # atomic, and fails if the lock exists
            return True
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(info, fh)
            return True
        finally:
            os.remove(tmp)

    # ------------------------------------------------------------------ holding it
    def _start(self) -> None:
        self._thread = threading.Thread(target=self._beat, daemon=True,
                                        name=f"hydroscale-lock-{os.path.basename(self.target)}")
        self._thread.start()

    def _beat(self) -> None:
        period = _heartbeat()
        while not self._stop.wait(period):
            held = _read(self.path)
            if not held or held.get("token") != self.token:
                self.lost = ("the lock file is gone" if held is None else
                             f"the lock was taken by {_describe(held, self.path)}")
                logger.error("lost the lock of %s: %s", self.target, self.lost)
                return
            self.info["heartbeat"] = time.time()
            tmp = f"{self.path}.{uuid.uuid4().hex[:8]}.tmp"
            try:
                with open(tmp, "w", encoding="utf-8") as fh:
                    json.dump(self.info, fh)
                os.replace(tmp, self.path)
            except OSError as err:  # a transient file-system error: the next beat retries
                logger.warning("could not renew the lock %s: %s", self.path, err)

    def check(self) -> None:
        """Raise :class:`StoreChangedError` unless this lock is still held (called before a
        run reports success, and between its steps)."""
        held = _read(self.path)
        if self.lost is None and (not held or held.get("token") != self.token):
            self.lost = ("the lock file is gone" if held is None else
                         f"the lock was taken by {_describe(held, self.path)}")
        if self.lost is not None:
            raise StoreChangedError(
                f"the {self.target!r} this run writes was changed under it ({self.lost}): its "
                "output is not whole and this run does not report success; run it again once "
                "no other run writes there")

    def release(self) -> None:
        """Stop the heartbeat and remove the lock file (if it is still this holder's)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        held = _read(self.path)
        if held and held.get("token") == self.token:
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
        logger.debug("released %s", self.path)

    def __enter__(self) -> StoreLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def check_not_nested(output: Any, inputs: Any, what: str = "output store") -> None:
    """Refuse an ``output`` path equal to, inside or around one of ``inputs`` (paths of
    input stores and files; None entries are skipped), before anything is moved: an
    ``overwrite`` would move the input aside, a write would corrupt it."""
    out = os.path.realpath(_norm(output))
    for item in inputs:
        if item is None:
            continue
        src = os.path.realpath(_norm(item))
        if out == src:
            rel = "is"
        elif src.startswith(out + os.sep):
            rel = "contains"
        elif out.startswith(src + os.sep):
            rel = "lies inside"
        else:
            continue
        raise ValueError(f"the {what} {os.fspath(output)!r} {rel} the input {os.fspath(item)!r}"
                         ": nothing was moved or written; write the output to another path")
