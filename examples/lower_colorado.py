"""Route NWM lateral inflow through the Lower Colorado (TX) as the demo does, and score it.

Usage::

    python examples/lower_colorado.py [--no-lakes] [--out lower_colorado_out]

Data: the bundled 11,248-reach basin (``hydroscale.io.load_lower_colorado``): 28 hourly
CHRTOUT files from 2021-08-23 13:00 UTC (NWM ``q_lateral`` over the hour ending then, and
NWM's own routed ``streamflow`` at that instant) and the 15-minute USGS observations of
2021-08-23 (until 23:45 UTC).

Routing: the demo's (``hydroscale demo``): Muskingum with NWM's own ``MusK`` and ``MusX``,
hourly steps, 28 hours, with the basin's 30 NWM level-pool lakes (``lakes=``, the bundled
LAKEPARM table; ``--no-lakes`` routes their reaches as river reaches); once from dry rivers
(lakes at NWM's initial fractional depth) and once warm-started from NWM's streamflow at
13:00 (``hydroscale.route(..., initial=Q0)``: the steady state that yields ``Q0``, each lake
at the level that releases ``Q0`` at its outlet; lake reaches, where NWM reports none, pass
their inflow through in ``Q0``; NWM's flow falls downstream at 314 reaches, whose negative
steady inflow is routed as it is, ``allow_negative=True``).  The warm start is also routed
without lakes, and the gauges below the Highland Lakes (downstream of Lake Buchanan) are
scored both ways.

What can be scored on 28 hours:

* Time: our step ``t`` is the mean over the hour ending at CHRTOUT time ``t``; it is compared
  with NWM's ``(S(t - 1 h) + S(t)) / 2`` and with the mean of the USGS values inside the hour.
  The first hour has no NWM value at its start: 27 hours are scored against NWM.  USGS
  overlaps the run for 11 hours only (until 23:45 of the first day).
* NSE divides by the reference's variance.  Lateral inflow is zero at 11,105 reaches and
  constant at 11,230 of 11,248, and NWM's streamflow is constant at most reaches: there NSE
  measures float32 rounding.  NSE is reported only where the reference varies
  (``hydroscale.calibration.metrics.varies``: range > 1 % of its mean and > 0.001 m³/s; the
  script says how many and which do not); bias (m³/s) and volume error are reported
  everywhere.
* Lakes: gauges below a lake (RouteLink ``NHDWaterbodyComID`` membership, from the bundled
  lake table) are listed apart.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import hydroscale
from hydroscale.calibration.metrics import score
from hydroscale.io import load_lower_colorado


def lake_reaches(net, lakes) -> np.ndarray:
    """Bool ``[N]``: reaches inside a lake (``lakes``: :class:`hydroscale.routing.Lakes`)."""
    lake = np.zeros(net.n_reaches, bool)
    lake[net.index_of(lakes.reach_ids)] = True
    return lake


def below_lake(net, lake: np.ndarray) -> np.ndarray:
    """Bool ``[N]``: a waterbody reach at or anywhere upstream of each reach."""
    return np.asarray(hydroscale.accumulate(net, lake.astype(np.float64))) > 0


def hourly_means_15min(obs, starts: np.ndarray) -> np.ndarray:
    """Mean of the 15-min values ``obs`` ``(station, time)`` in each hour (start, start + 1 h]
    ``[G, len(starts)]``; NaN where fewer than 3 values."""
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
    p.add_argument("--no-lakes", action="store_true",
                   help="route lake reaches as river reaches (no level-pool lakes)")
    p.add_argument("--out", default="lower_colorado_out", help="folder for the CSV")
    a = p.parse_args(argv)
    t_start = time.perf_counter()
    lc = load_lower_colorado()
    net = lc.network
    qlat = lc.q_lateral.values.astype(np.float64)  # [N, 28], hour ending at time
    s_nwm = lc.streamflow.values.astype(np.float64)  # [N, 28], instantaneous, NaN in lakes
    t_end = lc.q_lateral["time"].values
    params = {"k": net.attrs["musk"].astype(np.float64), "x": net.attrs["musx"]}
    q0 = lc.nwm_discharge(0)
    lakes = lc.lakes
    use = None if a.no_lakes else lakes

    t0 = time.perf_counter()
    runs = {
        "warm": np.asarray(hydroscale.route(net, qlat, "muskingum", params, dt=3600.0,
                                            initial=q0, allow_negative=True, lakes=use)),
        "dry": np.asarray(hydroscale.route(net, qlat, "muskingum", params, dt=3600.0,
                                           lakes=use)),
    }
    t_route = time.perf_counter() - t0
    other = np.asarray(hydroscale.route(net, qlat, "muskingum", params, dt=3600.0, initial=q0,
                                        allow_negative=True,
                                        lakes=lakes if a.no_lakes else None))

    # scored hours: 1..27 (NWM's hourly mean needs S at the hour's start)
    nwm_mean = 0.5 * (s_nwm[:, :-1] + s_nwm[:, 1:])  # [N, 27]
    obs = lc.usgs_at_reaches
    gauge_ids = obs["reach"].values
    stations = obs["station"].values.astype(str)
    rows = net.index_of(gauge_ids)
    usgs = hourly_means_15min(obs, t_end[1:] - np.timedelta64(1, "h"))  # [G, 27]
    usgs_hours = int(np.isfinite(usgs).any(0).sum())
    lake = lake_reaches(net, lakes)
    below = below_lake(net, lake)[rows]
    buchanan = lake_reaches(net, type(lakes).from_members(
        {k: lakes.reach_ids[lakes.lake_of == j] for j, k in enumerate(lakes.ids)
         if lakes.names and lakes.names[j] == "Lake Buchanan"}, lakes.params[:1], [0.0]))
    highland = below_lake(net, buchanan)[rows]
    ref = nwm_mean[rows]
    has_nwm = np.isfinite(ref).all(1)

    sc = {k: score(q[rows, 1:], ref) for k, q in runs.items()}
    sc_other = score(other[rows, 1:], ref)
    su = {k: score(q[rows, 1:], usgs) for k, q in runs.items()}
    su_nwm = score(ref, usgs)
    varies = sc["warm"]["varies"]

    moving = {k: int((np.ptp(q, axis=1) > 1e-3).sum()) for k, q in runs.items()}
    reported = np.isfinite(s_nwm).all(1)  # NWM reports no streamflow inside lakes
    nwm_moving = int((np.ptp(s_nwm[reported], axis=1) > 1e-3).sum())
    print(f"Lower Colorado: {net.n_reaches:,} reaches, 28 hourly steps from "
          f"{str(t_end[0] - np.timedelta64(1, 'h'))[:16]} UTC, Muskingum (NWM MusK, MusX); "
          f"{'without lakes' if a.no_lakes else f'{lakes.n_lakes} level-pool lakes'}; "
          f"routed twice in {t_route:.1f} s")
    print(f"reaches whose discharge changes by > 0.001 m³/s over the run: warm start "
          f"{moving['warm']:,}, dry start {moving['dry']:,}; NWM {nwm_moving:,} of the "
          f"{int(reported.sum()):,} reaches it reports (lateral inflow varies at "
          f"{int((np.ptp(qlat, axis=1) > 0).sum())})")
    print(f"lakes: {lakes.n_lakes} lakes, {int(lake.sum())} waterbody reaches (RouteLink "
          f"NHDWaterbodyComID, bundled lake table); {int(below.sum())} of {len(rows)} gauged "
          "reaches lie in or below one")
    print(f"against NWM (27 hourly means): NWM varies at {int(varies.sum())} of "
          f"{int(has_nwm.sum())} gauged reaches (NSE reported there); constant at "
          f"{int((has_nwm & ~varies).sum())} (bias and volume error only): stations "
          f"{', '.join(stations[has_nwm & ~varies])}")
    print(f"against USGS: the observations overlap the run for {usgs_hours} hours "
          f"(until 2021-08-23 23:45 UTC); {int(np.isfinite(usgs).any(1).sum())} stations "
          f"have data, varying at {int(su['warm']['varies'].sum())}")

    def med(v, m):
        v = np.asarray(v)[m]
        return f"{np.nanmedian(v):8.3f}" if np.isfinite(v).any() else f"{'-':>8s}"

    print()
    print(f"{'median over gauges (bias in m³/s)':34s} {'n':>3s} {'NSE warm':>8s} "
          f"{'NSE dry':>8s} {'bias warm':>9s} {'bias dry':>8s}")
    for label, m in (("against NWM, varies, not below lake", varies & ~below),
                     ("against NWM, varies, below a lake", varies & below),
                     ("against NWM, constant (no NSE)", has_nwm & ~varies)):
        print(f"{label:34s} {int(m.sum()):3d} {med(sc['warm']['nse'], m)} "
              f"{med(sc['dry']['nse'], m)} {med(sc['warm']['bias'], m):>9s} "
              f"{med(sc['dry']['bias'], m)}")
    uv = su["warm"]["varies"]
    print(f"{'against USGS (' + str(usgs_hours) + ' h), USGS varies':34s} {int(uv.sum()):3d} "
          f"{med(su['warm']['nse'], uv)} {med(su['dry']['nse'], uv)} "
          f"{med(su['warm']['bias'], uv):>9s} {med(su['dry']['bias'], uv)}")
    print(f"{'  NWM itself against USGS':34s} {int(uv.sum()):3d} {med(su_nwm['nse'], uv)} "
          f"{'':8s} {med(su_nwm['bias'], uv):>9s}   (a warm start inherits NWM's state)")

    print()
    print("gauged reaches not below a lake where NWM varies (27 h against NWM's hourly means):")
    print(f"{'station':>9s} {'reach':>9s} {'NWM m³/s':>9s} {'NSE warm':>9s} {'NSE dry':>9s} "
          f"{'bias warm':>10s} {'bias dry':>9s} {'vol warm':>9s}")
    for g in np.nonzero(varies & ~below)[0][np.argsort(-ref[varies & ~below].mean(1))]:
        w, d = sc["warm"], sc["dry"]
        print(f"{stations[g]:>9s} {gauge_ids[g]:>9d} {ref[g].mean():9.2f} {w['nse'][g]:9.3f} "
              f"{d['nse'][g]:9.3f} {w['bias'][g]:10.3f} {d['bias'][g]:9.3f} "
              f"{w['volume_error'][g]:9.3f}")

    tag, tag_other = ("no lakes", "lakes") if a.no_lakes else ("lakes", "no lakes")
    print()
    print(f"gauged reaches below the Highland Lakes (downstream of Lake Buchanan), warm start, "
          f"27 h against NWM's hourly means: {tag} vs {tag_other}")
    print(f"{'station':>9s} {'reach':>9s} {'NWM m³/s':>9s} {'NSE ' + tag:>13s} "
          f"{'NSE ' + tag_other:>13s} {'bias ' + tag:>13s} {'bias ' + tag_other:>13s}")
    for g in np.nonzero(highland & has_nwm)[0][np.argsort(-ref[highland & has_nwm].mean(1))]:
        w = sc["warm"]
        print(f"{stations[g]:>9s} {gauge_ids[g]:>9d} {ref[g].mean():9.2f} {w['nse'][g]:13.3f} "
              f"{sc_other['nse'][g]:13.3f} {w['bias'][g]:13.3f} {sc_other['bias'][g]:13.3f}")
    print("(NSE is NaN where NWM's hourly means do not vary: see above)")

    os.makedirs(a.out, exist_ok=True)
    w, d = sc["warm"], sc["dry"]
    table = np.column_stack([gauge_ids, below, varies, np.nanmean(ref, 1), w["nse"], d["nse"],
                             w["bias"], d["bias"], w["volume_error"], d["volume_error"],
                             su["warm"]["nse"], su["warm"]["bias"], su_nwm["nse"],
                             su_nwm["bias"]])
    path = os.path.join(a.out, "scores.csv")
    np.savetxt(path, table, delimiter=",", fmt="%.6g",
               header="reach,below_lake,nwm_varies,mean_nwm_m3s,nse_nwm_warm,nse_nwm_dry,"
                      "bias_nwm_warm,bias_nwm_dry,volerr_nwm_warm,volerr_nwm_dry,"
                      "nse_usgs_warm,bias_usgs_warm,nse_usgs_nwm,bias_usgs_nwm", comments="")
    print(f"\nwrote {path} in {time.perf_counter() - t_start:.1f} s "
          "(hydrographs: `hydroscale demo` writes out/demo/hydrographs.png)")


if __name__ == "__main__":
    main()
