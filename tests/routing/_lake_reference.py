"""An independent float64 level-pool lake, written from the published NWM / WRF-Hydro
LEVELPOOL_PHYSICS equations: plain Python, one lake, one step at a time (the tests' reference)."""

from __future__ import annotations

import math

G = 9.81


def ref_discharge(h: float, lk: dict) -> float:
    """NWM's elevation-discharge relation, branch by branch (the weir head capped at the max
    elevation, the orifice below the weir, overtopping above the max elevation)."""
    we, emax, oe = lk["weir_elevation"], lk["max_elevation"], lk["orifice_elevation"]
    wc, wl, dl = lk["weir_coefficient"], lk["weir_length"], lk["dam_length"]
    oc, oa = lk["orifice_coefficient"], lk["orifice_area"]
    weir_head = min(h - we, emax - we)
    if h > emax:
        return (oc * oa * math.sqrt(2 * G * (h - oe)) + wc * wl * weir_head ** 1.5
                + wc * (wl * dl) * (h - emax) ** 1.5)
    if weir_head > 0:
        return oc * oa * math.sqrt(2 * G * (h - oe)) + wc * wl * weir_head ** 1.5
    if h > oe:
        return oc * oa * math.sqrt(2 * G * (h - oe))
    return 0.0


def ref_route(inflow: list[float], lk: dict, dt: float, h0: float) -> tuple[list, list]:
    """One lake: RK3 with stages at 1/3 and 2/3 of the step, weights 1/4, 3/4; the step's
    outflow is the mean the scheme removes (0.25 Q1 + 0.75 Q3)."""
    area, h, outs, levels = lk["area"], h0, [], []
    for i in inflow:
        q1 = ref_discharge(h, lk)
        dh1 = (i - q1) / area * dt
        q2 = ref_discharge(h + dh1 / 3.0, lk)
        dh2 = (i - q2) / area * dt
        q3 = ref_discharge(h + 2.0 * dh2 / 3.0, lk)
        dh3 = (i - q3) / area * dt
        h = h + dh1 / 4.0 + 0.75 * dh3
        outs.append(0.25 * q1 + 0.75 * q3)
        levels.append(h)
    return outs, levels
