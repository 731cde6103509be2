"""Chain rounds (RiverNetwork.chains): levels and path sums of deep and wide networks, checked
against networkx's topological sort and a reach-by-reach sweep."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from hydroscale.network import NetworkError, RiverNetwork, continental_forest
from hydroscale.network.synthetic import caterpillar_ids, chain_ids, star_ids


def _chain(n: int) -> RiverNetwork:
    return RiverNetwork.from_arrays(*chain_ids(n))


def _star(n: int) -> RiverNetwork:
    return RiverNetwork.from_arrays(*star_ids(n))


def _caterpillar(stem: int) -> RiverNetwork:
    """A main stem 1 -> 2 -> ... -> stem, with a headwater tributary joining each stem reach
    below the first (ids stem + 1 ...)."""
    return RiverNetwork.from_arrays(*caterpillar_ids(stem))


def _sweep_path_max_sum(net: RiverNetwork, w: np.ndarray) -> np.ndarray:
    """v[j] = w[j] + max(0, max over upstream v[i]) reach by reach in networkx's order."""
    g = net.to_networkx()
    pos = {int(i): k for k, i in enumerate(net.ids)}
    v = np.zeros(net.n_reaches)
    for node in nx.topological_sort(g):
        up = [v[pos[p]] for p in g.predecessors(node)]
        v[pos[node]] = w[pos[node]] + max([0.0, *up])
    return v


# deeper than the constructor's 4,096 Kahn passes: levels come from the chain rounds
@pytest.mark.parametrize("make, size, rounds, levels", [
    (_chain, 5000, 1, 5000), (_star, 3000, 2, 2), (_caterpillar, 4500, 2, 4500),
    (_chain, 300, 1, 300),
])
def test_deep_and_wide_networks_take_few_rounds(make, size, rounds, levels):
    net = make(size)
    assert net.chains.n_rounds == rounds
    assert net.n_levels == levels
    w = np.ones(net.n_reaches)
    assert net.levels.tolist() == (_sweep_path_max_sum(net, w) - 1).astype(int).tolist()
    ch = net.chains
    assert sorted(ch.order.tolist()) == list(range(net.n_reaches))
    # along a chain, each reach drains into the next one of the round
    has_prev = ch.position[1:] > 0
    assert np.array_equal(net.downstream[ch.order[:-1][has_prev]], ch.order[1:][has_prev])


def test_chain_levels_count_down_the_chain():
    net = _chain(10)
    assert net.levels.tolist() == list(range(10))
    assert net.chains.position.tolist() == list(range(10))


def test_rounds_are_the_strahler_orders_of_a_binary_tree():
    #     1   2   4   5
    #      \ /     \ /
    #       3       6      7 (a headwater joining the order-2 stem)
    #        \     /      /
    #          8 ------> 9 (outlet)
    ids = np.arange(1, 10)
    down = np.array([3, 3, 8, 6, 6, 8, 9, 9, 0])
    net = RiverNetwork.from_arrays(ids, down)
    rounds = np.empty(9, dtype=int)
    for r in range(net.chains.n_rounds):
        rounds[net.chains.round(r)[0]] = r + 1
    assert rounds.tolist() == [1, 1, 2, 1, 1, 2, 1, 3, 3]


def test_path_max_sum_equals_a_sweep_on_a_random_forest():
    net = continental_forest(4000, seed=5, shuffle=True)
    w = np.random.default_rng(0).random(net.n_reaches)
    assert np.allclose(net.path_max_sum(w), _sweep_path_max_sum(net, w), rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match=r"weights must be \[N = 4000"):
        net.path_max_sum(w[:5])


def test_a_cycle_below_a_deep_chain_is_named():
    ids = np.arange(1, 5003)
    down = np.append(ids[1:5001], [5002, 5001])  # 1 -> ... -> 5001 -> 5002 -> 5001
    with pytest.raises(NetworkError, match=r"cycle through 2 reach\(es\) \[5001, 5002\]"):
        RiverNetwork.from_arrays(ids, down)


def test_reaches_below_a_cycle_are_named():
    # 1 -> 2 -> 3 -> 2 is a cycle; 4 drains into it; 5 is fine
    with pytest.raises(NetworkError, match=r"cycle through 2 reach\(es\) \[2, 3\]"):
        RiverNetwork.from_arrays([1, 2, 3, 4, 5], [2, 3, 2, 3, 0])
