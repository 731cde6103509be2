"""Issue 3 figures: the single-GPU block-sparse engine on the DESIGN §5 workload, beside DiffRoute.

    python bench/engine.py --reaches 100000 1000000 --out results/

Workload (DESIGN §5): ``continental_forest(N, seed)``, T = 3650 daily steps, Muskingum with
k ~ U(1, 3) h (= U(1/24, 3/24) steps) and x ~ U(0.1, 0.3), f = 24 hourly sub-steps, batch 1,
float32, uniform random runoff.  Our kernel window is chosen per run from the parameters
(``window="auto"``: the shortest that leaves at most 1e-6 of any in-cluster path's response out,
reported with the truncated mass; K = 5 at 100k and 1M reaches); DiffRoute runs with its 32-day
window.

Clusters hold at most 1.5 days of travel time (``--max-travel-time``).  Every reach is upstream
of its cluster's exit, whose f = 24 polyphase channels carry ~24 N paths whatever the bound;
the reach-to-reach paths and the window shrink with it.  At 1M reaches (one H100, forward with
kernels built, session-3 kernels): 3.0 days: 45.7M paths, K = 9, 51 waves, 0.33 s; 1.5 days:
42.9M paths, K = 6, 96 waves, 0.24 s; 1.0 day: 48.3M paths, K = 5, 146 waves, 0.26 s.

Error vs the float64 oracle: the oracle cannot hold 1M x 87600 sub-steps, so it is evaluated
on a subset of whole basins (``--oracle-reaches`` reaches, ``--oracle-days`` days), routed by
the oracle, by us (same partition settings, float32) and by DiffRoute.

DiffRoute (``pip install diffroute==0.1.0``; benchmark only, never a hydroscale dependency) is
optional: without it, or with ``--no-diffroute``, its columns are left out.  Its forward
aggregates its kernels from the parameters on every call, so it compares with our params->Q
(one timed call: aggregation, then routing; median of ``--repeat``);
its ``forward_kernels_built_s`` (kernels kept from a first call) compares with our forward.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import logging
import os
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

from hydroscale.kernels import get_launch_config, parse_launch_spec, set_launch_config
from hydroscale.network import RiverNetwork, continental_forest
from hydroscale.partition import partition_network, travel_time_bound
from hydroscale.routing import RivTreeCluster, StagedRouter, route_oracle


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Timer:
    def __enter__(self):
        _sync()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        _sync()
        self.s = time.perf_counter() - self.t0


def _reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gb() -> float:
    return torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_available() else float("nan")


def workload(n: int, seed: int, n_t: int, device: torch.device):
    net = continental_forest(n, seed=seed)
    rng = np.random.default_rng(seed + 1)
    k = rng.uniform(1 / 24, 3 / 24, net.n_reaches)
    x = rng.uniform(0.1, 0.3, net.n_reaches)
    params = np.stack([k, x], axis=1)
    g = torch.Generator(device=device).manual_seed(seed + 2)
    runoff = torch.rand(1, net.n_reaches, n_t, device=device, generator=g)
    return net, params, runoff


def partition(net: RiverNetwork, params: np.ndarray, args) -> np.ndarray:
    tt = travel_time_bound("muskingum", params, substeps=args.substeps)
    part = partition_network(net, max_reaches=args.max_reaches, travel_time=tt,
                             max_travel_time=args.max_travel_time)
    return part.cluster_of


def ours(net, params, runoff, args, grad: bool, window=None, cluster_of=None):
    """Partition (unless ``cluster_of`` is given), set up, forward (and forward+backward);
    returns a dict of figures."""
    res: dict = {}
    dev = runoff.device
    with Timer() as t:
        cl = partition(net, params, args) if cluster_of is None else cluster_of
    res["partition_s"] = t.s
    with Timer() as t:
        cs0 = RivTreeCluster(net, cl)
        order = cs0.order  # store reaches in engine order: every wave is a contiguous slice
        identity = bool(np.array_equal(order, np.arange(order.size)))
        net2 = net if identity else net.reorder(order)
        cs = cs0 if identity else RivTreeCluster(net2, cl[order])
        p = torch.tensor(params[order], device=dev)
        router = StagedRouter(cs, irf="muskingum", substeps=args.substeps,
                              window=window or args.window, allow_unstable=True, device=dev,
                              precision=args.precision,
                              aggregate_dtype=getattr(torch, args.aggregate_dtype))
        router.prepare()
        with torch.no_grad():
            kern = router.aggregate(p)
    res["setup_s"] = t.s
    res.update(clusters=cs.n_clusters, waves=cs.n_waves, exits=cs.n_exits,
               paths=router._n_r + router._n_u, window=kern.window,
               max_truncated_mass=float(np.nanmax(kern.truncated_mass)))
    r = runoff if identity else runoff[:, torch.as_tensor(order, device=dev)]
    if args.profile:
        def agg_fwd_bwd():
            k = router.aggregate(p.clone().requires_grad_(True))
            (k.wr.float().sum() + k.wu.float().sum()).backward()

        res["aggregate_fwd_bwd_top_kernels"] = profile_forward(agg_fwd_bwd, top=12)
    with torch.no_grad():
        router(r, kernels=kern)  # warm-up (Triton compile)
        _reset_peak()
        times = []
        q = None
        for _ in range(args.repeat):
            q = None  # free the previous result before routing again
            with Timer() as t:
                q = router(r, kernels=kern)
            times.append(t.s)
    res["forward_s"] = float(np.median(times))
    res["forward_peak_gb"] = _peak_gb()
    if args.sweep and not args.sweep_grad:
        res["sweep_forward_s"] = sweep_forward(lambda: router(r, kernels=kern), args)
    res["reach_steps_per_s"] = net.n_reaches * runoff.shape[-1] / res["forward_s"]
    # params -> discharge: the kernels aggregated from the parameters inside the timed call,
    # as a calibration iteration (and DiffRoute's forward) does; the aggregation alone too
    agg, both = [], []
    with torch.no_grad():
        for _ in range(args.repeat):
            with Timer() as t:
                router.aggregate(p)
            agg.append(t.s)
        for _ in range(args.repeat):
            q = None
            with Timer() as t:
                q = router(r, kernels=router.aggregate(p))
            both.append(t.s)
    res["aggregate_s"] = float(np.median(agg))
    res["forward_with_aggregate_s"] = float(np.median(both))
    res["forward_with_aggregate_runs_s"] = [round(x, 4) for x in both]
    res["q"] = (q, order)
    if args.profile:
        with torch.no_grad():
            res["forward_top_kernels"] = profile_forward(lambda: router(r, kernels=kern))
    if grad:
        del q
        res.pop("q")
        pg = p.clone().requires_grad_(True)

        def step(timers=None):
            t = timers if timers is not None else [Timer(), Timer(), Timer()]
            with t[0]:
                kg = router.aggregate(pg)
            with t[1]:
                loss = router(r, kernels=kg).sum()  # Σ Q: touches every reach and step
            with t[2]:
                loss.backward()
            return t

        try:
            step()  # warm-up: compiles the backward kernels
            _reset_peak()
            runs = []
            for _ in range(args.repeat):  # the median run (its parts with it)
                pg.grad = None
                ta, tf, tb = step()
                runs.append((ta.s + tf.s + tb.s, ta.s, tf.s, tb.s))
            total, ta_s, tf_s, tb_s = sorted(runs)[len(runs) // 2]
            res["fwd_bwd_s"] = total
            res["fwd_bwd_runs_s"] = [round(x[0], 4) for x in runs]
            res["fwd_bwd_parts_s"] = {"aggregate": ta_s, "route": tf_s, "backward": tb_s}
            res["fwd_bwd_peak_gb"] = _peak_gb()
            res["grad_finite"] = bool(torch.isfinite(pg.grad).all())
            res["fwd_bwd_over_forward"] = res["fwd_bwd_s"] / res["forward_s"]
            res["fwd_bwd_over_forward_with_aggregate"] = (
                res["fwd_bwd_s"] / res["forward_with_aggregate_s"])
            if args.profile:
                pg.grad = None
                res["fwd_bwd_top_kernels"] = profile_forward(step, top=12)
            if args.sweep and args.sweep_grad:
                def fwd_bwd():
                    with torch.enable_grad():
                        pg.grad = None
                        step()

                res["sweep_fwd_bwd_s"] = sweep_forward(fwd_bwd, args)
        except torch.cuda.OutOfMemoryError:
            res["fwd_bwd_s"] = "OOM"
        del r
    return res


def sweep_forward(fn, args) -> dict:
    """Median seconds of ``fn`` (a forward, or with ``--sweep-grad`` a forward + backward)
    under each launch configuration of ``--sweep``, in this process, on the same router,
    kernels and runoff (side by side)."""
    out = {}
    log = logging.getLogger("bench")
    for spec in args.sweep:
        previous = set_launch_config(**parse_launch_spec(spec))
        try:
            with torch.no_grad():
                fn()  # compile, build the blocks
                times = []
                for _ in range(args.repeat):
                    with Timer() as t:
                        fn()
                    times.append(t.s)
            out[spec] = float(np.median(times))
            log.info("sweep %s: %.4f s", spec, out[spec])
        finally:
            set_launch_config(previous)
    return out


def profile_forward(fn, top: int = 8) -> list:
    """The ``top`` device kernels of one call of ``fn`` by total time (name, ms, calls)."""
    if not torch.cuda.is_available():
        return []
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        _sync()
    rows = []
    for e in prof.key_averages():
        dev_us = getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)
        rows.append((e.key[:60], round(dev_us / 1e3, 2), e.count))
    rows.sort(key=lambda x: -x[1])
    return rows[:top]


# ---------------------------------------------------------------------------- DiffRoute
def _import_diffroute():
    shim = types.ModuleType("tqdm.notebook")
    import tqdm as _tqdm

    shim.tqdm = _tqdm.tqdm
    sys.modules.setdefault("tqdm.notebook", shim)
    os.environ.setdefault("TQDM_DISABLE", "1")
    import diffroute
    from diffroute.graph_utils import define_schedule

    return diffroute, define_schedule


def diffroute_run(net, params, runoff, args, grad: bool):
    import networkx as nx
    import pandas as pd

    diffroute, define_schedule = _import_diffroute()
    res: dict = {}
    dev = runoff.device
    down = net.downstream
    src = np.flatnonzero(down >= 0)
    quiet = io.StringIO()
    with Timer() as t, contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        g = nx.DiGraph()
        g.add_nodes_from(range(net.n_reaches))
        g.add_edges_from(zip(src.tolist(), down[src].tolist()))
        pdf = pd.DataFrame({"x": params[:, 1], "k": params[:, 0]})
        clusters_g, transfer = define_schedule(g, plength_thr=args.dr_plength,
                                               node_thr=args.dr_nodes)
        gs = diffroute.RivTreeCluster(clusters_g, transfer, irf_fn="muskingum",
                                      include_index_diag=True, param_df=pdf).to(dev)
        model = diffroute.LTIStagedRouter(max_delay=args.dr_window, dt=1 / args.substeps).to(dev)
        model.model.conv.conv_imp = "triton" if dev.type == "cuda" else "legacy"
    res["setup_s"] = t.s
    res["clusters"] = len(gs)
    nodes = torch.as_tensor(np.asarray(gs.nodes, dtype=np.int64), device=dev)
    x = runoff[:, nodes].contiguous()
    try:
        with torch.no_grad():
            model(x, gs)
            _reset_peak()
            times = []
            for _ in range(args.repeat):
                with Timer() as t:
                    y = model(x, gs)
                times.append(t.s)
        res["forward_s"] = float(np.median(times))
        res["forward_peak_gb"] = _peak_gb()
        res["reach_steps_per_s"] = net.n_reaches * runoff.shape[-1] / res["forward_s"]
        q = torch.empty_like(y)
        q[:, nodes] = y
        res["q"] = q
        del y
    except torch.cuda.OutOfMemoryError:
        res["forward_s"] = "OOM"
    if "q" in res:
        res.update(_diffroute_kernels_built(model, x, gs, args))
    if grad and "q" in res:
        del res["q"]
        _reset_peak()
        plist = [gg.params.clone().requires_grad_(True) for gg in gs]
        try:
            for _ in range(2):  # the first pass compiles the backward kernels
                _reset_peak()
                with Timer() as t:
                    y = model(x, gs, plist)
                    y.sum().backward()
                del y
            res["fwd_bwd_s"] = t.s
            res["fwd_bwd_peak_gb"] = _peak_gb()
        except torch.cuda.OutOfMemoryError:
            res["fwd_bwd_s"] = "OOM"
        del plist
    return res


def _diffroute_kernels_built(model, x, gs, args) -> dict:
    """DiffRoute's forward with its kernels built beforehand: every call of its forward
    aggregates each cluster's kernels from the parameters and then convolves; here the
    block-sparse kernels of the first call are kept and the later calls only convolve (what
    our "forward (kernels built)" times).  Keeping every cluster's kernels may not fit."""
    lti = model.model
    cache: dict = {}

    def forward(runoff, g, params=None):
        k = cache.get(id(g))
        if k is None:
            k = cache[id(g)] = lti.aggregator(g, params).to_block_sparse(lti.block_size)
        y = lti.conv(runoff, k)
        return y if g.include_index_diag else runoff + y

    res: dict = {}
    try:
        lti.forward = forward  # instance attribute: nn.Module.__call__ finds it first
        with torch.no_grad():
            model(x, gs)  # builds and keeps the kernels
            times = []
            for _ in range(args.repeat):
                with Timer() as t:
                    y = model(x, gs)
                times.append(t.s)
                del y
        res["forward_kernels_built_s"] = float(np.median(times))
        res["kernels_built_peak_gb"] = _peak_gb()
    except torch.cuda.OutOfMemoryError:
        res["forward_kernels_built_s"] = "OOM"
    finally:
        del lti.forward
        cache.clear()
    return res


