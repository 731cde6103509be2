"""The block-sparse engines of the registry: "torch" (CPU and CUDA) and "triton" (CUDA)."""

from __future__ import annotations

from typing import Any

import torch

from ..kernels import triton_available
from ..network import RiverNetwork
from ._engines import EngineSpec, register_engine
from ._rivtree import RivTreeCluster
from ._router import StagedRouter

__all__: list[str] = []


def _route(
    backend: str,
    network: RiverNetwork,
    runoff: torch.Tensor,
    irf: Any,
    params: torch.Tensor,
    substeps: int = 1,
    *,
    cluster_of: Any = None,
    window: int | str = "auto",
    allow_unstable: bool = False,
    storage_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Route with a :class:`StagedRouter` over the clusters ``cluster_of`` (the caller's
    partition, see :attr:`EngineSpec.clustered`; one cluster per basin when None)."""
    clusters = (RivTreeCluster.by_basin(network) if cluster_of is None
                else RivTreeCluster(network, cluster_of))
    router = StagedRouter(
        clusters, irf=irf, substeps=substeps, window=window,
        dtype=runoff.dtype, storage_dtype=storage_dtype, backend=backend,
        device=runoff.device, allow_unstable=allow_unstable,
    )
    if window == "auto":
        # taps beyond the run's length never act: a longer window is only wasted work
        router.window = router.auto_window(params, max_steps=int(runoff.shape[-1]))
    return router(runoff, params)  # a window that truncates the run raises there


def _torch_engine(network, runoff, irf, params, substeps=1, **options):
    return _route("torch", network, runoff, irf, params, substeps, **options)


def _triton_engine(network, runoff, irf, params, substeps=1, **options):
    return _route("triton", network, runoff, irf, params, substeps, **options)


register_engine(EngineSpec("torch", _torch_engine, rank={"cpu": 10, "cuda": 10},
                           clustered=True))
register_engine(EngineSpec("triton", _triton_engine, rank={"cuda": 20},
                           available=triton_available, clustered=True))
