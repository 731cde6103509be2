"""The optimiser registry: names -> ``torch.optim`` factories, refusing silent overwrite."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["check_optimizer", "list_optimizers", "make_optimizer", "register_optimizer"]

_OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "sgd": torch.optim.SGD,
}


def register_optimizer(name: str, factory: Callable[..., torch.optim.Optimizer], *,
                       overwrite: bool = False) -> None:
    """Register ``factory(params, lr=...) -> Optimizer`` under ``name`` (a module-level
    callable: distributed calibrations build it on every worker)."""
    if name in _OPTIMIZERS and not overwrite:
        raise ValueError(f"an optimiser named {name!r} is already registered")
    _OPTIMIZERS[name] = factory


def list_optimizers() -> list[str]:
    return sorted(_OPTIMIZERS)


def check_optimizer(spec: Any) -> None:
    """Raise unless ``spec`` is a registered name or a callable."""
    if callable(spec):
        return
    if spec not in _OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {list_optimizers()} or a callable "
                         f"params -> torch.optim.Optimizer, got {spec!r}")


def make_optimizer(spec: Any, params: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    """The optimiser ``spec`` (a registered name, with ``lr``; or a callable) over
    ``params``."""
    check_optimizer(spec)
    if callable(spec):
        return spec(params)
    return _OPTIMIZERS[spec](params, lr=lr)
