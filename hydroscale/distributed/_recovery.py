"""Worker loss: wait for a cluster to be whole again and map partition workers to addresses.

A worker process that dies (killed, out of memory, a lost node) is restarted by its nanny
under a *new address* but the same *name* (``LocalCluster``/``LocalCUDACluster`` name their
workers ``0, 1, ...``; dask-jobqueue and dask-cuda keep names across restarts as well).
Tasks of hydroscale are pure functions of their inputs (DESIGN §3): the scheduler recomputes
the lost results on whichever worker it picks, and worker-resident structures (routers,
kernels, parameters) are a cache rebuilt on demand.  What a driver loop still needs after a
loss is the new worker set:

- :func:`worker_addresses` -- ``{name: address}`` of the running workers now;
- :func:`wait_for_workers` -- block until ``n_workers`` workers run again and return their
  addresses in :func:`~hydroscale.distributed.map_workers` order (partition worker ``w`` ->
  address), so that work pinned to partition worker ``w`` can be pinned to its replacement;
- :func:`replaced` -- which partition workers changed address between two such maps.

These helpers only talk to the scheduler (no task is submitted): the routing runtime calls
them between passes and the calibration runtime between iterations.

Interrupted runs (the client stopped, a task failed) are resumed from the output store:

- :func:`run_fingerprint` -- a digest of everything that determines a run's output (network,
  parameters, IRF, sub-steps, window, dtype, partition, time chunk, forcing); a store is only
  resumed by the run that started it;
- :func:`prepare_output` -- create the output store, or check and reopen an incomplete one;
- :func:`restart_points` -- per group, the first time chunk to route again: finished chunks
  are skipped, as far as the downstream groups do not need their transfer buffers again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "PreparedOutput",
    "WorkersLost",
    "prepare_output",
    "replaced",
    "restart_points",
    "run_fingerprint",
    "wait_for_workers",
    "worker_addresses",
]

logger = logging.getLogger(__name__)


class WorkersLost(RuntimeError):
    """Fewer workers than a run needs came back within the time allowed."""


def worker_addresses(client: Any) -> dict[str, str]:
    """``{worker name: address}`` of the workers the scheduler knows now (running or
    restarting workers that have registered)."""
    try:
        info = client.scheduler_info(n_workers=-1)["workers"]
    except TypeError:  # older distributed: no n_workers argument
        info = client.scheduler_info()["workers"]
    return {str(w.get("name", a)): a for a, w in info.items()}


def wait_for_workers(client: Any, n_workers: int, timeout: float = 120.0,
                     poll: float = 0.25) -> list[str]:
    """Block until the cluster has exactly ``n_workers`` workers; return their addresses.

    Parameters
    ----------
    client : ``distributed.Client``.
    n_workers : W, the number of workers the partition was built for.
    timeout : seconds to wait for killed workers to be restarted by their nannies.
    poll : seconds between two looks at the scheduler.

    Returns
    -------
    list of W addresses, partition worker ``w`` first at index ``w`` (workers sorted by name,
    then address: the order of :func:`~hydroscale.distributed.map_workers`).

    Raises
    ------
    WorkersLost
        ``n_workers`` workers were not running within ``timeout`` seconds (the message names
        the workers seen).
    """
    if int(n_workers) < 1:
        raise ValueError(f"n_workers must be positive, got {n_workers}")
    deadline = time.monotonic() + float(timeout)
    seen: dict[str, str] = {}
    while True:
        seen = worker_addresses(client)
        if len(seen) == int(n_workers):
            return [a for _, a in sorted(seen.items(), key=lambda kv: (kv[0], kv[1]))]
        if time.monotonic() >= deadline:
            raise WorkersLost(
                f"waited {timeout:g} s for {n_workers} workers, the cluster has {len(seen)}: "
                f"{sorted(seen.items())}; restart the lost workers or partition again for "
                f"{len(seen)} workers"
            )
        time.sleep(poll)


def replaced(old: list[str], new: list[str]) -> dict[int, tuple[str, str]]:
    """Partition workers whose address changed: ``{w: (old address, new address)}``."""
    if len(old) != len(new):
        raise ValueError(f"address maps of different sizes: {len(old)} and {len(new)}")
    out = {w: (a, b) for w, (a, b) in enumerate(zip(old, new)) if a != b}
    if out:
        logger.info("workers replaced: %s", out)
    return out


# ---------------------------------------------------------------- interrupted runs
def digest(*arrays: Any) -> str:
    """sha256 (16 hex digits) of arrays' dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def run_fingerprint(definition: dict[str, Any]) -> str:
    """sha256 (16 hex digits) of a run definition (a JSON-able mapping of scalars and
    :func:`digest` strings)."""
    text = json.dumps(definition, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class PreparedOutput:
    """An output store ready for a run (see :func:`prepare_output`).

    ``done``: the (group, chunk) tasks an interrupted run finished; ``replaced``: where an
    existing store was moved by ``overwrite`` -- deleted by :meth:`commit` once the run is
    complete, put back by :meth:`rollback` if it fails (a failed run never costs the old
    output)."""

    path: str
    done: set[tuple[int, int]]
    replaced: str | None = None

    def commit(self) -> None:
        if self.replaced is not None:
            shutil.rmtree(self.replaced, ignore_errors=True)
            self.replaced = None

    def rollback(self) -> None:
        if self.replaced is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            os.rename(self.replaced, self.path)
            logger.info("run failed: the previous store is back at %s", self.path)
            self.replaced = None


def prepare_output(path: str, definition: dict[str, Any], create: Any, *, overwrite: bool,
                   resume: bool, hint: str = "overwrite=True") -> PreparedOutput:
    """Create the output store at ``path`` or reopen it to resume.

    ``create()`` creates a new store at ``path`` (nothing is there when it is called: with
    ``overwrite``, an existing store is first moved aside, see :class:`PreparedOutput`).  An
    existing store is resumed when ``resume`` and it is an incomplete hydroscale output store
    of the same run definition; otherwise it is left untouched and the error says why
    (complete, another run, not an output store).  ``hint`` names the overwrite switch in
    messages (``"--overwrite"`` for the CLI).
    """
    from ..io import IOFormatError, RunProgress

    if overwrite or not os.path.exists(path):
        aside = None
        if os.path.exists(path):
            aside = f"{os.path.abspath(path).rstrip(os.sep)}.replaced-{uuid.uuid4().hex[:8]}"
            os.rename(path, aside)
        try:
            create()
            RunProgress.create(path)
        except BaseException:
            PreparedOutput(path, set(), aside).rollback()
            raise
        return PreparedOutput(path, set(), aside)
    if not resume:
        raise FileExistsError(
            f"output store {path!r} exists and is left untouched; pass {hint} to replace it, "
            "resume=True to continue an interrupted run, or write elsewhere")
    import zarr

    try:
        attrs = dict(zarr.open_group(path, mode="r").attrs)
    except Exception as err:  # noqa: BLE001 - whatever is there, it is not our store
        raise IOFormatError(path, None, f"exists but is not a Zarr store ({err}); it is left "
                            "untouched: remove it or write elsewhere") from None
    if attrs.get("hydroscale_store") != "output":
        raise IOFormatError(path, "hydroscale_store", "exists but is not a hydroscale output "
                            "store; it is left untouched: remove it or write elsewhere")
    if attrs.get("complete") is not False:
        raise FileExistsError(
            f"output store {path!r} exists and is complete; it is left untouched: pass "
            f"{hint} to replace it, or write elsewhere")
    old = (attrs.get("run") or {}).get("definition") or {}
    if attrs.get("fingerprint") != run_fingerprint(definition):
        diff = sorted(k for k in set(old) | set(definition) if old.get(k) != definition.get(k))
        shown = "; ".join(f"{k}: store {old.get(k)!r}, now {definition.get(k)!r}"
                          for k in diff[:6])
        raise ValueError(
            f"output store {path!r} holds an interrupted run of another definition ({shown}); "
            f"it is left untouched: rerun with the same inputs to resume it, or pass {hint} "
            "to replace it"
        )
    done = RunProgress(path).done()
    logger.info("resuming %s: %d (group, chunk) tasks recorded as finished", path, len(done))
    return PreparedOutput(path, done)


def restart_points(upstream: list[np.ndarray], n_chunks: int, done: set[tuple[int, int]],
                   has_state: Any = None) -> np.ndarray:
    """Per group, the first time chunk to route: int64 ``[G]``.

    Group ``g`` finished chunks ``0 .. p_g - 1`` (a prefix of ``done``, each with its saved
    state when ``has_state(g, k)`` is given).  Routing (g, k) needs the transfer buffers of
    its upstream groups for chunk k, which are not saved, so an upstream group restarts no
    later than any group it feeds: ``r_u = min(p_u, r_g for every g fed by u)``.  Groups are
    numbered in topological order (upstream first).
    """
    g_n = len(upstream)
    p = np.zeros(g_n, np.int64)
    for g in range(g_n):
        k = 0
        while k < n_chunks and (g, k) in done and (has_state is None or has_state(g, k)):
            k += 1
        p[g] = k
    r = p.copy()
    for g in range(g_n - 1, -1, -1):
        for u in upstream[g]:
            r[int(u)] = min(r[int(u)], r[g])
    return r
