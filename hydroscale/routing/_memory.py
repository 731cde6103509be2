"""A coarse memory guard: refuse a run that cannot fit, before anything is allocated.

:func:`estimate_route_bytes` is a *lower bound* of what routing allocates on one device
beside its input (the discharge, the sub-step arrays of the engines that route at ``Δt / f``,
one kernel per reach); :func:`check_fits` compares it with the memory available there and
raises :class:`RunTooLargeError` with both figures and the setting to change, instead of a
raw allocator error (or the kernel's OOM killer) after minutes.  Being a lower bound, it
never refuses a run that fits; the run planner replaces it with per-worker peaks.

The memory available is ``$HYDROSCALE_MEMORY_LIMIT`` when set (bytes, or ``"64GB"``,
``"512MiB"``), else the free memory of a CUDA device (``torch.cuda.mem_get_info``), else
``MemAvailable`` of ``/proc/meminfo`` (``os.sysconf`` where there is none).
"""

from __future__ import annotations

import os
import re
from typing import Any

import torch

__all__ = [
    "MEMORY_ENV_VAR",
    "RunTooLargeError",
    "is_out_of_memory",
    "available_bytes",
    "check_fits",
    "estimate_engine_bytes",
    "estimate_route_bytes",
    "format_bytes",
    "parse_bytes",
    "peak_bytes",
    "release_free_memory",
    "tensor_bytes",
]

MEMORY_ENV_VAR = "HYDROSCALE_MEMORY_LIMIT"

#: engine -> (routes at sub-step resolution, smallest window it uses in routing steps (None:
#: the whole run), dtype it computes in (None: the input's)); other engines (the block-sparse
#: torch/triton, registered ones) are bounded by their inputs, outputs and a 1-step window
_FOOTPRINT: dict[str, tuple[bool, int | None, torch.dtype | None]] = {
    "oracle": (True, None, torch.float64),  # full-length kernels, float64
    "levels": (True, 32, None),  # the auto window starts at min(32, T)
}

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "pb": 10**15,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "pib": 2**50}


class RunTooLargeError(MemoryError):
    """A run whose memory estimate exceeds the memory available (raised before allocating);
    the message gives both figures and the setting to change."""


def is_out_of_memory(err: BaseException | None) -> bool:
    """Whether ``err`` is a device allocator's out-of-memory error: torch's
    ``OutOfMemoryError`` (as a Dask worker sends it back too), or its message in another
    exception."""
    return err is not None and (isinstance(err, torch.OutOfMemoryError)
                                or str(err).startswith("CUDA out of memory"))


def parse_bytes(text: str | int | float) -> int:
    """``"64GB"``, ``"512 MiB"``, ``"1e9"`` or a number -> bytes (1 GB = 10⁹ bytes)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return int(text)
    m = re.fullmatch(r"\s*([0-9.]+(?:e[0-9]+)?)\s*([a-z]*)\s*", str(text).lower())
    if m is None or m.group(2) not in _UNITS:
        raise ValueError(f"{MEMORY_ENV_VAR} must be a size such as 64GB, 512MiB or a number of "
                         f"bytes, got {text!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def format_bytes(n: float) -> str:
    """Bytes in GB (TB, PB when larger), three significant digits: ``0.432 GB``."""
    for unit, scale in (("GB", 1e9), ("TB", 1e12)):
        if n < 1000 * scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n / 1e15:.3g} PB"


def estimate_route_bytes(
    n_reaches: int,
    n_steps: int,
    substeps: int = 1,
    batch: int = 1,
    dtype: torch.dtype = torch.float32,
    window: int | None = None,
    *,
    substep_resolution: bool = False,
) -> int:
    """A lower bound (bytes) of what routing ``[batch, n_reaches, n_steps]`` allocates beside
    its input (which the caller already holds).

    Counts the discharge ``B N T``; with ``substep_resolution`` (engines that spread the
    inflow to ``Δt / f`` and route there: the oracle, "levels") the sub-step inflow and
    discharge ``2 B N T f``; and one kernel per reach, ``N W f`` with the window ``W =
    window`` routing steps (at most ``n_steps``; None: the whole run, as the oracle's
    full-length kernels).  Path kernels of block-sparse engines (``paths x W x f``, paths >=
    N), copies of the input and the engines' temporaries come on top.
    """
    item = torch.empty(0, dtype=dtype).element_size()
    b, n, t, f = int(batch), int(n_reaches), int(n_steps), int(substeps)
    w = t if window is None else max(1, min(int(window), t))
    held = b * n * t + (2 * b * n * t * f if substep_resolution else 0) + n * w * f
    return item * held


def estimate_engine_bytes(engine: str, n_reaches: int, n_steps: int, substeps: int = 1,
                          batch: int = 1, dtype: torch.dtype = torch.float32) -> int:
    """:func:`estimate_route_bytes` for a registered engine's way of routing (its sub-step
    arrays, smallest window and compute dtype)."""
    sub, window, own = _FOOTPRINT.get(engine, (False, 1, None))
    return estimate_route_bytes(n_reaches, n_steps, substeps, batch, own or dtype, window,
                                substep_resolution=sub)


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def available_bytes(device: Any = "cpu") -> tuple[int | None, str]:
    """(bytes available on ``device`` or None when unknown, where the figure comes from)."""
    env = os.environ.get(MEMORY_ENV_VAR)
    if env:
        return parse_bytes(env), f"{MEMORY_ENV_VAR}={env}"
    dev = torch.device(device)
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        return int(free), f"free on {dev}"
    if dev.type != "cpu":
        return None, f"unknown on {dev}"
    avail = _meminfo_available()
    if avail is not None:
        return avail, "MemAvailable in /proc/meminfo"
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "os.sysconf"
    except (ValueError, OSError, AttributeError):
        return None, "unknown"


def peak_bytes(device: Any = "cpu") -> int:
    """The measured peak of this process on ``device`` (bytes): the allocator's peak on a
    GPU, the process's resident peak (``ru_maxrss``) on a CPU, 0 where unknown."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return int(torch.cuda.max_memory_allocated(dev))
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    except (ImportError, OSError):
        return 0