# ---------------------------------------------------------------------------- accuracy
def basin_subset(net: RiverNetwork, target: int) -> np.ndarray:
    """Whole basins, largest first among those not above ``target``, totalling ~target."""
    basin = net.basin
    outs, sizes = np.unique(basin, return_counts=True)
    take, total = [], 0
    for i in np.argsort(-sizes, kind="stable"):
        if sizes[i] <= target - total:
            take.append(outs[i])
            total += sizes[i]
        if total >= 0.8 * target:
            break
    return np.isin(basin, take)


def errors(q: torch.Tensor, q0: torch.Tensor, outlet: int) -> dict:
    d = (q.double() - q0).flatten()
    rel = float(d.norm() / q0.flatten().norm())
    o, o0 = q[0, outlet].double(), q0[0, outlet]
    nse = float(1 - ((o - o0) ** 2).sum() / ((o0 - o0.mean()) ** 2).sum())
    return {"rel_l2": rel, "nse_outlet": nse}


def accuracy(net, params, runoff, args, with_dr: bool) -> dict:
    mask = basin_subset(net, args.oracle_reaches)
    n_t = args.oracle_days
    if mask.sum() < args.oracle_reaches // 2:
        # no mid-sized basins (e.g. 100k = one 98k basin + small ones): take the smallest basin
        # above the target and shorten the period to keep reaches x days (oracle memory)
        outs, sizes = np.unique(net.basin, return_counts=True)
        big = np.flatnonzero(sizes >= args.oracle_reaches)
        pick = big[np.argmin(sizes[big])]
        mask = net.basin == outs[pick]
        n_t = max(60, int(args.oracle_days * args.oracle_reaches / sizes[pick]))
    sub = net.subnetwork(mask)
    idx = torch.as_tensor(np.flatnonzero(mask), device=runoff.device)
    r = runoff[:, idx, :n_t].contiguous()
    p = params[mask]
    with Timer() as t:
        q0 = route_oracle(sub, r.double(), "muskingum", torch.tensor(p, device=r.device),
                          substeps=args.substeps, allow_unstable=True)
    sizes = np.bincount(sub.basin, minlength=sub.n_reaches)
    outlet = int(np.argmax(sizes))
    out = {"reaches": sub.n_reaches, "days": n_t, "basins": int(sub.outlets.size),
           "oracle_s": t.s}
    mine = ours(sub, p, r, argparse.Namespace(**{**vars(args), "profile": False}), grad=False)
    q, order = mine.pop("q")
    qn = torch.empty_like(q)
    qn[:, torch.as_tensor(order, device=q.device)] = q
    out["ours"] = errors(qn, q0, outlet)
    out["ours"]["window"] = mine["window"]
    out["ours"]["max_truncated_mass"] = mine["max_truncated_mass"]
    if args.also_tf32:
        a2 = argparse.Namespace(**{**vars(args), "precision": "tf32", "profile": False})
        q, order = ours(sub, p, r, a2, grad=False).pop("q")
        qn[:, torch.as_tensor(order, device=q.device)] = q
        out["ours_tf32"] = errors(qn, q0, outlet)
    if with_dr:
        try:
            dr = diffroute_run(sub, p, r, args, grad=False)
            out["diffroute"] = errors(dr["q"], q0, outlet) if "q" in dr else {"error": "OOM"}
        except Exception as e:  # noqa: BLE001  (report whatever DiffRoute raises)
            out["diffroute"] = {"error": f"{type(e).__name__}: {e}"[:300]}
    return out


