"""Nonlinear nodes inside the block-sparse engine: clusters that a
:class:`~hydroscale.routing.StagedRouter` does not route with path kernels but hands to a
*node step* (e.g. level-pool lakes, :class:`~hydroscale.routing.LakeRouter`).

A node cluster sits at cluster boundaries like any other: the exits of the clusters feeding it
give its inlets their ``f`` polyphase sub-step channels ``[B, n_inlet, f, T]``; the step returns
the discharge of its reaches ``[B, n, T]`` (step means) and the sub-step outflow of its exits
``[B, n_exit, f, T]``, which the router writes into its transfer buffer, where the clusters
downstream read it as they read any exit.  The linear reaches are then routed once, at routing
step resolution, with the ``f`` channels only at exits and inlets.

Node clusters of one wave that are consecutive in engine rank form one :class:`NodeRun`: one
call of the step (one fused time loop for all its nodes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["NodeRun", "NodeStep", "write_rows"]


@dataclass(frozen=True)
class NodeRun:
    """Node clusters routed by one call of a node step (global reach indices, numpy int64).

    Attributes
    ----------
    key : ``(k0, k1)`` the range of engine ranks of the clusters (a cache key).
    clusters : ``[c]`` the cluster ids.
    reaches : ``[n]`` their reaches in engine order (the rows of the step's runoff and
        discharge).
    inlets : ``[n_inlet]`` their inlet reaches in engine order (rows of the inflow).
    exits : ``[n_exit]`` their exit reaches in engine order (rows of the outflow).
    """

    key: tuple[int, int]
    clusters: np.ndarray
    reaches: np.ndarray
    inlets: np.ndarray
    exits: np.ndarray


#: ``step(run, runoff [B, n, T], inflow [B, n_inlet, f, T] or None) -> (discharge [B, n, T],
#: outflow [B, n_exit, f, T])`` (m³/s; differentiable).  With ``time_pieces`` a forward calls
#: it once per piece of its steps, in time order: the step carries its nodes' state from one
#: call for a run to the next (on CUDA a piece's call runs on that piece's stream)
NodeStep = Callable[[NodeRun, torch.Tensor, "torch.Tensor | None"],
                    tuple[torch.Tensor, torch.Tensor]]


class _WriteRows(torch.autograd.Function):
    """Write ``va`` into rows ``a0:`` of ``first`` and ``vb`` into rows ``b0:`` of ``second``
    (both ``[B, R, T]``) in place; the backward passes the two gradients through to the
    tensors' earlier values and gives each value its rows of them."""

    @staticmethod
    def forward(ctx, first, second, a0, va, b0, vb):  # noqa: D102
        na, nb = int(va.shape[1]), int(vb.shape[1])
        first[:, a0 : a0 + na] = va
        second[:, b0 : b0 + nb] = vb
        ctx.mark_dirty(first, second)
        ctx.rows = (a0, na, b0, nb)
        return first, second

    @staticmethod
    def backward(ctx, ga, gb):  # noqa: D102
        a0, na, b0, nb = ctx.rows
        gva = None if ga is None else ga[:, a0 : a0 + na]
        gvb = None if gb is None else gb[:, b0 : b0 + nb]
        return ga, gb, None, gva, None, gvb


def write_rows(first: torch.Tensor, a0: int, va: torch.Tensor, second: torch.Tensor, b0: int,
               vb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Write rows in place, differentiably (:class:`_WriteRows`); returns ``(first,
    second)`` (use these: they carry the gradient).  The rows written must not have been read
    before (their earlier values get the gradient passed through)."""
    return _WriteRows.apply(first, second, int(a0), va.to(first.dtype), int(b0),
                            vb.to(second.dtype))
