"""Fixtures of the calibration tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def single_thread():
    """Run with one torch thread: the level-by-level router issues many small ops, for which
    intra-op threads only add overhead (and oversubscribe a busy CI machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