def gpu_check(args) -> dict:
    """Small exactness checks on the device: partitioned routing with sub-steps vs the oracle,
    float64 and float32, unchunked and in two time chunks with carried state."""
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = continental_forest(3000, seed=5)
    rng = np.random.default_rng(5)
    p = np.stack([rng.uniform(1 / 24, 3 / 24, net.n_reaches),
                  rng.uniform(0.1, 0.3, net.n_reaches)], axis=1)
    r = torch.rand(2, net.n_reaches, 120, device=dev, dtype=torch.float64)
    q0 = route_oracle(net, r, "muskingum", torch.tensor(p, device=dev), substeps=24,
                      allow_unstable=True)
    cs = RivTreeCluster(net, partition(net, p, argparse.Namespace(
        substeps=24, max_reaches=128, max_travel_time=1.0)))
    out = {"reaches": net.n_reaches, "clusters": cs.n_clusters, "exits": cs.n_exits}
    for dtype in (torch.float64, torch.float32):
        router = StagedRouter(cs, irf="muskingum", substeps=24, window=12, dtype=dtype,
                              allow_unstable=True, device=dev, precision=args.precision)
        with torch.no_grad():
            kern = router.aggregate(torch.tensor(p, device=dev))
            q = router(r, kernels=kern)
            qa, st = router(r[..., :50], kernels=kern, return_state=True)
            qb = router(r[..., 50:], kernels=kern, state=st)
        qc = torch.cat([qa, qb], dim=-1)
        name = str(dtype).replace("torch.", "")
        out[name] = {
            "rel_l2": float((q.double() - q0).norm() / q0.norm()),
            "chunked_vs_whole_max_abs": float((qc - q).abs().max()),
            "max_truncated_mass": float(np.nanmax(kern.truncated_mass)),
        }
    return out


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--reaches", type=int, nargs="*", default=[100_000, 1_000_000])
    ap.add_argument("--days", type=int, default=3650)
    ap.add_argument("--substeps", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--window", default="auto", help="kernel window in days, or 'auto'")
    ap.add_argument("--max-reaches", type=int, default=1024)
    ap.add_argument("--max-travel-time", type=float, default=1.5,
                    help="bound on the travel time within a cluster, days (1.5: the fastest "
                         "of 1.0 / 1.5 / 3.0 at 1M reaches on an H100, see the docstring)")
    ap.add_argument("--precision", default=None, help="Triton matmul precision")
    ap.add_argument("--algorithm", default=None, choices=["auto", "blocks", "toeplitz"],
                    help="path-convolution kernels (LaunchConfig.conv_algorithm; default: the "
                         "launch configuration in force)")
    ap.add_argument("--aggregate-dtype", default="float64", choices=["float64", "float32"],
                    help="arithmetic of the path-kernel aggregation (see StagedRouter)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-grad", action="store_true")
    ap.add_argument("--no-diffroute", action="store_true")
    ap.add_argument("--dr-window", type=int, default=32)
    ap.add_argument("--dr-plength", type=int, default=10**5)
    ap.add_argument("--dr-nodes", type=int, default=10**4)
    ap.add_argument("--oracle-reaches", type=int, default=40_000)
    ap.add_argument("--oracle-days", type=int, default=365)
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--check", action="store_true", help="small exactness checks first")
    ap.add_argument("--profile", action="store_true", help="top device kernels of a forward")
    ap.add_argument("--sweep", nargs="*", default=[], metavar="FIELD=VALUE,...",
                    help="also time the forward under these launch configurations, side by side")
    ap.add_argument("--sweep-grad", action="store_true",
                    help="--sweep times the forward + backward instead of the forward")
    ap.add_argument("--also-tf32", action="store_true", help="accuracy with tf32 matmuls too")
    ap.add_argument("--out", default=None, help="folder for results.json and table.md")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.window != "auto":
        args.window = int(args.window)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with_dr = not args.no_diffroute
    if with_dr:
        try:
            _import_diffroute()
        except ImportError:
            with_dr = False
    if args.algorithm:
        set_launch_config(conv_algorithm=args.algorithm)
    launch = dataclasses.asdict(get_launch_config())
    logging.getLogger("bench").info("kernel launch configuration: %s", launch)
    results = []
    if args.check:
        chk = gpu_check(args)
        print(json.dumps({"check": chk}), flush=True)
        results.append({"check": chk})
    for n in args.reaches:
        net, params, runoff = workload(n, args.seed, args.days, dev)
        with Timer() as t:
            cl = partition(net, params, args)
        t_part = t.s
        # store the workload in our engine order once (every engine sees the same data; ours
        # then routes contiguous slices without a copy of the runoff)
        order = RivTreeCluster(net, cl).order
        net, params, cl = net.reorder(order), params[order], cl[order]
        runoff = runoff[:, torch.as_tensor(order, device=dev)]
        _reset_peak()
        row: dict = {"reaches": net.n_reaches, "days": args.days, "launch": launch, "device": str(
            torch.cuda.get_device_name() if dev.type == "cuda" else "cpu")}
        if not args.skip_accuracy:
            row["accuracy"] = accuracy(net, params, runoff, args, with_dr)
            print(json.dumps({"reaches": n, "accuracy": row["accuracy"]}), flush=True)
        # the same clusters, already in engine order: no second copy of the runoff
        mine = ours(net, params, runoff, args, grad=not args.no_grad, cluster_of=cl)
        mine.pop("q", None)
        mine["partition_s"] = t_part  # on the network as generated
        row["ours"] = mine
        print(json.dumps({"reaches": n, "ours": mine}), flush=True)
        if with_dr:
            try:
                dr = diffroute_run(net, params, runoff, args, grad=not args.no_grad)
                dr.pop("q", None)
            except Exception as e:  # noqa: BLE001
                dr = {"error": f"{type(e).__name__}: {e}"[:300]}
            row["diffroute"] = dr
            print(json.dumps({"reaches": n, "diffroute": dr}), flush=True)
        results.append(row)
        if args.out:  # partial results survive a time limit
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / "results.json").write_text(json.dumps(results, indent=1,
                                                                    default=str))
        del runoff
        _reset_peak()
    lines = ["| reaches | engine | partition s | setup s | forward s (kernels built) | "
             "reach-steps/s | "
             "params->Q s | fwd+bwd s | peak GB fwd / fwd+bwd | rel L2 | NSE outlet |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in results:
        if "check" in row:
            continue
        acc = row.get("accuracy", {})
        for name in ("ours", "diffroute"):
            if name not in row:
                continue
            m, a = row[name], acc.get(name, {})
            # "forward s": with the kernels built (DiffRoute: kept from a first call); its own
            # forward aggregates them on every call, which is the params->Q column
            fwd = m.get("forward_kernels_built_s", m.get("forward_s", m.get("error", "-")))
            rate = (row["reaches"] * row["days"] / fwd if isinstance(fwd, float) else "-")
            lines.append(
                f"| {row['reaches']} | {name} | {fmt(m.get('partition_s', '-'))} | "
                f"{fmt(m.get('setup_s', '-'))} | {fmt(fwd)} | {fmt(rate)} | "
                f"{fmt(m.get('forward_with_aggregate_s', m.get('forward_s', '-')))} | "
                f"{fmt(m.get('fwd_bwd_s', '-'))} | "
                f"{fmt(m.get('forward_peak_gb', '-'))} / {fmt(m.get('fwd_bwd_peak_gb', '-'))} | "
                f"{fmt(a.get('rel_l2', '-'))} | {fmt(a.get('nse_outlet', '-'))} |"
            )
    table = "\n".join(lines)
    print(table)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
        (out / "table.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
