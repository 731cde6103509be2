"""The Dask runtime (DESIGN §3): cluster start-up, wave scheduler, transfer futures, Zarr I/O.

::

    from hydroscale.distributed import route_distributed, start_cluster, worker_addresses

    client = start_cluster()                       # local-cuda if GPUs are visible
    part = partition_network(net, max_reaches=16384, travel_time=tt, max_travel_time=3.0,
                             n_workers=len(worker_addresses(client)))
    summary = route_distributed(client, net, part, "forcing.zarr", "discharge.zarr", params,
                                time_chunk=730, irf="muskingum", substeps=24)

Clusters of one wave placed on one worker form a *group*, routed by one task per time chunk
on that worker; groups exchange sub-step transfer buffers as Dask futures.  With
``DistributedRouter(..., placement="basins")`` every basin stays on one worker, so no buffer
crosses workers (measured on 4 H200: 2.8x the 1-GPU speed instead of 0.5x with the
partition's per-wave placement, see ``bench/distributed.py``).

Tasks are pure: a killed worker's results are recomputed (on any worker) and equal, and an
interrupted run resumes from its output store (:func:`route_distributed`, ``resume``).

:class:`WaveRuntime` runs forward and backward waves over the same groups, a tree sum across
workers and a step on every worker, for a picklable per-worker *work* that says what is
optimised (:class:`WaveWork`; DESIGN §3, "Backward wave"): the runtime knows routing and
autograd, not calibration (:class:`~hydroscale.calibration.DistributedGradient` is built on
it).  Both kinds of run keep their worker-resident state in one worker cache.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

# Lazy: reading a cluster config (what a workflow's validation does) imports neither dask nor
# torch; the runtime's modules load on first use (and register dask's sizeof for tensors).
__getattr__, __dir__ = lazy_exports(__name__, {
    "._config": ("CONFIG_KINDS", "ClusterConfigError", "config_path", "gpus_visible",
                 "load_config", "render_job_script", "start_cluster"),
    "._plan": ("WavePlan", "map_workers", "place_basins", "plan_waves"),
    "._recovery": ("WorkersLost", "replaced", "wait_for_workers", "worker_addresses"),
    "._runtime": ("DistributedRouter", "RunSummary", "io_floor", "route_distributed",
                  "synthesize_forcing_store"),
    "._sizeof": ("TransferBuffer", "register_sizeof", "tensor_nbytes"),
    "._wave_runtime": ("IterationInterrupted", "WaveRuntime"),
    "._waves": ("WaveContext", "WaveWork"),
})

if TYPE_CHECKING:
    from ._config import (
        CONFIG_KINDS,
        ClusterConfigError,
        config_path,
        gpus_visible,
        load_config,
        render_job_script,
        start_cluster,
    )
    from ._plan import WavePlan, map_workers, place_basins, plan_waves
    from ._recovery import WorkersLost, replaced, wait_for_workers, worker_addresses
    from ._runtime import (
        DistributedRouter,
        RunSummary,
        io_floor,
        route_distributed,
        synthesize_forcing_store,
    )
    from ._sizeof import TransferBuffer, register_sizeof, tensor_nbytes
    from ._wave_runtime import IterationInterrupted, WaveRuntime
    from ._waves import WaveContext, WaveWork

__all__ = [
    "CONFIG_KINDS",
    "ClusterConfigError",
    "DistributedRouter",
    "IterationInterrupted",
    "RunSummary",
    "TransferBuffer",
    "WaveContext",
    "WavePlan",
    "WaveRuntime",
    "WaveWork",
    "WorkersLost",
    "config_path",
    "gpus_visible",
    "io_floor",
    "load_config",
    "map_workers",
    "place_basins",
    "plan_waves",
    "register_sizeof",
    "render_job_script",
    "replaced",
    "route_distributed",
    "start_cluster",
    "synthesize_forcing_store",
    "tensor_nbytes",
    "wait_for_workers",
    "worker_addresses",
]
