"""Fixtures for the workflow tests."""

from __future__ import annotations

import pytest
from workflow_cases import small_route


@pytest.fixture
def tiny_route(tmp_path):
    return small_route(tmp_path / "out")
