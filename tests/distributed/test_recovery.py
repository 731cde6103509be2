"""Reliability of distributed routing: a worker process killed mid-run, an interrupted run
resumed, a store of another run refused.  Every run is compared with an undisturbed run of
the same definition, exactly (``np.array_equal`` of the float32 output stores).

Every test starts and ends with both workers of the shared cluster running (``whole_cluster``):
a killed or restarted worker is waited for generously (``RESTART_TIMEOUT``), since a new
worker process may take a minute to start on a busy machine; how long it took is never what
a test asserts."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
import torch
import zarr

from hydroscale.distributed import (
    DistributedRouter,
    replaced,
    route_distributed,
    wait_for_workers,
    worker_addresses,
)
from hydroscale.io import IOFormatError, RunProgress, SyntheticForcing, open_output

SUBSTEPS = 3
T = 360
CHUNK = 12  # 30 chunks: a run of a few seconds on 2 CPU workers
WORKERS = 2  # of the shared ``client`` cluster
RESTART_TIMEOUT = 300.0  # seconds for a killed or restarted worker to be back (busy machine)

pytestmark = pytest.mark.usefixtures("whole_cluster")


def _forcing(**kw):
    return SyntheticForcing(T, seed=3, scale=2.0, **kw)


def _route(client, forest, out, forcing=None, **kw):
    net, params, part = forest
    return route_distributed(client, net, part, forcing or _forcing(), str(out), params,
                             time_chunk=CHUNK, irf="muskingum", substeps=SUBSTEPS,
                             allow_unstable=True, **kw)


@pytest.fixture(scope="module")
def reference(client, forest, tmp_path_factory):
    """An undisturbed run: its summary and output values."""
    out = tmp_path_factory.mktemp("ref") / "ref.zarr"
    s = _route(client, forest, out)
    assert s.reused_tasks == 0 and s.recomputed_tasks == 0
    assert s.tasks == s.groups * s.chunks
    return s, open_output(str(out)).values


def test_helpers_map_workers_by_name(client):
    now = worker_addresses(client)
    assert sorted(now) == ["0", "1"]
    addrs = wait_for_workers(client, WORKERS, timeout=RESTART_TIMEOUT)
    assert addrs == [now["0"], now["1"]]
    assert replaced(addrs, addrs) == {}
    assert replaced(addrs, [addrs[0], "tcp://x"]) == {1: (addrs[1], "tcp://x")}
    with pytest.raises(Exception, match="waited 0.5 s for 3 workers, the cluster has 2"):
        wait_for_workers(client, 3, timeout=0.5)


def test_worker_lists_ignore_the_clients_periodic_refresh(client, monkeypatch):
    """The client's cached identity is replaced every few seconds by an answer without
    per-worker information; a worker list read from it after its own refresh saw 0 workers on a
    busy machine.  Here every refresh of the cache is that answer: the lists still ask the
    scheduler and find both workers."""
    from distributed.client import SchedulerInfo

    from hydroscale.distributed import map_workers

    async def periodic_refresh(n_workers=0):
        client._scheduler_identity = SchedulerInfo(await client.scheduler.identity(n_workers=0))

    monkeypatch.setattr(client, "_update_scheduler_info", periodic_refresh)
    assert client.scheduler_info(n_workers=-1)["workers"] == {}  # the race, made certain
    now = worker_addresses(client)
    assert sorted(now) == ["0", "1"]
    assert map_workers(client, WORKERS) == [now["0"], now["1"]]
    assert wait_for_workers(client, WORKERS, timeout=5.0) == [now["0"], now["1"]]


def test_worker_killed_mid_run_gives_identical_output(client, forest, reference, tmp_path):
    ref, ref_values = reference
    out = tmp_path / "killed.zarr"
    pids = client.run(os.getpid)
    victim = worker_addresses(client)["1"]
    total = ref.groups * ref.chunks
    seen: dict[str, int] = {}
    finished = threading.Event()

    def killer() -> None:
        while not finished.is_set():
            if (out / "_hydroscale" / "done").is_dir():
                n = len(RunProgress(str(out)).done())
                if n >= total // 4:
                    seen["done_at_kill"] = n
                    os.kill(pids[victim], signal.SIGKILL)
                    return
            time.sleep(0.02)

    th = threading.Thread(target=killer, daemon=True)
    th.start()
    try:
        s = _route(client, forest, out)
    finally:
        finished.set()
        th.join()
    assert 0 < seen["done_at_kill"] < total  # the worker died in the middle of the run
    wait_for_workers(client, WORKERS, timeout=RESTART_TIMEOUT)
    assert worker_addresses(client)["1"] != victim  # its nanny started a new process
    got = open_output(str(out)).values
    assert np.array_equal(got, ref_values)  # bit for bit
    assert s.checksum == pytest.approx(ref.checksum, rel=1e-12)
    assert s.tasks == total and s.reused_tasks == 0
    assert zarr.open_group(str(out), mode="r").attrs["complete"] is True


def test_interrupted_run_resumes_and_reuses_finished_chunks(client, forest, reference,
                                                            tmp_path):
    ref, ref_values = reference
    out = tmp_path / "resumed.zarr"
    fail_at = T // 2 + 5  # tasks of chunks 15.. fail
    with pytest.raises(RuntimeError, match="forcing unavailable from step 185"):
        _route(client, forest, out, _forcing(fail_at=fail_at))
    # never silently partial: the store says incomplete and the reader refuses it
    assert zarr.open_group(str(out), mode="r").attrs["complete"] is False
    with pytest.raises(IOFormatError, match=r"resumed.zarr \[complete\].*incomplete.*"
                                            r"allow_incomplete=True"):
        open_output(str(out))
    part = open_output(str(out), allow_incomplete=True).values
    assert np.isnan(part[:, -CHUNK:]).all()  # the last chunk was never written
    done = RunProgress(str(out)).done()
    assert done and max(k for _, k in done) < fail_at // CHUNK
    # the same call again resumes: finished time chunks are not routed again
    s = _route(client, forest, out)
    assert s.reused_tasks > 0
    assert s.reused_tasks + s.tasks == ref.groups * ref.chunks
    # (a task of the failed pass still running when it failed may have finished since)
    assert len(done) <= s.reused_tasks + s.recomputed_tasks <= len(RunProgress(str(out)).done())
    prefix = [next(k for k in range(ref.chunks + 1) if (g, k) not in done)
              for g in range(ref.groups)]
    assert s.reused_tasks >= ref.groups * min(prefix) > 0  # chunks every group finished
    assert np.array_equal(open_output(str(out)).values, ref_values)
    assert zarr.open_group(str(out), mode="r").attrs["complete"] is True
    assert not (out / "_hydroscale" / "state").exists()  # saved states dropped once complete
    # a complete store is left untouched without overwrite
    with pytest.raises(FileExistsError, match="exists and is complete; it is left untouched"):
        _route(client, forest, out)


def test_resume_refuses_another_run_definition(client, forest, tmp_path):
    net, params, part = forest
    out = tmp_path / "other.zarr"
    with pytest.raises(RuntimeError, match="forcing unavailable"):
        _route(client, forest, out, _forcing(fail_at=40))
    before = sorted(p.name for p in out.rglob("*"))
    with pytest.raises(ValueError, match=r"another definition \(params: store '[0-9a-f]+', "
                                         r"now '[0-9a-f]+'.*left untouched.*overwrite=True"):
        route_distributed(client, net, part, _forcing(), str(out), params * 1.01, time_chunk=CHUNK,
                          irf="muskingum", substeps=SUBSTEPS, allow_unstable=True)
    with pytest.raises(ValueError, match=r"time_chunk: store 12, now 24"):
        route_distributed(client, net, part, _forcing(), str(out), params, time_chunk=24,
                          irf="muskingum", substeps=SUBSTEPS, allow_unstable=True)
    assert sorted(p.name for p in out.rglob("*")) == before
    with pytest.raises(FileExistsError, match="resume=True to continue"):
        _route(client, forest, out, resume=False)
    s = _route(client, forest, out, overwrite=True)  # explicit: start again
    assert s.reused_tasks == 0 and s.tasks == s.groups * s.chunks


def test_router_survives_a_restarted_worker_between_passes(client, forest):
    """The workers' routers are a cache: a pass after a worker restart rebuilds them."""
    net, params, part = forest
    forcing = SyntheticForcing(48, seed=1)
    with DistributedRouter(client, net, part, params, irf="muskingum", substeps=SUBSTEPS,
                           allow_unstable=True, dtype=torch.float64) as dr:
        a = dr.route(forcing, None, 16)
        old = list(dr.addrs)
        client.restart_workers([old[0]], timeout=RESTART_TIMEOUT)
        wait_for_workers(client, WORKERS, timeout=RESTART_TIMEOUT)
        b = dr.route(forcing, None, 16)
        assert replaced(old, dr.addrs).keys() == {0}
    assert b.checksum == a.checksum


