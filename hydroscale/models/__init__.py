"""The ``nn.Module`` s that feed the router: parameter models (free per reach, an MLP from reach
attributes), runoff models and catchment interpolation.  They depend on routing at most; the
training recipes that combine them (hybrid pipelines, synthetic twins) live in
:mod:`hydroscale.calibration`."""

from ._parameters import (
    AttributeMLP,
    FreeParameters,
    ParameterModel,
    resolve_bounds,
)
from .interpolation import CatchmentInterpolator, MizuRouteInputs, mizuroute_inputs
from .runoff import BucketModel, LSTMRunoff, RunoffModel, synthetic_forcings

__all__ = [
    "AttributeMLP",
    "BucketModel",
    "CatchmentInterpolator",
    "FreeParameters",
    "LSTMRunoff",
    "MizuRouteInputs",
    "ParameterModel",
    "RunoffModel",
    "resolve_bounds",
    "mizuroute_inputs",
    "synthetic_forcings",
]
