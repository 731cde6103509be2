"""One writer per output store (DESIGN §3): the lock file beside a store, taken over only
from a dead holder, and the output-store life of a run (prepare, check, complete)."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest

from hydroscale.io import (
    StoreChangedError,
    StoreLock,
    StoreLockedError,
    check_not_nested,
    create_output_store,
    lock_path,
    open_output,
    prepare_output,
    write_block,
)

T = pd.date_range("2021-01-01", periods=4, freq="h").values


def _write_lock(path, **info):
    base = {"host": socket.gethostname(), "pid": os.getpid(), "started": "2026-01-01T00:00:00",
            "heartbeat": time.time(), "token": "someone-else"}
    with open(path, "w") as fh:
        json.dump({**base, **info}, fh)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    store = tmp_path / "q.zarr"
    with StoreLock.acquire(store) as lock:
        assert os.path.exists(lock_path(store))
        info = json.loads(open(lock_path(store)).read())
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
        assert info["token"] == lock.token
        with pytest.raises(StoreLockedError, match=rf"q.zarr' is being written by another run "
                                                   rf"\(host '{socket.gethostname()}', pid "
                                                   rf"{os.getpid()}, started .*nothing was "
                                                   r"moved or written"):
            StoreLock.acquire(store)
    assert not os.path.exists(lock_path(store))  # released
    StoreLock.acquire(store).release()  # free again


def test_a_lock_held_by_another_live_process_is_refused(tmp_path):
    store = tmp_path / "q.zarr"
    code = textwrap.dedent(f"""
        import sys, time
        from hydroscale.io import StoreLock
        lock = StoreLock.acquire({str(store)!r})
        print("locked", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(StoreLockedError, match=rf"pid {proc.pid}"):
            StoreLock.acquire(store)
    finally:
        proc.kill()
        proc.wait()
    with StoreLock.acquire(store):  # its holder is dead now: taken over at once
        pass


def test_the_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path, caplog):
    store = tmp_path / "q.zarr"
    pid = _dead_pid()
    _write_lock(lock_path(store), pid=pid)
    with caplog.at_level(logging.WARNING, logger="hydroscale.io._store_lock"):
        lock = StoreLock.acquire(store)
    assert f"process {pid} is gone" in caplog.text and "taking over the lock" in caplog.text
    assert json.loads(open(lock_path(store)).read())["token"] == lock.token
    lock.release()


def test_another_hosts_lock_is_taken_over_only_after_the_lease(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("HYDROSCALE_LOCK_LEASE_S", "30")
    store = tmp_path / "q.zarr"
    _write_lock(lock_path(store), host="node-17", pid=12345, heartbeat=time.time() - 5)
    with pytest.raises(StoreLockedError, match=r"host 'node-17', pid 12345.*last heartbeat "
                                               r"5 s ago.*after 30 s without a heartbeat"):
        StoreLock.acquire(store)
    _write_lock(lock_path(store), host="node-17", pid=12345, heartbeat=time.time() - 31)
    with caplog.at_level(logging.WARNING, logger="hydroscale.io._store_lock"):
        StoreLock.acquire(store).release()
    assert "no heartbeat for 31 s (lease 30 s)" in caplog.text


def test_the_heartbeat_renews_the_lock(tmp_path, monkeypatch):
    monkeypatch.setenv("HYDROSCALE_LOCK_HEARTBEAT_S", "0.05")
    store = tmp_path / "q.zarr"
    with StoreLock.acquire(store) as lock:
        first = lock.info["heartbeat"]
        deadline = time.monotonic() + 30
        while json.loads(open(lock_path(store)).read())["heartbeat"] == first:
            assert time.monotonic() < deadline, "the heartbeat never renewed the lock"
            time.sleep(0.05)


def test_a_holder_whose_lock_was_taken_fails_its_check(tmp_path):
    store = tmp_path / "q.zarr"
    lock = StoreLock.acquire(store)
    lock.check()
    _write_lock(lock_path(store), host="node-3", pid=7)  # another run took it
    with pytest.raises(StoreChangedError, match=r"q.zarr' this run writes was changed under "
                                                r"it \(the lock was taken by host 'node-3'"):
        lock.check()
    lock.release()
    assert json.loads(open(lock_path(store)).read())["host"] == "node-3"  # not ours to remove


def test_nested_outputs_and_inputs_are_refused(tmp_path):
    forcing = tmp_path / "f.zarr"
    for out, rel in ((forcing, "is"), (forcing / "q.zarr", "lies inside"),
                     (tmp_path, "contains")):
        with pytest.raises(ValueError, match=rf"{rel} the input .*f.zarr"):
            check_not_nested(out, [None, forcing])
    check_not_nested(tmp_path / "q.zarr", [forcing])  # siblings are fine


# ------------------------------------------------------------ the output store of a run
def _prepare(store, **kw):
    def create():
        create_output_store(store, [1, 2, 3], T, overwrite=True, fingerprint="fp")

    return prepare_output(str(store), {}, create, **{"overwrite": True, "resume": True, **kw})


def test_prepare_locks_the_store_and_complete_releases_it(tmp_path):
    store = tmp_path / "q.zarr"
    prepared = _prepare(store)
    with pytest.raises(StoreLockedError):  # a second run, overwrite or not
        _prepare(store)
    with pytest.raises(StoreLockedError):
        _prepare(store, overwrite=False)
    write_block(store, 0, 0, np.ones((3, 4)))
    prepared.complete()
    assert not os.path.exists(lock_path(store))
    assert float(open_output(store).sum()) == 12.0


def test_a_store_replaced_under_a_run_is_never_marked_complete(tmp_path, monkeypatch):
    """The issue's case: run B moved run A's half-written store aside; A must not say done."""
    store = tmp_path / "q.zarr"
    a = _prepare(store)
    write_block(store, 0, 0, np.ones((3, 4)))
    # a rogue writer that ignores the lock replaces the store (a newer version of B, or a
    # user's rm -r + copy): A's store now names another writer
    import zarr

    zarr.open_group(str(store), mode="r+").attrs["writer"] = {"token": "x", "host": "h",
                                                              "pid": 1}
    with pytest.raises(StoreChangedError, match=r"q.zarr' was replaced under this run \(it "
                                                r"now names host 'h', pid 1"):
        a.complete()
    assert zarr.open_group(str(store), mode="r").attrs["complete"] is False
    assert not os.path.exists(lock_path(store))


def test_a_refused_overwrite_moves_nothing(tmp_path):
    store = tmp_path / "q.zarr"
    a = _prepare(store)
    write_block(store, 0, 0, np.full((3, 4), 5.0))
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(StoreLockedError):
        _prepare(store, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    a.complete()
    assert float(open_output(store).sum()) == 60.0


def test_an_output_inside_an_input_is_refused_before_anything_moves(tmp_path):
    forcing = tmp_path / "forcing.zarr"
    forcing.mkdir()
    (forcing / "data").write_text("input")
    with pytest.raises(ValueError, match=r"forcing.zarr' is the input"):
        _prepare(forcing, inputs=[str(forcing)])
    assert (forcing / "data").read_text() == "input"
    assert not os.path.exists(lock_path(forcing))
