"""Routing engines: the float64 oracle, the engine registry (and LTIRouter/StagedRouter)."""

from ._engines import EngineSpec, get_engine, list_engines, register_engine, select_engine
from .oracle import causal_conv_fft, route_oracle

__all__ = [
    "EngineSpec",
    "causal_conv_fft",
    "get_engine",
    "list_engines",
    "register_engine",
    "route_oracle",
    "select_engine",
]
