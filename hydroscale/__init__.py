"""hydroscale: exact, differentiable, distributed river routing for continental networks."""

from __future__ import annotations

import logging

from . import irf, network, routing
from .api import accumulate, downstream, route, route_rapid, upstream
from .irf import IRFSpec, register_irf
from .network import RiverNetwork
from .routing import route_oracle

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "IRFSpec",
    "RiverNetwork",
    "accumulate",
    "downstream",
    "irf",
    "network",
    "register_irf",
    "route",
    "route_oracle",
    "route_rapid",
    "routing",
    "upstream",
]
