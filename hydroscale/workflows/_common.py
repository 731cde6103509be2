"""What the workflow runners share: progress bars, the device, the output folder's lock,
the inputs a run reads, its partition."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..network import RiverNetwork

if TYPE_CHECKING:
    from ._inputs import RouteInputs

__all__ = ["NullProgress", "Progress", "device", "input_paths", "memory_facts", "peak_facts",
           "output_folder_lock", "partition_inputs", "phase"]

logger = logging.getLogger(__name__)


class NullProgress:
    """A progress bar that shows nothing (``update``, ``close``, context manager)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> NullProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


Progress = Callable[..., Any]  # (desc, total, unit) -> object with update() and close()


@contextmanager
def phase(progress: Progress, name: str, what: str, total: int | None = None,
          unit: str = "step") -> Iterator[Any]:
    """One phase of a run (reading the network, partitioning, aggregating kernels, ...).

    Logs ``"<name>: <what>"`` (INFO) when it starts and ``"<name>: done in <s> s"`` when it
    ends, and yields the progress bar ``progress(name, total, unit)`` (closed at the end):
    a long phase updates it as its loop goes (``total`` steps of ``unit``); a short one
    leaves it alone and the bar shows the phase and its elapsed time."""
    logger.info("%s: %s", name, what)
    t0 = time.perf_counter()
    bar = progress(name, total, unit)
    try:
        yield bar
    finally:
        bar.close()
    logger.info("%s: done in %.2f s", name, time.perf_counter() - t0)


def device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("routing.device is 'cuda' but torch sees no CUDA device; use "
                           "routing.device=cpu or auto")
    return torch.device(name)


def input_paths(cfg: dict[str, Any]) -> list[str]:
    """The files and stores a workflow reads (no output may be, contain or lie in them)."""
    net, frc = cfg["network"], cfg["forcing"]
    paths = [net.get("path"), net.get("riv_bas_id"), net.get("lakes")]
    if frc["source"] not in ("synthetic", "lower_colorado"):
        paths.append(frc.get("path"))
    return [p for p in paths if p]


def partition_inputs(net: RiverNetwork, inputs: RouteInputs, rt: dict[str, Any],
                     part_cfg: dict[str, Any], progress: Progress,
                     n_workers: int | None = None) -> Any:
    """The workflow's partition of ``net`` (``partition`` keys; travel times from the
    routing parameters when ``max_travel_time`` is set), shown as one progress step."""
    from ..partition import partition_network, travel_time_bound

    bound = part_cfg["max_travel_time"]
    what = (f"cutting {net.n_reaches:,} reaches into clusters of at most "
            f"{part_cfg['max_reaches']} reaches"
            + ("" if bound is None else f" and {bound:g} steps of travel time")
            + ("" if n_workers is None else f" on {n_workers} workers"))
    with phase(progress, "partition", what, 1) as bar:
        travel = None
        if bound is not None:
            travel = travel_time_bound(rt["irf"], inputs.params, substeps=rt["substeps"])
        kw = {} if n_workers is None else {"n_workers": n_workers}
        part = partition_network(net, max_reaches=part_cfg["max_reaches"], travel_time=travel,
                                 max_travel_time=bound, **kw)
        bar.update(1)
    return part


def output_folder_lock(out_dir: Path) -> Any:
    """The lock of a workflow's ``output.dir`` (file ``.hydroscale.lock`` in it): one run
    writes a folder at a time (another live run there is refused, see
    :class:`hydroscale.io.StoreLock`)."""
    from ..io import StoreLock

    out_dir.mkdir(parents=True, exist_ok=True)
    return StoreLock.acquire(out_dir, what="output folder",
                             path=str(out_dir / ".hydroscale.lock"))


def memory_facts(run_plan: dict[str, Any], measured: list[int]) -> dict[str, Any]:
    """The summary's memory figures: per worker (one device: one) the plan's estimated peak
    beside the measured one, in GB, with the plan's residency and time chunk."""
    return {"memory_residency": run_plan["residency"],
            "memory_time_chunk": run_plan["time_chunk"],
            **peak_facts(run_plan["workers"], measured)}


def peak_facts(workers: list[dict[str, Any]], measured: list[int]) -> dict[str, Any]:
    """Per worker of a plan (a run plan's or a calibration plan's ``workers`` as dicts) its
    estimated ``peak`` beside the ``measured`` one and its ``limit``, in GB."""
    return {
        "planned_peak_gb": [round(w["peak"] / 1e9, 3) for w in workers],
        "measured_peak_gb": [round(m / 1e9, 3) for m in measured],
        "memory_limit_gb": [None if w["limit"] is None else round(w["limit"] / 1e9, 3)
                            for w in workers],
    }
