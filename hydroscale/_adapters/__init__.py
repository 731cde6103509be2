"""Array adapters of the API layer: array-type dispatch, the xarray decorator, dask blocks."""

from ._arrays import SUPPORTED, array_kind, compute_dtype, is_dask, is_dataarray, to_torch
from ._dask import map_reach_blocks, whole_basin_chunks
from ._xarray import REACH, TIME, reach_alignment, xarray_adapter

__all__ = [
    "REACH",
    "SUPPORTED",
    "TIME",
    "array_kind",
    "compute_dtype",
    "is_dask",
    "is_dataarray",
    "map_reach_blocks",
    "reach_alignment",
    "to_torch",
    "whole_basin_chunks",
    "xarray_adapter",
]
