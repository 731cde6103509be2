"""Gauge observations by reach id, and train/validation periods.

:class:`GaugeObservations` holds discharge ``[G, T]`` (m³/s, NaN where missing) at ``G``
gauged reaches, identified by reach id, on the routing time axis.  Readers:

- :meth:`GaugeObservations.from_csv`: a wide table, first column the time (or step number),
  one column per reach id (header = the id); empty cells are missing;
- :meth:`GaugeObservations.from_netcdf` / :meth:`from_zarr` / :meth:`from_dataarray`: a
  variable with dims ``(reach, time)`` (or ``(gauge, time)``) and a coordinate holding the reach
  ids (``reach``, ``gauge``, ``rivid``, ``link`` or ``feature_id``).

:class:`Period` selects steps ``[start, stop)`` of the routing period, by index or by time
label; the calibrator uses one for training and one for validation.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..network import RiverNetwork

__all__ = ["GaugeObservations", "Period"]

logger = logging.getLogger(__name__)

_ID_COORDS = ("reach", "gauge", "rivid", "link", "feature_id", "id")


@dataclass(frozen=True)
class Period:
    """Steps ``[start, stop)`` of the routing period (``None`` = from the start / to the end).

    ``start``/``stop`` are step indices, or time labels (anything numpy compares with the
    observations' ``time``, e.g. ``"2021-08-23"``) resolved by :meth:`resolve`.
    """

    start: Any = None
    stop: Any = None

    def resolve(self, n_steps: int, time: np.ndarray | None = None) -> slice:
        """The period as a slice of step indices on a time axis of ``n_steps``."""
        bounds = []
        for v in (self.start, self.stop):
            if v is None or isinstance(v, (int, np.integer)):
                bounds.append(None if v is None else int(v))
                continue
            if time is None:
                raise ValueError(f"period bound {v!r} is a label but the observations have no "
                                 "time coordinate; give step indices")
            t = np.asarray(time)
            bounds.append(int(np.searchsorted(t, np.asarray(v, dtype=t.dtype))))
        s = slice(*bounds)
        a, b, _ = s.indices(n_steps)
        if b <= a:
            raise ValueError(f"period {self} selects no step of the {n_steps}-step period")
        return slice(a, b)


class GaugeObservations:
    """Observed discharge at gauged reaches.

    Parameters
    ----------
    ids : ``[G]`` reach ids of the gauges (unique).
    values : ``[G, T]`` discharge (m³/s) on the routing time axis, NaN where missing.
    time : optional ``[T]`` time labels (e.g. ``datetime64``).
    names : optional ``[G]`` gauge names (e.g. USGS station ids) for display.
    """

    def __init__(self, ids: Any, values: Any, time: Any = None, names: Any = None) -> None:
        ids = np.asarray(ids).astype(np.int64).reshape(-1)
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[0] != ids.size:
            raise ValueError(f"values must be [G={ids.size}, T], got {values.shape}")
        uniq, counts = np.unique(ids, return_counts=True)
        if np.any(counts > 1):
            raise ValueError(f"gauge reach ids listed twice: {uniq[counts > 1][:10].tolist()}")
        if time is not None and len(time) != values.shape[1]:
            raise ValueError(f"time must have T={values.shape[1]} labels, got {len(time)}")
        if np.any(np.isinf(values)):
            raise ValueError("observations hold infinite values; use NaN for missing data")
        self.ids = ids
        self.values = values
        self.time = None if time is None else np.asarray(time)
        self.names = None if names is None else np.asarray(names).astype(str)

    def __len__(self) -> int:
        return int(self.ids.size)

    @property
    def n_steps(self) -> int:
        return int(self.values.shape[1])

    def __repr__(self) -> str:
        valid = np.isfinite(self.values).mean() if self.values.size else 0.0
        return (f"GaugeObservations(gauges={len(self)}, steps={self.n_steps}, "
                f"valid={valid:.0%})")

    # ------------------------------------------------------------------ selection
    def index_in(self, network: RiverNetwork) -> np.ndarray:
        """Reach indices ``[G]`` of the gauges in ``network`` (error naming missing ids)."""
        try:
            return network.index_of(self.ids)
        except KeyError as err:
            raise ValueError(f"gauges are not all in the network ({err.args[0]}); drop them "
                             "with .subset(ids)") from None

    def subset(self, ids: Any) -> GaugeObservations:
        """The gauges with reach ids ``ids`` (in that order)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        where = {int(v): i for i, v in enumerate(self.ids)}
        missing = [int(v) for v in ids if int(v) not in where]
        if missing:
            raise KeyError(f"no gauge at reach ids {missing[:10]}")
        rows = np.array([where[int(v)] for v in ids], dtype=np.int64)
        return GaugeObservations(self.ids[rows], self.values[rows], self.time,
                                 None if self.names is None else self.names[rows])

    def period(self, period: Period | slice | None) -> slice:
        """A :class:`Period` (or slice, or None = everything) as a slice of steps."""
        if period is None:
            return slice(0, self.n_steps)
        if isinstance(period, slice):
            period = Period(period.start, period.stop)
        return period.resolve(self.n_steps, self.time)

    def valid_counts(self, period: Period | slice | None = None) -> np.ndarray:
        """Number of observed steps ``[G]`` in ``period``."""
        return np.isfinite(self.values[:, self.period(period)]).sum(-1)

    # ------------------------------------------------------------------ readers
    @classmethod
    def from_csv(cls, path: str | Path, *, time_column: int = 0) -> GaugeObservations:
        """Read a wide CSV: header ``time,<id>,<id>,...``; one row per step."""
        path = Path(path)
        with path.open(newline="") as fh:
            rows = list(csv.reader(fh))
        if len(rows) < 2:
            raise ValueError(f"{path}: needs a header and at least one row")
        header = rows[0]
        cols = [i for i in range(len(header)) if i != time_column]
        try:
            ids = [int(header[i]) for i in cols]
        except ValueError:
            raise ValueError(f"{path}: the header must hold integer reach ids after the time "
                             f"column, got {header[:6]}") from None
        data = np.full((len(cols), len(rows) - 1), np.nan)
        for t, row in enumerate(rows[1:]):
            if len(row) != len(header):
                raise ValueError(f"{path}: row {t + 2} has {len(row)} cells, header {len(header)}")
            for g, i in enumerate(cols):
                cell = row[i].strip()
                if cell and cell.lower() != "nan":
                    data[g, t] = float(cell)
        time = np.array([r[time_column] for r in rows[1:]])
        try:
            time = time.astype("datetime64[ns]")
        except ValueError:
            try:
                time = time.astype(np.int64)
            except ValueError:
                pass
        return cls(ids, data, time)

    def to_csv(self, path: str | Path) -> Path:
        """Write the wide CSV read by :meth:`from_csv`."""
        path = Path(path)
        time = self.time if self.time is not None else np.arange(self.n_steps)
        with path.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["time", *[str(i) for i in self.ids]])
            for t in range(self.n_steps):
                w.writerow([str(time[t]), *["" if np.isnan(v) else repr(float(v))
                                            for v in self.values[:, t]]])
        return path

    @classmethod
    def from_dataarray(cls, da: Any) -> GaugeObservations:
        """From an ``xarray.DataArray`` with a gauge/reach dim holding reach ids and ``time``."""
        dims = list(da.dims)
        if len(dims) != 2 or "time" not in dims:
            raise ValueError(f"observations must have dims (reach, time), got {tuple(dims)}")
        gdim = dims[0] if dims[1] == "time" else dims[1]
        da = da.transpose(gdim, "time")
        ids = None
        for c in (gdim, *_ID_COORDS):
            if c in da.coords and da.coords[c].dims == (gdim,):
                ids = np.asarray(da.coords[c].values)
                break
        if ids is None:
            raise ValueError(f"no reach-id coordinate along {gdim!r}; expected one of "
                             f"{list(_ID_COORDS)}")
        names = da.coords["name"].values if "name" in da.coords else None
        time = da.coords["time"].values if "time" in da.coords else None
        return cls(ids, np.asarray(da.values, dtype=np.float64), time, names)

    @classmethod
    def from_netcdf(cls, path: str | Path, variable: str | None = None) -> GaugeObservations:
        """Read ``variable`` (default: the only data variable) of a NetCDF file."""
        import xarray as xr

        from ..io import netcdf_guard

        with netcdf_guard(path), xr.open_dataset(path) as ds:
            return cls.from_dataarray(_pick(ds, variable, path).load())

    @classmethod
    def from_zarr(cls, path: str | Path, variable: str | None = None) -> GaugeObservations:
        """Read ``variable`` (default: the only data variable) of a Zarr store."""
        import xarray as xr

        with xr.open_zarr(path, consolidated=False) as ds:
            return cls.from_dataarray(_pick(ds, variable, path).load())

    def to_dataarray(self) -> Any:
        """As an ``xarray.DataArray`` ``(reach, time)``."""
        import xarray as xr

        coords: dict[str, Any] = {"reach": self.ids}
        if self.time is not None:
            coords["time"] = self.time
        if self.names is not None:
            coords["name"] = ("reach", self.names)
        return xr.DataArray(self.values, dims=("reach", "time"), coords=coords,
                            name="discharge", attrs={"units": "m3 s-1"})


def _pick(ds: Any, variable: str | None, path: Any) -> Any:
    if variable is not None:
        if variable not in ds.data_vars:
            raise KeyError(f"{path}: no variable {variable!r}; has {sorted(ds.data_vars)}")
        return ds[variable]
    if len(ds.data_vars) != 1:
        raise ValueError(f"{path}: holds {sorted(ds.data_vars)}; name the variable to read")
    return ds[next(iter(ds.data_vars))]
