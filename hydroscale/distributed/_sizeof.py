"""Dask memory accounting and wire format for torch tensors and transfer buffers.

Dask estimates the memory of a task result with :func:`dask.sizeof.sizeof`; without a
registration a torch tensor counts as ~80 bytes whatever its size, so the scheduler's memory
view (spilling, pausing, the dashboard) is wrong.  :func:`register_sizeof` registers:

- ``torch.Tensor``: ``numel * element_size`` bytes (device memory included: Dask-CUDA's
  device-memory limit reads the same figure);
- :class:`TransferBuffer`: the size of the tensor it holds;
- :class:`ChunkResult`: the sizes of the state, buffer and checksum it holds.

:class:`TransferBuffer` is the sub-step outflow of a group of clusters sent to the groups
downstream.  On its own worker it is passed by reference (a device tensor, no copy); when it
crosses workers it is serialised as a host NumPy frame (distributed's stock torch serialiser
calls ``Tensor.numpy()``, which fails on CUDA tensors) and rebuilt on the host: the receiver
moves it to its own device.

:class:`ChunkResult` is what a routing task returns: the state carried out of its time chunk
(the next chunk's input), its transfer buffer and its discharge checksum.  It normally stays
on its worker; it crosses workers (same host frames) only when a task runs elsewhere, e.g.
after a worker was lost.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from dask.sizeof import sizeof
from distributed.protocol import dask_deserialize, dask_serialize

__all__ = ["ChunkResult", "TransferBuffer", "register_sizeof", "tensor_nbytes"]


def tensor_nbytes(t: torch.Tensor) -> int:
    """Bytes held by the elements of ``t`` (its view, not the whole storage)."""
    return int(t.numel()) * int(t.element_size())


@dataclass
class TransferBuffer:
    """Outflow of the exits of one group of clusters over one time chunk.

    Attributes
    ----------
    group : the producing group (wave x worker) id.
    chunk : the time chunk index.
    data : ``[B, n_exit, f, T_chunk]`` sub-step outflow (m³/s), channel ``a`` = sub-step ``a``
        of each routing step, exits in engine order.
    """

    group: int
    chunk: int
    data: torch.Tensor

    def __sizeof__(self) -> int:
        return tensor_nbytes(self.data) + 64


@dask_serialize.register(TransferBuffer)
def _serialize_buffer(buf: TransferBuffer) -> tuple[dict, list]:
    arr = np.ascontiguousarray(buf.data.detach().cpu().numpy())
    header = {"group": buf.group, "chunk": buf.chunk, "dtype": arr.dtype.str,
              "shape": list(arr.shape)}
    return header, [memoryview(arr).cast("B") if arr.size else b""]


@dask_deserialize.register(TransferBuffer)
def _deserialize_buffer(header: dict, frames: list) -> TransferBuffer:
    shape = tuple(header["shape"])
    dtype = np.dtype(header["dtype"])
    raw = frames[0] if frames else b""
    if not len(raw):
        return TransferBuffer(int(header["group"]), int(header["chunk"]),
                              torch.zeros(shape, dtype=torch.from_numpy(np.zeros(0, dtype)).dtype))
    arr = np.frombuffer(raw, dtype=dtype).reshape(shape)
    if not arr.flags.writeable:  # a read-only frame: torch needs writable memory
        arr = arr.copy()
    return TransferBuffer(int(header["group"]), int(header["chunk"]), torch.from_numpy(arr))


@dataclass
class ChunkResult:
    """The result of routing one group over one time chunk (a pure task's output).

    Attributes
    ----------
    group, chunk : the group and time chunk.
    runoff_hist : ``[B, n, K - 1]`` runoff history carried to the next chunk (m³/s).
    inflow_hist : ``[B, n_inlet, f, K - 1]`` inlet transfer-inflow history carried on.
    buffer : the group's :class:`TransferBuffer` for this chunk, None without exits.
    checksum : 0-d float64 tensor, the sum of the chunk's discharge.
    elevation : for a group of lakes, ``[B, L_g]`` float64 water elevation of its lakes
        (m) after the chunk, carried to the next (its histories are then empty); else None.
    lake_volumes : for a group of lakes, ``[B, L_g, 2]`` float64 inflow and outflow volumes
        (m³) of its lakes from the start of the pass to the end of the chunk (NaN where a
        resumed pass did not route the earlier chunks); else None.
    """

    group: int
    chunk: int
    runoff_hist: torch.Tensor
    inflow_hist: torch.Tensor
    buffer: TransferBuffer | None
    checksum: torch.Tensor
    elevation: torch.Tensor | None = None
    lake_volumes: torch.Tensor | None = None

    def __sizeof__(self) -> int:
        return (tensor_nbytes(self.runoff_hist) + tensor_nbytes(self.inflow_hist)
                + (tensor_nbytes(self.elevation) if self.elevation is not None else 0)
                + (tensor_nbytes(self.lake_volumes) if self.lake_volumes is not None else 0)
                + (self.buffer.__sizeof__() if self.buffer is not None else 0) + 128)


def _to_frame(t: torch.Tensor) -> tuple[dict, Any]:
    arr = np.ascontiguousarray(t.detach().cpu().numpy())
    return {"dtype": arr.dtype.str, "shape": list(arr.shape)}, (
        memoryview(arr).cast("B") if arr.size else b"")


def _from_frame(head: dict, raw: Any) -> torch.Tensor:
    dtype, shape = np.dtype(head["dtype"]), tuple(head["shape"])
    if not len(raw):
        return torch.from_numpy(np.zeros(shape, dtype))
    arr = np.frombuffer(raw, dtype=dtype).reshape(shape)
    return torch.from_numpy(arr if arr.flags.writeable else arr.copy())


@dask_serialize.register(ChunkResult)
def _serialize_result(res: ChunkResult) -> tuple[dict, list]:
    tensors = [res.runoff_hist, res.inflow_hist, res.checksum]
    if res.buffer is not None:
        tensors.append(res.buffer.data)
    if res.elevation is not None:
        tensors.append(res.elevation)
    if res.lake_volumes is not None:
        tensors.append(res.lake_volumes)
    heads, frames = zip(*(_to_frame(t) for t in tensors))
    return {"group": res.group, "chunk": res.chunk, "tensors": list(heads),
            "buffer": res.buffer is not None, "elevation": res.elevation is not None,
            "lake_volumes": res.lake_volumes is not None}, list(frames)


@dask_deserialize.register(ChunkResult)
def _deserialize_result(header: dict, frames: list) -> ChunkResult:
    ts = [_from_frame(h, f) for h, f in zip(header["tensors"], frames)]
    g, k = int(header["group"]), int(header["chunk"])
    has_buf = header.get("buffer", len(ts) > 3)
    buf = TransferBuffer(g, k, ts[3]) if has_buf else None
    rest = ts[4 if has_buf else 3:]
    elev = rest.pop(0) if header.get("elevation", False) else None
    volumes = rest.pop(0) if header.get("lake_volumes", False) else None
    return ChunkResult(g, k, ts[0], ts[1], buf, ts[2], elev, volumes)


_REGISTERED = False


def register_sizeof() -> None:
    """Register :func:`dask.sizeof.sizeof` for ``torch.Tensor`` and :class:`TransferBuffer`
    (idempotent; runs on import of :mod:`hydroscale.distributed`, on the client and, through
    the tasks' imports, on every worker)."""
    global _REGISTERED
    if _REGISTERED:
        return

    @sizeof.register(torch.Tensor)
    def _sizeof_tensor(t: torch.Tensor) -> int:
        return tensor_nbytes(t) + sys.getsizeof(object())

    @sizeof.register(TransferBuffer)
    def _sizeof_buffer(b: TransferBuffer) -> int:
        return b.__sizeof__()

    @sizeof.register(ChunkResult)
    def _sizeof_result(r: ChunkResult) -> int:
        return r.__sizeof__()

    _REGISTERED = True


register_sizeof()
