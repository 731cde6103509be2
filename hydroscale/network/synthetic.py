"""Seeded synthetic continental forests (the benchmark workload of DESIGN §5).

A forest of uniformly random full binary trees -- the distribution Rémy's algorithm samples,
which is Shreve's random topology for river networks -- with basin sizes drawn from a capped
Pareto law.  Trees are drawn without a per-node Python loop: a uniformly random Łukasiewicz
word (n internal nodes, n + 1 leaves, in preorder) is obtained by rotating a random arrangement
with the cycle lemma, and parents follow from its prefix sums.
"""

from __future__ import annotations

import logging

import numpy as np

from ._network import RiverNetwork

__all__ = ["random_binary_tree", "basin_sizes", "continental_forest", "caterpillar_ids",
           "chain_ids", "star_ids"]

logger = logging.getLogger(__name__)


def random_binary_tree(n_internal: int, rng: np.random.Generator) -> np.ndarray:
    """Parent pointers of a uniformly random full binary tree in preorder.

    Returns int64 [2 n_internal + 1]: ``parent[i]`` is the index of node i's parent (the reach
    it flows into); ``parent[0] = -1`` (the root, the outlet).
    """
    m = 2 * n_internal + 1
    if n_internal == 0:
        return np.array([-1], dtype=np.int64)
    steps = np.full(m, -1, dtype=np.int64)  # arity - 1: +1 internal, -1 leaf
    steps[rng.choice(m, size=n_internal, replace=False)] = 1
    # Cycle lemma: exactly one rotation keeps every proper prefix sum >= 0; it starts just
    # after the first minimum of the prefix sums.
    csum = np.cumsum(steps)
    start = (int(np.argmin(csum)) + 1) % m
    steps = np.roll(steps, -start)
    height = np.concatenate([[0], np.cumsum(steps)[:-1]])  # pending slots - 1 before node i
    parent = np.empty(m, dtype=np.int64)
    parent[0] = -1
    # A node whose predecessor is internal is that node's first child.  Otherwise it is the
    # second child of the last earlier node at the same height (the walk moves by +-1).
    first_child = steps[:-1] == 1
    idx = np.arange(1, m)
    parent[1:][first_child] = idx[first_child] - 1
    order = np.lexsort((np.arange(m), height))  # group by height, positions ascending
    prev_same = np.empty(m, dtype=np.int64)
    prev_same[order[1:]] = order[:-1]
    same_group = np.empty(m, dtype=bool)
    same_group[order[1:]] = height[order[1:]] == height[order[:-1]]
    same_group[order[0]] = False
    rest = idx[~first_child]
    if not np.all(same_group[rest]):
        raise RuntimeError("internal error: malformed Łukasiewicz word")
    parent[rest] = prev_same[rest]
    return parent


def basin_sizes(
    n_reaches: int,
    rng: np.random.Generator,
    *,
    alpha: float = 0.39,
    cap: int = 100_000,
) -> np.ndarray:
    """Odd basin sizes (full binary trees have 2k + 1 nodes) summing to ``n_reaches``.

    Sizes follow a Pareto law with shape ``alpha`` and minimum 1, capped at ``cap``; the
    default ``alpha`` gives ~530 basins per million reaches, as in DESIGN §5.
    """
    if n_reaches < 1:
        raise ValueError(f"n_reaches must be >= 1, got {n_reaches}")
    if cap < 1:
        raise ValueError(f"cap must be >= 1, got {cap}")
    sizes: list[np.ndarray] = []
    total = 0
    while total < n_reaches:
        draw = np.minimum(rng.pareto(alpha, size=4096) + 1.0, cap).astype(np.int64)
        draw -= 1 - draw % 2  # odd
        draw = np.maximum(draw, 1)
        sizes.append(draw)
        total += int(draw.sum())
    s = np.concatenate(sizes)
    cum = np.cumsum(s)
    k = int(np.searchsorted(cum, n_reaches))
    s = s[: k + 1].copy()
    excess = int(s.sum()) - n_reaches
    s[-1] -= excess
    if s[-1] % 2 == 0:  # keep every basin a full binary tree: split off a one-reach basin
        s[-1] -= 1
        s = np.append(s, 1)
    return s[s > 0]


def continental_forest(
    n_reaches: int,
    seed: int = 0,
    *,
    alpha: float = 0.39,
    cap: int = 100_000,
    shuffle: bool = False,
) -> RiverNetwork:
    """A seeded forest of random binary river trees with Pareto basin sizes (DESIGN §5).

    Parameters
    ----------
    n_reaches : total reaches N.
    seed : RNG seed; the same seed gives the same network.
    alpha, cap : Pareto shape and maximum basin size (reaches).
    shuffle : store reaches in random order (ids stay 1..N in preorder of each basin).

    The network carries a ``length`` attribute (m, lognormal around 2 km), used by examples to
    derive travel times.
    """
    rng = np.random.default_rng(seed)
    sizes = basin_sizes(n_reaches, rng, alpha=alpha, cap=cap)
    down = np.empty(n_reaches, dtype=np.int64)
    offset = 0
    for size in sizes.tolist():
        parent = random_binary_tree((size - 1) // 2, rng)
        down[offset : offset + size] = np.where(parent >= 0, parent + offset, -1)
        offset += size
    ids = np.arange(1, n_reaches + 1, dtype=np.int64)
    length = rng.lognormal(mean=np.log(2000.0), sigma=0.5, size=n_reaches)
    net = RiverNetwork(ids, down, {"length": length})
    logger.info("synthetic forest: %d reaches in %d basins", n_reaches, sizes.size)
    if shuffle:
        net = net.reorder(rng.permutation(n_reaches))
    return net


# ------------------------------------------------------------------ extreme topologies
def chain_ids(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, downstream ids) of a single chain 1 -> 2 -> ... -> n (outlet; 0: none)."""
    ids = np.arange(1, n + 1)
    return ids, np.where(ids < n, ids + 1, 0)


def star_ids(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, downstream ids) of a star: reaches 2..n all drain into the outlet 1."""
    ids = np.arange(1, n + 1)
    return ids, np.where(ids > 1, 1, 0)


def caterpillar_ids(stem: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, downstream ids) of a main stem 1 -> 2 -> ... -> stem with a headwater tributary
    (ids stem + 1 ...) joining each stem reach below the first."""
    ids = np.arange(1, 2 * stem)
    down = np.where(ids < stem, ids + 1, 0)
    down[stem:] = np.arange(2, stem + 1)
    return ids, down
