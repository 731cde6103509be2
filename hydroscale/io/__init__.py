"""File formats (DESIGN §2): NWM RouteLink/CHRTOUT/USGS, RAPID files, Zarr stores, CF NetCDF,
and the life of an output store (one writer at a time: :class:`StoreLock`,
:func:`prepare_output`).

Submodules: :mod:`~hydroscale.io.nwm`, :mod:`~hydroscale.io.rapid`,
:mod:`~hydroscale.io.zarr_store`; the bundled real basin is :func:`load_lower_colorado`.
"""

from . import nwm, rapid, zarr_store
from ._common import IOFormatError, netcdf_guard
from ._export import EXPORT_FORMATS, export_output
from ._forcing import ArrayForcing, SyntheticForcing, ZarrForcing, as_forcing, hash_uniform
from ._output import (
    OutputStore,
    PreparedOutput,
    RunProgress,
    create_output_store,
    digest,
    mark_complete,
    open_output,
    prepare_output,
    run_fingerprint,
    write_block,
)
from ._readers import (
    Reader,
    ReaderGuessError,
    guess_engine,
    list_readers,
    open_network,
    open_series,
    register_reader,
)
from ._store_lock import (
    StoreChangedError,
    StoreLock,
    StoreLockedError,
    check_not_nested,
    lock_path,
)
from .datasets import LowerColorado, load_lower_colorado
from .nwm import (
    gauge_table,
    observations_at_reaches,
    read_chrtout,
    read_routelink,
    read_usgs_timeslices,
)
from .zarr_store import ForcingStore, ingest, open_forcing

__all__ = [
    "Reader",
    "ReaderGuessError",
    "guess_engine",
    "list_readers",
    "open_network",
    "open_series",
    "register_reader",
    "ArrayForcing",
    "SyntheticForcing",
    "ZarrForcing",
    "as_forcing",
    "hash_uniform",
    "EXPORT_FORMATS",
    "OutputStore",
    "PreparedOutput",
    "StoreChangedError",
    "StoreLock",
    "StoreLockedError",
    "check_not_nested",
    "digest",
    "export_output",
    "lock_path",
    "prepare_output",
    "run_fingerprint",
    "ForcingStore",
    "RunProgress",
    "create_output_store",
    "ingest",
    "mark_complete",
    "open_forcing",
    "open_output",
    "write_block",
    "IOFormatError",
    "netcdf_guard",
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