def test_router_scatters_its_data_again_when_every_copy_was_lost(client, forest):
    """Restarting every worker loses every copy of the scattered run data (the scheduler's
    memory manager may also thin a broadcast down to one copy, which one restart loses):
    the next pass scatters it again instead of failing on lost dependencies."""
    net, params, part = forest
    forcing = SyntheticForcing(48, seed=1)
    with DistributedRouter(client, net, part, params, irf="muskingum", substeps=SUBSTEPS,
                           allow_unstable=True, dtype=torch.float64) as dr:
        a = dr.route(forcing, None, 16)
        old_key = dr._data.key
        client.restart_workers(list(dr.addrs), timeout=RESTART_TIMEOUT)
        wait_for_workers(client, WORKERS, timeout=RESTART_TIMEOUT)
        assert dr._data.status != "finished"  # every copy went with the workers
        b = dr.route(forcing, None, 16)
        assert dr._data.key != old_key
    assert b.checksum == a.checksum


# ---------------------------------------------------------------- the route workflow
def _workflow(out_dir, forcing_path):
    from hydroscale.workflows import workflow_from_mapping

    return workflow_from_mapping({
        "kind": "route", "name": "resume",
        "network": {"source": "synthetic", "reaches": 150, "seed": 3},
        "forcing": {"source": "zarr", "path": str(forcing_path)},
        "routing": {"irf": "linear_storage", "params": {"tau": {"uniform": [0.5, 1.5]}},
                    "substeps": 2, "time_chunk": 5, "engine": "torch", "dtype": "float64"},
        "partition": {"max_reaches": 32},
        "output": {"dir": str(out_dir), "hydrographs": {"outlets": 2, "gauges": False}},
    })


