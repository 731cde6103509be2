"""Partition: cover, cut edges, bounds, waves, exact routing across clusters, balance, I/O."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hydroscale.irf import average_substeps, get_irf
from hydroscale.network import NetworkError, RiverNetwork, continental_forest
from hydroscale.partition import (
    Partition,
    PartitionError,
    partition_network,
    travel_time_bound,
)
from hydroscale.partition._travel import _numeric_mean
from hydroscale.routing import route_oracle


@pytest.fixture(scope="module")
def forest() -> RiverNetwork:
    # shuffled storage order so nothing relies on preorder indices
    return continental_forest(3000, seed=3, cap=1500, shuffle=True)


@pytest.fixture(scope="module")
def travel(forest: RiverNetwork) -> np.ndarray:
    return np.random.default_rng(1).uniform(0.2, 1.0, forest.n_reaches)


@pytest.fixture(scope="module")
def part(forest: RiverNetwork, travel: np.ndarray) -> Partition:
    return partition_network(
        forest, max_reaches=40, travel_time=travel, max_travel_time=6.0, n_workers=3
    )


def _longest_paths(net: RiverNetwork, cluster_of: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Brute force: for each reach, walk down inside its cluster summing travel times."""
    best = np.zeros(cluster_of.max() + 1)
    down = net.downstream.tolist()
    for i in range(net.n_reaches):
        total, j = 0.0, i
        while True:
            total += t[j]
            d = down[j]
            if d < 0 or cluster_of[d] != cluster_of[i]:
                break
            j = d
        best[cluster_of[i]] = max(best[cluster_of[i]], total)
    return best


def _longest_paths_by_level(net: RiverNetwork, cluster_of: np.ndarray, t: np.ndarray):
    """Same as :func:`_longest_paths`, from the outlets upwards one level at a time."""
    to_exit = np.zeros(net.n_reaches)
    order, ptr, down = net.topo_order, net.level_ptr, net.downstream
    for lv in range(net.n_levels - 1, -1, -1):
        j = order[ptr[lv] : ptr[lv + 1]]
        d = np.maximum(down[j], 0)
        inside = (down[j] >= 0) & (cluster_of[d] == cluster_of[j])
        to_exit[j] = t[j] + np.where(inside, to_exit[d], 0.0)
    best = np.zeros(cluster_of.max() + 1)
    np.maximum.at(best, cluster_of, to_exit)
    return best


