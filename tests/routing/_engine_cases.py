"""Fixtures of the engine tests: small random forests and random valid cluster assignments."""

from __future__ import annotations

import numpy as np

from hydroscale.network import RiverNetwork
from hydroscale.network.synthetic import random_binary_tree


def random_forest(sizes: list[int], seed: int, shuffle: bool = True) -> RiverNetwork:
    """A forest of random binary trees with ``sizes`` internal nodes each (ids 1..N)."""
    rng = np.random.default_rng(seed)
    parents, off = [], 0
    for s in sizes:
        p = random_binary_tree(s, rng)
        parents.append(np.where(p >= 0, p + off, -1))
        off += p.size
    down = np.concatenate(parents)
    n = down.size
    perm = rng.permutation(n) if shuffle else np.arange(n)
    inv = np.empty(n, dtype=np.int64)
    inv[perm] = np.arange(n)
    new_down = np.where(down[perm] >= 0, inv[np.maximum(down[perm], 0)], -1)
    return RiverNetwork(np.arange(1, n + 1), new_down)


def random_clusters(net: RiverNetwork, cut_prob: float, merge_prob: float, seed: int) -> np.ndarray:
    """A random valid ``cluster_of``: cut random edges, then merge random components of the
    same cluster-DAG level into forest clusters; ids in topological order."""
    rng = np.random.default_rng(seed)
    n = net.n_reaches
    down = net.downstream
    cut = (down >= 0) & (rng.random(n) < cut_prob)
    root = np.arange(n)
    for lv in range(net.n_levels - 1, -1, -1):  # outlets first (levels count from headwaters)
        idx = net.topo_order[net.level_ptr[lv] : net.level_ptr[lv + 1]]
        keep = (down[idx] >= 0) & ~cut[idx]
        root[idx[keep]] = root[down[idx[keep]]]
    comps, comp = np.unique(root, return_inverse=True)
    # component DAG level (wave): longest chain of cut edges downstream-to-upstream
    wave = np.zeros(comps.size, dtype=np.int64)
    src = np.flatnonzero(cut)
    for _ in range(comps.size):
        new = wave.copy()
        np.maximum.at(new, comp[down[src]], wave[comp[src]] + 1)
        if np.array_equal(new, wave):
            break
        wave = new
    group = np.arange(comps.size)
    for w in np.unique(wave):
        members = np.flatnonzero(wave == w)
        merge = rng.random(members.size) < merge_prob
        if merge.sum() > 1:
            group[members[merge]] = members[merge][0]
    g, gi = np.unique(group, return_inverse=True)
    gwave = np.zeros(g.size, dtype=np.int64)
    np.maximum.at(gwave, gi, wave)
    rank = np.empty(g.size, dtype=np.int64)
    rank[np.lexsort((np.arange(g.size), gwave))] = np.arange(g.size)
    return rank[gi[comp]]
