"""Array-API overhead: hydroscale.route on numpy arrays vs torch tensors (issue 8).

Workload: ``continental_forest(100_000)``, T = 365 hourly steps, Muskingum with k ~ U(1, 3)
steps (hours) and x ~ U(0.1, 0.3) (``allow_unstable``: k x > 0.5 gives C0 < 0 at dt = 1 h, as
in the DESIGN §5 workload), float32 uniform runoff, batch 1, the best CPU engine.  Both paths
route the same data with the same engine; the ratio is the numpy path's conversion overhead
(target <= 2).  Prints the median of ``--repeat`` timed runs per path (paths interleaved)
after ``--warmup`` runs, and the API layer's own cost measured with a null engine.

    python bench/api.py [--reaches 100000] [--steps 365] [--substeps 1] [--repeat 5]
                        [--warmup 1] [--paths torch,numpy,xarray] [--engine NAME] [--json F]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
import xarray as xr

import hydroscale as hs
from hydroscale.network import continental_forest
from hydroscale.routing import EngineSpec, register_engine, select_engine


def timed(fns: dict, warmup: int, repeat: int) -> dict[str, list[float]]:
    """Run every path ``warmup`` times, then ``repeat`` rounds with the paths interleaved (so
    drifting machine load hits them alike); seconds per run per path."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def _null_engine(network, runoff, irf, params, substeps=1, **options):
    """Returns the runoff: isolates the API layer's own cost (conversion, checks, dispatch)."""
    return runoff


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reaches", type=int, default=100_000)
    ap.add_argument("--steps", type=int, default=365)
    ap.add_argument("--substeps", type=int, default=1)
    ap.add_argument("--engine", default=None, help="default: the best-ranked CPU engine")
    ap.add_argument("--paths", default="torch,numpy,xarray")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()

    t0 = time.perf_counter()
    net = continental_forest(args.reaches, seed=args.seed)
    t_net = time.perf_counter() - t0
    rng = np.random.default_rng(args.seed)
    n = net.n_reaches
    runoff = rng.uniform(0.0, 1.0, (n, args.steps)).astype(np.float32)
    params = {
        "k": rng.uniform(1.0, 3.0, n).astype(np.float32),
        "x": rng.uniform(0.1, 0.3, n).astype(np.float32),
    }
    engine = args.engine or select_engine("cpu").name
    runoff_t = torch.from_numpy(runoff.copy())
    params_t = {k: torch.from_numpy(v.copy()) for k, v in params.items()}
    labelled = xr.DataArray(
        runoff, dims=("reach", "time"), coords={"reach": net.ids}, attrs={"units": "m3 s-1"}
    )
    inputs = {
        "torch": (runoff_t, params_t), "numpy": (runoff, params), "xarray": (labelled, params)
    }
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    results: dict[str, object] = {}

    def call(path: str, eng: str):
        r, p = inputs[path]
        kw = dict(substeps=args.substeps, engine=eng, allow_unstable=True)
        return lambda: results.__setitem__(path, hs.route(net, r, "muskingum", p, **kw))

    # 1. the API layer alone: a null engine, many calls
    register_engine(EngineSpec("bench-null", _null_engine, rank={"cpu": -1}), overwrite=True)
    null = timed({p: call(p, "bench-null") for p in paths}, warmup=2, repeat=20)
    # 2. the real engine
    real = timed({p: call(p, engine) for p in paths}, warmup=args.warmup, repeat=args.repeat)

    ref = np.asarray(results["torch"]) if "torch" in results else None
    med = {p: statistics.median(real[p]) for p in paths}
    med_null = {p: statistics.median(null[p]) for p in paths}
    figures = {
        "reaches": n, "levels": net.n_levels, "steps": args.steps, "substeps": args.substeps,
        "engine": engine, "torch_threads": torch.get_num_threads(), "network_build_s": t_net,
        "warmup": args.warmup, "repeat": args.repeat,
        "median_s": med, "runs_s": real, "null_engine_median_s": med_null,
    }
    print(f"network: {n} reaches, {net.n_levels} levels (built in {t_net:.2f} s)")
    print(f"route {n} x {args.steps} steps, substeps {args.substeps}, engine {engine!r}, "
          f"{args.warmup} warm-up + median of {args.repeat} (paths interleaved)")
    for p in paths:
        ratio = f"   {p}/torch = {med[p] / med['torch']:.3f}" if "torch" in med else ""
        print(f"  {p:7s} path: {med[p]:9.3f} s   runs {[round(t, 3) for t in real[p]]}{ratio}")
        if ref is not None and p != "torch":
            got = results[p].values if p == "xarray" else results[p]
            diff = float(np.abs(np.asarray(got) - ref).max())
            figures[f"max_abs_diff_{p}_torch"] = diff
            print(f"           max |{p} - torch| = {diff:.3g}")
    print("API layer alone (null engine, median of 20):")
    for p in paths:
        print(f"  {p:7s} path: {1e3 * med_null[p]:9.3f} ms")
    if "torch" in med and "numpy" in med:
        figures["numpy_over_torch"] = med["numpy"] / med["torch"]
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(figures, fh, indent=2)


if __name__ == "__main__":
    main()
