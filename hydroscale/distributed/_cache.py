"""The one worker cache: what a worker keeps between tasks, per run id.

Every run set up on the workers -- a routing run (:mod:`._worker`) or a wave run of forward
and backward waves (:mod:`._waves`) -- keeps its worker-resident structures (network,
routers, kernels, parameters, passes) in one dict on the Dask worker object, keyed by the
run's id.  It is a cache: tasks are pure functions of their arguments (DESIGN §3), and a
restarted worker rebuilds what a routing run needs from its scattered run data; a wave run
is set up again from its last snapshot by its driver.

A run object may define ``close()`` (stop its background work); :func:`drop` calls it and
frees the device memory the run held.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

__all__ = ["device", "drop", "get", "memory_limit", "peak_bytes", "put", "runs", "sync",
           "this_worker", "host_peak_bytes"]

logger = logging.getLogger(__name__)

_ATTR = "_hydroscale_runs"


def this_worker() -> Any:
    """The Dask worker running the current task."""
    from distributed import get_worker

    return get_worker()


def runs(worker: Any = None) -> dict[str, Any]:
    """The run cache of ``worker`` (default: the current task's worker)."""
    w = worker if worker is not None else this_worker()
    if not hasattr(w, _ATTR):
        setattr(w, _ATTR, {})
    return getattr(w, _ATTR)


def get(run_id: str, worker: Any = None) -> Any:
    """The run ``run_id`` of this worker; a clear error when it is not set up here."""
    cache = runs(worker)
    if run_id not in cache:
        w = worker if worker is not None else this_worker()
        raise RuntimeError(f"run {run_id!r} is not set up on worker {w.address} (was the "
                           "worker restarted? its driver sets it up again)")
    return cache[run_id]


def put(run_id: str, run: Any, worker: Any = None) -> Any:
    """Keep ``run`` under ``run_id`` (an existing one is kept: set-up is idempotent)."""
    return runs(worker).setdefault(run_id, run)


def drop(run_id: str, worker: Any = None) -> bool:
    """Forget run ``run_id`` on this worker (``close()`` it, free its device memory)."""
    run = runs(worker).pop(run_id, None)
    if run is None:
        return False
    close = getattr(run, "close", None)
    if close is not None:
        close()
    on_cuda = getattr(getattr(run, "device", None), "type", None) == "cuda"
    del run
    if on_cuda:
        torch.cuda.empty_cache()
    return True


def device() -> torch.device:
    """The device of this worker's runs."""
    if torch.cuda.is_available():
        # Dask-CUDA sets CUDA_VISIBLE_DEVICES per worker so that its GPU is device 0
        return torch.device("cuda", 0)
    return torch.device("cpu")


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def peak_bytes(dev: torch.device) -> int:
    """Peak bytes allocated on a GPU ``dev`` (0 on a CPU: see :func:`host_peak_bytes`)."""
    return int(torch.cuda.max_memory_allocated(dev)) if dev.type == "cuda" else 0


def memory_limit(dev: torch.device, worker: Any = None) -> tuple[int | None, str]:
    """(bytes this worker's runs may use on ``dev``, where the figure comes from).

    ``$HYDROSCALE_MEMORY_LIMIT`` when set; on a GPU its free memory plus what this process
    already holds there; on a CPU the Dask worker's ``memory_limit`` where one is set, else
    the host's available memory."""
    import os

    from ..routing import MEMORY_ENV_VAR, available_bytes

    if os.environ.get(MEMORY_ENV_VAR):
        return available_bytes(dev)
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        return int(free + torch.cuda.memory_reserved(dev)), f"free on {dev} + held by hydroscale"
    w = worker if worker is not None else this_worker()
    mm = getattr(w, "memory_manager", None)
    limit = getattr(mm, "memory_limit", None)
    if limit:
        return int(limit), "the Dask worker's memory_limit"
    return available_bytes(dev)


def host_peak_bytes() -> int:
    """Peak resident memory of this worker process (bytes), 0 where unknown."""
    from ..routing import peak_bytes as measured

    return measured("cpu")
