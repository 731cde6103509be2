"""Topology-proof routing on CPU: a single chain, a star and a forest of comparable size.

Routes 8 daily steps (f = 1, Muskingum k = 0.3, x = 0.2 steps: unstable by the Muskingum
criterion, hence ``allow_unstable=True``) of uniform random runoff through

* ``chain``: one chain of N reaches (depth N),
* ``star``: one outlet fed by N - 1 headwaters (depth 1),
* ``forest``: the DESIGN §5 continental forest (``continental_forest(N, seed=0)``),

with :func:`hydroscale.route` (``engine=None``: what ``auto`` picks), and prints the wall
time of building the :class:`~hydroscale.network.RiverNetwork` from id / downstream-id
arrays (validation, topology, levels) and of routing, the median over ``--repeat`` runs.

    python bench/topology.py                          # 2M chain, 1M star, 2M forest
    python bench/topology.py --chain 200000 --star 100000 --forest 200000 --repeat 3
"""

from __future__ import annotations

import argparse
import logging
import resource
import statistics
import time

import numpy as np

import hydroscale
from hydroscale.network import RiverNetwork, continental_forest
from hydroscale.network.synthetic import chain_ids, star_ids

STEPS, SUBSTEPS, K, X = 8, 1, 0.3, 0.2


def forest_arrays(n: int) -> tuple[np.ndarray, np.ndarray]:
    net = continental_forest(n, seed=0)
    return net.ids.copy(), net.downstream_ids.copy()


class _EngineName(logging.Handler):
    """Remembers the engine of hydroscale.api's "route: ... with engine NAME" debug line."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.name_seen = "?"

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if msg.startswith("route:") and " with engine " in msg:
            self.name_seen = msg.rsplit(" ", 1)[-1]


_SEEN = _EngineName()


def run_once(ids: np.ndarray, down_ids: np.ndarray, runoff: np.ndarray) -> tuple[float, float,
                                                                                str, int]:
    t0 = time.perf_counter()
    net = RiverNetwork.from_arrays(ids, down_ids)
    t1 = time.perf_counter()
    q = hydroscale.route(net, runoff, "muskingum", {"k": K, "x": X}, substeps=SUBSTEPS,
                         allow_unstable=True)
    t2 = time.perf_counter()
    if not np.all(np.isfinite(q)):
        raise RuntimeError("non-finite discharge")
    return t1 - t0, t2 - t1, _SEEN.name_seen, net.n_levels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chain", type=int, default=2_000_000, help="reaches (0: skip)")
    ap.add_argument("--star", type=int, default=1_000_000, help="reaches (0: skip)")
    ap.add_argument("--forest", type=int, default=2_000_000, help="reaches (0: skip)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per row (median reported)")
    ap.add_argument("-v", "--verbose", action="store_true", help="log the engines' INFO lines")
    args = ap.parse_args()
    level = logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level)
    for handler in logging.getLogger().handlers:
        handler.setLevel(level)
    api_log = logging.getLogger("hydroscale.api")
    api_log.setLevel(logging.DEBUG)
    api_log.addHandler(_SEEN)
    rows = [("chain", args.chain, chain_ids), ("star", args.star, star_ids),
            ("forest", args.forest, forest_arrays)]
    print(f"{STEPS} steps, f = {SUBSTEPS}, Muskingum k = {K}, x = {X}, float32, "
          f"median of {args.repeat}")
    print(f"{'topology':>8} {'reaches':>10} {'levels':>8} {'engine':>7} {'build s':>8} "
          f"{'route s':>8} {'total s':>8} {'peak RSS GB':>12}")
    for name, n, make in rows:
        if n <= 0:
            continue
        ids, down_ids = make(n)
        runoff = np.random.default_rng(0).random((ids.size, STEPS), dtype=np.float32)
        builds, routes = [], []
        for _ in range(args.repeat):
            b, r, engine, levels = run_once(ids, down_ids, runoff)
            builds.append(b)
            routes.append(r)
        b, r = statistics.median(builds), statistics.median(routes)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        print(f"{name:>8} {ids.size:>10} {levels:>8} {engine:>7} {b:>8.2f} {r:>8.2f} "
              f"{b + r:>8.2f} {rss:>12.2f}", flush=True)


if __name__ == "__main__":
    main()
