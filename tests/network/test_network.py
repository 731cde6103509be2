from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from hydroscale.network import NetworkError, RiverNetwork, continental_forest, format_ids
from hydroscale.network.synthetic import basin_sizes, random_binary_tree


def test_levels_and_topology(small_tree: RiverNetwork) -> None:
    net = small_tree
    lv = dict(zip(net.ids.tolist(), net.levels.tolist()))
    assert lv == {1: 0, 2: 0, 4: 0, 9: 0, 3: 1, 5: 2, 6: 3}
    assert net.n_levels == 4
    up = dict(zip(net.ids.tolist(), net.upstream_count.tolist()))
    assert up == {1: 0, 2: 0, 3: 2, 4: 0, 5: 2, 6: 1, 9: 0}
    outlet_of = dict(zip(net.ids.tolist(), net.ids[net.basin].tolist()))
    assert outlet_of == {1: 6, 2: 6, 3: 6, 4: 6, 5: 6, 6: 6, 9: 9}
    assert sorted(net.ids[net.outlets].tolist()) == [6, 9]
    # topological order: every reach before its downstream reach
    pos = np.empty(net.n_reaches, dtype=int)
    pos[net.topo_order] = np.arange(net.n_reaches)
    has = net.downstream >= 0
    assert np.all(pos[has] < pos[net.downstream[has]])
    indptr, idx = net.upstream_csr
    j = int(net.index_of([5])[0])
    assert sorted(net.ids[idx[indptr[j] : indptr[j + 1]]].tolist()) == [3, 4]
    assert net.downstream_ids[net.index_of([3])[0]] == 5


def test_index_of_unknown_id_names_it(small_tree: RiverNetwork) -> None:
    with pytest.raises(KeyError, match="77"):
        small_tree.index_of([1, 77])


def test_reorder_and_subnetwork(small_tree: RiverNetwork) -> None:
    perm = np.array([6, 5, 4, 3, 2, 1, 0])
    r = small_tree.reorder(perm)
    assert r.ids.tolist() == small_tree.ids[perm].tolist()
    assert r.downstream_ids.tolist() == small_tree.downstream_ids[perm].tolist()
    assert r.attrs["length"].tolist() == small_tree.attrs["length"][perm].tolist()
    sub = small_tree.subnetwork(np.isin(small_tree.ids, [1, 2, 3]))
    assert sorted(sub.ids.tolist()) == [1, 2, 3]
    assert dict(zip(sub.ids.tolist(), sub.downstream_ids.tolist())) == {1: 3, 2: 3, 3: 0}


def test_networkx_round_trip(small_tree: RiverNetwork) -> None:
    g = small_tree.to_networkx()
    assert set(g.edges) == {(1, 3), (2, 3), (3, 5), (4, 5), (5, 6)}
    back = RiverNetwork.from_networkx(g, attrs=("length",))
    order = back.index_of(small_tree.ids)
    assert back.downstream_ids[order].tolist() == small_tree.downstream_ids.tolist()
    assert back.attrs["length"][order].tolist() == small_tree.attrs["length"].tolist()


def test_networkx_levels_agree_on_random_forest() -> None:
    net = continental_forest(3000, seed=3, shuffle=True)
    g = net.to_networkx()
    assert nx.is_directed_acyclic_graph(g)
    longest = {}
    for node in nx.topological_sort(g):
        preds = list(g.predecessors(node))
        longest[node] = 0 if not preds else 1 + max(longest[p] for p in preds)
    assert net.levels.tolist() == [longest[i] for i in net.ids.tolist()]


# ------------------------------------------------------------------ validation errors
def test_empty_network() -> None:
    with pytest.raises(NetworkError, match="empty"):
        RiverNetwork.from_arrays([], [])


def test_duplicate_ids_named() -> None:
    with pytest.raises(NetworkError, match=r"more than once: \[7\]"):
        RiverNetwork.from_arrays([7, 8, 7], [8, 0, 0])


