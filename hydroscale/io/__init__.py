"""File formats (DESIGN §2): NWM RouteLink/CHRTOUT/USGS, RAPID files, Zarr stores, CF NetCDF.

Submodules: :mod:`~hydroscale.io.nwm`, :mod:`~hydroscale.io.rapid`,
:mod:`~hydroscale.io.zarr_store`; the bundled real basin is :func:`load_lower_colorado`.
"""

from . import nwm, rapid, zarr_store
from ._common import IOFormatError
from .datasets import LowerColorado, load_lower_colorado
from .nwm import (
    gauge_table,
    observations_at_reaches,
    read_chrtout,
    read_routelink,
    read_usgs_timeslices,
)
from .zarr_store import (
    ForcingStore,
    RunProgress,
    create_output_store,
    ingest,
    ingest_main,
    mark_complete,
    open_forcing,
    open_output,
    write_block,
)

__all__ = [
    "ForcingStore",
    "RunProgress",
    "create_output_store",
    "ingest",
    "ingest_main",
    "mark_complete",
    "open_forcing",
    "open_output",
    "write_block",
    "IOFormatError",
    "LowerColorado",
    "gauge_table",
    "load_lower_colorado",
    "nwm",
    "rapid",
    "zarr_store",
    "observations_at_reaches",
    "read_chrtout",
    "read_routelink",
    "read_usgs_timeslices",
]
