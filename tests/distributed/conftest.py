"""Fixtures of the distributed tests: a small partitioned forest whose clusters span both
workers of the shared ``client`` (tests/conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest

from hydroscale.network import continental_forest
from hydroscale.partition import partition_network


@pytest.fixture(scope="module")
def forest():
    """~400 reaches, Muskingum params, a partition on 2 workers with cross-worker exits."""
    net = continental_forest(400, seed=5)
    rng = np.random.default_rng(11)
    params = np.stack([rng.uniform(0.3, 1.0, net.n_reaches),
                       rng.uniform(0.1, 0.3, net.n_reaches)], axis=1)
    part = partition_network(net, max_reaches=24, min_reaches=4, n_workers=2)
    return net, params, part
