"""Bundled real data: the Lower Colorado River basin (Texas) from an operational NWM run.

:func:`load_lower_colorado` reads ``hydroscale/data/lower_colorado.npz`` (built by
``examples/make_lower_colorado_data.py`` from the t-route test data, Apache-2.0, licence in
``hydroscale/data/LICENSE-t-route.txt``); it needs nothing outside the package.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from ..network import RiverNetwork
from .nwm import observations_at_reaches

__all__ = ["LowerColorado", "load_lower_colorado", "DATA_DIR"]

logger = logging.getLogger(__name__)

DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
_ATTRS = ("length", "slope", "manning_n", "musk", "musx", "order", "lat", "lon", "gages")


@dataclass(frozen=True)
class LowerColorado:
    """The bundled basin.

    Attributes
    ----------
    network : 11,248 reaches (NHD COMIDs), one outlet; attributes ``length`` (m), ``slope``,
        ``manning_n``, ``musk`` (s), ``musx``, ``order``, ``lat``, ``lon``, ``gages``.
    q_lateral : ``(reach, time)`` float32 m³/s, 28 hourly steps from 2021-08-23 13:00 UTC
        (NWM lateral inflow; ``time`` is the end of each hour).
    streamflow : ``(reach, time)`` float32 m³/s, NWM's own routed discharge (a reference).
    usgs : ``(station, time)`` float32 m³/s, 15-minute USGS observations (NaN = missing) of the
        stations on gauged reaches, 2021-08-23 00:00 .. 23:45 UTC.
    """

    network: RiverNetwork
    q_lateral: xr.DataArray
    streamflow: xr.DataArray
    usgs: xr.DataArray

    @property
    def usgs_at_reaches(self) -> xr.DataArray:
        """USGS observations ``(reach, time)`` on the gauged reaches (``station`` coordinate)."""
        return observations_at_reaches(self.usgs, self.network)

    @property
    def lakes(self) -> Any:
        """The basin's 30 level-pool lakes (:class:`~hydroscale.routing.Lakes`, NWM v2.1
        LAKEPARM parameters, 371 member reaches; ``lower_colorado_lakes.csv``)."""
        from .lakes import read_lake_table

        return read_lake_table(os.path.join(DATA_DIR, "lower_colorado_lakes.csv"))

    @property
    def gauged_reaches(self) -> np.ndarray:
        """Ids of the reaches whose station has observations, int64 [G]."""
        obs = self.usgs_at_reaches
        return obs["reach"].values[obs.notnull().any("time").values]

    def nwm_discharge(self, step: int = 0) -> np.ndarray:
        """NWM's streamflow at CHRTOUT step ``step`` as a complete discharge ``[N]`` (m³/s,
        float64, network order).

        NWM reports no streamflow on the 341 reaches inside lakes (NaN in CHRTOUT); there
        the discharge is their lateral inflow plus what flows in from upstream (the water
        passes through), so every reach has a value and a lake's outlet reach keeps NWM's
        release.
        """
        nt = self.streamflow.sizes["time"]
        if not -nt <= step < nt:
            raise IndexError(f"step {step} is outside the {nt} CHRTOUT steps of the bundled "
                             f"streamflow (0 .. {nt - 1})")
        net = self.network
        q = self.streamflow.values[:, step].astype(np.float64)
        lateral = self.q_lateral.values[:, step].astype(np.float64)
        inflow = np.zeros(net.n_reaches)
        order, ptr, down = net.topo_order, net.level_ptr, net.downstream
        for lv in range(net.n_levels):  # upstream first: a lake reach's inflow is complete
            idx = order[ptr[lv] : ptr[lv + 1]]
            miss = idx[np.isnan(q[idx])]
            q[miss] = inflow[miss] + lateral[miss]
            d = down[idx]
            has = d >= 0
            np.add.at(inflow, d[has], q[idx[has]])
        return q


def load_lower_colorado(path: str | None = None) -> LowerColorado:
    """Load the bundled Lower Colorado data (see :class:`LowerColorado`)."""
    path = path or os.path.join(DATA_DIR, "lower_colorado.npz")
    with np.load(path, allow_pickle=False) as z:
        attrs = {name: z[name] for name in _ATTRS}
        net = RiverNetwork.from_arrays(z["link"], z["to"], **attrs)
        coords = {"reach": net.ids, "time": z["chrt_time"].astype("datetime64[ns]")}
        flow = {"units": "m3 s-1"}
        q_lat = xr.DataArray(z["q_lateral"], coords, ("reach", "time"), "q_lateral", flow)
        q_nwm = xr.DataArray(z["streamflow"], coords, ("reach", "time"), "streamflow", flow)
        usgs = xr.DataArray(
            z["usgs_discharge"],
            {"station": z["usgs_station"], "time": z["usgs_time"].astype("datetime64[ns]")},
            ("station", "time"),
            "discharge",
            flow,
        )
    logger.debug("loaded %s: %s", path, net)
    return LowerColorado(net, q_lat, q_nwm, usgs)
