"""NWM files as users have them: a t-route-like RouteLink subset (``to`` links outside the
file) with inflow from upstream of it, and WRF-Hydro CHRTOUT files without ``q_lateral``.

Files are written here from the formats' documentation (NWM RouteLink: ``link``, ``to``;
CHRTOUT: one time slice per file over ``feature_id``; WRF-Hydro channel output carries
``qSfcLatRunoff`` and ``qBucket`` in m3 s-1 where NWM writes ``q_lateral``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr

from hydroscale.cli import main
from hydroscale.io import (
    IOFormatError,
    boundary_inflow,
    ingest,
    open_network,
    open_series,
    read_chrtout,
    read_routelink,
)
from hydroscale.routing import route_oracle

# the full domain: 31 -> 21, 32 -> 22, 33 -> 31 (upstream of the subset); 21, 22 -> 23 -> 24
# -> 99 -> outlet.  The subset holds 21..24 only (as t-route's test domains: `to` of 24 is
# 99, outside the file).
FULL_LINK = np.array([33, 31, 32, 21, 22, 23, 24, 99], np.int64)
FULL_TO = np.array([31, 21, 22, 23, 23, 24, 99, 0], np.int64)
SUB = np.array([21, 22, 23, 24], np.int64)


def write_routelink(path, link, to):
    xr.Dataset({"link": ("feature_id", link), "to": ("feature_id", to),
                "Length": ("feature_id", np.full(len(link), 1000.0), {"units": "m"})}
               ).to_netcdf(path)
    return path


def write_slice(path, time, ids, **variables):
    data = {k: ("feature_id", np.asarray(v, np.float64), {"units": "m3 s-1"})
            for k, v in variables.items()}
    xr.Dataset(data, coords={"feature_id": np.asarray(ids, np.int64),
                             "time": [pd.Timestamp(time)]}).to_netcdf(path)
    return path


def test_a_routelink_subset_cuts_outside_links_to_outlets_with_a_warning(tmp_path):
    sub = write_routelink(tmp_path / "RouteLink_sub.nc", SUB, FULL_TO[3:7])
    with pytest.warns(UserWarning, match=r"RouteLink subset: 1 links drain to 1 `to` links "
                      r"outside the file and are outlets here: links \[24\] -> \[99\]"):
        net = open_network(sub)
    np.testing.assert_array_equal(net.ids, SUB)
    np.testing.assert_array_equal(net.downstream, [2, 2, 3, -1])
    with pytest.raises(IOFormatError, match=r"\[to\]: downstream links \[99\] are not in "
                       r"`link`; the RouteLink subset is not closed: read it with closed=False"):
        read_routelink(sub, closed=True)


def test_boundary_inflow_is_the_trapezoid_mean_of_the_cut_links_streamflow(tmp_path):
    full = write_routelink(tmp_path / "RouteLink_full.nc", FULL_LINK, FULL_TO)
    sub = write_routelink(tmp_path / "RouteLink_sub.nc", SUB, FULL_TO[3:7])
    with pytest.warns(UserWarning):
        net = read_routelink(sub)
    chrt = tmp_path / "chrt"
    chrt.mkdir()
    # streamflow of 31 (-> 21): 10, 20, 40; of 32 (-> 22): 4, 4, 8; q_lateral: id / 10
    flow = {31: [10.0, 20.0, 40.0], 32: [4.0, 4.0, 8.0]}
    for h in range(3):
        ids = FULL_LINK[::-1] if h == 1 else FULL_LINK  # the order may change between files
        sf = [flow.get(int(i), [100.0] * 3)[h] for i in ids]
        write_slice(chrt / f"2021082301{h}0.CHRTOUT_DOMAIN1", f"2021-08-23T0{h + 1}:00", ids,
                    streamflow=sf, q_lateral=ids / 10.0)
    b = boundary_inflow(net, chrt, routelink=full)
    # hand computation: first interval Q[0], then (Q[k-1] + Q[k]) / 2
    expected = np.array([[10.0, 15.0, 30.0], [4.0, 4.0, 6.0], [0, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(b.values, expected)
    np.testing.assert_array_equal(b["reach"].values, SUB)
    np.testing.assert_array_equal(np.sort(b.attrs["boundary_links"]), [31, 32])  # not 33
    assert b.attrs["units"] == "m3 s-1"
    # routed with the subset's own q_lateral, the boundary inflow reaches the outlet: with
    # pure_lag(0) the outlet carries every inflow of the subset at once
    lateral = read_chrtout(chrt, ("q_lateral",), reach_ids=net.ids)["q_lateral"]
    q = np.asarray(route_oracle(net, (lateral + b).values.astype(np.float64), "pure_lag",
                                np.zeros((4, 1))))
    np.testing.assert_allclose(q[3], expected.sum(0) + SUB.sum() / 10.0, rtol=1e-6)


def test_boundary_inflow_names_a_boundary_link_missing_from_chrtout(tmp_path):
    full = write_routelink(tmp_path / "full.nc", FULL_LINK, FULL_TO)
    with pytest.warns(UserWarning):
        net = read_routelink(write_routelink(tmp_path / "sub.nc", SUB, FULL_TO[3:7]))
    f = write_slice(tmp_path / "a.CHRTOUT_DOMAIN1", "2021-08-23T01:00", SUB,
                    streamflow=np.ones(4))
    with pytest.raises(IOFormatError, match=r"a.CHRTOUT_DOMAIN1 \[feature_id\]: reaches "
                       r"\[31, 32\]"):
        boundary_inflow(net, [f], routelink=full)


def _wrf_hydro_files(folder, ids=(11, 12, 13)):
    folder.mkdir()
    files = []
    for h in range(2):
        sfc = np.array([1.0, 2.0, 3.0]) * (h + 1)
        bucket = np.array([0.5, 0.25, 0.0])
        files.append(write_slice(folder / f"20210823{h:02d}00.CHRTOUT_DOMAIN1",
                                 f"2021-08-23T{h:02d}:00", ids, qSfcLatRunoff=sfc,
                                 qBucket=bucket, streamflow=10 * sfc))
    return files


def test_wrf_hydro_chrtout_without_q_lateral_gives_qsfclatrunoff_plus_qbucket(tmp_path):
    _wrf_hydro_files(tmp_path / "chrt")
    da = open_series(tmp_path / "chrt")  # guessed, q_lateral by default
    np.testing.assert_allclose(da.values, [[1.5, 2.5], [2.25, 4.25], [3.0, 6.0]])
    named = open_series(tmp_path / "chrt", variable="qSfcLatRunoff+qBucket")
    np.testing.assert_array_equal(named.values, da.values)
    only = open_series(tmp_path / "chrt", variable="qBucket")
    np.testing.assert_allclose(only.values, [[0.5, 0.5], [0.25, 0.25], [0.0, 0.0]])


def test_ingest_variable_a_plus_b_from_the_cli(tmp_path):
    _wrf_hydro_files(tmp_path / "chrt")
    store = tmp_path / "f.zarr"
    code = main(["ingest", str(tmp_path / "chrt"), str(store), "--variable",
                 "qSfcLatRunoff+qBucket", "--time-is-end", "--no-progress"])
    assert code == 0
    root = zarr.open_group(str(store), mode="r")
    np.testing.assert_allclose(root["runoff"][:], [[1.5, 2.5], [2.25, 4.25], [3.0, 6.0]])
    np.testing.assert_array_equal(root["reach"][:], [11, 12, 13])
    assert root.attrs["interval_s"] == 3600
    # the same through the library, default variable (q_lateral derived)
    root2 = ingest(tmp_path / "chrt", tmp_path / "g.zarr")
    np.testing.assert_allclose(root2["runoff"][:], root["runoff"][:])


def test_chrtout_parts_are_checked(tmp_path):
    f = write_slice(tmp_path / "a.CHRTOUT_DOMAIN1", "2021-08-23T01:00", [1, 2],
                    qSfcLatRunoff=[1.0, 2.0], streamflow=[1.0, 1.0])
    with pytest.raises(IOFormatError, match=r"a.CHRTOUT_DOMAIN1 \[q_lateral\]: missing "
                       r"variable q_lateral, and it cannot be derived as "
                       r"qSfcLatRunoff\+qBucket \(missing \['qBucket'\]\)"):
        open_series([f])
    with pytest.raises(IOFormatError, match=r"\[qBucket\]: missing variable"):
        open_series([f], variable="qSfcLatRunoff+qBucket")
    g = tmp_path / "b.CHRTOUT_DOMAIN1"
    xr.Dataset({"qSfcLatRunoff": ("feature_id", [1.0], {"units": "m3 s-1"}),
                "qBucket": ("feature_id", [1.0], {"units": "mm"})},
               coords={"feature_id": [1], "time": [pd.Timestamp("2021-08-23")]}).to_netcdf(g)
    with pytest.raises(IOFormatError, match=r"b.CHRTOUT_DOMAIN1 \[qBucket\]: units are 'mm', "
                       r"expected m3 s-1"):
        open_series([g])
    with pytest.raises(ValueError, match=r"variable 'a\+': expected NAME or NAME\+NAME"):
        open_series([g], variable="a+")
