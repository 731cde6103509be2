"""Writers of a small RAPID2 case: the namelist and its tables as RAPID2 2.0.0b2 documents
them (keys Qex_ncf, Q00_ncf, con_pqt, kpr_pqt, xpr_pqt, bas_pqt, IS_dtR, Qou_ncf, Qfi_ncf;
tables riv,dwn / riv,kpr / riv,xpr / riv), with RAPID's published matrix Muskingum recursion
(David et al. 2011) as the oracle."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hydroscale.io.rapid import write_qfinal, write_rapid_inflow

# the domain: RAPID2's sandbox shape (10, 20 -> 30; 30, 40 -> 50; 50 -> 0) plus reach 60,
# upstream of 10 but outside the basin; the basin is listed in its own order
DOMAIN = np.array([10, 20, 30, 40, 50, 60])
DOWN = np.array([30, 30, 50, 50, 0, 10])
BASIN = np.array([20, 10, 40, 30, 50])
K = {10: 9000.0, 20: 7200.0, 30: 10800.0, 40: 5400.0, 50: 9000.0, 60: 3600.0}
X = {10: 0.25, 20: 0.1, 30: 0.3, 40: 0.0, 50: 0.2, 60: 0.2}
DT, DTR, STEPS = 10800, 900, 8
T0 = np.datetime64("1970-01-01T00:00:00", "s")


def qext_values():
    """[domain reach, step] m3/s."""
    rng = np.random.default_rng(7)
    return rng.uniform(0.0, 4.0, (DOMAIN.size, STEPS))


def qinit_values():
    return np.array([1.0, 2.0, 3.0, 0.5, 6.0, 9.0])


def write_case(folder, fmt="csv"):
    """The case under ``folder`` (input/ and output/ as RAPID2 lays it out); returns the
    namelist path.  ``fmt``: "csv" or "parquet" tables."""
    inp = folder / "input"
    inp.mkdir(parents=True, exist_ok=True)
    tables = {
        "con": pd.DataFrame({"riv": DOMAIN, "dwn": DOWN}),
        "kpr": pd.DataFrame({"riv": DOMAIN[::-1], "kpr": [K[r] for r in DOMAIN[::-1]]}),
        "xpr": pd.DataFrame({"riv": DOMAIN, "xpr": [X[r] for r in DOMAIN]}),
        "bas": pd.DataFrame({"riv": BASIN}),
    }
    names = {}
    for key, df in tables.items():
        path = inp / f"{key}_tiny.{fmt}"
        if fmt == "csv":
            df.to_csv(path, index=False)
        else:
            df.astype({c: "int32" for c in df.columns if c in ("riv", "dwn")}).to_parquet(path)
        names[key] = f"./input/{path.name}"
    times = T0 + np.arange(STEPS) * np.timedelta64(DT, "s")
    write_rapid_inflow(inp / "Qex_tiny.nc4", qext_values(), DOMAIN, times, DT, as_volume=False)
    write_qfinal(inp / "Q00_tiny.nc4", qinit_values(), DOMAIN, T0)
    nml = folder / "input" / "nml_tiny.yml"
    nml.write_text(
        "---\n"
        "Qex_ncf: './input/Qex_tiny.nc4'\n"
        "Q00_ncf: './input/Q00_tiny.nc4'\n"
        f"con_pqt: '{names['con']}'\n"
        f"kpr_pqt: '{names['kpr']}'\n"
        f"xpr_pqt: '{names['xpr']}'\n"
        f"bas_pqt: '{names['bas']}'\n"
        f"IS_dtR: {DTR}\n"
        "Qou_ncf: './output/Qou_tiny.nc4'\n"
        "Qfi_ncf: './output/Qfi_tiny.nc4'\n")
    return nml


def rapid_recursion(ids, down, qext, k, x, dt, dtr, qinit):
    """RAPID's sub-step recursion, dense: (I - C1 N) Q+ = C2 N Q + (C1 + C2) Qext + C3 Q;
    Qout = mean over the interval of the start-of-sub-step states; returns (Qout, Qfinal)."""
    n, steps = qext.shape
    f = int(round(dt / dtr))
    pos = {int(r): i for i, r in enumerate(ids)}
    net = np.zeros((n, n))
    for i, d in enumerate(down):
        if int(d) in pos:
            net[pos[int(d)], i] = 1.0
    den = k * (1 - x) + dtr / 2
    c1, c2, c3 = (dtr / 2 - k * x) / den, (dtr / 2 + k * x) / den, (k * (1 - x) - dtr / 2) / den
    a = np.eye(n) - np.diag(c1) @ net
    q = np.asarray(qinit, float).copy()
    qout = np.zeros((n, steps))
    for t in range(steps):
        for _ in range(f):
            qout[:, t] += q / f
            q = np.linalg.solve(a, c2 * (net @ q) + (c1 + c2) * qext[:, t] + c3 * q)
    return qout, q


def expected_basin():
    """Qout [5, T] and Qfinal [5] of the basin (rows in BASIN order) by the recursion."""
    rows = [list(DOMAIN).index(r) for r in BASIN]
    down = DOWN[rows]
    return rapid_recursion(BASIN, down, qext_values()[rows], np.array([K[r] for r in BASIN]),
                           np.array([X[r] for r in BASIN]), DT, DTR, qinit_values()[rows])
