"""How a run routes: one frozen, validated :class:`RoutingOptions`, built once (from a
workflow or from keywords) and passed as one object through every layer: the engines, the
distributed runtime, the calibrators, the run fingerprint of an output store."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .._options import FrozenOptions
from ..irf import IRFSpec, get_irf

__all__ = ["Routed", "RoutingOptions"]

_BACKENDS = ("auto", "torch", "triton")
_STORAGE = (None, torch.bfloat16, torch.float16)
_DTYPES = (torch.float32, torch.float64)


@dataclass(frozen=True)
class RoutingOptions(FrozenOptions):
    """The routing of a run.

    Attributes
    ----------
    irf : the impulse response: a registered name or an :class:`~hydroscale.irf.IRFSpec`
        (kept as the spec; ``irf_name`` is its name).
    substeps : f, routing at ``dt = Δt / f`` (runoff spread evenly over the f sub-steps,
        discharge averaged back).
    window : K, kernel taps in routing steps, or ``"auto"``: the shortest window that leaves
        at most ``window_tolerance`` of any in-cluster path's response out, for every
        parameter the run may use (at most the run's length).
    window_tolerance : the largest truncated mass (fraction of a path's unit response) a
        window may leave out of a run (default 1e-6, about float32 resolution); a window
        that leaves more is refused before the run
        (:class:`~hydroscale.routing.WindowTruncationError`).
    dtype : compute dtype of runoff and discharge (float32, or float64 for tests).
    storage_dtype : optional bfloat16/float16: runoff, transfer buffers and kernels are
        stored in it, products accumulate in float32 (Triton backend).
    aggregate_dtype : arithmetic of the path-kernel aggregation: float64 (default: kernels
        and the truncated-mass report exact to ~1e-14) or float32 (about half the time and
        memory, ~1e-6 relative error).
    backend : kernel backend, ``"auto"``, ``"torch"`` or ``"triton"``.
    precision : Triton matmul precision (see :func:`~hydroscale.kernels.path_conv`).
    allow_unstable : accept parameters the IRF's stability check rejects.
    max_batch_reaches : the clusters of a wave are routed in batches of at most this many
        reaches (bounds the temporaries; one kernel launch per batch).
    time_pieces : a forward without gradients on one device routes its steps in this many
        pieces, piece ``p`` one batch behind piece ``p - 1`` (on CUDA each piece on its own
        stream): a batch of piece ``p`` runs beside later batches of piece ``p - 1``, so the
        sequential time loops of node clusters (lakes) overlap the linear waves.  The
        discharge is the same up to the rounding of float32 sums (the float64 oracle's
        error is unchanged).  ``"auto"`` (default): 2 pieces on CUDA for a network with
        lakes that routes at least ``hydroscale.routing.AUTO_PIECES_WORK`` reach sub-steps
        per call, else 1 (see there for the measurements behind it).
    """

    kind = "routing"  # (a class attribute: no annotation, not a field)

    irf: Any = "muskingum"
    substeps: int = 1
    window: int | str = "auto"
    window_tolerance: float = 1e-6
    dtype: torch.dtype = torch.float32
    storage_dtype: torch.dtype | None = None
    aggregate_dtype: torch.dtype = torch.float64
    backend: str = "auto"
    precision: str | None = None
    allow_unstable: bool = False
    max_batch_reaches: int = field(default=1 << 17)
    time_pieces: int | str = "auto"

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "irf", get_irf(self.irf))
        if isinstance(self.substeps, bool) or int(self.substeps) != self.substeps \
                or self.substeps < 1:
            raise ValueError(f"substeps must be a positive integer, got {self.substeps!r}")
        set_(self, "substeps", int(self.substeps))
        w = self.window
        if w != "auto" and (isinstance(w, bool) or not isinstance(w, (int, float))
                            or int(w) != w or int(w) < 1):
            raise ValueError(f"window must be a positive number of steps or 'auto', got {w!r}")
        if w != "auto":
            set_(self, "window", int(w))
        if not self.window_tolerance >= 0:
            raise ValueError(f"window_tolerance must be >= 0, got {self.window_tolerance!r}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype}")
        if self.storage_dtype == self.dtype:
            set_(self, "storage_dtype", None)
        if self.storage_dtype not in _STORAGE:
            raise ValueError(f"storage_dtype must be None, bfloat16 or float16, got "
                             f"{self.storage_dtype}")
        if self.aggregate_dtype not in _DTYPES:
            raise ValueError(f"aggregate_dtype must be float32 or float64, got "
                             f"{self.aggregate_dtype}")
        if self.backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {list(_BACKENDS)}, got {self.backend!r}")
        if int(self.max_batch_reaches) < 1:
            raise ValueError(f"max_batch_reaches must be >= 1, got {self.max_batch_reaches}")
        tp = self.time_pieces
        if tp != "auto":
            if isinstance(tp, bool) or not isinstance(tp, (int, float)) or int(tp) != tp \
                    or tp < 1:
                raise ValueError(f"time_pieces must be a positive integer or 'auto', got "
                                 f"{tp!r}")
            set_(self, "time_pieces", int(tp))
        set_(self, "allow_unstable", bool(self.allow_unstable))

    @property
    def spec(self) -> IRFSpec:
        """The IRF (:class:`~hydroscale.irf.IRFSpec`)."""
        return self.irf

    @property
    def irf_name(self) -> str:
        return self.irf.name


class Routed:
    """What an engine built from :class:`RoutingOptions` reads of them: ``self.options``
    (set once by :meth:`_set_options`, from an options object and keywords), its device and
    read-only views of its fields; the window is the engine's own (``None`` while
    ``"auto"``: resolved later)."""

    options: RoutingOptions

    def _set_options(self, options: RoutingOptions | None, routing: dict[str, Any],
                     device: Any = None) -> RoutingOptions:
        """Build ``self.options`` from ``options`` amended by the ``routing`` keywords (the
        IRF too: ``irf="muskingum"``) and set ``self.device`` (default CPU)."""
        if isinstance(options, (str, IRFSpec)):
            name = options if isinstance(options, str) else options.name
            raise TypeError(f"options must be a RoutingOptions, got the IRF {name!r}; pass it "
                            f"as irf={name!r} (or in RoutingOptions(irf={name!r}))")
        self.options = RoutingOptions.build(options, **routing)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.window: int | None = (None if self.options.window == "auto"
                                   else int(self.options.window))
        return self.options

    spec = property(lambda self: self.options.spec, doc="The IRF.")
    f = property(lambda self: self.options.substeps, doc="Sub-steps per routing step.")
    dtype = property(lambda self: self.options.dtype)
    storage_dtype = property(lambda self: self.options.storage_dtype)
    aggregate_dtype = property(lambda self: self.options.aggregate_dtype)
    backend = property(lambda self: self.options.backend)
    precision = property(lambda self: self.options.precision)
    allow_unstable = property(lambda self: self.options.allow_unstable)
    window_tolerance = property(lambda self: float(self.options.window_tolerance))
    max_batch = property(lambda self: int(self.options.max_batch_reaches))
    time_pieces = property(lambda self: self.options.time_pieces,
                           doc="Pieces of a forward's steps (an int or ``\"auto\"``).")
