"""The run planner: hand-computed estimates, the residency and time chunk it picks, its refusal,
and runs under a small memory limit (kernels built per batch within a budget) equal to runs
with every kernel resident, on a 2-worker CPU cluster."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hydroscale.distributed import DistributedRouter, route_distributed
from hydroscale.distributed._worker import budget_task
from hydroscale.io import SyntheticForcing
from hydroscale.routing import (
    RunTooLargeError,
    plan_run,
)
from hydroscale.routing._run_plan import SLACK

SUBSTEPS = 3
T = 40


def _one_worker(rows=(100, 50), reaches=(10, 5), groups=((10, 2, 0), (5, 1, 2))):
    return [{"kernel_rows": list(rows), "reaches": list(reaches),
             "groups": [list(g) for g in groups]}]


def test_estimate_by_hand():
    """Every term of a worker's estimate, computed by hand (K = 4, f = 3, float32)."""
    p = plan_run(_one_worker(), window=4, substeps=3, n_steps=20, time_chunk=10)
    w = p.workers[0]
    assert p.residency == "resident" and p.time_chunk == 10  # no limit: everything fits
    assert w.kernels == (100 + 50) * 4 * 4
    assert w.largest_batch == 100 * 4 * 4
    # aggregation: rows K (2 x 4 + 4) bytes + reaches K f 8 bytes, the larger batch
    assert w.aggregation == 100 * 4 * 12 + 10 * 4 * 3 * 8
    # task: the largest group's rows (4 per reach, 3 f per exit / inlet channel) x T_c x 4 B,
    # plus its taps packed for the block kernels (at most the largest batch's kernels)
    assert w.task == max(4 * 10 + 9 * 2, 4 * 5 + 9 * 3) * 10 * 4 + 100 * 4 * 4
    # state: chunks x (reaches + f inlets) (K - 1) 4 B, plus twice the exit buffers of a chunk
    assert w.state == 2 * (15 + 3 * 2) * 3 * 4 + 2 * 3 * 3 * 10 * 4
    assert w.routers == 0  # not reported: unknown
    assert w.peak == max(w.kernels - w.largest_batch + w.aggregation,
                         w.kernels + w.task) + w.state


def test_picks_per_batch_then_a_shorter_chunk_then_refuses():
    base = plan_run(_one_worker(), window=4, substeps=3, n_steps=20, time_chunk=10).workers[0]
    # room for one batch at a time but not both: per-batch, same chunk
    # one batch's kernels kept, plus a task or another batch's aggregation temporaries
    per_batch_peak = base.largest_batch + max(base.task, base.aggregation - base.largest_batch
                                              ) + base.state
    limit = int((per_batch_peak + 1) / SLACK) + 1
    assert base.peak > limit * SLACK
    p = plan_run(_one_worker(), window=4, substeps=3, n_steps=20, time_chunk=10,
                 limits=[(limit, "test")])
    assert p.residency == "per-batch" and p.time_chunk == 10
    assert p.budget(0) >= base.largest_batch
    # a long chunk that does not fit is halved until it does
    q = plan_run(_one_worker(), window=4, substeps=3, n_steps=4000, time_chunk=4000,
                 limits=[(int(2e5), "test")])
    assert q.time_chunk < 4000 and q.requested_time_chunk == 4000
    assert q.workers[0].peak <= 2e5 * SLACK
    # nothing fits: the figures and the settings to change
    with pytest.raises(RunTooLargeError, match=r"does not fit worker 0.*largest batch's "
                       r"kernels 1\.6e-06 GB.*\(test\).*batch_reaches.*memory_limit"):
        plan_run(_one_worker(), window=4, substeps=3, n_steps=20, time_chunk=10,
                 limits=[(1000, "test")])


def _routed(client, net, part, params, **kw):
    with DistributedRouter(client, net, part, params, irf="muskingum", substeps=SUBSTEPS,
                           max_steps=T,
                           time_chunk=16, allow_unstable=True, batch_reaches=40,
                           **kw) as dr:
        s = dr.route(SyntheticForcing(T, seed=3), None, 16)
        return dr, s


