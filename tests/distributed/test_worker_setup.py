"""A worker's set-up: the routers of its batches built on several threads (as on a GPU
worker) equal the routers built one by one."""

from __future__ import annotations

import numpy as np
import torch

from hydroscale.distributed import _worker, plan_waves
from hydroscale.network import continental_forest
from hydroscale.partition import partition_network
from hydroscale.routing import RoutingOptions, StagedRouter


def _tensors(r: StagedRouter) -> list[torch.Tensor]:
    """The router's index tensors and those of its groups' layouts (in group order)."""
    out = [r._r_src, r._r_dst, r._r_w, r._u_src, r._u_dst, r._u_w]
    for key in sorted(r._groups):
        g = r._groups[key]
        out += [g.reaches] + [v for v in vars(g.layout_r).values() if torch.is_tensor(v)]
        for lay in g.layouts_u.values():
            lay = lay[0] if isinstance(lay, tuple) else lay
            out += [v for v in vars(lay).values() if torch.is_tensor(v)]
    return out


def test_threaded_routers_equal_sequential_ones(monkeypatch):
    net = continental_forest(3000, seed=4)
    part = partition_network(net, max_reaches=40, min_reaches=4, n_workers=1)
    plan = plan_waves(net, part, max_group_reaches=300)
    rng = np.random.default_rng(0)
    params = np.stack([rng.uniform(0.05, 0.15, net.n_reaches),
                       rng.uniform(0.1, 0.3, net.n_reaches)], 1)
    options = RoutingOptions.build(None, irf="muskingum", substeps=3, allow_unstable=True)
    data = _worker.RunData("t", net.ids, net.downstream, plan.group_of, plan.group_worker,
                           params, options, 300)
    run = _worker._WorkerRun("t", torch.device("cpu"), net, plan.groups, data)
    run.batches = _worker._home_batches(data, plan.groups)
    keys = list(run.batches)
    assert len(keys) >= 4  # several routers, so that the threads overlap
    threads = []
    monkeypatch.setattr(_worker, "_setup_threads", lambda d, n: threads.append(n) or 4)
    built = _worker._prepared_routers(run, keys, 4)
    assert threads == [len(keys)]
    assert [run.routers[k] for k in keys] == built
    for key, r in zip(keys, built):
        ref = StagedRouter(plan.groups, options=options, only=run.batches[key],
                           window=4).prepare()
        assert sorted(r._groups) == sorted(ref._groups) and r._groups
        got, want = _tensors(r), _tensors(ref)
        assert len(got) == len(want) > 6
        for a, b in zip(got, want):
            assert torch.equal(a, b)
    # built once: a second call returns the same routers without building
    assert _worker._prepared_routers(run, keys, 4) == built


def test_batch_groups_cuts_at_the_reach_limit():
    """Groups in order, a new batch where the next would pass the limit; a group larger than
    the limit is a batch of its own (hand-made sizes)."""
    from hydroscale.distributed._plan import batch_groups

    sizes = np.array([5, 3, 4, 10, 1, 1, 2])
    assert batch_groups([0, 1, 2, 3, 4, 5, 6], sizes, 8) == [[0, 1], [2], [3], [4, 5, 6]]
    assert batch_groups([6, 4, 0], sizes, 8) == [[6, 4, 0]]
    assert batch_groups([3], sizes, 1) == [[3]]
    assert batch_groups([], sizes, 8) == []
