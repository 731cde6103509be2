"""A task that runs out of device memory reaches the user as a RunTooLargeError naming the
plan and the settings to change, not as torch's allocator error (issue 26)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hydroscale.distributed import WaveRuntime, worker_addresses
from hydroscale.distributed._runtime import _wait_logged
from hydroscale.routing import RunTooLargeError, is_out_of_memory

_MESSAGE = ("CUDA out of memory. Tried to allocate 300.00 MiB. GPU 0 has a total capacity of "
            "139.80 GiB")


def _oom():
    raise torch.OutOfMemoryError(_MESSAGE)


def test_out_of_memory_is_recognised():
    assert is_out_of_memory(torch.OutOfMemoryError(_MESSAGE))
    assert is_out_of_memory(RuntimeError(_MESSAGE))  # its text, as another class carries it
    assert not is_out_of_memory(RuntimeError("index out of range"))
    assert not is_out_of_memory(MemoryError("the run does not fit worker 0"))
    assert not is_out_of_memory(None)


def test_routing_task_out_of_memory_is_a_clear_error(client):
    fut = client.submit(lambda: _oom(), pure=False)
    with pytest.raises(RunTooLargeError, match=r"ran out of device memory .*CUDA out of "
                       r"memory.*memory_limit.*time chunk"):
        _wait_logged([fut], "route test")


def test_wave_task_out_of_memory_names_the_plan(client):
    # the runtime's wait loop alone, on one failing task (a full wave run that really
    # exhausts a device cannot run on a CPU)
    rt = object.__new__(WaveRuntime)
    rt.client, rt.poll, rt.progress, rt.label = client, 0.2, None, "distributed calibration"
    rt.addrs = list(worker_addresses(client).values())[:1]
    rt.n_workers = 1
    rt.plan = SimpleNamespace(group_wave=np.array([0]), n_waves=1, group_worker=np.array([0]))
    w = SimpleNamespace(peak=int(120.7e9), limit=int(149.4e9))
    rt.memory_plan = SimpleNamespace(strategy="recompute+no-remat", chosen="given", workers=[w])
    fut = client.submit(lambda: _oom(), pure=False)
    with pytest.raises(RunTooLargeError) as info:
        rt._wait([("forward", 0, fut)])
    msg = str(info.value)
    assert "distributed calibration: task" in msg and "ran out of device memory" in msg
    assert "recompute+no-remat, given) estimated 121 GB per worker against 149 GB" in msg
    assert "kernel_graph and rematerialise to 'auto'" in msg
