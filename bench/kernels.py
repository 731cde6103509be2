"""Path-convolution kernel figures: torch reference vs Triton, forward and forward+backward.

The synthetic layout follows the routing engine's use: the DESIGN §5 continental forest is cut
into clusters of ~``--cluster`` to 2x``--cluster`` reaches (greedy, headwaters first), reaches
are renumbered cluster by cluster, and every reach receives one path from each upstream reach
of its cluster (itself included), with ``K`` random taps.

    python bench/kernels.py --reaches 1000000 --steps 3650 --taps 16 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from hydroscale.kernels import PathLayout, path_conv, set_launch_config
from hydroscale.network import continental_forest


def cluster_paths(n_reaches: int, cluster: int, seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(src, dst, n_clusters) of all within-cluster upstream->downstream pairs (self included),
    with reaches renumbered so that clusters are contiguous."""
    net = continental_forest(n_reaches, seed=seed)
    down = net.downstream
    acc = np.ones(n_reaches, dtype=np.int64)
    is_root = down < 0
    order, ptr = net.topo_order, net.level_ptr
    for lev in range(net.n_levels):  # headwaters first: cut when the open subtree is big
        nodes = order[ptr[lev] : ptr[lev + 1]]
        big = acc[nodes] >= cluster
        is_root[nodes[big]] = True
        keep = nodes[~is_root[nodes]]
        np.add.at(acc, down[keep], acc[keep])
    # cluster id = the root reached by walking down until a cut
    root = np.where(is_root, np.arange(n_reaches), down)
    for _ in range(2 * cluster + 2):
        nxt = np.where(is_root[root], root, down[root])
        if np.array_equal(nxt, root):
            break
        root = nxt
    # renumber: clusters contiguous, headwaters first inside a cluster
    new_of_old = np.empty(n_reaches, dtype=np.int64)
    new_of_old[np.lexsort((net.levels, root))] = np.arange(n_reaches)
    src_l, dst_l = [], []
    cur = np.arange(n_reaches)
    active = np.ones(n_reaches, dtype=bool)
    start = np.arange(n_reaches)
    while cur.size:
        src_l.append(new_of_old[start])
        dst_l.append(new_of_old[cur])
        active = ~is_root[cur]
        start, cur = start[active], down[cur[active]]
    src = np.concatenate(src_l)
    dst = np.concatenate(dst_l)
    return src, dst, int(is_root.sum())


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed(fn, repeats: int) -> float:
    fn()  # warm-up (compilation)
    _sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_one(layout, x, w, backend, precision, repeats, backward=True, grad_x=False):
    """Forward and forward+backward (grad w.r.t. w, and x if ``grad_x``) median seconds."""
    res = {}
    with torch.no_grad():
        res["fwd_s"] = _timed(
            lambda: path_conv(x, w, layout, backend=backend, precision=precision), repeats
        )
    if backward:
        wr = w.detach().clone().requires_grad_()
        xr = x.detach().clone().requires_grad_() if grad_x else x

        def step():
            y = path_conv(xr, wr, layout, backend=backend, precision=precision)
            y.backward(gy)
            wr.grad = None
            xr.grad = None

        gy = torch.ones(x.shape[0], layout.n_dst, x.shape[2], device=x.device)
        res["fwd_bwd_s"] = _timed(step, repeats)
    return res


# (conv_bm, conv_warps, conv_paths, conv_padded_taps, precision) and (grad_w_bm, grad_w_warps,
# precision) to time; none spills registers on sm_90 (ptxas, L = 16)
FWD_CONFIGS = [
    (16, 1, 1, False, "tf32x3"), (16, 1, 1, True, "tf32x3"), (32, 1, 1, True, "tf32x3"),
    (16, 2, 2, True, "tf32x3"), (32, 2, 2, True, "tf32x3"), (16, 1, 1, True, "ieee"),
    (32, 2, 1, True, "ieee"), (16, 1, 1, False, "tf32"), (16, 1, 1, True, "tf32"),
    (32, 1, 1, True, "tf32"), (16, 2, 2, True, "tf32"), (32, 4, 4, True, "tf32"),
    (64, 4, 1, True, "tf32"),
]
GRAD_W_CONFIGS = [
    (128, 4, "tf32x3"), (64, 4, "tf32x3"), (32, 2, "tf32x3"), (32, 1, "tf32x3"),
    (128, 4, "ieee"), (64, 2, "ieee"), (128, 4, "tf32"),
]


