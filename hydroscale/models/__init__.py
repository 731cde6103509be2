"""Models feeding the router: parameter models (free per reach, MLP from reach attributes)."""

from ._parameters import (
    TIME_EXPONENTS,
    AttributeMLP,
    FreeParameters,
    ParameterModel,
    resolve_bounds,
)

__all__ = ["AttributeMLP", "FreeParameters", "ParameterModel", "TIME_EXPONENTS", "resolve_bounds"]
