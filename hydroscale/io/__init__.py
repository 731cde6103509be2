"""File formats (DESIGN §2): NWM RouteLink/CHRTOUT/USGS, RAPID files, Zarr stores, CF NetCDF,
and the life of an output store (one writer at a time: :class:`StoreLock`,
:func:`prepare_output`).

Submodules: :mod:`~hydroscale.io.nwm`, :mod:`~hydroscale.io.rapid`,
:mod:`~hydroscale.io.mizuroute`, :mod:`~hydroscale.io.rapid2`,
:mod:`~hydroscale.io.zarr_store`; the bundled real basin is :func:`load_lower_colorado`.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

# Lazy: the reader registry (what a workflow's validation asks) loads without xarray, zarr or
# torch; a name below imports its module on first use.
__getattr__, __dir__ = lazy_exports(__name__, {
    ".nwm": ("nwm", "boundary_inflow", "gauge_table", "observations_at_reaches", "read_chrtout",
             "read_routelink", "read_usgs_timeslices"),
    ".lakes": ("lakes", "open_lakes", "read_lake_table", "read_lakeparm", "write_lake_table"),
    ".rapid": ("rapid",),
    ".rapid2": ("rapid2",),
    ".mizuroute": ("mizuroute",),
    ".zarr_store": ("zarr_store", "ForcingStore", "ingest", "open_forcing"),
    "._common": ("IOFormatError", "netcdf_guard"),
    "._export": ("EXPORT_FORMATS", "export_output"),
    "._forcing": ("ArrayForcing", "SyntheticForcing", "ZarrForcing", "as_forcing",
                  "hash_uniform"),
    "._output": ("OutputStore", "PreparedOutput", "RunProgress", "create_output_store",
                 "digest", "mark_complete", "open_output", "prepare_output",
                 "run_fingerprint", "write_block"),
    "._readers": ("Reader", "ReaderGuessError", "get_reader", "guess_engine", "list_readers",
                  "open_network", "open_series", "register_reader"),
    "._store_lock": ("StoreChangedError", "StoreLock", "StoreLockedError",
                     "check_not_nested", "lock_path"),
    ".datasets": ("LowerColorado", "load_lower_colorado"),
})

if TYPE_CHECKING:
    from . import lakes, mizuroute, nwm, rapid, rapid2, zarr_store
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
        get_reader,
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
    from .lakes import open_lakes, read_lake_table, read_lakeparm, write_lake_table
    from .nwm import (
        boundary_inflow,
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
    "get_reader",
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
    "boundary_inflow",
    "gauge_table",
    "load_lower_colorado",
    "lakes",
    "mizuroute",
    "nwm",
    "open_lakes",
    "read_lake_table",
    "read_lakeparm",
    "write_lake_table",
    "rapid",
    "rapid2",
    "zarr_store",
    "observations_at_reaches",
    "read_chrtout",
    "read_routelink",
    "read_usgs_timeslices",
]