def sweep(layout, x, w, macs, repeats):
    """Time the forward and grad_w kernels over launch configurations."""
    from hydroscale.kernels import _triton_ops

    res = []
    previous = set_launch_config()
    try:
        for bm, warps, paths, padded, prec in FWD_CONFIGS:
            set_launch_config(previous, conv_bm=bm, conv_warps=warps, conv_paths=paths,
                              conv_padded_taps=padded)
            with torch.no_grad():
                sec = _timed(lambda xx=x, ww=w, pr=prec: path_conv(xx, ww, layout, precision=pr),
                             repeats)
            res.append(dict(kernel="fwd", bm=bm, warps=warps, paths=paths, padded=padded,
                            precision=prec, seconds=sec))
            print(f"sweep fwd    bm={bm:3d} warps={warps} paths={paths} padded={padded:d} "
                  f"{prec:>6}: "
                  f"{sec * 1e3:8.1f} ms  {macs / sec / 1e12:6.2f} TMAC/s", flush=True)
        gy = torch.ones(x.shape[0], layout.n_dst, x.shape[2], device=x.device)
        for bm, warps, prec in GRAD_W_CONFIGS:
            set_launch_config(previous, grad_w_bm=bm, grad_w_warps=warps)
            sec = _timed(lambda xx=x, g=gy, pr=prec: _triton_ops.path_conv_backward_weight(
                g, xx, layout, w.shape[1], precision=pr), repeats)
            res.append(dict(kernel="grad_w", bm=bm, warps=warps, precision=prec, seconds=sec))
            print(f"sweep grad_w bm={bm:3d} warps={warps}                  {prec:>6}: "
                  f"{sec * 1e3:8.1f} ms  {macs / sec / 1e12:6.2f} TMAC/s", flush=True)
        del gy
    finally:
        set_launch_config(previous)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reaches", type=int, default=1_000_000)
    ap.add_argument("--steps", type=int, default=3650)
    ap.add_argument("--taps", type=int, default=16)
    ap.add_argument("--cluster", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--precisions", nargs="+", default=["tf32x3", "tf32", "ieee"])
    ap.add_argument("--bf16", action="store_true", help="also time bf16 storage")
    ap.add_argument("--torch-reaches", type=int, default=20_000,
                    help="size of the torch-vs-Triton comparison (the torch path is slow)")
    ap.add_argument("--grad-x", action="store_true", help="backward also computes grad_x")
    ap.add_argument("--sweep", action="store_true", help="time launch configurations")
    ap.add_argument("--json", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda", help="cpu: smoke run with TRITON_INTERPRET=1")
    args = ap.parse_args()
    dev = torch.device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu (Triton interpreter)"
    out = {"args": vars(args), "device": name, "runs": []}

    t0 = time.perf_counter()
    src, dst, n_clusters = cluster_paths(args.reaches, args.cluster, args.seed)
    t_gen = time.perf_counter() - t0
    n = args.reaches
    t0 = time.perf_counter()
    layout = PathLayout.from_pairs(torch.from_numpy(src).to(dev), torch.from_numpy(dst).to(dev),
                                   n, n)
    _sync()
    t_layout = time.perf_counter() - t0
    p = layout.n_paths
    out.update(paths=p, clusters=n_clusters, paths_per_reach=p / n, generate_s=t_gen,
               layout_s=t_layout, max_paths_per_dst=layout.max_paths_per_dst)
    print(f"layout: {n} reaches, {n_clusters} clusters, {p} paths ({p / n:.1f}/reach, max "
          f"{layout.max_paths_per_dst}), generate {t_gen:.1f} s, PathLayout {t_layout:.3f} s",
          flush=True)

    g = torch.Generator(device=dev).manual_seed(args.seed)
    x = torch.rand(1, n, args.steps, device=dev, generator=g)
    w = torch.rand(p, args.taps, device=dev, generator=g) / args.taps
    macs = p * args.taps * args.steps
    bytes_min = 4 * (2 * n * args.steps + p * args.taps)
    cases = [("triton", prec, torch.float32) for prec in args.precisions]
    if args.bf16:
        cases.append(("triton", "bf16", torch.bfloat16))
    if args.sweep:
        out["sweep"] = sweep(layout, x, w, macs, args.repeats)
    ref = None
    rows = slice(0, min(n, 100_000))  # accuracy compared on the first rows (memory)
    for backend, prec, dtype in cases:
        if dev.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        xs, ws = x.to(dtype), w.to(dtype)
        precision = None if prec == "bf16" else prec
        r = bench_one(layout, xs, ws, backend, precision, args.repeats, grad_x=args.grad_x)
        with torch.no_grad():
            y = path_conv(xs, ws, layout, backend=backend, precision=precision)[:, rows].float()
        if ref is None:
            ref = y
        err = float((y - ref).norm() / ref.norm())
        del y, xs, ws
        r.update(backend=backend, precision=prec, reaches=n, macs_per_s=macs / r["fwd_s"],
                 gbytes_per_s=bytes_min / r["fwd_s"] / 1e9, rel_l2_vs_first=err,
                 peak_gb=torch.cuda.max_memory_allocated() / 1e9 if dev.type == "cuda" else 0.0)
        out["runs"].append(r)
        print(f"{backend:>6} {prec:>7} N={n}: fwd {r['fwd_s'] * 1e3:8.1f} ms  fwd+bwd "
              f"{r['fwd_bwd_s'] * 1e3:8.1f} ms  {r['macs_per_s'] / 1e12:6.2f} TMAC/s  "
              f"{r['gbytes_per_s']:7.1f} GB/s  relL2 vs {args.precisions[0]} {err:.2e}  "
              f"peak {r['peak_gb']:.1f} GB", flush=True)
    del ref, x, w

    # torch reference vs Triton on a sub-layout of the first clusters
    m = args.torch_reaches
    keep = (layout.src < m) & (layout.dst < m)
    sub = PathLayout.from_pairs(layout.src[keep], layout.dst[keep], m, m)
    xs = torch.rand(1, m, args.steps, device=dev, generator=g)
    ws = torch.rand(sub.n_paths, args.taps, device=dev, generator=g) / args.taps
    y_t = path_conv(xs, ws, sub, backend="torch")
    macs_s = sub.n_paths * args.taps * args.steps
    for backend, prec in (("torch", None), ("triton", args.precisions[0])):
        r = bench_one(sub, xs, ws, backend, prec, max(1, args.repeats // 2))
        y = path_conv(xs, ws, sub, backend=backend, precision=prec)
        err = float((y - y_t).norm() / y_t.norm())
        r.update(backend=backend, precision=prec, reaches=m, paths=sub.n_paths,
                 macs_per_s=macs_s / r["fwd_s"], rel_l2_vs_torch=err)
        out["runs"].append(r)
        print(f"{backend:>6} {str(prec):>7} N={m} P={sub.n_paths}: fwd {r['fwd_s'] * 1e3:8.1f} ms"
              f"  fwd+bwd {r['fwd_bwd_s'] * 1e3:8.1f} ms  {r['macs_per_s'] / 1e12:6.3f} TMAC/s"
              f"  relL2 vs torch {err:.2e}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
