"""Bad input, one case per row: each gives a clear error naming what is wrong (issue 11 table).

Every case checks the exception type and the key words of its message; where a case could
overwrite an output, the test also checks that the existing output is untouched.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

import hydroscale
from hydroscale.io import IOFormatError
from hydroscale.io.zarr_store import create_output_store, ingest, open_forcing
from hydroscale.irf import UnstableParametersError, from_bounded
from hydroscale.network import NetworkError, RiverNetwork
from hydroscale.workflows import WorkflowError, load_workflow

NET = RiverNetwork.from_arrays([1, 2, 3], [3, 3, 0])
MUSK = {"k": 0.5, "x": 0.2}


def _runoff(value: float | None = None) -> np.ndarray:
    r = np.ones((3, 6))
    if value is not None:
        r[1, 4] = value
    return r


def _route(r, **kw):
    return hydroscale.route(NET, r, params=kw.pop("params", MUSK), substeps=2, **kw)


CASES = {
    "cycle": (lambda: RiverNetwork.from_arrays([1, 2, 3], [2, 3, 1]), NetworkError,
              r"cycle through 3 reach\(es\) \[1, 2, 3\]"),
    "bifurcation": (lambda: RiverNetwork.from_edges([1, 2, 3], [1, 1], [2, 3]), NetworkError,
                    r"\[1\] have two or more downstream reaches"),
    "duplicate ids": (lambda: RiverNetwork.from_arrays([4, 4], [0, 0]), NetworkError,
                      r"listed more than once: \[4\]"),
    "unknown downstream id": (lambda: RiverNetwork.from_arrays([1, 2], [9, 0]), NetworkError,
                              r"reaches \[1\] -> downstream \[9\]"),
    "empty network": (lambda: RiverNetwork.from_arrays([], []), NetworkError, "empty"),
    "NaN inflow": (lambda: _route(_runoff(np.nan)), ValueError,
                   "NaN or infinite value.*reach id 2, step 4"),
    "inf inflow": (lambda: _route(_runoff(np.inf)), ValueError,
                   "NaN or infinite value.*reach id 2, step 4"),
    "negative inflow": (lambda: _route(_runoff(-1.0)), ValueError,
                        "negative value.*reach id 2.*allow_negative=True"),
    "wrong dims": (lambda: _route(np.ones(6)), ValueError, r"\[N, T\] or \[B, N, T\]"),
    "wrong reach count": (lambda: _route(np.ones((4, 6))), ValueError, "N = 3 reaches"),
    "wrong dtype": (lambda: _route(np.array([["a"] * 6] * 3)), TypeError,
                    "dtype <U1 are not supported"),
    "unstable Muskingum": (lambda: _route(_runoff(), params={"k": 0.05, "x": 0.3}),
                           UnstableParametersError, "negative Muskingum coefficient.*ids"),
    "missing parameter": (lambda: _route(_runoff(), params={"k": 0.5}), ValueError,
                          r"missing \['x'\]"),
    "parameter outside bounds": (
        lambda: from_bounded(torch.tensor([6.0]), torch.tensor([0.1]), torch.tensor([5.0])),
        ValueError, "outside their bounds"),
    "misaligned reach ids": (
        lambda: hydroscale.route(NET, xr.DataArray(np.ones((3, 4)), dims=("reach", "time"),
                                                   coords={"reach": [1, 2, 7]}),
                                 params=MUSK, substeps=2),
        ValueError, "7"),
    "workflow unknown key": (
        lambda: load_workflow(None, ["kind=route", "routing.speed=3"]), WorkflowError,
        "routing.speed"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_refused_with_a_clear_message(case: str) -> None:
    fn, exc, pattern = CASES[case]
    with pytest.raises(exc, match=pattern):
        fn()


def test_forcing_ids_not_matching_the_network(tmp_path) -> None:
    t = pd.date_range("2021-01-01", periods=4, freq="h").values
    da = xr.DataArray(np.ones((3, 4), np.float32), dims=("reach", "time"),
                      coords={"reach": [1, 2, 8], "time": t}, attrs={"units": "m3 s-1"})
    ingest(da, tmp_path / "f.zarr")
    with pytest.raises((ValueError, IOFormatError), match="3"):
        open_forcing(tmp_path / "f.zarr", NET)


def test_duplicated_times_are_refused(tmp_path) -> None:
    t = pd.to_datetime(["2021-01-01 00:00", "2021-01-01 01:00", "2021-01-01 01:00"]).values
    da = xr.DataArray(np.ones((3, 3), np.float32), dims=("reach", "time"),
                      coords={"reach": [1, 2, 3], "time": t}, attrs={"units": "m3 s-1"})
    with pytest.raises((ValueError, IOFormatError), match="time"):
        ingest(da, tmp_path / "d.zarr")


def test_truncated_netcdf_is_refused(tmp_path) -> None:
    path = tmp_path / "RouteLink.nc"
    xr.Dataset({"link": ("feature_id", np.array([1, 2, 3])),
                "to": ("feature_id", np.array([3, 3, 0]))}).to_netcdf(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises((OSError, ValueError, IOFormatError)):
        RiverNetwork.from_routelink(str(path))


def test_existing_output_is_not_overwritten(tmp_path) -> None:
    store = tmp_path / "out.zarr"
    t = pd.date_range("2021-01-01", periods=4, freq="h").values
    create_output_store(store, [1, 2, 3], t)
    before = sorted(p.name for p in store.rglob("*"))
    with pytest.raises(FileExistsError, match="out.zarr' exists and is left untouched"):
        create_output_store(store, [1, 2, 3, 4], t)
    assert sorted(p.name for p in store.rglob("*")) == before
