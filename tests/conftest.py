"""Shared fixtures: small hand-made networks, a 2-worker CPU Dask cluster."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from hydroscale.network import RiverNetwork

# Tests fit their windows afresh (and write nothing under ~/.cache): the window cache is off
# unless a test turns it on (tests/routing/test_window_cache.py); set before any worker or
# CLI subprocess starts, which inherit it.
os.environ["HYDROSCALE_CACHE_DIR"] = "off"

WORKERS = 2  # of the shared ``client`` cluster
# seconds a test waits for a killed or restarted worker to be back: generous, since a new
# worker process on a busy 2-core machine can take a minute to start
RESTART_TIMEOUT = 300.0


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

    # LocalCluster (a SpecCluster) closes the nanny of a worker that left the scheduler and
    # has not registered again ``lost-worker-timeout`` later (Dask's default 15 s;
    # distributed/deploy/spec.py, SpecCluster._update_worker_status): a restart slower than
    # that (the old process stopping, a new one importing torch, on a busy 2-core machine)
    # lost the worker for good, and every later test of the module with it.  start_cluster
    # sets it to the config's lost_worker_timeout (10 minutes) for the cluster's life.
    # A worker killed while it holds a write lock releases it after the lease timeout
    # (Dask's default 30 s): short here, so the worker-loss tests stay short (read when the
    # scheduler and each nanny start: restarted workers keep it).
    with dask.config.set({"distributed.scheduler.locks.lease-timeout": "3s",
                          "distributed.scheduler.locks.lease-validation-interval": "0.5s"}):
        c = start_cluster("local-cpu", n_workers=WORKERS, threads_per_worker=1,
                          processes=True, dashboard_address="127.0.0.1:0")
    assert dask.config.get("distributed.deploy.lost-worker-timeout") == "10 minutes"
    yield c
    cluster = c.cluster
    c.close()
    cluster.close()


@pytest.fixture
def whole_cluster(client):
    """``client`` with its 2 workers before and after the test, for tests that kill or
    restart workers: no test starts on a cluster still restarting one.  The wait is generous
    (a busy machine) and never what a test asserts."""
    from hydroscale.distributed import wait_for_workers

    wait_for_workers(client, WORKERS, timeout=RESTART_TIMEOUT)
    yield client
    wait_for_workers(client, WORKERS, timeout=RESTART_TIMEOUT)


@pytest.fixture(scope="module")
def forest():
    """~400 reaches, Muskingum params, a partition on 2 workers with cross-worker exits (the
    distributed runtime's tests and the distributed calibration's)."""
    from hydroscale.network import continental_forest
    from hydroscale.partition import partition_network

    net = continental_forest(400, seed=5)
    rng = np.random.default_rng(11)
    params = np.stack([rng.uniform(0.3, 1.0, net.n_reaches),
                       rng.uniform(0.1, 0.3, net.n_reaches)], axis=1)
    part = partition_network(net, max_reaches=24, min_reaches=4, n_workers=2)
    return net, params, part


@pytest.fixture(scope="module")
def forest_lakes(forest):
    """12 two-reach level-pool lakes (a reach and one upstream reach) on the ``forest``,
    among them one lake draining straight into another (lake -> lake)."""
    from hydroscale.routing import LEVEL_POOL_PARAMS, Lakes

    net = forest[0]
    rng = np.random.default_rng(3)
    down = net.downstream
    up_of = np.full(net.n_reaches, -1)
    has = np.flatnonzero(down >= 0)
    up_of[down[has]] = has
    taken = np.zeros(net.n_reaches, bool)
    members = []
    # a chain: lake B = (d, d's upstream c), lake A = (c's upstream b, b's upstream a)
    for d in rng.permutation(np.flatnonzero(up_of >= 0)):
        c = up_of[d]
        b = up_of[c] if c >= 0 else -1
        a = up_of[b] if b >= 0 else -1
        if a >= 0:
            members += [[b, a], [d, c]]
            taken[[a, b, c, d]] = True
            break
    for j in rng.permutation(np.flatnonzero(up_of >= 0)):
        u = up_of[j]
        if len(members) >= 12:
            break
        if not (taken[j] or taken[u]):
            taken[[j, u]] = True
            members.append([j, u])
    n = len(members)
    cols = dict(area=rng.uniform(5e5, 2e6, n), max_elevation=np.full(n, 12.0),
                weir_elevation=np.full(n, 10.5), weir_coefficient=rng.uniform(0.4, 1.5, n),
                weir_length=rng.uniform(5.0, 20.0, n), dam_length=np.full(n, 10.0),
                orifice_elevation=np.full(n, 5.0), orifice_coefficient=rng.uniform(0.1, 0.6, n),
                orifice_area=np.ones(n))
    return Lakes.from_members({100 + i: net.ids[m] for i, m in enumerate(members)},
                              np.stack([cols[c] for c in LEVEL_POOL_PARAMS], 1),
                              rng.uniform(0.5, 0.9, n))
