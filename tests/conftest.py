"""Shared fixtures: small hand-made networks."""

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
