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

Interrupted runs (the client stopped, a task failed) are resumed from the output store
(:func:`hydroscale.io.prepare_output` locks, creates or reopens it):
:func:`restart_points` gives, per group, the first time chunk to route again: finished
chunks are skipped, as far as the downstream groups do not need their transfer buffers
again.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

__all__ = [
    "WorkersLost",
    "replaced",
    "restart_points",
    "wait_for_workers",
    "worker_addresses",
]

logger = logging.getLogger(__name__)


class WorkersLost(RuntimeError):
    """Fewer workers than a run needs came back within the time allowed."""


def worker_addresses(client: Any) -> dict[str, str]:
    """``{worker name: address}`` of the workers the scheduler knows now (running or
    restarting workers that have registered), asked of the scheduler on each call.

    Not ``client.scheduler_info()``: it stores the fresh answer in the client's cached
    identity and returns that attribute, which the client's periodic refresh (it asks for no
    per-worker information) may replace in between, so a busy machine saw a cluster of
    0 workers.
    """
    try:
        info = client.sync(client.scheduler.identity, n_workers=-1)
    except TypeError:  # older distributed: identity takes no n_workers and lists them all
        info = client.sync(client.scheduler.identity)
    return {str(w.get("name", a)): a for a, w in info["workers"].items()}


def in_worker_order(named: dict[str, str]) -> list[str]:
    """The addresses of ``{worker name: address}`` (:func:`worker_addresses`) in the order of
    the partition's workers: by name (Dask-CUDA names workers by GPU index), then address."""
    return [a for _, a in sorted(named.items())]


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
            return in_worker_order(seen)
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
