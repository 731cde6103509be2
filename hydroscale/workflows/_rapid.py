"""Run a RAPID2 case as RAPID2 would: ``hydroscale route NAMELIST.yml``.

The namelist (:mod:`hydroscale.io.rapid2`) gives the basin, k, x, the inflow, the initial
discharge and the sub-step; the case is routed in RAPID mode (:func:`hydroscale.route_rapid`:
RAPID's matrix Muskingum, exact) and written where the namelist says: ``Qou_ncf`` (RAPID
``Qout``: interval means on the basin's reaches) and ``Qfi_ncf`` (RAPID ``Qfinal``: the
instantaneous discharge at the end of the run, readable as the next run's ``Q00_ncf``).
Unlike RAPID2, whose ``Qfi_ncf`` lists every reach of the domain, the final state holds the
basin's reaches only.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["run_rapid_namelist"]

logger = logging.getLogger(__name__)


def run_rapid_namelist(path: Any, *, overwrite: bool = False) -> dict[str, Any]:
    """Route the RAPID2 case of the namelist ``path``; write its ``Qou_ncf`` and ``Qfi_ncf``.

    Returns a summary: ``reaches``, ``steps``, ``interval_s``, ``substeps``, ``wall_s`` and
    ``outputs`` (the two files).  An existing output file is refused unless ``overwrite``.
    """
    from ..api import route_rapid
    from ..io.rapid import write_qfinal, write_qout
    from ..io.rapid2 import read_rapid2_namelist

    t0 = time.perf_counter()
    case = read_rapid2_namelist(path)
    outs = {"Qou_ncf": case.qout_path, "Qfi_ncf": case.qfinal_path}
    for key, out in outs.items():
        if out is None:
            raise ValueError(f"{path}: {key} is not set: the namelist names where RAPID2 "
                             "writes its outputs")
        if Path(out).exists() and not overwrite:
            raise FileExistsError(f"{out} ({key} of {path}) exists; pass --overwrite to "
                                  "replace it")
        Path(out).parent.mkdir(parents=True, exist_ok=True)
    qout, qfinal = route_rapid(case.network, case.qext, case.k_s, case.x, dtR=case.dtR_s,
                               qinit=case.qinit)
    dt = case.dt_s
    times = case.qext["time"].values
    ids = case.network.ids
    write_qout(case.qout_path, qout.values, ids, times, dt,
               title=f"hydroscale RAPID mode of {path}")
    write_qfinal(case.qfinal_path, qfinal.values, ids, np.atleast_1d(qfinal["time"].values),
                 title=f"hydroscale RAPID mode final state of {path}")
    f = int(round(dt / case.dtR_s))
    logger.info("RAPID mode: %d reaches x %d intervals of %g s, %d sub-steps", ids.size,
                times.size, dt, f)
    return {"namelist": str(path), "reaches": int(ids.size), "steps": int(times.size),
            "interval_s": dt, "substeps": f, "wall_s": round(time.perf_counter() - t0, 3),
            "outputs": {"Qou_ncf": case.qout_path, "Qfi_ncf": case.qfinal_path}}
