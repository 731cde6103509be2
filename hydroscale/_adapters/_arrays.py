"""Array-type dispatch: numpy, torch, cupy and jax arrays to torch tensors and back.

The API layer computes on torch tensors only.  Inputs are wrapped without copies where the
source library allows it (``torch.from_numpy``; DLPack for cupy and jax, on the array's own
device) and results go back to the input's type, device and dtype the same way.  Optional
libraries are looked up in ``sys.modules``: an array of a library that was never imported
cannot exist, so nothing is imported just to rule it out.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

__all__ = [
    "SUPPORTED",
    "array_kind",
    "is_dask",
    "is_dataarray",
    "to_torch",
    "compute_dtype",
]

SUPPORTED = (
    "numpy.ndarray, torch.Tensor, xarray.DataArray, dask.array.Array, cupy.ndarray, jax.Array"
)


def _module(name: str) -> Any:
    return sys.modules.get(name)


def is_dataarray(x: Any) -> bool:
    xr = _module("xarray")
    return xr is not None and isinstance(x, xr.DataArray)


def is_dask(x: Any) -> bool:
    da = _module("dask.array")
    return da is not None and isinstance(x, da.Array)


def array_kind(x: Any, name: str = "array") -> str:
    """``"torch"``, ``"numpy"``, ``"cupy"``, ``"jax"``, ``"dask"`` or ``"xarray"``.

    Anything else is a :class:`TypeError` naming the supported types.
    """
    if isinstance(x, torch.Tensor):
        return "torch"
    if isinstance(x, np.ndarray):
        return "numpy"
    if is_dataarray(x):
        return "xarray"
    if is_dask(x):
        return "dask"
    cp = _module("cupy")
    if cp is not None and isinstance(x, cp.ndarray):
        return "cupy"
    jax = _module("jax")
    if jax is not None and isinstance(x, jax.Array):
        return "jax"
    got = f"{type(x).__module__}.{type(x).__name__}"
    raise TypeError(f"{name} must be one of {SUPPORTED}; got {got}")


def compute_dtype(dtype: torch.dtype, *, integer_ok: bool = False) -> torch.dtype:
    """The dtype to compute in: float32/float64 as given, half types in float32; integers and
    bools in float64, or in int64 when ``integer_ok`` (sums of counts stay exact)."""
    if dtype.is_complex:
        raise TypeError(f"complex arrays are not supported, got {dtype}")
    if dtype.is_floating_point:
        return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    return torch.int64 if integer_ok else torch.float64


def _numpy_to_torch(x: np.ndarray) -> torch.Tensor:
    if x.dtype.kind not in "biuf":
        raise TypeError(f"numpy arrays of dtype {x.dtype} are not supported (need bool/int/float)")
    if x.dtype.byteorder == ">" or any(s < 0 for s in x.strides):
        x = np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("="))
    if x.dtype == np.uint16 or x.dtype == np.uint32 or x.dtype == np.uint64:
        x = x.astype(np.int64)
    with warnings.catch_warnings():
        # Read-only inputs are only ever read: the API never writes into its arguments.
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(x)


def to_torch(x: Any, kind: str | None = None) -> tuple[torch.Tensor, Callable[[torch.Tensor], Any]]:
    """Wrap ``x`` as a tensor (no copy where possible) and return a function that maps a result
    tensor back to ``x``'s array type and device.

    The back-conversion keeps the result tensor's dtype; callers cast first.
    """
    kind = kind or array_kind(x)
    if kind == "torch":
        return x, lambda t: t
    if kind == "numpy":
        return _numpy_to_torch(x), _torch_to_numpy
    if kind == "cupy":
        cp = _module("cupy")
        return torch.from_dlpack(x), lambda t: cp.from_dlpack(t.detach().contiguous())
    if kind == "jax":
        jnp = _module("jax.numpy")
        return torch.from_dlpack(x), lambda t: jnp.from_dlpack(t.detach().contiguous())
    raise TypeError(f"cannot convert a {kind} array to a tensor here (expected one of {SUPPORTED})")


def _torch_to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()
