"""River networks: the array-based :class:`RiverNetwork`, validation, synthetic forests.

This is the lowest floor: it imports nothing else of hydroscale. File readers live in
:mod:`hydroscale.io` (:func:`~hydroscale.io.read_routelink`,
:func:`~hydroscale.io.rapid.read_rapid_connect`).
"""

from . import synthetic
from ._format import format_ids
from ._network import RiverNetwork
from ._validation import NetworkError
from .synthetic import continental_forest

__all__ = ["NetworkError", "RiverNetwork", "continental_forest", "format_ids", "synthetic"]
