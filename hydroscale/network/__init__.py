"""River networks: the array-based :class:`RiverNetwork`, validation, readers, synthetic forests."""

from . import synthetic
from ._network import RiverNetwork
from ._validation import NetworkError
from .synthetic import continental_forest

__all__ = ["NetworkError", "RiverNetwork", "continental_forest", "synthetic"]
