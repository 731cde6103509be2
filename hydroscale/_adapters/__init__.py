"""Array adapters of the API layer: array-type dispatch, the xarray decorator, dask blocks."""

from ._arrays import SUPPORTED, array_kind, compute_dtype, is_dask, is_dataarray, to_torch
from ._dask import map_reach_blocks, whole_basin_chunks
from ._params import dt_seconds, param_values, params_tensor
from ._xarray import REACH, REACH_DIMS, TIME, reach_alignment, reach_dim, xarray_adapter

__all__ = [
    "REACH",
    "REACH_DIMS",
    "SUPPORTED",
    "TIME",
    "array_kind",
    "compute_dtype",
    "dt_seconds",
    "is_dask",
    "is_dataarray",
    "map_reach_blocks",
    "param_values",
    "params_tensor",
    "reach_alignment",
    "reach_dim",
    "to_torch",
    "whole_basin_chunks",
    "xarray_adapter",
]
