"""Forcing sources read BY THE WORKERS, one (group, time chunk) block at a time.

A source is a small picklable description sent to the workers; each worker opens it once
(:meth:`open`) and reads ``[n, T_chunk]`` blocks of the reaches of its groups.

- :class:`ZarrForcing`: a forcing store written by :func:`hydroscale.io.ingest` (ids
  checked against the network); rows are read as one contiguous slice when the store follows
  the plan's row order (``ingest(..., reach_order=plan.reach_ids)``), else gathered.
- :class:`SyntheticForcing`: uniform random runoff in ``[0, scale)`` m³/s from a counter-based
  hash of (seed, reach index, step), generated on the worker's device: the same value for a
  reach and step whatever the partition, the number of workers or the time chunking.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..network import RiverNetwork

__all__ = ["SyntheticForcing", "ZarrForcing", "hash_uniform"]

logger = logging.getLogger(__name__)

_M32 = 0xFFFFFFFF


def hash_uniform(reach: torch.Tensor, t0: int, t1: int, seed: int) -> torch.Tensor:
    """Uniform ``[0, 1)`` float32 ``[n, t1 - t0]`` from a 32-bit integer hash of
    (seed, reach index, step) (the "lowbias32" finaliser; int64 arithmetic, so identical on
    every device)."""
    t = torch.arange(t0, t1, device=reach.device, dtype=torch.int64)
    x = (reach.to(torch.int64)[:, None] * 0x9E3779B1 + t[None, :] * 0x85EBCA77
         + (int(seed) & _M32) * 0xC2B2AE3D) & _M32
    x ^= x >> 16
    x = (x * 0x7FEB352D) & _M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & _M32
    x ^= x >> 16
    return (x >> 8).to(torch.float32) * (1.0 / 16777216.0)


@dataclass
class SyntheticForcing:
    """Deterministic uniform runoff ``[0, scale)`` m³/s, generated on the workers.

    Parameters
    ----------
    n_steps : T, routing steps.
    seed : hash seed.
    scale : upper bound of the uniform distribution (m³/s).
    start : first interval start (ISO date).
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

    @property
    def time(self) -> np.ndarray:
        start = np.datetime64(self.start, "s")
        return (start + np.arange(self.n_steps) * np.timedelta64(int(self.interval_s), "s")
                ).astype("datetime64[ns]")

    def describe(self) -> dict[str, Any]:
        return {"source": "synthetic uniform (counter hash)", "seed": self.seed,
                "scale": self.scale}

    def open(self, network: RiverNetwork) -> SyntheticForcing:
        return self

    def read(self, reaches: np.ndarray, rows: tuple[int, int], t0: int, t1: int,
             device: torch.device) -> torch.Tensor:
        """``[n, t1 - t0]`` float32 on ``device`` for global reach indices ``reaches``."""
        if self.fail_at is not None and t1 > self.fail_at:
            raise OSError(f"forcing unavailable from step {self.fail_at} (simulated)")
        r = torch.as_tensor(reaches, device=device)
        out = hash_uniform(r, t0, t1, self.seed)
        return out.mul_(self.scale) if self.scale != 1.0 else out


@dataclass
class ZarrForcing:
    """A Zarr forcing store (see :func:`hydroscale.io.ingest`), opened on each worker.

    Parameters
    ----------
    store : path of the store (every worker must see it: a local disk for a local cluster,
        a shared file system or object store otherwise).
    """

    store: str
    _fs: Any = field(default=None, repr=False, compare=False)
    _plan_rows: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        return {"store": self.store}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.store, self._fs, self._plan_rows = state["store"], None, None

    def _meta(self) -> Any:
        import zarr

        root = zarr.open_group(self.store, mode="r")
        return root

    @property
    def time(self) -> np.ndarray:
        root = self._meta()
        return (np.datetime64("1970-01-01T00:00:00", "s")
                + root["time"][:].astype("timedelta64[s]")).astype("datetime64[ns]")

    @property
    def n_steps(self) -> int:
        root = self._meta()
        return int(root[root.attrs["variable"]].shape[1])

    @property
    def interval_s(self) -> float | None:
        return self._meta().attrs.get("interval_s")

    def describe(self) -> dict[str, Any]:
        return {"source": str(self.store)}

    def open(self, network: RiverNetwork) -> ZarrForcing:
        """Check the store's ids against ``network`` and keep the row of every reach."""
        from ..io import open_forcing

        fs = open_forcing(self.store, network)
        opened = ZarrForcing(self.store)
        opened._fs = fs
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


def as_forcing(forcing: Any) -> SyntheticForcing | ZarrForcing:
    """A forcing source from a store path, a source object."""
    if isinstance(forcing, (SyntheticForcing, ZarrForcing)):
        return forcing
    import os

    if isinstance(forcing, (str, os.PathLike)):
        return ZarrForcing(os.fspath(forcing))
    raise TypeError(
        "forcing_store must be a Zarr store path, a ZarrForcing or a SyntheticForcing, got "
        f"{type(forcing).__name__} (arrays are not shipped through the client: ingest them "
        "with hydroscale.io.ingest first)"
    )
