"""Bad input, one case per row: each gives a clear error naming what is wrong (issue 11 table).

Every case checks the exception type and the key words of its message; where a case could
overwrite an output, the test also checks that the existing output is untouched.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

import hydroscale
from hydroscale.distributed import ClusterConfigError, load_config, render_job_script
from hydroscale.io import IOFormatError, create_output_store, ingest, open_forcing, read_routelink
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
        ValueError, r"outside their bounds: 6 at \(0,\) \(open bounds 0.1\.\.5\)"),
    "parameter outside its range": (lambda: _route(_runoff(), params={"k": 0.5, "x": 0.7}),
                                    UnstableParametersError,
                                    r"0 <= x <= 0.5; offending 3 reach\(es\), ids \[1, 2, 3\]"),
    "misaligned reach ids": (
        lambda: hydroscale.route(NET, xr.DataArray(np.ones((3, 4)), dims=("reach", "time"),
                                                   coords={"reach": [1, 2, 7]}),
                                 params=MUSK, substeps=2),
        ValueError, "7"),
    "workflow unknown key": (
        lambda: load_workflow(None, ["kind=route", "routing.speed=3"]), WorkflowError,
        "routing.speed"),
    # issue 24 §3
    "reach id 0 when 0 marks outlets": (
        lambda: RiverNetwork.from_arrays([0, 1], [1, 0]), NetworkError,
        r"reach id\(s\) \[0\] mark outlets in the downstream ids .*renumber"),
    "zero time steps": (lambda: _route(np.ones((3, 0))), ValueError,
                        r"runoff has 0 time steps \(shape \(3, 0\)\)"),
    "accumulate NaN": (lambda: hydroscale.accumulate(NET, np.array([1.0, np.nan, 2.0])),
                       ValueError, r"field has 1 NaN or infinite value\(s\); first at reach id 2:"
                                   r".*skipna=True"),
    "accumulate NaN in a time series": (
        lambda: hydroscale.accumulate(NET, _runoff(np.nan)), ValueError,
        "field has 1 NaN or infinite value.*reach id 2, step 4"),
    "substeps beyond memory": (
        lambda: hydroscale.route(NET, _runoff(), "linear_storage", {"tau": 1.0},
                                 substeps=10**12),
        MemoryError, r"route needs at least \d+(\.\d+)? [GTP]B .*substeps=1000000000000.* but "
                     r"\d+(\.\d+)? [GMT]B .*available.*lower substeps"),
    "slurm config without a scheduler host": (
        lambda: load_config("slurm"), ClusterConfigError,
        r"slurm.yaml: kind 'slurm' needs a scheduler address the compute nodes can reach.*"
        r"interface: ib0.*host:"),
    "slurm scheduler on loopback": (
        lambda: load_config("slurm", host="127.0.0.1"), ClusterConfigError,
        r"slurm.yaml: key 'host' is '127.0.0.1', a loopback address: .*compute node.*"
        r"interface: ib0.*host:.*TLS"),
    "slurm job script pointing at loopback": (
        lambda: render_job_script(load_config("slurm", interface="ib0"),
                                  scheduler="tcp://localhost:8786"),
        ClusterConfigError, r"scheduler 'tcp://localhost:8786' is a loopback address"),
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
    with pytest.raises(IOFormatError, match=r"f.zarr \[reach\]: reach ids do not match the "
                                            r"network: missing from the store \[3\].*not in the "
                                            r"network \[8\]"):
        open_forcing(tmp_path / "f.zarr", NET)


def test_duplicated_times_are_refused(tmp_path) -> None:
    t = pd.to_datetime(["2021-01-01 00:00", "2021-01-01 01:00", "2021-01-01 01:00"]).values
    da = xr.DataArray(np.ones((3, 3), np.float32), dims=("reach", "time"),
                      coords={"reach": [1, 2, 3], "time": t}, attrs={"units": "m3 s-1"})
    with pytest.raises(IOFormatError, match=r"\[time\]: duplicated times "
                                            r"\[2021-01-01T01:00"):
        ingest(da, tmp_path / "d.zarr")
    assert not (tmp_path / "d.zarr").exists()


def test_time_axis_with_a_gap_is_refused(tmp_path) -> None:
    t = pd.to_datetime(["2021-01-01 00:00", "2021-01-01 01:00", "2021-01-01 03:00",
                        "2021-01-01 04:00"]).values
    da = xr.DataArray(np.ones((3, 4), np.float32), dims=("reach", "time"),
                      coords={"reach": [1, 2, 3], "time": t}, attrs={"units": "m3 s-1"})
    with pytest.raises(IOFormatError, match=r"\[time\]: the time axis is not regular: "
                                            r"2021-01-01T01:00:00 is followed by "
                                            r"2021-01-01T03:00:00 \(7200 s where the step is "
                                            r"3600 s"):
        ingest(da, tmp_path / "g.zarr")
    assert not (tmp_path / "g.zarr").exists()


def test_missing_zarr_chunk_is_refused(tmp_path) -> None:
    t = pd.date_range("2021-01-01", periods=6, freq="h").values
    da = xr.DataArray(np.ones((3, 6), np.float32), dims=("reach", "time"),
                      coords={"reach": [1, 2, 3], "time": t}, attrs={"units": "m3 s-1"})
    ingest(da, tmp_path / "f.zarr", chunks=(2, 4))
    (tmp_path / "f.zarr" / "runoff" / "c" / "1" / "1").unlink()  # rows 2:3, steps 4:6
    with pytest.raises(IOFormatError, match=r"f.zarr \[runoff\]: 1 of 4 chunks are missing, "
                                            r"e.g. chunk \(1, 1\) \(rows 2:3, steps 4:6\)"):
        open_forcing(tmp_path / "f.zarr", NET)


def test_truncated_netcdf_is_refused(tmp_path) -> None:
    path = tmp_path / "RouteLink.nc"
    xr.Dataset({"link": ("feature_id", np.array([1, 2, 3])),
                "to": ("feature_id", np.array([3, 3, 0]))}).to_netcdf(path)
    os.truncate(path, path.stat().st_size // 2)
    with pytest.raises(IOFormatError, match=r"RouteLink.nc: cannot be read as NetCDF .*the "
                                            r"file is truncated or damaged \(\d+ bytes\)"):
        read_routelink(str(path))


def test_existing_output_is_not_overwritten(tmp_path) -> None:
    store = tmp_path / "out.zarr"
    t = pd.date_range("2021-01-01", periods=4, freq="h").values
    create_output_store(store, [1, 2, 3], t)
    before = sorted(p.name for p in store.rglob("*"))
    with pytest.raises(FileExistsError, match="out.zarr' exists and is left untouched"):
        create_output_store(store, [1, 2, 3, 4], t)
    assert sorted(p.name for p in store.rglob("*")) == before


def test_pickled_payloads_are_refused(tmp_path) -> None:
    """Files hydroscale reads back (partitions, router states, run progress, checkpoints)
    are plain arrays: a pickled object in them is refused, never unpickled."""
    import pickle

    from hydroscale.io import RunProgress
    from hydroscale.partition import Partition, partition_network
    from hydroscale.routing import RouterState

    class Payload:  # unpickling it would run code; it must never be built
        def __reduce__(self):
            return (print, ("unpickled!",))

    net = RiverNetwork.from_arrays(np.arange(1, 21), np.r_[np.arange(2, 21), 0])
    part = partition_network(net, max_reaches=8)
    part.save(tmp_path / "part")
    with np.load(tmp_path / "part" / "partition.npz") as z:
        arrays = dict(z)
    arrays[next(iter(arrays))] = np.array([Payload()], dtype=object)
    np.savez(tmp_path / "part" / "partition.npz", **arrays)
    with pytest.raises(ValueError, match="allow_pickle=False"):
        Partition.load(tmp_path / "part", net)
    bad = np.array([Payload()], dtype=object)
    np.savez(tmp_path / "state.npz", runoff_hist=bad, inflow_hist=bad)
    with pytest.raises(ValueError, match="allow_pickle=False"):
        RouterState.load(tmp_path / "state.npz")
    store = tmp_path / "o.zarr"
    create_output_store(store, [1, 2, 3], pd.date_range("2021-01-01", periods=2).values)
    prog = RunProgress.create(store)
    np.savez(os.path.join(prog.path, "state", "g0-c0.npz"), runoff_hist=bad)
    with pytest.raises(ValueError, match="allow_pickle=False"):
        prog.load_state(0, 0)
    from hydroscale.calibration import Calibrator

    torch.save({"format": "x", "payload": Payload()}, tmp_path / "ckpt.pt")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        # the file is read before the calibrator is looked at: no instance is needed
        Calibrator.load_checkpoint(None, tmp_path / "ckpt.pt")


# ------------------------------------------- bad input to a run that replaces an old output
def _routelink(path, link, to):
    xr.Dataset({"link": ("feature_id", np.asarray(link, np.int64)),
                "to": ("feature_id", np.asarray(to, np.int64))}).to_netcdf(path)
    return {"network": {"source": "routelink", "path": str(path)}}


def _zarr_forcing(tmp_path, ids=None, *, nan_at=None, chunks=(16, 4)):
    from hydroscale.network import continental_forest

    net = continental_forest(40, seed=3)
    r = np.random.default_rng(1).uniform(0, 2, (40, 12)).astype(np.float32)
    if nan_at is not None:
        r[nan_at] = np.nan
    t = pd.date_range("2001-01-01", periods=12, freq="D").values
    ids = net.ids if ids is None else ids
    store = tmp_path / "forcing.zarr"
    ingest(xr.DataArray(r, {"reach": ids, "time": t}, ("reach", "time"),
                        attrs={"units": "m3 s-1"}), store, chunks=chunks)
    return store, {"forcing": {"source": "zarr", "path": str(store)}}


def _edit_times(store, seconds):
    import zarr

    root = zarr.open_group(str(store), mode="r+")
    root["time"][:] = seconds


def _case(name, tmp_path):  # noqa: C901 - one branch per row of the table
    """(workflow sections, exception, message pattern) of one bad-input case."""
    day = 86400
    if name == "cycle":
        return _routelink(tmp_path / "RouteLink.nc", [1, 2, 3], [2, 3, 1]), NetworkError, \
            r"cycle through 3 reach\(es\) \[1, 2, 3\]"
    if name == "duplicate ids":
        return _routelink(tmp_path / "RouteLink.nc", [4, 4, 5], [0, 0, 0]), NetworkError, \
            r"listed more than once: \[4\]"
    if name == "unknown downstream id":  # a RouteLink subset is read (cut outlets); RAPID's
        # rapid_connect without riv_bas_id must be closed
        (tmp_path / "rapid_connect.csv").write_text("1,9\n2,0\n")
        return {"network": {"source": "rapid", "path": str(tmp_path / "rapid_connect.csv")}}, \
            IOFormatError, r"rapid_connect.csv \[downstream\]: downstream rivids \[9\]"
    if name == "empty network":
        return _routelink(tmp_path / "RouteLink.nc", [], []), NetworkError, "network is empty"
    if name == "truncated NetCDF":
        sec = _routelink(tmp_path / "RouteLink.nc", np.arange(1, 50), np.r_[np.arange(2, 50), 0])
        os.truncate(tmp_path / "RouteLink.nc", (tmp_path / "RouteLink.nc").stat().st_size // 2)
        return sec, IOFormatError, r"RouteLink.nc: cannot be read as NetCDF.*truncated"
    if name == "forcing ids not matching":
        from hydroscale.network import continental_forest

        ids = continental_forest(40, seed=3).ids.copy()
        ids[5] = 99999
        return _zarr_forcing(tmp_path, ids)[1], IOFormatError, \
            r"forcing.zarr \[reach\].*not in the network \[99999\]"
    if name == "NaN inflow (late time chunk)":
        return _zarr_forcing(tmp_path, nan_at=(7, 10))[1], IOFormatError, \
            r"forcing.zarr \[runoff\]: 1 NaN or infinite value\(s\) in steps 8:12, e.g. reach id"
    if name == "wrong dtype":  # a store written elsewhere with integer runoff
        import zarr

        store, sec = _zarr_forcing(tmp_path)
        root = zarr.open_group(str(store), mode="r+")
        del root["runoff"]
        root.create_array("runoff", data=np.ones((40, 12), np.int32), chunks=(16, 4),
                          dimension_names=("reach", "time"))
        return sec, IOFormatError, r"forcing.zarr \[runoff\]: dtype int32 is not floating point"
    if name == "time axis with a gap":
        store, sec = _zarr_forcing(tmp_path)
        t0 = 978307200  # 2001-01-01
        _edit_times(store, t0 + day * np.r_[np.arange(6), np.arange(7, 13)])
        return sec, IOFormatError, r"forcing.zarr \[time\]: the time axis is not regular: " \
                                   r"2001-01-06T00:00:00 is followed by 2001-01-08"
    if name == "duplicated times":
        store, sec = _zarr_forcing(tmp_path)
        _edit_times(store, 978307200 + day * np.r_[np.arange(6), np.arange(5, 11)])
        return sec, IOFormatError, r"forcing.zarr \[time\]: duplicated times \[2001-01-06"
    if name == "missing Zarr chunk":
        store, sec = _zarr_forcing(tmp_path)
        (store / "runoff" / "c" / "1" / "2").unlink()
        return sec, IOFormatError, r"forcing.zarr \[runoff\]: 1 of 9 chunks are missing, " \
                                   r"e.g. chunk \(1, 2\) \(rows 16:32, steps 8:12\)"
    if name == "unstable Muskingum":
        return {"routing": {"params": {"k": 0.05, "x": 0.3}}}, UnstableParametersError, \
            "negative Muskingum coefficient"
    if name == "parameter outside its range":
        return {"routing": {"params": {"k": 0.5, "x": 0.8}}}, UnstableParametersError, \
            r"0 <= x <= 0.5; offending 40 reach\(es\)"
    if name == "workflow unknown key":
        return {"routing": {"speed": 3}}, WorkflowError, "routing.speed"
    if name == "string ids in RouteLink":
        _string_routelink(tmp_path / "RouteLink.nc")
        return {"network": {"source": "routelink", "path": str(tmp_path / "RouteLink.nc")}}, \
            IOFormatError, r"RouteLink.nc \[link\]: reach ids are strings"
    if name == "link 0 in RouteLink":
        return _routelink(tmp_path / "RouteLink.nc", [0, 1, 2], [1, 2, 0]), IOFormatError, \
            r"RouteLink.nc \[link\]: link 0 "
    if name == "RouteLink not NetCDF":
        (tmp_path / "RouteLink.nc").write_text("link,to\n1,0\n")
        return {"network": {"source": "routelink", "path": str(tmp_path / "RouteLink.nc")}}, \
            IOFormatError, r"RouteLink.nc: not a NetCDF file"
    if name == "zero time steps":  # a store written elsewhere (ingest refuses to make one)
        import zarr

        store, sec = _zarr_forcing(tmp_path)
        root = zarr.open_group(str(store), mode="r+")
        for key in ("runoff", "time"):
            del root[key]
        root.create_array("runoff", shape=(40, 0), dtype="float32", chunks=(16, 4),
                          dimension_names=("reach", "time"))
        root.create_array("time", shape=(0,), dtype="int64", chunks=(1,),
                          dimension_names=("time",))
        return sec, IOFormatError, r"forcing.zarr \[time\]: no time steps"
    raise KeyError(name)


WORKFLOW_CASES = ["cycle", "duplicate ids", "unknown downstream id", "empty network",
                  "truncated NetCDF", "forcing ids not matching", "NaN inflow (late time chunk)",
                  "wrong dtype", "time axis with a gap", "duplicated times",
                  "missing Zarr chunk", "unstable Muskingum", "parameter outside its range",
                  "workflow unknown key", "string ids in RouteLink", "link 0 in RouteLink",
                  "RouteLink not NetCDF", "zero time steps"]


def _mapping(out_dir, **sections):
    wf = {
        "kind": "route", "name": "bad-input",
        "network": {"source": "synthetic", "reaches": 40, "seed": 3},
        "forcing": {"source": "synthetic", "steps": 12, "seed": 5, "scale": 2.0},
        "routing": {"irf": "muskingum", "params": {"k": 0.6, "x": 0.2}, "substeps": 2,
                    "time_chunk": 4, "engine": "torch", "dtype": "float64"},
        "partition": {"max_reaches": 16},
        "output": {"dir": str(out_dir), "overwrite": True,
                   "hydrographs": {"outlets": 1, "gauges": False}},
    }
    for key, values in sections.items():
        wf[key] = {**wf[key], **values} if key == "routing" else values
    return wf


@pytest.fixture(scope="module")
def old_output(tmp_path_factory):
    """An output folder written by a good run (its store is what must survive)."""
    from hydroscale.workflows import run_route, workflow_from_mapping

    out = tmp_path_factory.mktemp("old") / "out"
    run_route(workflow_from_mapping(_mapping(out)))
    return out


@pytest.mark.parametrize("case", WORKFLOW_CASES)
def test_bad_input_never_costs_the_existing_output(case, old_output, tmp_path) -> None:
    """Each case through ``hydroscale route`` with ``output.overwrite=true`` over an existing
    store: a clear error naming the offending thing, and the old store byte for byte."""
    import shutil

    from hydroscale.workflows import run_route, workflow_from_mapping

    out = tmp_path / "out"
    shutil.copytree(old_output, out)
    store = out / "discharge.zarr"
    before = {p.relative_to(out): p.read_bytes() for p in store.rglob("*") if p.is_file()}
    sections, exc, pattern = _case(case, tmp_path)
    with pytest.raises(exc, match=pattern):
        run_route(workflow_from_mapping(_mapping(out, **sections)))
    after = {p.relative_to(out): p.read_bytes() for p in store.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in out.iterdir() if "discharge" in p.name) == ["discharge.zarr"]


# ------------------------------------------- issue 24 §3: more mistakes users make
def _serve(handler_cls):
    """A server on 127.0.0.1:<free port> in a daemon thread; returns (server, port)."""
    import socketserver
    import threading

    class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
        daemon_threads = True
        allow_reuse_address = True

    srv = Server(("127.0.0.1", 0), handler_cls)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, srv.server_address[1]


def _http_handler():
    import http.server

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # no stderr noise
            pass

    return Quiet


def _garbage_handler():
    import socketserver

    class Garbage(socketserver.BaseRequestHandler):
        def handle(self):  # answers at once, in another protocol, and hangs up
            self.request.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    return Garbage


@pytest.mark.parametrize("handler", ["http", "garbage"])
def test_scheduler_address_answering_another_protocol(handler) -> None:
    """The dashboard port (an HTTP server) or a server sending garbage given as the
    scheduler: refused once ``timeout`` passes, naming the address and the likely mistake."""
    import time

    from hydroscale.distributed import start_cluster

    srv, port = _serve(_http_handler() if handler == "http" else _garbage_handler())
    address = f"tcp://127.0.0.1:{port}"
    t0 = time.monotonic()
    try:
        with pytest.raises(ClusterConfigError,
                           match=rf"{address} .*not a Dask scheduler.*dashboard port.*8786"):
            start_cluster({"kind": "scheduler", "address": address, "timeout": 2})
    finally:
        srv.shutdown()
        srv.server_close()
    assert time.monotonic() - t0 < 60  # a generous ceiling: never hangs past the timeout


def test_memory_guard_uses_the_available_figure(monkeypatch) -> None:
    """HYDROSCALE_MEMORY_LIMIT stands for the memory available (here 100 MB): substeps=10**6
    on 3 reaches x 6 steps needs more sub-step arrays than that in the levels engine, which
    refuses before anything is allocated (``auto`` would pick an engine without them)."""
    monkeypatch.setenv("HYDROSCALE_MEMORY_LIMIT", "100MB")
    with pytest.raises(MemoryError, match=r"route needs at least 0\.\d+ GB \(batch 1 x 3 reaches "
                                          r"x 6 steps x substeps=1000000.*but 0\.1 GB.*"
                                          r"HYDROSCALE_MEMORY_LIMIT.*lower substeps"):
        hydroscale.route(NET, _runoff(), "linear_storage", {"tau": 1.0}, substeps=10**6,
                         engine="levels")


def _flow(units=None, reach=(1, 2, 3), steps=4):
    t = pd.date_range("2021-01-01", periods=steps, freq="h").values
    attrs = {} if units is None else {"units": units}
    return xr.DataArray(np.ones((len(reach), steps), np.float32), dims=("reach", "time"),
                        coords={"reach": list(reach), "time": t}, attrs=attrs)


@pytest.mark.parametrize("units", ["mm", "kg m-2 s-1"])
def test_ingest_of_a_dataarray_in_other_units(tmp_path, units) -> None:
    with pytest.raises(IOFormatError, match=rf"<DataArray> \[units\]: units are '{units}', "
                                            r"expected m3 s-1; convert"):
        ingest(_flow(units), tmp_path / "f.zarr")
    assert not (tmp_path / "f.zarr").exists()


def test_ingest_of_a_dataarray_without_units_assumes_discharge(tmp_path, caplog) -> None:
    """No ``units`` attribute: taken as m³/s, as for NetCDF sources, with a log line."""
    import logging

    with caplog.at_level(logging.WARNING, logger="hydroscale.io"):
        ingest(_flow(None), tmp_path / "f.zarr")
    assert "no 'units' attribute: taken as m3 s-1" in caplog.text
    assert open_forcing(tmp_path / "f.zarr", NET).attrs["units"] == "m3 s-1"


def test_ingest_of_zero_time_steps_is_refused(tmp_path) -> None:
    with pytest.raises(IOFormatError, match=r"<DataArray> \[time\]: no time steps"):
        ingest(_flow("m3 s-1", steps=0), tmp_path / "f.zarr")
    assert not (tmp_path / "f.zarr").exists()


def test_string_reach_ids_in_a_dataarray(tmp_path) -> None:
    with pytest.raises(IOFormatError, match=r"<DataArray> \[reach\]: reach ids are strings, "
                                            r"e.g. \['a', 'b', 'c'\].*integer ids"):
        ingest(_flow("m3 s-1", reach=("a", "b", "c")), tmp_path / "f.zarr")
    assert not (tmp_path / "f.zarr").exists()


def test_string_reach_ids_in_a_csv_header(tmp_path) -> None:
    src = tmp_path / "runoff.csv"
    src.write_text("time,a1,b2\n2021-01-01T00:00,1,2\n2021-01-01T01:00,1,2\n")
    with pytest.raises(IOFormatError, match=r"runoff.csv \[header\]: columns after 'time' must "
                                            r"be integer reach ids, got \['a1', 'b2'\]"):
        ingest(src, tmp_path / "f.zarr")
    assert not (tmp_path / "f.zarr").exists()


def test_string_reach_ids_in_a_netcdf_source(tmp_path) -> None:
    src = tmp_path / "runoff.nc"
    xr.Dataset({"qlat": _flow("m3 s-1").assign_coords(reach=["x1", "x2", "x3"])}).to_netcdf(src)
    with pytest.raises(IOFormatError, match=r"runoff.nc \[reach\]: reach ids are strings.*"
                                            r"\['x1', 'x2', 'x3'\]"):
        ingest(src, tmp_path / "f.zarr")
    assert not (tmp_path / "f.zarr").exists()


def test_csv_passed_as_netcdf(tmp_path) -> None:
    src = tmp_path / "runoff.nc"
    src.write_text("time,1,2,3\n2021-01-01T00:00,1,2,3\n")
    with pytest.raises(IOFormatError, match=r"runoff.nc: not a NetCDF file: it starts with "
                                            r"'time,1,2,3"):
        ingest(src, tmp_path / "f.zarr")
    assert not (tmp_path / "f.zarr").exists()


def _string_routelink(path):
    xr.Dataset({"link": ("feature_id", np.array(["1", "2", "3"])),
                "to": ("feature_id", np.array([3, 3, 0]))}).to_netcdf(path)


def test_string_ids_in_a_routelink(tmp_path) -> None:
    _string_routelink(tmp_path / "RouteLink.nc")
    with pytest.raises(IOFormatError, match=r"RouteLink.nc \[link\]: reach ids are strings, "
                                            r"e.g. \['1', '2', '3'\]"):
        read_routelink(str(tmp_path / "RouteLink.nc"))


def test_link_zero_in_a_routelink(tmp_path) -> None:
    _routelink(tmp_path / "RouteLink.nc", [0, 1], [1, 0])
    with pytest.raises(IOFormatError, match=r"RouteLink.nc \[link\]: link 0 .*0 in `to` marks "
                                            r"an outlet"):
        read_routelink(str(tmp_path / "RouteLink.nc"))


@pytest.mark.parametrize("reader", ["routelink", "rapid inflow", "chrtout"])
def test_text_file_named_like_netcdf(tmp_path, reader) -> None:
    from hydroscale.io import read_chrtout
    from hydroscale.io.rapid import read_rapid_inflow

    name = {"routelink": "RouteLink.nc", "rapid inflow": "m3_riv.nc",
            "chrtout": "202108231300.CHRTOUT_DOMAIN1"}[reader]
    path = tmp_path / name
    path.write_text("link,to\n1,0\n")
    read = {"routelink": read_routelink, "rapid inflow": read_rapid_inflow,
            "chrtout": read_chrtout}[reader]
    with pytest.raises(IOFormatError, match=rf"{name}: not a NetCDF file: it starts with "
                                            r"'link,to\\n1,0\\n' \(text, 12 bytes\)"):
        read(str(path))


def test_workflow_not_utf8(tmp_path) -> None:
    path = tmp_path / "wf.yaml"
    path.write_bytes("kind: route\nname: caf\xe9\n".encode("latin-1"))
    with pytest.raises(WorkflowError, match=r"wf.yaml:\n  - not UTF-8 text: byte 0xe9 on line 2"
                                            r".*save the file as UTF-8"):
        load_workflow(path)


@pytest.mark.parametrize("text, key, lines", [
    ("kind: route\nrouting:\n  substeps: 2\n  substeps: 4\n", "routing.substeps", "3 and 4"),
    ("kind: route\nforcing: {steps: 3}\nkind: benchmark\n", "kind", "1 and 3"),
    ("kind: route\nrouting:\n  params: {k: 1, x: 0.2, k: 2}\n", "routing.params.k", "3 and 3"),
])
def test_workflow_duplicate_keys(tmp_path, text, key, lines) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text(text)
    with pytest.raises(WorkflowError, match=rf"{key}: key given twice \(lines {lines}\)"):
        load_workflow(path)


@pytest.mark.parametrize("text", ["", "# a workflow, one day\n\n"])
def test_empty_workflow_file(tmp_path, text) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text(text)
    with pytest.raises(WorkflowError, match=r"wf.yaml:\n  - the file is empty"):
        load_workflow(path, kind="route")


def test_an_observations_file_that_is_not_netcdf_is_named(tmp_path) -> None:
    from hydroscale.calibration import GaugeObservations

    path = tmp_path / "gauges.nc"
    path.write_text("time,1,2\n2021-01-01,1,2\n")
    with pytest.raises(IOFormatError, match=r"gauges.nc: not a NetCDF file: it starts with "
                                            r"'time,1,2"):
        GaugeObservations.from_netcdf(path)
