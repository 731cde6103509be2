"""One writer per output (DESIGN §3), as a user meets it through ``hydroscale route`` and
``calibrate``: a second run on a store (or an output folder) another live run writes is
refused at once, with or without overwrite, and moves nothing; a run whose store is taken
from it fails and never marks it complete; an output inside an input is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import zarr
from workflow_cases import small_calibrate, small_route

from hydroscale.io import StoreChangedError, StoreLockedError, lock_path, open_output
from hydroscale.workflows import run_calibrate, run_route, workflow_from_mapping


def _files(path):
    return {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()}


@pytest.fixture
def holder(tmp_path):
    """Start a process that holds the lock of a path (another run writing it)."""
    procs = []

    def start(target, lock_file=None):
        code = textwrap.dedent(f"""
            import time
            from hydroscale.io import StoreLock
            lock = StoreLock.acquire({str(target)!r}, path={lock_file!r})
            print("locked", flush=True)
            time.sleep(120)
        """)
        p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        procs.append(p)
        assert p.stdout.readline().strip() == "locked"
        return p

    yield start
    for p in procs:
        p.kill()
        p.wait()


@pytest.mark.parametrize("overwrite", [True, False])
def test_a_second_route_on_a_live_store_is_refused_and_moves_nothing(tmp_path, holder,
                                                                     overwrite):
    """The issue's case: run A writes out/discharge.zarr; run B on the same store (another
    output folder, so only the store lock can stop it), with or without --overwrite."""
    a = run_route(workflow_from_mapping(small_route(tmp_path / "a")))
    store = a.store
    before = _files(store)
    proc = holder(store)  # A is still writing
    wf = small_route(tmp_path / "b", output={"store": str(store), "overwrite": overwrite})
    with pytest.raises(StoreLockedError, match=rf"discharge.zarr' is being written by another "
                                               rf"run \(host '.*', pid {proc.pid}"):
        run_route(workflow_from_mapping(wf))
    assert _files(store) == before
    assert sorted(p.name for p in store.parent.iterdir() if "discharge" in p.name) == [
        "discharge.zarr", "discharge.zarr.lock"]  # nothing moved aside


def test_a_second_run_in_a_live_output_folder_is_refused(tmp_path, holder):
    out = tmp_path / "out"
    out.mkdir()
    proc = holder(out, str(out / ".hydroscale.lock"))
    with pytest.raises(StoreLockedError, match=rf"output folder .*out' is being written by "
                                               rf"another run .*pid {proc.pid}"):
        run_route(workflow_from_mapping(small_route(out)))
    with pytest.raises(StoreLockedError, match="output folder"):
        run_calibrate(workflow_from_mapping(small_calibrate(out)))
    assert sorted(p.name for p in out.iterdir()) == [".hydroscale.lock"]


def test_a_dead_runs_locks_are_taken_over(tmp_path, holder, caplog):
    a = run_route(workflow_from_mapping(small_route(tmp_path / "a")))
    proc = holder(a.store)
    proc.kill()
    proc.wait()  # died holding the lock
    res = run_route(workflow_from_mapping(small_route(tmp_path / "a")))
    assert "taking over the lock" in caplog.text and f"process {proc.pid} is gone" in caplog.text
    assert zarr.open_group(str(res.store), mode="r").attrs["complete"] is True
    assert not os.path.exists(lock_path(res.store))


def test_a_run_whose_store_is_taken_fails_and_marks_nothing_complete(tmp_path, monkeypatch):
    """Another run takes the store mid-run (e.g. after this one's heartbeat stalled past the
    lease): the next time chunk fails loudly; no summary, no 'complete'."""
    from hydroscale.io import OutputStore

    wf = small_route(tmp_path / "out")
    real = OutputStore.write
    calls = []

    def write_and_lose_the_lock(self, r0, t0, block, **kw):
        real(self, r0, t0, block, **kw)
        calls.append(t0)
        if len(calls) == 1:
            with open(lock_path(self.path), "w") as fh:
                json.dump({"host": "node-9", "pid": 4, "token": "theirs",
                           "heartbeat": 1e12}, fh)

    monkeypatch.setattr(OutputStore, "write", write_and_lose_the_lock)
    with pytest.raises(StoreChangedError, match=r"discharge.zarr' this run writes was changed "
                                                r"under it \(the lock was taken by host "
                                                r"'node-9'"):
        run_route(workflow_from_mapping(wf))
    assert calls == [0]  # stopped at the next chunk
    store = tmp_path / "out" / "discharge.zarr"
    assert zarr.open_group(str(store), mode="r").attrs["complete"] is False
    assert not (tmp_path / "out" / "summary.json").exists()


def test_an_output_store_inside_the_forcing_store_is_refused(tmp_path):
    """Before, the forcing store was moved aside and the error blamed a missing chunk."""
    first = run_route(workflow_from_mapping(small_route(tmp_path / "a")))
    from hydroscale.io import ingest

    q = open_output(first.store)
    forcing = tmp_path / "forcing.zarr"
    ingest(q, forcing)
    before = _files(forcing)
    for store in (forcing, forcing / "q.zarr"):
        wf = small_route(tmp_path / "b", forcing={"source": "zarr", "path": str(forcing),
                                                  "steps": None},
                         network={"source": "synthetic", "reaches": 150, "seed": 3},
                         output={"store": str(store)})
        with pytest.raises(ValueError, match=r"forcing.zarr.* the input .*forcing.zarr'"):
            run_route(workflow_from_mapping(wf))
    assert _files(forcing) == before
    assert np.isfinite(open_output(first.store).values).all()