def release_free_memory(device: Any = None) -> None:
    """Hand the heap memory freed so far back to the operating system (glibc's
    ``malloc_trim(0)``; a no-op where there is none, and for work on a ``device`` other than
    the CPU: its buffers are not on the heap, and trimming a large worker's heap is not free).

    Blocks below glibc's mmap threshold (which grows to 32 MB as large blocks are freed),
    such as the FFT chunks of a path-kernel aggregation, come from the heap, and freed ones
    stay in the process's resident set until trimmed: ~0.8 GB after the aggregations of a
    100k-reach route on CPU, on top of what the next phase allocates.  Called between phases,
    not per allocation (forcing every block through mmap instead triples the system time).
    """
    global _LIBC
    if device is not None and torch.device(device).type != "cpu":
        return
    if _LIBC is None:
        try:
            import ctypes

            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


_LIBC: Any = None


def check_fits(nbytes: int, device: Any, what: str, hint: str, detail: str = "") -> None:
    """Raise :class:`RunTooLargeError` if ``nbytes`` exceed the memory available on
    ``device``.

    ``what`` names the run (``"route"``), ``detail`` what the estimate counts (sizes,
    settings), ``hint`` the settings to change; the message gives the estimate, the memory
    available and where that figure comes from (and :data:`MEMORY_ENV_VAR`, to override
    it).  Nothing is checked where the memory available is unknown.
    """
    avail, source = available_bytes(device)
    if avail is None or nbytes <= avail:
        return
    if not source.startswith(MEMORY_ENV_VAR):
        source += f"; {MEMORY_ENV_VAR} overrides it"
    raise RunTooLargeError(
        f"{what} needs at least {format_bytes(nbytes)}{f' ({detail})' if detail else ''}"
        f" but {format_bytes(avail)} are available on {torch.device(device)} ({source}): "
        f"{hint}"
    )


def tensor_bytes(*objects: Any, seen: set[int] | None = None) -> int:
    """Bytes of the distinct tensor storages held by ``objects``: tensors, and the tensors
    reachable through dicts, lists, tuples and the attributes of hydroscale objects (a
    router's index tensors and path layouts, the network arrays it shares), each storage
    counted once -- also across calls given the same ``seen`` set (storage addresses).

    What a structure keeps resident where no allocator figure exists (a CPU worker), or
    before it runs."""
    seen = set() if seen is None else seen
    visited: set[int] = set()
    total = 0
    stack = list(objects)
    while stack:
        o = stack.pop()
        if isinstance(o, torch.Tensor):
            st = o.untyped_storage()
            key = st.data_ptr()
            if key and key not in seen:
                seen.add(key)
                total += int(st.nbytes())
            continue
        if id(o) in visited:
            continue
        visited.add(id(o))
        if isinstance(o, dict):
            stack.extend(o.values())
        elif isinstance(o, (list, tuple)):
            stack.extend(o)
        elif type(o).__module__.startswith("hydroscale") and hasattr(o, "__dict__"):
            stack.extend(vars(o).values())
    return total
