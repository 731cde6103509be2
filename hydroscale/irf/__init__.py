"""Impulse-response functions: registry, catalogue, sub-step sampling and bounds.

Register a custom IRF with a kernel that maps float64 parameter tensors (routing-step units) to
a sub-step kernel; see :class:`IRFSpec`::

    from hydroscale.irf import IRFSpec, register_irf, from_ramp_response

    def triangle(p, n_taps, substeps):
        base = p["base"].unsqueeze(-1)
        ...  # return [..., n_taps]

    register_irf(IRFSpec("triangle", triangle, params=("base",), bounds={"base": (0.1, 5)},
                         units={"base": "s"}))

``units`` gives each parameter's SI unit (``"s"``, ``"m s-1"``, ...); parameters it does not
name are dimensionless.  They convert SI values with the routing step (``dt=`` of
:func:`hydroscale.route`, workflow ``units:``); see :meth:`IRFSpec.step_factors`.
"""

from . import _catalogue  # noqa: F401  (registers the built-in IRFs)
from ._catalogue import from_ramp_response, muskingum_coefficients, muskingum_from_length
from ._registry import (
    UNIT_SYMBOLS,
    IRFSpec,
    UnstableParametersError,
    get_irf,
    irf_kernel,
    irf_recursion,
    list_irfs,
    register_irf,
    stack_params,
    time_exponent,
)
from ._sampling import average_substeps, spread_to_substeps, substep_kernel_to_step
from ._transforms import bound_corners, bounds_tensor, from_bounded, to_bounded

__all__ = [
    "IRFSpec",
    "UNIT_SYMBOLS",
    "UnstableParametersError",
    "average_substeps",
    "bound_corners",
    "bounds_tensor",
    "from_bounded",
    "from_ramp_response",
    "get_irf",
    "irf_kernel",
    "irf_recursion",
    "list_irfs",
    "muskingum_coefficients",
    "muskingum_from_length",
    "register_irf",
    "spread_to_substeps",
    "stack_params",
    "substep_kernel_to_step",
    "time_exponent",
    "to_bounded",
]
