"""Output stores open in standard tools: CF metadata, consolidated at completion, and an
unfinished store that does not open silently."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr

from hydroscale.io import IOFormatError, OutputStore, create_output_store, open_output

T0 = np.datetime64("2021-08-23T13:00", "ns")
TIMES = T0 + np.arange(5) * np.timedelta64(3600, "s")


def _open_strict(path):
    """``xr.open_zarr`` with every warning an error (a user's ``-W error``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return xr.open_zarr(path)


def _store(path, dtype="float32"):
    store = OutputStore.create(path, [30, 10, 20], TIMES, chunks=(2, 2), dtype=dtype)
    # values written in two blocks; 1/3 is not a float32 number: the dtype is visible
    store.write(0, 0, np.full((2, 5), 1.0 / 3.0))
    store.write(2, 0, np.arange(5.0)[None, :] + 0.1)
    return store


def test_complete_store_opens_in_xarray_with_cf_metadata(tmp_path):
    store = _store(tmp_path / "q.zarr", dtype="float64")
    store.complete()
    ds = _open_strict(tmp_path / "q.zarr")  # consolidated: no warning
    assert ds.attrs["Conventions"] == "CF-1.8" and ds.attrs["featureType"] == "timeSeries"
    assert ds.attrs["complete"] is True
    q = ds["discharge"]
    assert q.dims == ("reach", "time")
    assert q.attrs["units"] == "m3 s-1"
    assert q.attrs["standard_name"] == "water_volume_transport_in_river_channel"
    assert q.attrs["long_name"] == "discharge leaving each reach (mean over each time step)"
    assert q.attrs["cell_methods"] == "time: mean (interval: 3600 s)"
    # CF time decoded by xarray to the interval starts written
    assert ds["time"].dtype == np.dtype("datetime64[ns]")
    np.testing.assert_array_equal(ds["time"].values, TIMES)
    np.testing.assert_array_equal(ds["reach"].values, [30, 10, 20])
    # routing.dtype float64 is stored as float64 (1/3 survives exactly)
    assert q.dtype == np.float64
    assert q.values[0, 0] == 1.0 / 3.0
    np.testing.assert_array_equal(q.values[2], np.arange(5.0) + 0.1)
    # the library's reader gives the same values and the variable's attributes
    da = open_output(tmp_path / "q.zarr")
    assert da.attrs["standard_name"] == "water_volume_transport_in_river_channel"
    np.testing.assert_array_equal(da.values, q.values)


def test_float32_store_keeps_float32(tmp_path):
    store = _store(tmp_path / "q.zarr")
    store.complete()
    q = _open_strict(tmp_path / "q.zarr")["discharge"]
    assert q.dtype == np.float32 and q.values[0, 0] == np.float32(1.0 / 3.0)


def test_unfinished_store_does_not_open_silently(tmp_path):
    path = tmp_path / "q.zarr"
    _store(path)  # written, never completed (the run died)
    # plain xarray: no consolidated metadata yet, so it warns (an error under -W error)
    with pytest.raises(RuntimeWarning, match="consolidated metadata"):
        _open_strict(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ds = xr.open_zarr(path)
    # ... and what it shows says so
    assert ds.attrs["complete"] is False
    assert ds.attrs["comment"].startswith("INCOMPLETE")
    assert ds["discharge"].attrs["long_name"].startswith("INCOMPLETE (run not finished)")
    # the library's reader refuses it, naming the store and the remedy
    with pytest.raises(IOFormatError, match=r"q.zarr \[complete\]: the output store is "
                                            r"incomplete.*allow_incomplete=True"):
        open_output(path)


def test_bad_store_dtype_is_refused(tmp_path):
    with pytest.raises(ValueError, match="float32 or float64, got int32"):
        create_output_store(tmp_path / "q.zarr", [1], TIMES, dtype="int32")
    assert not (tmp_path / "q.zarr").exists()  # refused before anything is written


def test_export_netcdf_opens_cf_decoded_in_network_order(tmp_path):
    from hydroscale.io import export_output
    from hydroscale.network import RiverNetwork

    store = _store(tmp_path / "q.zarr", dtype="float64")
    with pytest.raises(IOFormatError, match=r"q.zarr \[complete\]: the output store is "
                                            r"incomplete"):
        export_output(tmp_path / "q.zarr", tmp_path / "q.nc")
    store.complete()
    net = RiverNetwork.from_arrays([10, 20, 30], [30, 30, 0])  # rows 10, 20, 30
    path = export_output(tmp_path / "q.zarr", tmp_path / "q.nc", network=net, time_chunk=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_dataset(path, engine="netcdf4").load()
    assert ds.attrs["Conventions"] == "CF-1.8" and ds.attrs["featureType"] == "timeSeries"
    q = ds["discharge"]
    assert q.dims == ("reach", "time") and q.dtype == np.float64
    assert q.attrs["standard_name"] == "water_volume_transport_in_river_channel"
    assert q.attrs["units"] == "m3 s-1" and q.attrs["cell_methods"].startswith("time: mean")
    np.testing.assert_array_equal(ds["reach"].values, [10, 20, 30])
    np.testing.assert_array_equal(ds["time"].values, TIMES)
    # the rows written for ids 30, 10 (1/3) and 20 (0.1 .. 4.1), now in network order
    np.testing.assert_array_equal(q.values[0], np.full(5, 1.0 / 3.0))
    np.testing.assert_array_equal(q.values[1], np.arange(5.0) + 0.1)
    np.testing.assert_array_equal(q.values[2], np.full(5, 1.0 / 3.0))
    bnds = ds["time_bnds"].values
    np.testing.assert_array_equal(bnds[:, 1] - bnds[:, 0], np.full(5, np.timedelta64(1, "h")))


def test_export_rapid_qout_reads_back(tmp_path):
    from hydroscale.io import export_output
    from hydroscale.io.rapid import read_qout

    _store(tmp_path / "q.zarr").complete()
    path = export_output(tmp_path / "q.zarr", tmp_path / "Qout.nc", "rapid", time_chunk=3)
    q = read_qout(path)
    np.testing.assert_array_equal(q["reach"].values, [30, 10, 20])
    np.testing.assert_array_equal(q["time"].values, TIMES)
    np.testing.assert_array_equal(q.values[2], (np.arange(5.0) + 0.1).astype(np.float32))
    np.testing.assert_array_equal(q.values[0], np.full(5, np.float32(1.0 / 3.0)))
