"""A TLS cluster (cluster_configs/local-tls.yaml) on loopback routes a small forest exactly
like the float64 oracle."""

from __future__ import annotations

from urllib.parse import urlparse

import numpy as np
import pytest
import torch

from hydroscale.distributed import route_distributed, worker_addresses
from hydroscale.io import SyntheticForcing, hash_uniform, open_output
from hydroscale.routing import route_oracle

pytest.importorskip("cryptography")


def test_route_over_tls_equals_the_oracle(forest, tmp_path):
    from distributed.comm import get_address_host

    from hydroscale.distributed import start_cluster

    net, params, part = forest
    client = start_cluster("local-tls", dashboard_address="127.0.0.1:0")
    try:
        assert client.scheduler.address.startswith("tls://127.0.0.1:")
        addrs = list(worker_addresses(client).values())
        assert addrs and all(a.startswith("tls://127.0.0.1:") for a in addrs)
        assert get_address_host(client.scheduler.address) == "127.0.0.1"
        assert urlparse(client.dashboard_link).hostname == "127.0.0.1"
        assert client.security.require_encryption
        t = 30
        s = route_distributed(client, net, part, SyntheticForcing(t, seed=4),
                              str(tmp_path / "q.zarr"), params, time_chunk=10, irf="muskingum",
                              substeps=3, window=t, dtype=torch.float64, allow_unstable=True)
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()
    r = hash_uniform(torch.arange(net.n_reaches), 0, t, 4).double().numpy()
    ref = np.asarray(route_oracle(net, r, "muskingum", params, substeps=3,
                                  allow_unstable=True))
    assert s.plan["cross_worker_exits"] > 0  # buffers crossed workers over TLS
    assert s.checksum == pytest.approx(ref.sum(), rel=1e-10)
    got = open_output(str(tmp_path / "q.zarr"), net).values  # float32 store
    assert np.abs(got - ref).max() <= 1e-6 * np.abs(ref).max()
