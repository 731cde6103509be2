"""Dask memory accounting and wire format for torch tensors and transfer buffers.

Dask estimates the memory of a task result with :func:`dask.sizeof.sizeof`; without a
registration a torch tensor counts as ~80 bytes whatever its size, so the scheduler's memory
view (spilling, pausing, the dashboard) is wrong.  :func:`register_sizeof` registers:

- ``torch.Tensor``: ``numel * element_size`` bytes (device memory included: Dask-CUDA's
  device-memory limit reads the same figure);
- :class:`TransferBuffer`: the size of the tensor it holds.

:class:`TransferBuffer` is the sub-step outflow of a group of clusters sent to the groups
downstream.  On its own worker it is passed by reference (a device tensor, no copy); when it
crosses workers it is serialised as a host NumPy frame (distributed's stock torch serialiser
calls ``Tensor.numpy()``, which fails on CUDA tensors) and rebuilt on the host: the receiver
moves it to its own device.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import torch
from dask.sizeof import sizeof
from distributed.protocol import dask_deserialize, dask_serialize

__all__ = ["TransferBuffer", "register_sizeof", "tensor_nbytes"]


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

    _REGISTERED = True


register_sizeof()
