from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
import zarr
from nwm_files import LINKS

from hydroscale.cli import main as cli_main
from hydroscale.io import (
    IOFormatError,
    RunProgress,
    create_output_store,
    ingest,
    mark_complete,
    open_forcing,
    open_output,
    read_routelink,
    write_block,
)
from hydroscale.io.rapid import write_rapid_inflow
from hydroscale.network import RiverNetwork

T0 = np.datetime64("2021-08-23T00:00", "ns")


def _da(ids, steps=5):
    ids = np.asarray(ids, np.int64)
    vals = ids[:, None] * 100.0 + np.arange(steps)[None, :]
    t = T0 + np.arange(steps) * np.timedelta64(1, "h")
    return xr.DataArray(vals, {"reach": ids, "time": t}, ("reach", "time"))


def test_ingest_chrtout_in_cluster_order_and_read_back(nwm_dir, tmp_path):
    net = read_routelink(nwm_dir / "RouteLink.nc")
    order = np.array([15, 13, 11, 12, 14])  # e.g. reaches sorted by cluster
    root = ingest(nwm_dir / "chrt", tmp_path / "f.zarr", network=net, reach_order=order,
                  chunks=(2, 2), time_is_end=True)
    arr = root["runoff"]
    assert arr.chunks == (2, 2) and arr.metadata.zarr_format == 3
    assert arr.metadata.dimension_names == ("reach", "time")
    np.testing.assert_array_equal(root["reach"][:], order)
    # q_lateral = last digit of the id + 10 h (see nwm_files)
    np.testing.assert_array_equal(arr[:, :], (order % 10)[:, None] + 10.0 * np.arange(3))
    f = open_forcing(tmp_path / "f.zarr", net)
    assert f.interval_s == 3600.0 and f.attrs["units"] == "m3 s-1"
    assert f.attrs["provenance"]["source"].startswith("NWM CHRTOUT (3 files from ")
    assert f.time[0] == np.datetime64("2021-08-22T23:00")  # interval start of the 00:00 file
    np.testing.assert_array_equal(f.ids[f.rows], net.ids)
    da = f.to_xarray()
    np.testing.assert_array_equal(da.values, (LINKS % 10)[:, None] + 10.0 * np.arange(3))
    np.testing.assert_array_equal(f.read(slice(1, 3), slice(2, 3)), [[23.0], [21.0]])


def test_ingest_rapid_inflow_csv_and_dataarray(tmp_path):
    net = RiverNetwork.from_arrays([3, 1, 2], [2, 2, 0])
    times = T0 + np.arange(4) * np.timedelta64(3, "h")
    q = np.arange(12.0).reshape(3, 4)
    write_rapid_inflow(tmp_path / "in.nc", q, [3, 1, 2], times, 10800.0)
    ingest(tmp_path / "in.nc", tmp_path / "a.zarr", network=net)
    np.testing.assert_allclose(open_forcing(tmp_path / "a.zarr", net).to_xarray().values, q)
    (tmp_path / "w.csv").write_text(
        "time,1,2\n2021-08-23T00:00,1.5,2.5\n2021-08-23T01:00,3.5,4.5\n")
    root = ingest(tmp_path / "w.csv", tmp_path / "b.zarr")
    np.testing.assert_array_equal(root["runoff"][:], [[1.5, 3.5], [2.5, 4.5]])
    assert cli_main(["ingest", str(tmp_path / "w.csv"), str(tmp_path / "c.zarr"),
                     "--no-progress"]) == 0
    np.testing.assert_array_equal(zarr.open_group(tmp_path / "c.zarr")["reach"][:], [1, 2])
    ingest(_da([7, 8]), tmp_path / "d.zarr")
    assert zarr.open_group(tmp_path / "d.zarr").attrs["interval_s"] == 3600.0


def test_forcing_id_mismatch_and_bad_sources(tmp_path):
    ingest(_da([1, 2, 3]), tmp_path / "f.zarr")
    other = RiverNetwork.from_arrays([1, 2, 4], [2, 0, 0])
    with pytest.raises(IOFormatError, match=r"f.zarr \[reach\].*missing from the store \[4\]"
                       r".*not in the network \[3\]"):
        open_forcing(tmp_path / "f.zarr", other)
    with pytest.raises(IOFormatError, match=r"reaches missing from the source: \[4\]"):
        ingest(_da([1, 2, 3]), tmp_path / "g.zarr", network=other)
    with pytest.raises(IOFormatError, match=r"\[reach\].*listed twice: \[2\]"):
        ingest(_da([1, 2, 2]), tmp_path / "h.zarr")
    (tmp_path / "u.csv").write_text("time,1\n2021-08-23T01:00,1\n2021-08-23T00:00,2\n")
    with pytest.raises(IOFormatError, match=r"u.csv \[time\].*not sorted"):
        ingest(tmp_path / "u.csv", tmp_path / "u.zarr")
    xr.Dataset({"q": (("feature_id", "time"), np.ones((2, 2)), {"units": "mm"})},
               coords={"feature_id": [1, 2], "time": T0 + np.arange(2) * np.timedelta64(1, "h")}
               ).to_netcdf(tmp_path / "mm.nc")
    with pytest.raises(IOFormatError, match=r"mm.nc \[q\].*'mm'"):
        ingest(tmp_path / "mm.nc", tmp_path / "mm.zarr")
    with pytest.raises(IOFormatError, match=r"not a hydroscale output store"):
        open_output(tmp_path / "f.zarr")
    g = zarr.open_group(tmp_path / "f.zarr", mode="r+")
    g.attrs["units"] = "mm h-1"
    with pytest.raises(IOFormatError, match=r"f.zarr \[units\].*'mm h-1'"):
        open_forcing(tmp_path / "f.zarr", RiverNetwork.from_arrays([1, 2, 3], [2, 0, 0]))


