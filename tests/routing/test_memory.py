"""The coarse memory guard (hydroscale.routing._memory): sizes, estimates, the refusal."""

from __future__ import annotations

import pytest
import torch

from hydroscale.routing import (
    RunTooLargeError,
    check_fits,
    estimate_engine_bytes,
    estimate_route_bytes,
)
from hydroscale.routing._memory import available_bytes, format_bytes, parse_bytes


def test_sizes_parse_and_print():
    assert parse_bytes("64GB") == 64 * 10**9
    assert parse_bytes("512 MiB") == 512 * 2**20
    assert parse_bytes("1e9") == 10**9 and parse_bytes(1234) == 1234
    with pytest.raises(ValueError, match="HYDROSCALE_MEMORY_LIMIT must be a size such as 64GB"):
        parse_bytes("lots")
    assert format_bytes(4.32e8) == "0.432 GB" and format_bytes(4.32e14) == "432 TB"


def test_estimates_count_what_every_engine_holds():
    # discharge [B, N, T] (the input is already held), one kernel per reach [N, W f]
    assert estimate_route_bytes(10, 100, 4, 2, torch.float32, window=8) == \
        4 * (2 * 10 * 100 + 10 * 8 * 4)
    # sub-step resolution adds inflow and discharge at dt / f; window None: the whole run
    assert estimate_route_bytes(10, 100, 4, 1, torch.float64, substep_resolution=True) == \
        8 * (10 * 100 + 2 * 10 * 100 * 4 + 10 * 100 * 4)
    # the oracle computes in float64 with full-length kernels; levels: windows from 32 steps
    assert estimate_engine_bytes("oracle", 10, 100, 4, 1, torch.float32) == \
        estimate_route_bytes(10, 100, 4, 1, torch.float64, substep_resolution=True)
    assert estimate_engine_bytes("levels", 10, 100, 4) == \
        estimate_route_bytes(10, 100, 4, window=32, substep_resolution=True)
    assert estimate_engine_bytes("torch", 10, 100, 4) == estimate_route_bytes(10, 100, 4,
                                                                              window=1)


def test_check_fits(monkeypatch):
    monkeypatch.setenv("HYDROSCALE_MEMORY_LIMIT", "1GB")
    assert available_bytes("cpu") == (10**9, "HYDROSCALE_MEMORY_LIMIT=1GB")
    check_fits(10**9, "cpu", "route", "lower substeps")  # fits exactly
    with pytest.raises(RunTooLargeError, match=r"route needs at least 2 GB \(3 reaches\) but 1 "
                                               r"GB are available on cpu "
                                               r"\(HYDROSCALE_MEMORY_LIMIT=1GB\): lower it"):
        check_fits(2 * 10**9, "cpu", "route", "lower it", detail="3 reaches")
    monkeypatch.delenv("HYDROSCALE_MEMORY_LIMIT")
    avail, source = available_bytes("cpu")
    assert avail is None or (avail > 0 and source)
