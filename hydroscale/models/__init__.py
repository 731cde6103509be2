"""Models feeding the router: parameter models (free per reach, MLP from reach attributes),
runoff models, catchment interpolation and the hybrid pipelines (one device or distributed)."""

from ._distributed import RunoffModelSource, pull_runoff_model
from ._parameters import (
    TIME_EXPONENTS,
    AttributeMLP,
    FreeParameters,
    ParameterModel,
    resolve_bounds,
)
from .interpolation import CatchmentInterpolator

# .pipelines imports hydroscale.calibration, whose calibrator imports ParameterModel from this
# package: it must stay after ._parameters (sorted order keeps it there)
from .pipelines import (
    HybridPipeline,
    RoutingStage,
    SyntheticTwin,
    Windows,
    learned_routing,
    routing_calibration,
    runoff_routing,
    split_by_basin,
    synthetic_twin,
)
from .runoff import BucketModel, LSTMRunoff, RunoffModel, synthetic_forcings

__all__ = ["AttributeMLP", "FreeParameters", "ParameterModel", "TIME_EXPONENTS", "resolve_bounds"]
__all__ += [
    "BucketModel",
    "CatchmentInterpolator",
    "HybridPipeline",
    "LSTMRunoff",
    "RoutingStage",
    "RunoffModel",
    "RunoffModelSource",
    "SyntheticTwin",
    "Windows",
    "learned_routing",
    "pull_runoff_model",
    "routing_calibration",
    "runoff_routing",
    "split_by_basin",
    "synthetic_forcings",
    "synthetic_twin",
]
