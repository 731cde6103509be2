"""dask.sizeof for torch tensors, the transfer-buffer wire format, the synthetic forcing."""

from __future__ import annotations

import numpy as np
import torch
from dask.sizeof import sizeof
from distributed.protocol import deserialize, serialize

from hydroscale.distributed import TransferBuffer  # its module registers sizeof for tensors
from hydroscale.io import SyntheticForcing, hash_uniform


def test_sizeof_counts_tensor_bytes():
    for shape, dtype, nbytes in (((1000,), torch.float32, 4000), ((3, 50, 7), torch.float64,
                                                                 8400), ((0,), torch.int64, 0)):
        s = sizeof(torch.zeros(shape, dtype=dtype))
        assert nbytes <= s <= nbytes + 256
    view = torch.zeros(1000)[:10]  # a view counts its own elements, not the whole storage
    assert sizeof(view) <= 40 + 256
    buf = TransferBuffer(3, 1, torch.zeros(1, 5, 24, 100))
    assert 48000 <= sizeof(buf) <= 48000 + 256
    assert sizeof([buf, buf]) >= 2 * 48000


def test_transfer_buffer_roundtrip():
    data = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    header, frames = serialize(TransferBuffer(7, 2, data), serializers=("dask",))
    back = deserialize(header, frames)
    assert isinstance(back, TransferBuffer) and (back.group, back.chunk) == (7, 2)
    assert back.data.dtype == torch.float32 and torch.equal(back.data, data)
    empty = deserialize(*serialize(TransferBuffer(0, 0, torch.zeros(1, 0, 4, 5)),
                                   serializers=("dask",)))
    assert tuple(empty.data.shape) == (1, 0, 4, 5)


def test_hash_uniform_is_a_function_of_reach_and_step():
    full = hash_uniform(torch.arange(50), 0, 30, seed=4)
    assert full.dtype == torch.float32 and full.shape == (50, 30)
    assert float(full.min()) >= 0.0 and float(full.max()) < 1.0
    part = hash_uniform(torch.tensor([7, 3, 42]), 10, 25, seed=4)  # any subset, any window
    assert torch.equal(part, full[[7, 3, 42], 10:25])
    assert not torch.equal(hash_uniform(torch.arange(50), 0, 30, seed=5), full)
    big = hash_uniform(torch.arange(1000), 0, 200, seed=0).double()
    assert abs(float(big.mean()) - 0.5) < 0.01  # uniform: mean 1/2, variance 1/12
    assert abs(float(big.var()) - 1 / 12) < 0.005


def test_synthetic_forcing_read_and_time():
    f = SyntheticForcing(10, seed=2, scale=4.0, start="2001-01-01", interval_s=3600)
    x = f.read(np.array([5, 1]), (0, 2), 2, 6, torch.device("cpu"))
    assert torch.allclose(x, 4.0 * hash_uniform(torch.tensor([5, 1]), 2, 6, 2))
    assert f.time[1] - f.time[0] == np.timedelta64(3600, "s") and f.time.size == 10
