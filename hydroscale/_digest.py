"""Content digests of arrays: what run fingerprints and restart states are keyed by."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

__all__ = ["digest"]


def digest(*arrays: Any) -> str:
    """sha256 (16 hex digits) of arrays' dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]