def test_per_batch_kernels_route_like_resident_ones(client, forest):
    net, params, part = forest
    dr, resident = _routed(client, net, part, params)
    assert resident.run_plan["residency"] == "resident"
    w = resident.run_plan["workers"]
    assert len(w) == 2 and all(x["kernels"] > x["largest_batch"] > 0 for x in w)
    # a limit just short of the resident plan: room for one batch's kernels at a time
    limit = int((max(x["peak"] for x in w) - 1) / SLACK)
    assert any(x["peak"] > limit * SLACK for x in w)  # the resident plan does not fit
    _, small = _routed(client, net, part, params, memory_limit=limit)
    assert small.run_plan["residency"] == "per-batch"
    assert small.run_plan["time_chunk"] == 16  # the same chunks: comparable to the bit
    assert all(x["peak"] <= limit * SLACK for x in small.run_plan["workers"])
    assert small.checksum == resident.checksum  # the same kernels: bit for bit
    assert small.max_truncated_mass == resident.max_truncated_mass


def test_kernels_dropped_and_built_again_route_the_same(client, forest):
    """A budget smaller than any batch: every task builds its batch's kernels again."""
    net, params, part = forest
    with DistributedRouter(client, net, part, params, irf="muskingum", substeps=SUBSTEPS,
                           max_steps=T,
                           time_chunk=16, allow_unstable=True, batch_reaches=40) as dr:
        forcing = SyntheticForcing(T, seed=3)
        kept = dr.route(forcing, None, 16)
        before = sum(p["kernel_builds"] for p in kept.per_worker)
        batches = sum(len(i["kernel_rows"]) for i in dr._setup_info)
        assert before == batches  # resident: built once at set-up
        client.run(budget_task, dr.run_id, 1)
        rebuilt = dr.route(forcing, None, 16)
    after = sum(p["kernel_builds"] for p in rebuilt.per_worker)
    assert after - before >= batches * 2  # every batch again in each of the 3 chunks (>= 2)
    assert rebuilt.checksum == kept.checksum


def test_a_run_that_cannot_fit_is_refused_before_routing(client, forest, tmp_path):
    net, params, part = forest
    out = tmp_path / "out.zarr"
    with pytest.raises(RunTooLargeError, match=r"does not fit worker \d.*\(memory_limit\): "
                       r"lower batch_reaches"):
        route_distributed(client, net, part, SyntheticForcing(T, seed=3), str(out), params,
                          time_chunk=16, irf="muskingum", substeps=SUBSTEPS, allow_unstable=True,
                          memory_limit="2kB", dtype=torch.float32)
    assert not out.exists()
    # the workers forgot the refused run
    assert all(not v for v in client.run(
        lambda dask_worker: getattr(dask_worker, "_hydroscale_runs", {})).values())


def test_plan_table_in_gb():
    p = plan_run(_one_worker(rows=(10**8, 10**8), reaches=(10**6, 10**6)), window=10,
                 substeps=24, n_steps=365, time_chunk=365, limits=[(int(20e9), "test")])
    text = p.table()
    assert p.residency == "per-batch"
    assert "kernels per-batch" in text and " 8.00 " in text and "20.00" in text
    assert np.isclose(p.workers[0].kernels, 2 * 10**8 * 10 * 4)


def test_a_run_shorter_than_its_time_chunk_is_not_lowered(client, forest, caplog):
    """A 40-step pass asked for in 365-step chunks is one chunk: nothing is 'lowered to fit'
    (no warning), and the plan says the chunk it routes."""
    import logging

    net, params, part = forest
    with caplog.at_level(logging.WARNING, logger="hydroscale.distributed"):
        s = route_distributed(client, net, part, SyntheticForcing(T, seed=3), None, params,
                              time_chunk=365, irf="muskingum", substeps=SUBSTEPS,
                              allow_unstable=True)
    assert "does not fit" not in caplog.text
    assert s.chunks == 1 and s.run_plan["time_chunk"] == T
