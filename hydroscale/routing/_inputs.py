"""Checks of lateral inflow shared by the entry points (API, workflows)."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["check_runoff"]


def check_runoff(runoff: torch.Tensor, ids: np.ndarray, *, allow_negative: bool = False) -> None:
    """Refuse NaN/inf inflow, and negative inflow unless ``allow_negative``.

    ``runoff`` is ``[B, N, T]`` (m³/s) with reaches in the order of ``ids``; the error names the
    first offending reach id and step and how many values are affected.
    """
    with torch.no_grad():
        for bad, what, fix in (
            (~torch.isfinite(runoff), "NaN or infinite", "fill or drop the missing values"),
            (None if allow_negative else runoff < 0, "negative",
             "pass allow_negative=True if negative lateral inflow (losing reaches) is meant"),
        ):
            if bad is None or not bool(bad.any()):
                continue
            b, j, t = (int(v) for v in torch.nonzero(bad)[0].tolist())
            raise ValueError(
                f"runoff has {int(bad.sum())} {what} value(s); first at reach id {int(ids[j])}, "
                f"step {t}" + (f", batch {b}" if runoff.shape[0] > 1 else "") + f": {fix}"
            )
