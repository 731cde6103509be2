"""Engine registry and explicit engine choice (STYLE §4).

An engine routes a whole network on one device:
``fn(network, runoff [B, N, T], irf, params [N, P], substeps, **options) -> Q [B, N, T]``
with tensors on the device of ``runoff``.  Engines register themselves with a preference
rank per device type; :func:`select_engine` picks the best available one, unless the caller or
the ``HYDROSCALE_ENGINE`` environment variable names one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = [
    "ENGINE_ENV_VAR",
    "EngineSpec",
    "register_engine",
    "select_engine",
    "list_engines",
    "get_engine",
]

logger = logging.getLogger(__name__)

#: environment variable naming the engine :func:`select_engine` uses when none is given
ENGINE_ENV_VAR = "HYDROSCALE_ENGINE"


@dataclass(frozen=True)
class EngineSpec:
    """A routing engine: name, callable, and preference rank per device type (higher wins)."""

    name: str
    fn: Callable[..., torch.Tensor]
    rank: dict[str, int]
    available: Callable[[], bool] = lambda: True
    #: the engine routes a partition: callers pass ``cluster_of`` (clusters bounded in size,
    #: from :func:`hydroscale.partition.partition_network`)
    clustered: bool = False

    def supports(self, device_type: str) -> bool:
        return device_type in self.rank and self.available()


_ENGINES: dict[str, EngineSpec] = {}


def register_engine(spec: EngineSpec, *, overwrite: bool = False) -> EngineSpec:
    if spec.name in _ENGINES and not overwrite:
        raise ValueError(f"an engine named {spec.name!r} is already registered")
    _ENGINES[spec.name] = spec
    return spec


def list_engines() -> list[str]:
    return sorted(_ENGINES)


def get_engine(name: str) -> EngineSpec:
    try:
        return _ENGINES[name]
    except KeyError:
        known = ", ".join(list_engines())
        raise KeyError(f"unknown engine {name!r}; registered: {known}") from None


def select_engine(device: torch.device | str, explicit: str | None = None) -> EngineSpec:
    """The engine to use on ``device``: ``explicit``, else ``$HYDROSCALE_ENGINE``, else the
    highest-ranked registered engine that supports the device type."""
    dtype = torch.device(device).type
    name = explicit or os.environ.get(ENGINE_ENV_VAR) or None
    if name:
        spec = get_engine(name)
        if not spec.supports(dtype):
            raise ValueError(f"engine {name!r} does not run on device type {dtype!r}")
        return spec
    candidates = [s for s in _ENGINES.values() if s.supports(dtype)]
    if not candidates:
        raise RuntimeError(f"no routing engine supports device type {dtype!r}")
    best = max(candidates, key=lambda s: s.rank[dtype])
    logger.debug("selected engine %s for %s", best.name, dtype)
    return best
