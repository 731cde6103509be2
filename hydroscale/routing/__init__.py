"""Routing engines: the float64 oracle, the engine registry, LTIRouter/StagedRouter (block-sparse
path kernels: "torch", "triton") and LevelRouter (level by level: "levels", preferred on CPU)."""

from . import _engines_builtin  # noqa: F401  (registers the torch and triton engines)
from ._calibration_plan import (
    CalibrationPlan,
    CalibrationWorkerPlan,
    plan_calibration,
    plan_device_calibration,
    recursive_aggregation,
)
from ._cf import DISCHARGE_ATTRS, DISCHARGE_NAME
from ._engines import (
    ENGINE_ENV_VAR,
    EngineSpec,
    get_engine,
    list_engines,
    register_engine,
    select_engine,
)
from ._inputs import check_runoff
from ._lake_nodes import LakeNodes, LakeStep
from ._lake_router import LakeRouter, LakeState, route_lakes, substep_params
from ._lakes import LakeError, LakeLayout, Lakes
from ._level_pool import (
    GRAVITY,
    LEVEL_POOL_PARAMS,
    LEVEL_POOL_UNITS,
    elevation_for_outflow,
    initial_elevation,
    level_pool_discharge,
    level_pool_params,
    route_level_pool,
)
from ._memory import (
    MEMORY_ENV_VAR,
    RunTooLargeError,
    available_bytes,
    check_fits,
    estimate_engine_bytes,
    estimate_route_bytes,
    format_bytes,
    is_out_of_memory,
    parse_bytes,
    peak_bytes,
    tensor_bytes,
)
from ._nodes import NodeRun
from ._options import Routed, RoutingOptions
from ._reach_ops import (
    accumulate_reaches,
    check_steady_inflow,
    downstream_reaches,
    steady_discharge,
    steady_inflow,
    upstream_reaches,
)
from ._restart import RestartMismatchError, RouteState, restart_fingerprint, route_with_state
from ._rivtree import RivTree, RivTreeCluster
from ._router import LTIRouter, RouterState, RoutingKernels, StagedRouter
from ._run_plan import RunPlan, WorkerPlan, plan_run
from ._time_pieces import AUTO_PIECES_WORK, auto_pieces
from ._window import WindowTruncationError, check_truncation
from .levelwise import LevelRouter
from .oracle import causal_conv_fft, route_oracle
from .rapid import rapid_coefficients, route_rapid

__all__ = [
    "AUTO_PIECES_WORK",
    "accumulate_reaches",
    "auto_pieces",
    "available_bytes",
    "CalibrationPlan",
    "CalibrationWorkerPlan",
    "causal_conv_fft",
    "check_steady_inflow",
    "check_fits",
    "check_runoff",
    "check_truncation",
    "DISCHARGE_ATTRS",
    "DISCHARGE_NAME",
    "downstream_reaches",
    "elevation_for_outflow",
    "ENGINE_ENV_VAR",
    "EngineSpec",
    "estimate_engine_bytes",
    "estimate_route_bytes",
    "format_bytes",
    "get_engine",
    "GRAVITY",
    "initial_elevation",
    "LakeError",
    "LakeLayout",
    "LakeNodes",
    "LakeRouter",
    "Lakes",
    "LakeState",
    "LakeStep",
    "level_pool_discharge",
    "LEVEL_POOL_PARAMS",
    "level_pool_params",
    "LEVEL_POOL_UNITS",
    "LevelRouter",
    "list_engines",
    "LTIRouter",
    "MEMORY_ENV_VAR",
    "NodeRun",
    "parse_bytes",
    "peak_bytes",
    "plan_calibration",
    "plan_device_calibration",
    "plan_run",
    "rapid_coefficients",
    "recursive_aggregation",
    "register_engine",
    "restart_fingerprint",
    "RestartMismatchError",
    "RivTree",
    "RivTreeCluster",
    "route_lakes",
    "route_level_pool",
    "route_oracle",
    "route_rapid",
    "route_with_state",
    "Routed",
    "RouterState",
    "RouteState",
    "RoutingKernels",
    "RoutingOptions",
    "RunPlan",
    "RunTooLargeError",
    "is_out_of_memory",
    "select_engine",
    "StagedRouter",
    "steady_discharge",
    "steady_inflow",
    "substep_params",
    "tensor_bytes",
    "upstream_reaches",
    "WindowTruncationError",
    "WorkerPlan",
]