def test_output_store_region_writes(tmp_path):
    ids = np.array([5, 6, 7, 8])
    t = T0 + np.arange(6) * np.timedelta64(1, "D")
    create_output_store(tmp_path / "o.zarr", ids, t, chunks=(2, 3),
                        run={"engine": "oracle", "irf": "muskingum"})
    write_block(tmp_path / "o.zarr", 2, 3, np.full((2, 3), 7.0))
    write_block(tmp_path / "o.zarr", 0, 0, np.arange(6.0).reshape(2, 3))
    with pytest.raises(ValueError, match=r"outside the store \(4, 6\)"):
        write_block(tmp_path / "o.zarr", 3, 0, np.ones((2, 2)))
    net = RiverNetwork.from_arrays([8, 7, 6, 5], [0, 8, 8, 7])
    with pytest.raises(IOFormatError, match=r"o.zarr \[complete\]: the output store is "
                                            "incomplete.*allow_incomplete=True"):
        open_output(tmp_path / "o.zarr", net)
    early = open_output(tmp_path / "o.zarr", net, allow_incomplete=True)
    assert early.attrs["complete"] is False
    mark_complete(tmp_path / "o.zarr")
    out = open_output(tmp_path / "o.zarr", net)
    assert out.attrs["complete"] is True
    np.testing.assert_array_equal(out["reach"].values, [8, 7, 6, 5])
    np.testing.assert_array_equal(out.values[0], [np.nan] * 3 + [7.0] * 3)
    np.testing.assert_array_equal(out.values[3], [0.0, 1.0, 2.0] + [np.nan] * 3)
    assert out.attrs["run"]["engine"] == "oracle" and out.attrs["interval_s"] == 86400.0


def test_chrtout_streaming_checks_ids_and_time_order(nwm_dir, tmp_path):
    bigger = RiverNetwork.from_arrays([11, 12, 13, 14, 15, 16], [13, 13, 15, 15, 0, 0])
    with pytest.raises(IOFormatError, match=r"CHRTOUT_DOMAIN1 \[feature_id\].*\[16\]"):
        ingest(nwm_dir / "chrt", tmp_path / "a.zarr", network=bigger)
    files = sorted((nwm_dir / "chrt").iterdir())
    with pytest.raises(IOFormatError, match=r"202108230000.CHRTOUT_DOMAIN1 \[time\].*not sorted"):
        ingest([files[1], files[0]], tmp_path / "b.zarr", chunks=(8, 1))


def test_run_progress_records_tasks_and_states(tmp_path):
    store = tmp_path / "o.zarr"
    create_output_store(store, [1, 2], T0 + np.arange(4) * np.timedelta64(1, "h"),
                        fingerprint="abc")
    prog = RunProgress.create(store)
    assert prog.done() == set() and not prog.has_state(0, 0)
    hist = {"runoff_hist": np.arange(6.0).reshape(1, 2, 3),
            "inflow_hist": np.zeros((1, 0, 2, 3), np.float32)}
    prog.save_state(3, 1, hist)
    prog.mark_done(3, 1)
    prog.mark_done(0, 0)
    assert prog.done() == {(3, 1), (0, 0)} and prog.has_state(3, 1)
    back = prog.load_state(3, 1)
    assert back.keys() == hist.keys()
    for k in hist:
        assert back[k].dtype == hist[k].dtype and np.array_equal(back[k], hist[k])
    with pytest.raises(IOFormatError, match=r"no state saved for group 2, chunk 0"):
        prog.load_state(2, 0)
    # the store stays a readable Zarr/xarray store with the record inside
    root = zarr.open_group(store, mode="r")
    assert root.attrs["fingerprint"] == "abc" and root.attrs["complete"] is False
    assert set(xr.open_zarr(store, consolidated=False).data_vars) == {"discharge"}
    prog.clear_states()
    assert not prog.has_state(3, 1) and prog.done() == {(3, 1), (0, 0)}


def test_failed_ingest_leaves_the_old_store_untouched(tmp_path):
    ingest(_da([1, 2, 3]), tmp_path / "f.zarr")
    before = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*")
              if p.is_file()}
    with pytest.raises(FileExistsError, match="f.zarr' exists and is left untouched"):
        ingest(_da([1, 2, 3]), tmp_path / "f.zarr")
    bad = _da([1, 2, 2])
    with pytest.raises(IOFormatError, match="listed twice"):
        ingest(bad, tmp_path / "f.zarr", overwrite=True)
    after = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*")
             if p.is_file()}
    assert after == before  # no partial store beside it either
    ingest(_da([4, 5]), tmp_path / "f.zarr", overwrite=True)
    assert open_forcing(tmp_path / "f.zarr", RiverNetwork.from_arrays([4, 5], [5, 0])
                        ).ids.tolist() == [4, 5]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.zarr"]


def test_store_of_object_dtype_is_refused_before_any_read(tmp_path):
    """A store whose arrays are not numbers (e.g. a Zarr v2 store with a pickle codec) is
    refused from its metadata: nothing of it is decoded."""
    ingest(_da([1, 2]), tmp_path / "f.zarr")
    root = zarr.open_group(tmp_path / "f.zarr", mode="r+")
    del root["reach"]
    root.create_array("reach", shape=(2,), dtype=str)
    with pytest.raises(IOFormatError, match=r"f.zarr \[reach\]: dtype .* is not integer"):
        open_forcing(tmp_path / "f.zarr", RiverNetwork.from_arrays([1, 2], [2, 0]))
