"""Block-sparse causal path convolution: Triton kernels and their torch reference (DESIGN §2).

The one operation: a sparse set of paths ``p = (src_p -> dst_p)``, each with a causal kernel
of ``K`` taps ``w[p, :]``, maps an input ``x [B, S, T]`` to ``y [B, D, T]``::

    y[b, d, t] = Σ_{p: dst_p = d} Σ_{k=0}^{K-1} w[p, k] · xx[b, src_p, t - k]

where ``xx`` is ``x`` preceded by the carried history ``hist [B, S, K - 1]`` (the last ``K - 1``
input steps of the previous time chunk; zeros at the start), so evaluating time in chunks and
carrying ``hist = xx[..., -(K - 1):]`` gives exactly the unchunked result.

- :class:`PathLayout` ``.from_pairs(src, dst, n_src, n_dst)``: the paths sorted by destination
  (forward) and by source (backward), built with two vectorised sorts; ``.blocks(side, c)``
  cuts rows into blocks of ``c`` that share their inputs (the direct kernels' work units).
- Two Triton algorithms: direct CUDA-core kernels over row blocks (``"blocks"``: ``K``
  float32 multiply-adds per output and path, each input tile loaded once per block; the
  default for windows of up to 32 taps) and Toeplitz tiles on tensor cores (``"toeplitz"``:
  ``tf32x3`` by default; longer windows).
- :func:`path_conv` ``(x, w, layout, hist=None, backend="auto", precision=None)``:
  differentiable w.r.t. ``x``, ``w`` and ``hist``.  Backward:
  ``grad_x[b, s, t] = Σ_{p: src_p = s} Σ_k w[p, k] grad_y[b, dst_p, t + k]`` (the part at
  ``t < 0`` is ``grad_hist``) and
  ``grad_w[p, k] = Σ_{b, t} grad_y[b, dst_p, t] xx[b, src_p, t - k]``.
- :func:`path_conv_sum` ``(terms)``: the sum of several path convolutions into the same
  destination rows (``terms`` of ``(x, w, layout, hist)``), the later terms added in place
  into the first's output; differentiable, each term's backward reading the one gradient.
  :func:`path_conv_sum_into` ``(terms, target)`` writes (adds) those rows in place into the
  two tensors of a :class:`RowTarget`, differentiably: the backward reads the output
  gradient from their gradients in place.
- :func:`path_conv_into` ``(x, w, layout, target, hist=None)``: the same without gradients,
  its rows written or added in place into the rows of one or two larger tensors
  (:class:`RowTarget`), which the block kernels do directly (an inference pass then makes no
  per-call output, copy or sum).
- :func:`warm_up` ``(device)``: the compiler's per-process state loaded by one tiny launch
  (a fresh worker calls it while it builds its routers).
- :func:`select_backend` ``(device, explicit=None)``: ``"triton"`` on CUDA when importable,
  ``"torch"`` otherwise; ``$HYDROSCALE_KERNEL_BACKEND`` overrides.
- :func:`path_conv_reference`: the same operation in plain torch ops (autograd through torch).
- :func:`extend_recursive` ``(prev, coef, parent, slot)``: path kernels extended by one
  reach whose response is a first-order recursive filter (the path-kernel aggregation of
  Muskingum and linear-reservoir networks), run as a scan in Triton; differentiable.
- :func:`hash_uniform` ``(reach, t0, t1, seed)``: the counter-hash uniform numbers of
  synthetic runoff (one Triton kernel on CUDA, :func:`hash_uniform_reference` elsewhere).
- :func:`level_pool_steps` ``(inflow, params, dt, elevation)``: the level-pool reservoirs'
  time loop in one Triton kernel (a program per block of lakes walking every step in
  registers) and :func:`level_pool_adjoint` (its backward: the steps walked backwards from
  the stored levels); :func:`hydroscale.routing.route_level_pool` wraps them.
- :func:`reuse_packed_taps`: a context in which the block kernels pack the taps of one
  weight tensor once for all its launches (a forward's time pieces launch each batch's
  weights once per piece).
- :class:`LaunchConfig`, :func:`set_launch_config`, :func:`get_launch_config`: Triton tile
  sizes, warps, paths per iteration and the algorithm (speed only; ``$HYDROSCALE_KERNEL_LAUNCH``
  overrides).

Only this package imports Triton, and only when it is installed.
"""

from ._hash import hash_uniform, hash_uniform_reference
from ._launch import LaunchConfig, get_launch_config, parse_launch_spec, set_launch_config
from ._layout import PathLayout
from ._level_pool import LEVEL_POOL_COLUMNS, level_pool_adjoint, level_pool_steps
from ._path_conv import (
    BACKENDS,
    RowTarget,
    path_conv,
    path_conv_into,
    path_conv_sum,
    path_conv_sum_into,
    select_backend,
    triton_available,
    warm_up,
)
from ._recursive import extend_recursive, extend_recursive_reference
from ._reference import path_conv_reference
from ._tap_reuse import reuse_packed_taps

__all__ = [
    "BACKENDS",
    "LEVEL_POOL_COLUMNS",
    "LaunchConfig",
    "PathLayout",
    "RowTarget",
    "extend_recursive",
    "extend_recursive_reference",
    "get_launch_config",
    "hash_uniform",
    "hash_uniform_reference",
    "level_pool_adjoint",
    "level_pool_steps",
    "parse_launch_spec",
    "path_conv",
    "path_conv_into",
    "path_conv_reference",
    "path_conv_sum",
    "path_conv_sum_into",
    "reuse_packed_taps",
    "select_backend",
    "set_launch_config",
    "triton_available",
    "warm_up",
]