@pytest.fixture()
def damaged_forcing(tmp_path):
    """A forcing store (150 reaches x 30 daily steps) whose steps 22-23 of one reach are
    NaN (a damaged block), and the values that repair it."""
    import xarray as xr

    from hydroscale.io import ingest
    from hydroscale.network import continental_forest

    net = continental_forest(150, seed=3)
    r = np.random.default_rng(0).uniform(0, 2, (150, 30)).astype(np.float32)
    t = np.datetime64("2001-01-01") + np.arange(30).astype("timedelta64[D]")
    good = tmp_path / "good.zarr"
    ingest(xr.DataArray(r, {"reach": net.ids, "time": t}, ("reach", "time")), good,
           network=net)
    bad = tmp_path / "forcing.zarr"
    r2 = r.copy()
    r2[17, 22:24] = np.nan
    # (chunks of 10 steps: the repair leaves the first chunk, part of the run's fingerprint)
    ingest(xr.DataArray(r2, {"reach": net.ids, "time": t}, ("reach", "time")), bad,
           network=net, chunks=(64, 10))
    return good, bad, int(net.ids[17]), r


@pytest.mark.parametrize("on_cluster", [False, True])
def test_route_workflow_resumes_after_a_damaged_block(client, damaged_forcing, tmp_path,
                                                      on_cluster, one_torch_thread):
    from hydroscale.workflows import run_route

    good, bad, rid, r = damaged_forcing
    kw = {"client": client} if on_cluster else {}
    ref = run_route(_workflow(tmp_path / "ref", good), **kw)
    cfg = _workflow(tmp_path / "run", bad)
    with pytest.raises((IOFormatError, RuntimeError),
                       match=rf"forcing.zarr \[runoff\].*NaN.*reach id {rid} at step 22"):
        run_route(cfg, **kw)
    store = tmp_path / "run" / "discharge.zarr"
    with pytest.raises(IOFormatError, match="incomplete"):
        open_output(str(store))
    # repair the block, run the same command again: it resumes
    root = zarr.open_group(str(bad), mode="r+")
    root["runoff"][:, 20:25] = r[:, 20:25]
    res = run_route(cfg, **kw)
    if on_cluster:
        assert res.summary["reused_tasks"] > 0
    else:
        assert res.summary["reused_chunks"] == 4  # chunks 0-3 were written; 4 failed
    assert np.array_equal(open_output(str(store)).values, open_output(str(ref.store)).values)
    with pytest.raises(FileExistsError, match="--overwrite"):
        run_route(cfg, **kw)
