"""Route NWM lateral inflow through the Lower Colorado (TX) and score it at the gauges.

Usage::

    python examples/lower_colorado.py [--celerity 1.0] [--substeps 12] [--out lower_colorado_out]

Data: the bundled 11,248-reach basin (``hydroscale.io.load_lower_colorado``): 28 hourly
CHRTOUT files from 2021-08-23 13:00 UTC (NWM ``q_lateral`` and NWM's own routed
``streamflow``) and the 15-minute USGS observations of 2021-08-23.

Routing choices (documented, not calibrated):

* Muskingum with k = L / c, c = 1 m/s (``--celerity``), x = 0.2, hourly steps routed with
  f = 12 sub-steps (dt = 300 s).  Muskingum's coefficients are non-negative only when
  2kx <= dt <= 2k(1-x); with reach lengths from 1 m to 61 km no single dt satisfies this, so
  x is lowered to dt / (2k) on long reaches (more diffusion, same mean travel time k) and k is
  raised to dt / (2(1-x)) = 187.5 s on the shortest reaches (< 188 m at 1 m/s).
* Time: the CHRTOUT file valid at t holds ``q_lateral`` over the hour ending at t and the
  instantaneous ``streamflow`` at t.  We route the 27 hours after 13:00 and compare each hourly
  mean with NWM's (S(t) + S(t+1)) / 2 and with the mean of the USGS 15-minute values inside
  the hour (available until 23:45 of the first day: 10 hours).
* Initial state: NWM's streamflow S0 = S(13:00) (lake reaches, NaN in CHRTOUT, get the sum of
  their upstream S0 plus their lateral inflow).  ``route_oracle`` (the exact float64 router)
  has no state argument; being linear, a basin in steady state at S0 before 13:00 is exactly
  ``S0 + route_oracle(q_lateral - r0)`` from a cold start, where r0_j = S0_j - sum of S0_i
  upstream-adjacent is the steady lateral inflow that sustains S0 (the Muskingum kernel sums
  to 1).  The RAPID mode (``hydroscale.routing.rapid.route_rapid``, same k, x and
  dtR = 300 s) takes ``qinit = S0`` instead, which is not the same history (RAPID lets the
  stored water drain from S0 with Muskingum's own state, with its lateral-inflow and
  start-of-sub-step conventions): the two warm starts are close, not equal.
* Scores: over 27 hours of slowly varying flow, NSE against NWM is dominated by the initial
  state, so the table also scores persistence (Q = S0).  Measured medians of NSE / KGE
  against NWM over the 76 gauged reaches (oracle; RAPID mode equal to 3 decimals):
  c = 0.1 m/s: -1.14 / 0.19; 0.2: -2.03 / -0.02; 0.3: -11.0 / -0.58; 0.5: -45.1 / -1.58;
  1.0: -155 / -3.98; 2.0: -234 / -4.16.  NWM's Muskingum-Cunge drains this low-flow basin
  (August 2021) more slowly than Muskingum with k = L / c for any c above ~0.1 m/s; we keep
  c = 1 m/s as the default (a typical celerity, not fitted to NWM).
* USGS: NWM's own streamflow scores a median NSE of about -3900 against USGS at these gauges
  (it is far above the observations at most of them, e.g. 130-180 m³/s against 22-24 m³/s at
  08147000), and our routing, started from NWM's state, inherits that bias.
* Lakes and reservoirs (LAKEPARM) are not modelled: flow passes through them as river reaches,
  so gauges below reservoirs are expected to differ from NWM and USGS.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from hydroscale.calibration.metrics import kge, nse
from hydroscale.io import load_lower_colorado
from hydroscale.routing import route_oracle
from hydroscale.routing.rapid import route_rapid

DT = 3600.0  # s, the CHRTOUT interval


def muskingum_params(length_m, celerity, dt_sub):
    """k (s) and x per reach: k = L / c, x = 0.2 clipped so all coefficients are >= 0."""
    k = np.asarray(length_m, np.float64) / celerity
    x = np.minimum(0.2, dt_sub / (2.0 * np.maximum(k, 1e-9)))
    k = np.maximum(k, dt_sub / (2.0 * (1.0 - x)))
    return k, x


def pass_through_fill(net, q, lateral):
    """``q`` [N] with NaN reaches set to their lateral inflow plus the inflow from upstream."""
    q = q.copy()
    inflow = np.zeros_like(q)
    order, ptr, down = net.topo_order, net.level_ptr, net.downstream
    for lv in range(net.n_levels):
        idx = order[ptr[lv] : ptr[lv + 1]]
        miss = idx[np.isnan(q[idx])]
        q[miss] = inflow[miss] + lateral[miss]
        d = down[idx]
        m = d >= 0
        np.add.at(inflow, d[m], q[idx][m])
    return q


def interval_means_15min(obs, starts):
    """Mean of the 15-min values in each hour (start, start + 1 h]; NaN if fewer than 3."""
    t = obs["time"].values
    out = np.full((obs.shape[0], starts.size), np.nan)
    for j, s in enumerate(starts):
        m = (t > s) & (t <= s + np.timedelta64(1, "h"))
        v = obs.values[:, m]
        ok = np.isfinite(v).sum(1) >= 3
        with np.errstate(invalid="ignore"):
            out[ok, j] = np.nanmean(v[ok], axis=1)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--celerity", type=float, default=1.0, help="wave celerity c (m/s)")
    p.add_argument("--substeps", type=int, default=12, help="sub-steps per hour")
    p.add_argument("--out", default="lower_colorado_out", help="folder for PNGs and CSV")
    a = p.parse_args(argv)
    t_start = time.perf_counter()
    lc = load_lower_colorado()
    net = lc.network
    f = a.substeps
    dt_sub = DT / f
    k_s, x = muskingum_params(net.attrs["length"], a.celerity, dt_sub)
    qlat = lc.q_lateral.values.astype(np.float64)  # [N, 28], hour ending at time
    s_nwm = lc.streamflow.values.astype(np.float64)  # [N, 28], instantaneous
    starts = lc.q_lateral["time"].values[:-1]  # interval (start, start + 1 h]
    forcing = qlat[:, 1:]  # [N, 27]
    nwm_mean = 0.5 * (s_nwm[:, :-1] + s_nwm[:, 1:])

    # --- initial state: NWM streamflow at 13:00; lake reaches (NaN in CHRTOUT) pass through
    q0 = pass_through_fill(net, s_nwm[:, 0], qlat[:, 0])

    # --- exact oracle, warm-started by superposition (see the module docstring)
    incr = q0.copy()
    has = net.downstream >= 0
    np.subtract.at(incr, net.downstream[has], q0[has])  # steady lateral inflow giving q0
    params = {"k": torch.tensor(k_s / DT), "x": torch.tensor(x)}
    t0 = time.perf_counter()
    q_oracle = q0[:, None] + route_oracle(
        net, torch.tensor(forcing - incr[:, None]), "muskingum", params, substeps=f
    ).numpy()
    t_oracle = time.perf_counter() - t0

    # --- RAPID mode with Qinit
    t0 = time.perf_counter()
    q_rapid, _ = route_rapid(net, forcing, k_s, x, DT, dt_sub, qinit=q0)
    q_rapid = q_rapid.numpy()
    t_rapid = time.perf_counter() - t0

    # --- scores at the gauges
    obs = lc.usgs_at_reaches
    gauge_ids = obs["reach"].values
    rows = net.index_of(gauge_ids)
    usgs = interval_means_15min(obs, starts)  # [G, 27], NaN after 23:45
    has_obs = np.isfinite(usgs).sum(1) >= 8
    res = {}
    persistence = np.repeat(q0[:, None], forcing.shape[1], 1)  # baseline: Q stays at S0
    for name, q in (("oracle", q_oracle), ("rapid", q_rapid), ("persistence", persistence)):
        res[name] = dict(
            nse_nwm=nse(q[rows], nwm_mean[rows]), kge_nwm=kge(q[rows], nwm_mean[rows]),
            nse_usgs=nse(q[rows], usgs), kge_usgs=kge(q[rows], usgs))
    ref_nse, ref_kge = nse(nwm_mean[rows], usgs), kge(nwm_mean[rows], usgs)
    diff = np.abs(q_oracle - q_rapid).max() / np.abs(q_rapid).max()

    def med(v, m=slice(None)):
        v = np.asarray(v)[m]
        return np.nanmedian(v) if np.isfinite(v).any() else np.nan

    print(f"Lower Colorado: {net.n_reaches} reaches, {net.n_levels} levels, "
          f"{len(gauge_ids)} gauged reaches ({int(has_obs.sum())} with >= 8 h of USGS data)")
    print(f"Muskingum k = L/c, c = {a.celerity} m/s, x <= 0.2, f = {f} sub-steps; "
          f"{int(np.isnan(s_nwm[:, 0]).sum())} lake reaches without NWM flow pass through")
    print(f"oracle {t_oracle:.1f} s, RAPID mode {t_rapid:.1f} s; "
          f"max |oracle - RAPID| / max Q = {diff:.2e}")
    print()
    print(f"{'median over gauges':24s} {'NSE/NWM':>8s} {'KGE/NWM':>8s} "
          f"{'NSE/USGS':>9s} {'KGE/USGS':>9s}")
    labels = {"oracle": "hydroscale oracle", "rapid": "hydroscale RAPID mode",
              "persistence": "persistence (Q = S0)"}
    for name in ("oracle", "rapid", "persistence"):
        r = res[name]
        print(f"{labels[name]:24s} {med(r['nse_nwm']):8.3f} {med(r['kge_nwm']):8.3f} "
              f"{med(r['nse_usgs'], has_obs):9.3f} {med(r['kge_usgs'], has_obs):9.3f}")
    print(f"{'NWM streamflow':24s} {'':8s} {'':8s} {med(ref_nse, has_obs):9.3f} "
          f"{med(ref_kge, has_obs):9.3f}")
    print()
    big = np.argsort(-nwm_mean[rows].mean(1))[:10]
    print(f"{'reach':>10s} {'station':>9s} {'NWM m3/s':>9s} {'NSE/NWM':>8s} {'KGE/NWM':>8s} "
          f"{'NSE/USGS':>9s} {'KGE/USGS':>9s} {'NWM NSE/USGS':>13s}")
    r = res["oracle"]
    for g in big:
        print(f"{gauge_ids[g]:>10d} {str(obs['station'].values[g]):>9s} "
              f"{nwm_mean[rows[g]].mean():9.2f} {r['nse_nwm'][g]:8.3f} {r['kge_nwm'][g]:8.3f} "
              f"{r['nse_usgs'][g]:9.3f} {r['kge_usgs'][g]:9.3f} {ref_nse[g]:13.3f}")

    os.makedirs(a.out, exist_ok=True)
    table = np.column_stack([gauge_ids, nwm_mean[rows].mean(1), r["nse_nwm"], r["kge_nwm"],
                             r["nse_usgs"], r["kge_usgs"], ref_nse, ref_kge])
    np.savetxt(os.path.join(a.out, "scores.csv"), table, delimiter=",", fmt="%.6g",
               header="reach,mean_nwm_m3s,nse_nwm,kge_nwm,nse_usgs,kge_usgs,"
                      "nwm_nse_usgs,nwm_kge_usgs", comments="")
    _plot(a.out, starts, gauge_ids, obs["station"].values, rows, big[:6], q_oracle, q_rapid,
          nwm_mean, usgs)
    print(f"\nwrote {a.out}/scores.csv and {a.out}/hydrographs.png "
          f"in {time.perf_counter() - t_start:.1f} s")


def _plot(out, starts, gauge_ids, stations, rows, which, q_oracle, q_rapid, nwm_mean, usgs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mid = starts + np.timedelta64(30, "m")
    fig, axes = plt.subplots(2, 3, figsize=(14, 7), sharex=True)
    for ax, g in zip(axes.ravel(), which):
        j = rows[g]
        ax.plot(mid, nwm_mean[j], "k-", lw=2, label="NWM streamflow")
        ax.plot(mid, q_oracle[j], "C0-", label="hydroscale oracle (warm start)")
        ax.plot(mid, q_rapid[j], "C1--", label="hydroscale RAPID mode (Qinit)")
        ax.plot(mid, usgs[g], "C3o", ms=3, label="USGS (hourly mean)")
        ax.set_title(f"reach {gauge_ids[g]} / USGS {stations[g]}", fontsize=9)
        ax.set_ylabel("m³/s")
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Lower Colorado (TX), 2021-08-23 13:00 + 27 h")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "hydrographs.png"), dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
