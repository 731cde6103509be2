"""A finished output store as a NetCDF file: CF-1.8 NetCDF-4, or a RAPID ``Qout`` file.

:func:`export_output` streams the store one time chunk at a time (memory: all reaches x one
chunk), so a run's output of any length converts.  It refuses an incomplete store.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..network import RiverNetwork
from . import _zarr as fmt
from ._common import IOFormatError
from .rapid import append_qout, create_qout

__all__ = ["EXPORT_FORMATS", "export_output"]

logger = logging.getLogger(__name__)

#: what :func:`export_output` writes
EXPORT_FORMATS = ("netcdf", "rapid")


def export_output(store: Any, path: Any, format: str = "netcdf", *,
                  network: RiverNetwork | None = None, time_chunk: int | None = None) -> Path:
    """Write the complete output store ``store`` to the NetCDF file ``path``.

    ``format``: ``"netcdf"``, CF-1.8 NetCDF-4 with ``discharge(reach, time)`` in the store's
    dtype (m³/s; ``units``, ``standard_name``, ``long_name``, ``cell_methods``), ``reach``
    ids (``cf_role: timeseries_id``), ``time`` (interval starts, CF units and calendar) with
    ``time_bnds``, and the store's run metadata as global attributes; or ``"rapid"``, a RAPID
    ``Qout`` file (``Qout(time, rivid)`` float32, CF-1.6, as RAPID writes it:
    :func:`hydroscale.io.rapid.create_qout`).  Rows follow ``network`` when given (else the
    store's row order).  ``time_chunk``: steps converted at a time (default the store's
    chunk).  An existing ``path`` is replaced (written to a temporary file first).
    """
    if format not in EXPORT_FORMATS:
        raise ValueError(f"format must be one of {list(EXPORT_FORMATS)}, got {format!r}")
    root, arr = fmt.open_store(store, "output")
    attrs = dict(root.attrs)
    if attrs.get("complete") is not True:
        raise IOFormatError(store, "complete", "the output store is incomplete (its run has "
                            "not finished); finish the run (run it again to resume) before "
                            "converting it")
    ids = root["reach"][:].astype(np.int64)
    rows = np.arange(ids.size) if network is None else fmt.match_rows(ids, network, store)
    seconds = root["time"][:].astype(np.int64)
    n_t = seconds.size
    step = float(attrs.get("interval_s") or (np.diff(seconds)[0] if n_t > 1 else 0))
    tc = int(time_chunk or arr.chunks[1] or max(n_t, 1))
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    ds = (_create_netcdf(tmp, ids[rows], arr.dtype, attrs, dict(arr.attrs), step)
          if format == "netcdf" else
          create_qout(tmp, ids[rows], step, title="hydroscale routed discharge",
                      source=f"hydroscale {fmt.version()}"))
    try:
        order = np.argsort(rows)  # zarr reads sorted rows; put them back in `rows` order
        for a in range(0, n_t, tc):
            b = min(n_t, a + tc)
            block = np.empty((rows.size, b - a), arr.dtype)
            block[order] = arr.get_orthogonal_selection((rows[order], slice(a, b)))
            t = seconds[a:b]
            if format == "rapid":
                append_qout(ds, a, block, t, step)
            else:
                ds.variables["time"][a:b] = t
                ds.variables["time_bnds"][a:b] = np.stack([t, t + int(round(step))], 1)
                ds.variables["discharge"][:, a:b] = block
    except BaseException:
        ds.close()
        tmp.unlink(missing_ok=True)
        raise
    ds.close()
    os.replace(tmp, path)
    logger.info("wrote %s (%s, %d reaches x %d steps)", path, format, rows.size, n_t)
    return path


def _create_netcdf(path: Path, ids: np.ndarray, dtype: Any, attrs: dict[str, Any],
                   var_attrs: dict[str, Any], step: float) -> Any:
    import netCDF4  # lazy: optional on machines that only route

    ds = netCDF4.Dataset(path, "w", format="NETCDF4")
    try:
        ds.createDimension("reach", ids.size)
        ds.createDimension("time", None)
        ds.createDimension("nv", 2)
        r = ds.createVariable("reach", "i8", ("reach",))
        r.long_name, r.cf_role = "reach id", "timeseries_id"
        r[:] = ids
        t = ds.createVariable("time", "i8", ("time",))
        for k, v in fmt.cf_time_attrs("start of each time step (values are means over "
                                      "it)").items():
            t.setncattr(k, v)
        t.bounds = "time_bnds"
        ds.createVariable("time_bnds", "i8", ("time", "nv"))
        kind = "f8" if np.dtype(dtype).itemsize == 8 else "f4"  # native byte order
        q = ds.createVariable("discharge", kind, ("reach", "time"), zlib=True,
                              complevel=4, fill_value=np.nan,
                              chunksizes=(min(ids.size, 4096) or 1, 64))
        for k, v in var_attrs.items():
            q.setncattr(k, v)
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        ds.setncatts({
            "Conventions": "CF-1.8", "featureType": "timeSeries",
            "title": attrs.get("title", "hydroscale routed discharge"),
            "source": attrs.get("source", f"hydroscale {fmt.version()}"),
            "history": f"{attrs.get('history', '')}\n{now} converted to NetCDF".strip(),
            "interval_s": step,
            "time_meaning": attrs.get("time_meaning", "start of each interval"),
            # nested run metadata as one JSON string (NetCDF attributes are flat)
            "hydroscale_run": json.dumps(attrs.get("run", {}), default=str),
        })
    except BaseException:
        ds.close()
        raise
    return ds
