"""hydroscale: exact, differentiable, distributed river routing for continental networks."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ._lazy import lazy_exports

# Lazy (PEP 562): `import hydroscale` -- which every `hydroscale.x` import runs first, the
# command line's included -- imports no torch until a name below is used.
__getattr__, __dir__ = lazy_exports(__name__, {
    ".api": ("accumulate", "downstream", "route", "route_rapid", "upstream"),
    ".irf": ("irf", "IRFSpec", "register_irf"),
    ".network": ("network", "RiverNetwork"),
    ".routing": ("routing", "route_oracle"),
})

if TYPE_CHECKING:
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
