"""Workflows: YAML files that describe a run (route, benchmark, ingest, calibrate), validated
on load.

::

    from hydroscale.workflows import load_workflow, run_route

    cfg = load_workflow("workflows/route.yaml", ["routing.substeps=24"], kind="route")
    result = run_route(cfg)
    wall_seconds, store = result.summary["wall_s"], result.store

Every key is checked: unknown keys, wrong types and inconsistent values raise
:class:`WorkflowError` naming the key and what was expected.  ``hydroscale route --show-schema``
lists every key with its default.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports
from ._schema import WorkflowError, apply_overrides, describe, validate
from ._spec import (
    COMMANDS,
    KINDS,
    SCHEMAS,
    default_output_dir,
    load_workflow,
    workflow_from_mapping,
)

# Loading and validating a workflow imports neither torch nor dask (the command line answers
# --help, --check and `validate` quickly); running one imports them when it starts.
_RUNNERS = {
    "._calibrate": ("plan_calibrate", "run_calibrate", "twin_gauges"),
    "._inputs": ("RouteInputs", "build_forcing", "build_inputs", "build_network",
                 "build_params"),
    "._rapid": ("run_rapid_namelist",),
    "._route": ("RouteResult", "hydrograph_reaches", "plan_route", "route_single",
                "run_route"),
    "._tasks": ("basin_subset", "run_benchmark", "run_ingest", "run_partition"),
}
__getattr__, __dir__ = lazy_exports(__name__, _RUNNERS)

if TYPE_CHECKING:
    from ._calibrate import plan_calibrate, run_calibrate, twin_gauges
    from ._inputs import RouteInputs, build_forcing, build_inputs, build_network, build_params
    from ._rapid import run_rapid_namelist
    from ._route import RouteResult, hydrograph_reaches, plan_route, route_single, run_route
    from ._tasks import basin_subset, run_benchmark, run_ingest, run_partition

__all__ = [
    "COMMANDS",
    "KINDS",
    "SCHEMAS",
    "RouteInputs",
    "RouteResult",
    "WorkflowError",
    "apply_overrides",
    "basin_subset",
    "build_forcing",
    "build_inputs",
    "build_network",
    "build_params",
    "default_output_dir",
    "describe",
    "hydrograph_reaches",
    "load_workflow",
    "plan_calibrate",
    "route_single",
    "run_benchmark",
    "run_calibrate",
    "run_ingest",
    "run_partition",
    "plan_route",
    "run_rapid_namelist",
    "run_route",
    "twin_gauges",
    "validate",
    "workflow_from_mapping",
]
