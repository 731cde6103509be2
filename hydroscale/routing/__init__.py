"""Routing engines: the float64 oracle, the engine registry, LTIRouter/StagedRouter (block-sparse
path kernels: "torch", "triton") and LevelRouter (level by level: "levels", preferred on CPU)."""

from . import _engines_builtin  # noqa: F401  (registers the torch and triton engines)
from ._engines import (
    ENGINE_ENV_VAR,
    EngineSpec,
    get_engine,
    list_engines,
    register_engine,
    select_engine,
)
from ._inputs import check_runoff
from ._memory import RunTooLargeError, check_fits, estimate_engine_bytes, estimate_route_bytes
from ._options import Routed, RoutingOptions
from ._rivtree import RivTree, RivTreeCluster
from ._router import LTIRouter, RouterState, RoutingKernels, StagedRouter
from ._window import WindowTruncationError, check_truncation
from .levelwise import LevelRouter
from .oracle import causal_conv_fft, route_oracle

__all__ = [
    "ENGINE_ENV_VAR",
    "EngineSpec",
    "LTIRouter",
    "LevelRouter",
    "RivTree",
    "RivTreeCluster",
    "Routed",
    "RouterState",
    "RoutingOptions",
    "RunTooLargeError",
    "RoutingKernels",
    "StagedRouter",
    "WindowTruncationError",
    "causal_conv_fft",
    "check_fits",
    "check_runoff",
    "check_truncation",
    "estimate_engine_bytes",
    "estimate_route_bytes",
    "get_engine",
    "list_engines",
    "register_engine",
    "route_oracle",
    "select_engine",
]
