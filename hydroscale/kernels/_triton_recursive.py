"""Triton kernels of :func:`~hydroscale.kernels.extend_recursive` (forward and backward).

Each program owns ``BR`` rows and walks their ``L`` taps in chunks of ``CH``.  The first-order
recursion ``y[n] = a y[n - 1] + v[n]`` is a linear scan: the element ``(a, v[n])`` maps
``y[n - 1] -> y[n]`` and two maps compose as ``(a1, v1) then (a2, v2) = (a1 a2, a2 v1 + v2)``,
so one ``tl.associative_scan`` per chunk gives every tap of the chunk, and the value carried
from the previous chunk enters as ``y = A · carry + B`` (``A = a^(i+1)`` is the scan's first
part).  The backward runs the adjoint recursion, which goes backwards in time: its chunks
read the taps in reverse order (``n = L - 1 - m``) so that it is a forward scan in ``m`` too.
Shifted taps (``x[n - 1]``, ``g[n + 1]``) are read from memory with a shifted pointer.
"""

from __future__ import annotations

import triton
import triton.language as tl

__all__ = ["_recursive_fwd_kernel", "_recursive_bwd_kernel"]


@triton.jit
def _compose(a1, v1, a2, v2):
    return a1 * a2, a2 * v1 + v2


@triton.jit
def _last(y, col, last):
    """``y[:, last]`` as a ``[BR]`` vector (``col`` holds each column's index)."""
    return tl.sum(tl.where(col == last, y, 0.0), axis=1)


@triton.jit
def _program_rows(coef_ptr, parent_ptr, slot_ptr, n_rows, BR: tl.constexpr):
    """This program's rows, their mask, the rows of ``prev`` they extend (int64) and their
    reach's coefficients ``b0, b1, a1`` (``[BR]`` each; 0 on masked rows)."""
    r = tl.program_id(0) * BR + tl.arange(0, BR)
    rm = r < n_rows
    par = tl.load(parent_ptr + r, mask=rm, other=0).to(tl.int64)
    s = tl.load(slot_ptr + r, mask=rm, other=0).to(tl.int64)
    b0 = tl.load(coef_ptr + s * 3, mask=rm, other=0.0)
    b1 = tl.load(coef_ptr + s * 3 + 1, mask=rm, other=0.0)
    a1 = tl.load(coef_ptr + s * 3 + 2, mask=rm, other=0.0)
    return r, rm, par, b0, b1, a1


@triton.jit
def _recursive_fwd_kernel(
    prev_ptr, coef_ptr, parent_ptr, slot_ptr, out_ptr,
    n_rows, L,
    BR: tl.constexpr, CH: tl.constexpr,
):
    r, rm, par, b0, b1, a1 = _program_rows(coef_ptr, parent_ptr, slot_ptr, n_rows, BR)
    src = prev_ptr + par[:, None] * L
    dst = out_ptr + r.to(tl.int64)[:, None] * L
    aa = tl.broadcast_to(a1[:, None], (BR, CH))
    carry = b0 * 0.0
    for c0 in range(0, L, CH):
        n = c0 + tl.arange(0, CH)[None, :]
        m = rm[:, None] & (n < L)
        x = tl.load(src + n, mask=m, other=0.0)
        xs = tl.load(src + n - 1, mask=m & (n >= 1), other=0.0)
        v = b0[:, None] * x + b1[:, None] * xs
        A, B = tl.associative_scan((aa, v), 1, _compose)
        y = A * carry[:, None] + B
        tl.store(dst + n, y, mask=m)
        carry = _last(y, n, c0 + CH - 1)


@triton.jit
def _recursive_bwd_kernel(
    prev_ptr, out_ptr, grad_ptr, coef_ptr, parent_ptr, slot_ptr, gprev_ptr, gcoef_ptr,
    n_rows, L,
    BR: tl.constexpr, CH: tl.constexpr,
):
    r, rm, par, b0, b1, a1 = _program_rows(coef_ptr, parent_ptr, slot_ptr, n_rows, BR)
    r64 = r.to(tl.int64)[:, None] * L
    src = prev_ptr + par[:, None] * L
    gsrc = gprev_ptr + par[:, None] * L
    aa = tl.broadcast_to(a1[:, None], (BR, CH))
    carry = b0 * 0.0  # u[n + 1] at the end of the previous chunk
    acc0 = b0 * 0.0
    acc1 = b0 * 0.0
    acc2 = b0 * 0.0
    for c0 in range(0, L, CH):
        mm = c0 + tl.arange(0, CH)[None, :]
        n = L - 1 - mm  # this chunk's taps, last first
        m = rm[:, None] & (mm < L)
        # u1[n] = u[n + 1] = sum_{k > n} a^(k - n - 1) g[k]: a forward scan in m of g[n + 1]
        g_next = tl.load(grad_ptr + r64 + n + 1, mask=m & (n + 1 < L), other=0.0)
        A, B = tl.associative_scan((aa, g_next), 1, _compose)
        u1 = A * carry[:, None] + B
        carry = _last(u1, mm, c0 + CH - 1)
        g = tl.load(grad_ptr + r64 + n, mask=m, other=0.0)
        u = g + a1[:, None] * u1  # dL/dy[n], everything downstream of tap n included
        x = tl.load(src + n, mask=m, other=0.0)
        xs = tl.load(src + n - 1, mask=m & (n >= 1), other=0.0)
        ys = tl.load(out_ptr + r64 + n - 1, mask=m & (n >= 1), other=0.0)
        acc0 += tl.sum(u * x, axis=1)
        acc1 += tl.sum(u * xs, axis=1)
        acc2 += tl.sum(u * ys, axis=1)
        tl.store(gsrc + n, b0[:, None] * u + b1[:, None] * u1, mask=m)
    tl.store(gcoef_ptr + r * 3, acc0, mask=rm)
    tl.store(gcoef_ptr + r * 3 + 1, acc1, mask=rm)
    tl.store(gcoef_ptr + r * 3 + 2, acc2, mask=rm)
