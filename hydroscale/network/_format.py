"""How error messages name ids: one format for every package (DESIGN §1, STYLE 5)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["format_ids"]


def format_ids(values: Iterable[Any], k: int = 10) -> str:
    """Name (some of) ``values`` in an error message.

    Parameters
    ----------
    values : array-like or iterable
        The offending ids (or indices, values, times); arrays of any shape are flattened.
    k : int
        How many to show at most.

    Returns
    -------
    str
        ``"[3, 7, 9]"`` when all fit, else the first ``k`` and the count:
        ``"[3, 7, 9, ...] (12 in all)"``.

    Examples
    --------
    >>> format_ids([4, 8])
    '[4, 8]'
    >>> format_ids(range(100), k=3)
    '[0, 1, 2, ...] (100 in all)'
    """
    items = np.ravel(values) if isinstance(values, np.ndarray) else list(values)
    n = len(items)
    shown = ", ".join(str(v) for v in items[:k])
    return f"[{shown}, ...] ({n} in all)" if n > k else f"[{shown}]"
