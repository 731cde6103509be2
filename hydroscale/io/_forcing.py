"""Forcing sources: lateral inflow (m³/s, step means) on a regular time axis, one protocol for
the one-device workflow, the distributed route and calibration (DESIGN §2, io owns every
forcing source).

A *source* is a small picklable description; ``source.open(network)`` checks it against a
network (ids, steps) once and returns an *opened* source that reads blocks:

- ``read(reaches, rows, t0, t1, device) -> Tensor [n, t1 - t0]`` float32: the reaches of a
  group (global reach indices ``reaches``; ``rows`` their engine row range, a hint that lets a
  store written in that order be read as one slice), on ``device`` (what workers call).  A
  source whose ``index_on_device`` is True takes ``reaches`` as an int64 tensor on ``device``
  too (it generates there: a host index would be copied, and the device drained, per read);
- ``read_all(t0, t1) -> ndarray [N, t1 - t0]`` float32 in network order (one device);
- ``time`` (datetime64[ns] interval starts), ``n_steps``, ``interval_s`` (s) and
  ``describe()`` (a JSON-able description: its ``source`` names it), on the opened and the
  unopened source alike.

Sources: :class:`ZarrForcing` (a store written by :func:`hydroscale.io.ingest`),
:class:`SyntheticForcing` (uniform runoff from a counter hash: the same value for a reach and
step whatever the partition, workers or time chunks) and :class:`ArrayForcing` (values in
memory, e.g. the bundled basin's; not shipped to workers: :func:`hydroscale.io.ingest` it).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..kernels import hash_uniform
from ..network import RiverNetwork

__all__ = ["ArrayForcing", "SyntheticForcing", "ZarrForcing", "as_forcing", "hash_uniform"]

logger = logging.getLogger(__name__)

def _times(start: Any, n_steps: int, interval_s: float) -> np.ndarray:
    s = np.datetime64(str(start).rstrip("Z"), "s")
    return (s + np.arange(n_steps) * np.timedelta64(int(interval_s), "s")
            ).astype("datetime64[ns]")


@dataclass
class SyntheticForcing:
    """Deterministic uniform runoff ``[0, scale)`` m³/s, generated where it is read.

    Parameters
    ----------
    n_steps : T, routing steps.
    seed : hash seed.
    scale : upper bound of the uniform distribution (m³/s).
    start : first interval start (ISO date, UTC).
    interval_s : routing step (s).
    fail_at : simulate an interrupted source (reliability tests and benchmarks): reads that
        reach step ``fail_at`` raise ``OSError``.  Not part of :meth:`describe`, so a rerun
        without it resumes the interrupted run.
    """

    n_steps: int
    seed: int = 0
    scale: float = 1.0
    start: str = "2000-01-01"
    interval_s: float = 86400.0
    fail_at: int | None = None
    n_reaches: int | None = field(default=None, repr=False, compare=False)

    @property
    def time(self) -> np.ndarray:
        return _times(self.start, self.n_steps, self.interval_s)

    def describe(self) -> dict[str, Any]:
        return {"source": f"synthetic U(0, {self.scale}) m3/s (counter hash, seed "
                          f"{self.seed})", "seed": self.seed, "scale": self.scale,
                "start": str(self.start), "interval_s": self.interval_s}

    def identity(self) -> dict[str, Any]:
        """What a resumed run must see again (see :func:`hydroscale.io.run_fingerprint`)."""
        return {**self.describe(), "n_steps": self.n_steps}

    def open(self, network: RiverNetwork) -> SyntheticForcing:
        return dataclasses.replace(self, n_reaches=network.n_reaches)

    index_on_device = True  # read() takes the reach indices as a tensor on its device

    def read(self, reaches: np.ndarray | torch.Tensor, rows: tuple[int, int], t0: int, t1: int,
             device: torch.device) -> torch.Tensor:
        """``[n, t1 - t0]`` float32 on ``device`` for global reach indices ``reaches``
        (an array, or an int64 tensor already on ``device``)."""
        if self.fail_at is not None and t1 > self.fail_at:
            raise OSError(f"forcing unavailable from step {self.fail_at} (simulated)")
        r = torch.as_tensor(reaches, device=device)
        out = hash_uniform(r, t0, t1, self.seed)
        return out.mul_(self.scale) if self.scale != 1.0 else out

    def read_all(self, t0: int, t1: int) -> np.ndarray:
        """``[N, t1 - t0]`` float32 in network order (after :meth:`open`)."""
        if self.n_reaches is None:
            raise RuntimeError("SyntheticForcing.read_all before open(network)")
        return self.read(np.arange(self.n_reaches), (0, self.n_reaches), t0, t1,
                         torch.device("cpu")).numpy()


@dataclass
class ZarrForcing:
    """A Zarr forcing store (see :func:`hydroscale.io.ingest`), opened where it is read.

    Parameters
    ----------
    store : path of the store (every worker must see it: a local disk for a local cluster,
        a shared file system or object store otherwise).
    steps : read the first ``steps`` steps only (default all).
    """

    store: str
    steps: int | None = None
    _fs: Any = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        return {"store": self.store, "steps": self.steps}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.store, self.steps, self._fs = state["store"], state.get("steps"), None

    def _root(self) -> Any:
        import zarr

        return zarr.open_group(self.store, mode="r")

    @property
    def opened(self) -> bool:
        """Whether this is a store checked against a network (:meth:`open`)."""
        return self._fs is not None

    @property
    def time(self) -> np.ndarray:
        t = self._fs.time if self._fs is not None else (
            np.datetime64("1970-01-01T00:00:00", "s")
            + self._root()["time"][:].astype("timedelta64[s]")).astype("datetime64[ns]")
        return t[: self.steps] if self.steps is not None else t

    @property
    def n_steps(self) -> int:
        if self._fs is not None:
            n = int(self._fs.array.shape[1])
        else:
            root = self._root()
            n = int(root[root.attrs["variable"]].shape[1])
        return min(n, self.steps) if self.steps is not None else n

    @property
    def interval_s(self) -> float | None:
        return (self._fs.interval_s if self._fs is not None
                else self._root().attrs.get("interval_s"))

    def describe(self) -> dict[str, Any]:
        return {"source": f"zarr {self.store}"}

    def identity(self) -> dict[str, Any]:
        """What a resumed run must see again: the store's path, shape, ids and times, and a
        digest of its first chunk (cheap; a re-ingest of the same data keeps it)."""
        import os

        from ._output import digest

        root = self._root()
        arr = root[root.attrs["variable"]]
        first = arr[: arr.chunks[0], : arr.chunks[1]]
        return {"store": os.path.abspath(self.store), "shape": list(arr.shape),
                "steps": self.steps, "ids_time": digest(root["reach"][:], root["time"][:]),
                "first_chunk": digest(first)}

    def open(self, network: RiverNetwork) -> ZarrForcing:
        """Check the store's ids, times and chunks against ``network`` (once) and keep the
        row of every reach."""
        from .zarr_store import open_forcing

        opened = ZarrForcing(self.store, self.steps)
        opened._fs = open_forcing(self.store, network)
        if self.steps is not None and self.steps > opened._fs.time.size:
            raise ValueError(f"{self.steps} steps asked of the forcing store {self.store!r}, "
                             f"which holds {opened._fs.time.size}; ask for fewer")
        return opened

    def read(self, reaches: np.ndarray, rows: tuple[int, int], t0: int, t1: int,
             device: torch.device) -> torch.Tensor:
        """``[n, t1 - t0]`` float32 on ``device`` for global reach indices ``reaches``."""
        if self._fs is None:
            raise RuntimeError("ZarrForcing.read before open(network)")
        r = self._fs.rows[reaches]
        if r.size and r[-1] - r[0] == r.size - 1 and np.all(np.diff(r) == 1):
            block = self._fs.check_finite(self._fs.array[int(r[0]) : int(r[-1]) + 1, t0:t1],
                                          r, t0)
        elif r.size:
            block = self._fs.read_rows(r, t0, t1)
        else:
            block = np.zeros((0, t1 - t0), np.float32)
        x = torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32))
        return x.to(device, non_blocking=False)

    def read_all(self, t0: int, t1: int) -> np.ndarray:
        """``[N, t1 - t0]`` float32 in network order (after :meth:`open`)."""
        if self._fs is None:
            raise RuntimeError("ZarrForcing.read_all before open(network)")
        return np.asarray(self._fs.read_rows(self._fs.rows, t0, t1), np.float32)


@dataclass
class ArrayForcing:
    """Lateral inflow held in memory: ``values`` ``[N, T]`` (m³/s, network order), ``time``
    ``[T]`` interval starts, ``interval_s`` (s), ``source`` a description."""

    values: np.ndarray
    time: np.ndarray
    interval_s: float
    source: str = "array"

    def __post_init__(self) -> None:
        self.values = np.ascontiguousarray(self.values, np.float32)
        self.time = np.asarray(self.time).astype("datetime64[ns]")
        if self.values.ndim != 2 or self.values.shape[1] != self.time.size:
            raise ValueError(f"values must be [N, T] with T = {self.time.size} times, got "
                             f"{self.values.shape}")

    @property
    def n_steps(self) -> int:
        return int(self.time.size)

    def describe(self) -> dict[str, Any]:
        return {"source": self.source}

    def identity(self) -> dict[str, Any]:
        """What a resumed run must see again: the times and a digest of the values."""
        from ._output import digest

        return {"source": self.source, "time": digest(self.time.astype("datetime64[s]")),
                "values": digest(self.values)}

    def open(self, network: RiverNetwork) -> ArrayForcing:
        if self.values.shape[0] != network.n_reaches:
            raise ValueError(f"the forcing holds {self.values.shape[0]} reaches, the network "
                             f"{network.n_reaches}")
        return self

    def read(self, reaches: np.ndarray, rows: tuple[int, int], t0: int, t1: int,
             device: torch.device) -> torch.Tensor:
        return torch.from_numpy(self.values[np.asarray(reaches), t0:t1]).to(device)

    def read_all(self, t0: int, t1: int) -> np.ndarray:
        return self.values[:, t0:t1]

    def head(self, n_steps: int) -> ArrayForcing:
        """The first ``n_steps`` steps."""
        return ArrayForcing(self.values[:, :n_steps], self.time[:n_steps], self.interval_s,
                            self.source)


def as_forcing(forcing: Any) -> Any:
    """A forcing source from a store path or a source object (returned as is)."""
    import os

    if hasattr(forcing, "open") and hasattr(forcing, "read"):
        return forcing
    if isinstance(forcing, (str, os.PathLike)):
        return ZarrForcing(os.fspath(forcing))
    raise TypeError(
        "forcing must be a Zarr store path or a forcing source (ZarrForcing, "
        f"SyntheticForcing, ArrayForcing), got {type(forcing).__name__}: an array is an "
        "ArrayForcing on one device, and is written with hydroscale.io.ingest for the workers"
    )
