r"""Routing with level-pool lakes vs the same forest without lakes, on one device (issue 29).

Workload (DESIGN §5, scaled by the flags): ``continental_forest(N)``, daily runoff U(0, 1)
m³/s routed at ``--substeps`` sub-steps, Muskingum k ~ U(1, 3) h, x ~ U(0.1, 0.3)
(``allow_unstable``), float32, batch 1.  About ``--lake-fraction`` of the reaches lie in
lakes: random reaches with an upstream reach, each a lake with that upstream reach (two
reaches per lake), level-pool parameters of a 1-10 km² pool.  Both runs use the same engine
(one StagedRouter, routing steps with f sub-step channels at exits and inlets) and the same
partition (``max_reaches`` 512; the lake run's cut at the lakes, each lake a node cluster
stepped between the waves, the lakes of a stage in one Triton loop on CUDA); kernels are
aggregated before the timed passes, which follow a warm-up of two chunks (printed).  A pass
routes the steps in time chunks (state carried, each chunk's runoff generated on the device
outside the timing: a decade at 3M reaches is ~45 GB of runoff).  Prints the set-up and the
median pass seconds of each, their ratio (the issue's bound on one H200 at 3M reaches: 1.5),
the lake stages and the lake loops per chunk (one fused level-pool loop per lake stage), waves,
windows, the seconds of the lake steps (one more pass, each step synchronised) and the peak
device memory.

The issue's row (one H200)::

    python bench/lakes.py --reaches 3000000 --steps 3650 --time-chunk 365 \
        --substeps 24 --engine triton --device cuda --repeat 3

Options::

    python bench/lakes.py [--reaches 100000] [--steps 365] [--time-chunk 365]
                          [--substeps 24] [--lake-fraction 0.01] [--engine torch|triton]
                          [--device cuda] [--repeat 3] [--time-pieces 1] [--json F]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from hydroscale.kernels import hash_uniform
from hydroscale.network import continental_forest
from hydroscale.partition import partition_network
from hydroscale.routing import (
    LakeRouter,
    Lakes,
    RivTreeCluster,
    StagedRouter,
    auto_pieces,
)


def pass_seconds(route, n: int, steps: int, chunk: int, seed: int, dev: torch.device
                 ) -> float:
    """Seconds of the routing calls of one pass over ``steps`` in time chunks of ``chunk``
    (state carried; each chunk's runoff generated on the device first, outside the timing:
    a decade of 3M reaches is ~45 GB, a chunk of a year ~4.4 GB)."""
    idx = torch.arange(n, device=dev)
    state, total = None, 0.0
    for t0 in range(0, steps, chunk):
        r = hash_uniform(idx, t0, min(steps, t0 + chunk), seed)[None]
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        tic = time.perf_counter()
        q, state = route(r, state)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        total += time.perf_counter() - tic
        del q, r
    return total


def median_pass(route, n: int, a: argparse.Namespace, dev: torch.device) -> float:
    """The median over ``a.repeat`` passes, after a warm-up of two chunks (the second with a
    carried state: the kernels of both are compiled before the timing), whose seconds are
    printed."""
    tic = time.perf_counter()
    warm = pass_seconds(route, n, min(a.steps, 2 * a.time_chunk), a.time_chunk, a.seed, dev)
    print(f"  warm-up: {min(a.steps, 2 * a.time_chunk)} steps routed in {warm:.2f} s "
          f"({time.perf_counter() - tic:.1f} s with the runoff)", flush=True)
    return statistics.median(pass_seconds(route, n, a.steps, a.time_chunk, a.seed, dev)
                             for _ in range(a.repeat))


def lake_step_seconds(lr, kl, n: int, a: argparse.Namespace, dev: torch.device) -> float:
    """Seconds spent in the lakes' steps (inflow gather, level-pool loop, outflow) during one
    more pass, each step synchronised (an extra pass: the timed ones are not perturbed)."""
    nodes, spent = lr.nodes, [0.0]
    step = nodes.step

    def timed(*args, **kw):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        tic = time.perf_counter()
        out = step(*args, **kw)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        spent[0] += time.perf_counter() - tic
        return out

    nodes.step = timed
    try:
        with torch.no_grad():
            pass_seconds(lambda r, st: lr(r, kernels=kl, state=st, return_state=True), n,
                         a.steps, a.time_chunk, a.seed, dev)
    finally:
        del nodes.step
    return spent[0]


def progress(what: str, since: float) -> None:
    """One line per phase as it ends (a run cut short still shows where its time went)."""
    print(f"[{time.perf_counter() - since:8.1f} s] {what}", flush=True)


def without_lakes(net, part, p, opts, a, dev) -> tuple[float, float, int, int]:
    """Set-up seconds, median pass seconds, waves and window of the same forest without
    lakes."""
    t0 = time.perf_counter()
    plain = StagedRouter(RivTreeCluster(net, part(net)), **opts)
    plain.window = plain.auto_window(p, max_steps=a.steps)
    with torch.no_grad():
        kp = plain.aggregate(p)
    setup = time.perf_counter() - t0
    progress(f"plain set-up (window {plain.window})", t0)
    with torch.no_grad():
        fwd = median_pass(lambda r, st: plain(r, kernels=kp, state=st, return_state=True),
                          net.n_reaches, a, dev)
    return setup, fwd, int(plain.clusters.n_waves), int(kp.window)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reaches", type=int, default=100_000)
    ap.add_argument("--steps", type=int, default=365)
    ap.add_argument("--time-chunk", type=int, default=365)
    ap.add_argument("--substeps", type=int, default=24)
    ap.add_argument("--lake-fraction", type=float, default=0.01)
    ap.add_argument("--engine", default="torch", choices=("torch", "triton"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-pieces", type=lambda v: v if v == "auto" else int(v),
                    default="auto",
                    help="RoutingOptions.time_pieces of both runs (pieces of each chunk's "
                         "steps, one batch apart, each on its own CUDA stream; default "
                         "'auto', the library's choice, printed as pieces_plain/pieces_lakes)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    dev = torch.device(a.device)
    net = continental_forest(a.reaches, seed=a.seed)
    rng = np.random.default_rng(a.seed)
    n = net.n_reaches
    p = torch.tensor(np.stack([rng.uniform(1, 3, n) / 24.0, rng.uniform(0.1, 0.3, n)], 1),
                     dtype=torch.float32, device=dev)
    lakes = Lakes.synthetic(net, a.lake_fraction, a.seed)
    opts = dict(irf="muskingum", substeps=a.substeps, allow_unstable=True,
                backend=a.engine, device=dev, time_pieces=a.time_pieces)

    def part(sub):
        return partition_network(sub, max_reaches=512).cluster_of

    t_start = time.perf_counter()
    progress(f"network, {lakes.n_lakes} lakes", t_start)
    setup_plain, f_plain, waves_plain, window_plain = without_lakes(net, part, p, opts, a,
                                                                    dev)
    progress(f"plain passes: median {f_plain:.3f} s", t_start)
    if dev.type == "cuda":
        torch.cuda.empty_cache()  # the lake run's kernels and buffers in their place
    t0 = time.perf_counter()
    lr = LakeRouter(net, lakes, dt=86400.0, engine=a.engine, partition=part, **opts)
    with torch.no_grad():
        kl = lr.aggregate(p, run_steps=a.steps)
    setup_lakes = time.perf_counter() - t0
    progress(f"lake set-up ({lr.n_stages} stages, {lr.clusters.n_waves} waves)", t_start)
    with torch.no_grad():
        f_lakes = median_pass(lambda r, st: lr(r, kernels=kl, state=st, return_state=True),
                              n, a, dev)
    progress(f"lake passes: median {f_lakes:.3f} s", t_start)
    runs = sum(1 for node, _ in lr.router._schedule() if node)
    chunk = dict(n_reaches=n, n_steps=min(a.steps, a.time_chunk), substeps=a.substeps)
    lake_s = lake_step_seconds(lr, kl, n, a, dev)
    row = {
        "reaches": n, "steps": a.steps, "time_chunk": a.time_chunk, "substeps": a.substeps,
        "engine": a.engine, "device": str(dev), "time_pieces": a.time_pieces,
        "pieces_plain": auto_pieces(a.time_pieces, device=dev, has_nodes=False, **chunk),
        "pieces_lakes": auto_pieces(a.time_pieces, device=dev, has_nodes=True, **chunk),
        "lakes": lakes.n_lakes,
        "lake_reaches": int(lakes.reach_ids.size), "stages": lr.n_stages,
        "lake_loops_per_chunk": runs, "waves_plain": waves_plain,
        "waves_lakes": int(lr.clusters.n_waves), "window_plain": window_plain,
        "window_lakes": int(kl[0].window), "setup_s_plain": round(setup_plain, 3),
        "setup_s_lakes": round(setup_lakes, 3), "forward_s_plain": round(f_plain, 4),
        "forward_s_lakes": round(f_lakes, 4), "ratio": round(f_lakes / f_plain, 3),
        "lake_step_s": round(lake_s, 4),
        "peak_gb": (round(torch.cuda.max_memory_allocated(dev) / 1e9, 1)
                    if dev.type == "cuda" else None),
    }
    print(" ".join(f"{k}={v}" for k, v in row.items()))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(row, fh, indent=2)


if __name__ == "__main__":
    main()