def test_every_reach_in_exactly_one_cluster(part: Partition, forest: RiverNetwork) -> None:
    assert part.cluster_of.shape == (forest.n_reaches,)
    assert part.cluster_of.min() == 0 and part.cluster_of.max() == part.n_clusters - 1
    np.testing.assert_array_equal(np.bincount(part.cluster_of), part.size)
    indptr, reaches = part.cluster_csr
    np.testing.assert_array_equal(np.sort(reaches), np.arange(forest.n_reaches))
    for c in (0, part.n_clusters // 2, part.n_clusters - 1):
        np.testing.assert_array_equal(part.reaches_of(c), np.flatnonzero(part.cluster_of == c))


def test_transfer_edges_are_exactly_the_cut_edges(part: Partition, forest: RiverNetwork) -> None:
    down = forest.downstream
    has = np.flatnonzero(down >= 0)
    cut = has[part.cluster_of[has] != part.cluster_of[down[has]]]
    np.testing.assert_array_equal(np.sort(part.src_reach), cut)
    np.testing.assert_array_equal(part.dst_reach, down[part.src_reach])
    np.testing.assert_array_equal(part.src_cluster, part.cluster_of[part.src_reach])
    np.testing.assert_array_equal(part.dst_cluster, part.cluster_of[part.dst_reach])
    assert part.n_transfer_edges == cut.size > 0
    for c in range(part.n_clusters):
        into, out = part.edges_into(c), part.edges_out_of(c)
        np.testing.assert_array_equal(into, np.flatnonzero(part.dst_cluster == c))
        np.testing.assert_array_equal(np.sort(out), np.flatnonzero(part.src_cluster == c))


def test_bounds_hold_and_travel_times_are_exact(
    part: Partition, forest: RiverNetwork, travel: np.ndarray
) -> None:
    assert part.size.max() <= 40
    brute = _longest_paths(forest, part.cluster_of, travel)
    np.testing.assert_allclose(part.travel_time, brute, rtol=1e-12)
    assert brute.max() <= 6.0
    # the travel-time bound, not only the size bound, cut something
    assert (part.size < 40).sum() > 0 and brute.max() > 5.0


def test_small_basins_are_merged_into_forest_clusters(
    part: Partition, forest: RiverNetwork
) -> None:
    outlets_per_cluster = np.bincount(part.cluster_of[forest.outlets], minlength=part.n_clusters)
    assert outlets_per_cluster.max() > 1  # some cluster holds several whole basins
    small = np.bincount(forest.basin)[forest.outlets] < 10
    assert small.sum() > 20
    # small basins do not get a cluster each
    assert np.unique(part.cluster_of[forest.outlets[small]]).size < small.sum() / 3


def test_cluster_ids_are_topological_and_waves_respect_dependencies(part: Partition) -> None:
    assert np.all(part.src_cluster < part.dst_cluster)
    expected = np.zeros(part.n_clusters, dtype=np.int64)
    for c in range(part.n_clusters):  # ids are topological, so one pass suffices
        ups = part.src_cluster[part.dst_cluster == c]
        expected[c] = 0 if ups.size == 0 else 1 + expected[ups].max()
    np.testing.assert_array_equal(part.wave, expected)
    assert np.all(np.diff(part.wave) >= 0)
    for w in range(part.n_waves):
        a, b = part.wave_ptr[w], part.wave_ptr[w + 1]
        assert np.all(part.wave[a:b] == w)
    assert part.worker.min() >= 0 and part.worker.max() < 3


def test_critical_path_matches_brute_force(part: Partition) -> None:
    cp = part.work.astype(float).copy()
    for c in range(part.n_clusters):
        ups = part.src_cluster[part.dst_cluster == c]
        if ups.size:
            cp[c] = part.work[c] + cp[ups].max()
    assert part.critical_path_work() == pytest.approx(cp.max())


@pytest.mark.parametrize("substeps", [3])
def test_routing_clusters_one_by_one_equals_routing_whole(substeps: int) -> None:
    net = continental_forest(401, seed=5, cap=200)
    rng = np.random.default_rng(2)
    n, t_steps = net.n_reaches, 12
    params = np.stack([rng.uniform(0.4, 1.5, n), rng.uniform(0.0, 0.1, n)], axis=1)
    runoff = torch.as_tensor(rng.uniform(0.0, 1.0, (2, n, t_steps)))
    tt = travel_time_bound("muskingum", params)
    part = partition_network(net, max_reaches=25, travel_time=tt, max_travel_time=8.0)
    assert part.n_clusters > 10 and part.n_transfer_edges > 5
    whole = route_oracle(net, runoff, "muskingum", params, substeps=substeps)
    q_sub = torch.zeros(2, n, t_steps * substeps, dtype=torch.float64)
    for c in range(part.n_clusters):
        reaches = part.reaches_of(c)
        local = np.full(n, -1)
        local[reaches] = np.arange(reaches.size)
        bnd = torch.zeros(2, reaches.size, t_steps * substeps, dtype=torch.float64)
        for e in part.edges_into(c):
            bnd[:, local[part.dst_reach[e]]] += q_sub[:, part.src_reach[e]]
        q_sub[:, reaches] = route_oracle(
            net.subnetwork(reaches),
            runoff[:, reaches],
            "muskingum",
            params[reaches],
            substeps=substeps,
            boundary_inflow=bnd,
            return_substeps=True,
        )
    pieces = average_substeps(q_sub, substeps)
    torch.testing.assert_close(pieces, whole, rtol=0, atol=1e-10)
    assert float(whole.abs().max()) > 1.0


def test_load_balance_on_a_million_reaches() -> None:
    net = continental_forest(1_000_000, seed=0)
    tt = np.random.default_rng(0).uniform(1.0, 3.0, net.n_reaches) / 24.0  # k ~ U(1, 3) h
    part = partition_network(
        net, max_reaches=1024, travel_time=tt, max_travel_time=16.0, n_workers=4
    )
    load = part.wave_load()
    total = load.sum(axis=1)
    # a wave is balanceable when it holds at least 4 full clusters' worth of work per worker
    enough = total >= 4 * 4 * 1024
    assert enough.sum() >= 5
    mean = total[enough] / 4
    assert np.all(load[enough].max(axis=1) <= 1.10 * mean)
    assert np.all(load[enough].min(axis=1) >= 0.90 * mean)
    summary = part.summary()
    assert summary["balanceable_waves"] == enough.sum()
    assert summary["max_imbalance_balanceable"] == pytest.approx(
        (load[enough].max(axis=1) / mean).max() - 1
    )
    assert part.size.max() <= 1024 and part.travel_time.max() <= 16.0
    # chains stay together: most transfer edges do not cross workers
    assert part.cross_worker_edges() < 0.3 * part.n_transfer_edges


def test_cycle_is_a_network_error() -> None:
    with pytest.raises(NetworkError, match="cycle"):
        RiverNetwork.from_arrays([1, 2, 3, 4], [2, 3, 1, 0])


def test_reach_slower_than_the_window_is_named() -> None:
    net = RiverNetwork.from_arrays([10, 20, 30], [20, 30, 0])
    with pytest.raises(PartitionError) as err:
        partition_network(net, travel_time=[0.5, 7.25, 0.5], max_travel_time=4.0)
    msg = str(err.value)
    assert "reach 20: 7.25" in msg and "max_travel_time=4" in msg
    assert "raise max_travel_time" in msg


def test_malformed_bounds_are_errors(forest: RiverNetwork) -> None:
    with pytest.raises(PartitionError, match="max_reaches"):
        partition_network(forest, max_reaches=0)
    with pytest.raises(PartitionError, match="go together"):
        partition_network(forest, max_travel_time=3.0)
    with pytest.raises(PartitionError, match="one value per reach"):
        partition_network(forest, travel_time=[1.0, 2.0], max_travel_time=3.0)


def test_chain_cut_by_travel_time_by_hand() -> None:
    # a chain 1 -> 2 -> ... -> 6 with unit travel times and a bound of 2.5: pairs of reaches
    net = RiverNetwork.from_arrays([1, 2, 3, 4, 5, 6], [2, 3, 4, 5, 6, 0])
    part = partition_network(net, travel_time=np.ones(6), max_travel_time=2.5)
    np.testing.assert_array_equal(part.cluster_of, [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(part.wave, [0, 1, 2])
    np.testing.assert_array_equal(part.src_reach, [1, 3])
    np.testing.assert_array_equal(part.travel_time, [2.0, 2.0, 2.0])


def test_size_cut_keeps_lightest_subtrees_by_hand() -> None:
    # reach 1 (outlet) has upstream subtrees of 1 (reach 2) and 3 reaches (3 <- 4, 5)
    net = RiverNetwork.from_arrays([1, 2, 3, 4, 5], [0, 1, 1, 3, 3])
    part = partition_network(net, max_reaches=3, min_reaches=1)
    # keeping {2} with the outlet (size 2) and cutting the heavier {3, 4, 5} is the only way
    np.testing.assert_array_equal(part.cluster_of, [1, 1, 0, 0, 0])
    np.testing.assert_array_equal(part.src_reach, [2])
    np.testing.assert_array_equal(part.dst_reach, [0])


def test_save_load_round_trip_and_mismatch(part: Partition, forest: RiverNetwork, tmp_path):
    path = part.save(tmp_path / "part")
    back = Partition.load(path, forest)
    for name in ("cluster_of", "src_reach", "dst_reach", "wave", "worker", "size", "work"):
        np.testing.assert_array_equal(getattr(back, name), getattr(part, name))
    assert back.n_workers == part.n_workers and back.options == part.options
    assert back.report() == part.report()
    down = forest.downstream.copy()
    down[np.flatnonzero(down >= 0)[0]] = -1  # same ids, one edge removed
    with pytest.raises(PartitionError, match="topology checksum"):
        Partition.load(path, RiverNetwork(forest.ids, down))
    with pytest.raises(PartitionError, match="ids checksum"):
        Partition.load(path, forest.reorder(np.arange(forest.n_reaches)[::-1]))
    with pytest.raises(PartitionError, match="built for 3000 reaches"):
        Partition.load(path, continental_forest(100, seed=4))
    part.check_network(forest)
    with pytest.raises(PartitionError, match="built for 3000 reaches"):
        part.check_network(continental_forest(10, seed=0))
    with pytest.raises(PartitionError, match="no saved partition"):
        Partition.load(tmp_path / "nothing", forest)


def test_report_and_png(part: Partition, tmp_path) -> None:
    text = part.report()
    assert f"into {part.n_clusters} clusters, {part.n_waves} waves, 3 worker(s)" in text
    assert f"cross-worker {part.cross_worker_edges()}" in text
    assert len(text.splitlines()) == 8 + min(part.n_waves, 41)
    png = part.plot(tmp_path / "part.png")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_edge_cases_single_reach_and_more_workers_than_clusters() -> None:
    net = RiverNetwork.from_arrays([7], [0])
    part = partition_network(net, n_workers=4)
    assert part.n_clusters == 1 and part.n_transfer_edges == 0 and part.wave.tolist() == [0]
    net = RiverNetwork.from_arrays([1, 2, 3], [0, 1, 2])
    part = partition_network(net, max_reaches=1, n_workers=8)
    np.testing.assert_array_equal(part.cluster_of, [2, 1, 0])
    np.testing.assert_array_equal(part.wave, [0, 1, 2])


def test_travel_time_bound_closed_forms_match_kernel_centroids() -> None:
    params = {
        "muskingum": np.array([[0.3, 0.2], [2.0, 0.3]]),
        "linear_storage": np.array([[0.5], [2.0]]),
        "nash_cascade": np.array([[0.5, 3.0], [0.2, 1.5]]),
        "pure_lag": np.array([[1.3], [0.25]]),
        "hayami": np.array([[2000.0, 1.0e5, 1000.0], [500.0, 1.0e4, 2000.0]]),
    }
    for name, p in params.items():
        closed = travel_time_bound(name, p)
        numeric = _numeric_mean(get_irf(name), p, 4, 4096)
        np.testing.assert_allclose(closed, numeric, rtol=1e-6, atol=1e-9, err_msg=name)
    np.testing.assert_allclose(travel_time_bound("muskingum", p := params["muskingum"]), p[:, 0])
    bound = travel_time_bound("muskingum", n_reaches=3, factor=1.5, margin=0.1)
    np.testing.assert_allclose(bound, 1.5 * 5.0 + 0.1)  # k upper bound 5 steps


def _components(down: np.ndarray, cut_mask: np.ndarray) -> np.ndarray:
    """Component sizes of the forest once the edges i -> down[i] with cut_mask[i] are removed."""
    n = down.size
    label = np.arange(n)
    for _ in range(n):  # pointer chasing, tiny trees only
        nxt = np.where((down >= 0) & ~cut_mask, label[np.maximum(down, 0)], label)
        if np.array_equal(nxt, label):
            break
        label = nxt
    return np.bincount(label)[np.unique(label)]


@pytest.mark.parametrize("seed", range(6))
def test_cut_uses_the_fewest_connected_clusters(seed: int) -> None:
    from hydroscale.partition._cut import cut_forest

    rng = np.random.default_rng(seed)
    net = continental_forest(11, seed=seed, cap=11)
    max_reaches = int(rng.integers(2, 6))
    cut = cut_forest(net, max_reaches)
    edges = np.flatnonzero(net.downstream >= 0)
    best = net.n_reaches
    for bits in range(1 << edges.size):  # every set of cut edges
        mask = np.zeros(net.n_reaches, dtype=bool)
        mask[edges[[(bits >> b) & 1 == 1 for b in range(edges.size)]]] = True
        sizes = _components(net.downstream, mask)
        if sizes.max() <= max_reaches:
            best = min(best, sizes.size)
    assert cut.size.size == best
    assert cut.size.max() <= max_reaches


@pytest.mark.parametrize("seed", range(5))
def test_invariants_on_random_forests(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    net = continental_forest(int(rng.integers(200, 800)), seed=seed, cap=300, shuffle=True)
    t = rng.uniform(0.0, 1.0, net.n_reaches)
    max_reaches = int(rng.integers(5, 60))
    max_tt = float(rng.uniform(1.0, 6.0))
    workers = int(rng.integers(1, 5))
    part = partition_network(
        net, max_reaches=max_reaches, travel_time=t, max_travel_time=max_tt, n_workers=workers
    )
    np.testing.assert_array_equal(np.bincount(part.cluster_of), part.size)
    assert part.size.max() <= max_reaches
    brute = _longest_paths(net, part.cluster_of, t)
    np.testing.assert_allclose(part.travel_time, brute, rtol=1e-12)
    assert brute.max() <= max_tt
    has = np.flatnonzero(net.downstream >= 0)
    cut = has[part.cluster_of[has] != part.cluster_of[net.downstream[has]]]
    np.testing.assert_array_equal(np.sort(part.src_reach), cut)
    assert np.all(part.src_cluster < part.dst_cluster)
    assert np.all(part.wave[part.dst_cluster] > part.wave[part.src_cluster])
    assert part.worker.max() < workers


def test_lower_colorado_real_network() -> None:
    from hydroscale.io.datasets import load_lower_colorado

    net = load_lower_colorado().network
    t = net.attrs["musk"] / 3600.0  # NWM MusK (s) in hourly routing steps
    part = partition_network(net, max_reaches=256, travel_time=t, max_travel_time=24.0)
    assert part.size.max() <= 256
    np.testing.assert_allclose(part.travel_time, _longest_paths_by_level(net, part.cluster_of, t))
    assert part.travel_time.max() <= 24.0
    # the slowest river path must be cut into pieces of <= 24 steps, one wave each at least
    slowest = _longest_paths_by_level(net, np.zeros(net.n_reaches, dtype=np.int64), t).max()
    assert slowest > 100.0
    assert part.n_waves >= int(np.ceil(slowest / 24.0))
