"""Shared fixtures: small hand-made networks, a 2-worker CPU Dask cluster."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hydroscale.network import RiverNetwork


@pytest.fixture
def chain3() -> RiverNetwork:
    """10 -> 20 -> 30 (outlet)."""
    return RiverNetwork.from_arrays([10, 20, 30], [20, 30, 0])


@pytest.fixture
def small_tree() -> RiverNetwork:
    """Two headwaters joining, a tributary, and a separate one-reach basin, stored out of order.

        1 \\
           3 -> 5 -> 6 (outlet)       9 (outlet)
        2 /    4 /
    """
    ids = np.array([6, 3, 1, 9, 4, 2, 5])
    down = np.array([0, 5, 3, 0, 5, 3, 6])
    return RiverNetwork.from_arrays(ids, down, length=np.arange(7.0) + 1)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors: intra-op threads only add contention (and minutes) on a busy CI box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def client():
    """A module-scoped 2-worker CPU LocalCluster (worker processes, so transfer buffers
    really cross a process boundary), bound to 127.0.0.1."""
    import dask

    from hydroscale.distributed import start_cluster

    # a worker killed while it holds a write lock releases it after the lease timeout
    # (Dask's default 30 s): short here, so the worker-loss tests stay short
    with dask.config.set({"distributed.scheduler.locks.lease-timeout": "3s",
                          "distributed.scheduler.locks.lease-validation-interval": "0.5s"}):
        c = start_cluster("local-cpu", n_workers=2, threads_per_worker=1, processes=True,
                          dashboard_address="127.0.0.1:0")
    yield c
    cluster = c.cluster
    c.close()
    cluster.close()
