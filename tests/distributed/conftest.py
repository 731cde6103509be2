"""Fixtures of the distributed tests: one module-scoped 2-worker CPU LocalCluster (worker
processes, so transfer buffers really cross a process boundary) and a small partitioned
forest whose clusters span both workers."""

from __future__ import annotations

import numpy as np
import pytest

from hydroscale.network import continental_forest
from hydroscale.partition import partition_network


@pytest.fixture(scope="module")
def client():
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


@pytest.fixture(scope="module")
def forest():
    """~400 reaches, Muskingum params, a partition on 2 workers with cross-worker exits."""
    net = continental_forest(400, seed=5)
    rng = np.random.default_rng(11)
    params = np.stack([rng.uniform(0.3, 1.0, net.n_reaches),
                       rng.uniform(0.1, 0.3, net.n_reaches)], axis=1)
    part = partition_network(net, max_reaches=24, min_reaches=4, n_workers=2)
    return net, params, part