def test_format_ids() -> None:
    assert format_ids([]) == "[]"
    assert format_ids(np.array([3, 7], dtype=np.int64)) == "[3, 7]"
    assert format_ids(np.arange(12).reshape(3, 4)) == ("[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ...] "
                                                       "(12 in all)")
    assert format_ids(range(100), k=3) == "[0, 1, 2, ...] (100 in all)"
    assert format_ids({5}) == "[5]"
    assert format_ids(np.array([0.5, np.nan])) == "[0.5, nan]"


def test_many_offending_ids_are_counted() -> None:
    ids = np.arange(1, 31)
    with pytest.raises(NetworkError, match=r"cycle through 30 reach\(es\) \[1, 2, 3, 4, 5, 6, 7, "
                                           r"8, 9, 10, \.\.\.\] \(30 in all\)"):
        RiverNetwork.from_arrays(ids, np.roll(ids, -1))


def test_unknown_downstream_named() -> None:
    with pytest.raises(NetworkError, match=r"reaches \[2\] -> downstream \[99\]"):
        RiverNetwork.from_arrays([1, 2, 3], [3, 99, 0])


def test_cycle_named() -> None:
    with pytest.raises(NetworkError, match=r"cycle through 3 reach\(es\) \[2, 3, 4\]"):
        RiverNetwork.from_arrays([1, 2, 3, 4], [2, 3, 4, 2])


def test_self_loop_named() -> None:
    with pytest.raises(NetworkError, match=r"\[5\] flow into themselves"):
        RiverNetwork.from_arrays([4, 5], [5, 5])


def test_bifurcation_named() -> None:
    with pytest.raises(NetworkError, match=r"\[1\] have two or more downstream"):
        RiverNetwork.from_edges([1, 2, 3], [1, 1], [2, 3])


def test_bifurcation_from_networkx() -> None:
    g = nx.DiGraph([(1, 2), (1, 3), (2, 4)])
    with pytest.raises(NetworkError, match="bifurcation"):
        RiverNetwork.from_networkx(g)


def test_bad_attribute_shape() -> None:
    with pytest.raises(NetworkError, match="length"):
        RiverNetwork.from_arrays([1, 2], [2, 0], length=[1.0])


# ------------------------------------------------------------------ synthetic forests
def test_random_binary_tree_is_full_binary() -> None:
    rng = np.random.default_rng(0)
    for n_int in [0, 1, 2, 5, 50, 500]:
        parent = random_binary_tree(n_int, rng)
        assert parent.size == 2 * n_int + 1
        assert parent[0] == -1 and np.all(parent[1:] < np.arange(1, parent.size))  # preorder
        children = np.bincount(parent[1:], minlength=parent.size)
        assert set(np.unique(children).tolist()) <= {0, 2}
        assert int((children == 2).sum()) == n_int


def test_random_binary_tree_is_uniform() -> None:
    """5 full binary trees have 3 internal nodes (Catalan C3); each must be equally likely."""
    rng = np.random.default_rng(1)
    counts: dict[tuple, int] = {}
    for _ in range(5000):
        key = tuple(random_binary_tree(3, rng).tolist())
        counts[key] = counts.get(key, 0) + 1
    assert len(counts) == 5
    freq = np.array(list(counts.values())) / 5000
    assert np.all(np.abs(freq - 0.2) < 0.025)


def test_basin_sizes_sum_and_parity() -> None:
    s = basin_sizes(100_001, np.random.default_rng(4), cap=5000)
    assert s.sum() == 100_001 and np.all(s % 2 == 1) and s.max() <= 5000


def test_continental_forest_seeded_and_sized() -> None:
    a = continental_forest(20_000, seed=7)
    b = continental_forest(20_000, seed=7)
    c = continental_forest(20_000, seed=8)
    assert a.n_reaches == 20_000
    assert np.array_equal(a.downstream, b.downstream)
    assert not np.array_equal(a.downstream, c.downstream)
    assert np.all(np.isin(a.upstream_count, [0, 2]))  # binary confluences
    assert a.attrs["length"].shape == (20_000,)
