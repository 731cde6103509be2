"""How a calibration runs: one frozen, validated :class:`CalibrationOptions` (beside the
routing's :class:`~hydroscale.routing.RoutingOptions`), built once from a workflow or from
keywords and passed as one object to the calibrators and the distributed gradient."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._options import FrozenOptions
from ..routing import RoutingOptions
from ._optim import check_optimizer
from .losses import get_loss

__all__ = ["CalibrationOptions", "build_options", "calibrator_options"]


@dataclass(frozen=True)
class CalibrationOptions(FrozenOptions):
    """What a calibration optimises and how.

    Attributes
    ----------
    loss : ``"nse"``, ``"kge"`` or ``"vnmse"`` (:mod:`~hydroscale.calibration.losses`): the
        mean of the per-gauge loss over the used gauges (and batch).
    warmup : steps at the start of each period left out of the loss and metrics.
    train, validation : :class:`~hydroscale.calibration.Period` (or slice) of the training
        and validation steps; default all steps for training, no validation.
    optimizer : a registered optimiser name (``"adam"``, ``"sgd"``, see
        :func:`~hydroscale.calibration.register_optimizer`) or a picklable callable
        ``params -> torch.optim.Optimizer``.
    lr : learning rate of the named optimisers.
    gauge_fraction : fraction of the gauges drawn at random (seeded) for each iteration's
        loss (1 = all); metrics always use all gauges.
    checkpoint_dir, checkpoint_every, keep : write a checkpoint every ``checkpoint_every``
        iterations (and at the end) into ``checkpoint_dir``, keeping the last ``keep``.
    seed : seed of the calibrator's random generator (gauge sampling).
    """

    kind = "calibration"  # (a class attribute: no annotation, not a field)

    loss: str = "nse"
    warmup: int = 0
    train: Any = None
    validation: Any = None
    optimizer: str | Callable[..., Any] = "adam"
    lr: float = 0.05
    gauge_fraction: float = 1.0
    checkpoint_dir: str | Path | None = None
    checkpoint_every: int = 0
    keep: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        get_loss(self.loss)
        if int(self.warmup) != self.warmup or self.warmup < 0:
            raise ValueError(f"warmup must be an integer >= 0, got {self.warmup!r}")
        check_optimizer(self.optimizer)
        if not self.lr >= 0:
            raise ValueError(f"lr must be >= 0, got {self.lr!r}")
        if not 0 < self.gauge_fraction <= 1:
            raise ValueError(f"gauge_fraction must be in (0, 1], got {self.gauge_fraction}")
        if int(self.checkpoint_every) < 0 or int(self.keep) < 0:
            raise ValueError(f"checkpoint_every and keep must be >= 0, got "
                             f"{self.checkpoint_every}, {self.keep}")
        object.__setattr__(self, "warmup", int(self.warmup))


FIELDS = CalibrationOptions.field_names()


def build_options(routing: RoutingOptions | None, calibration: CalibrationOptions | None,
                  keywords: dict[str, Any], *, accept: tuple[str, ...] = ()
                  ) -> tuple[RoutingOptions, CalibrationOptions, dict[str, Any]]:
    """Split ``keywords`` into routing options, calibration options and those named in
    ``accept``; any other keyword is a ``TypeError`` naming it and the known ones."""
    routing_fields = RoutingOptions.field_names()
    r = {k: v for k, v in keywords.items() if k in routing_fields}
    c = {k: v for k, v in keywords.items() if k in FIELDS}
    rest = {k: v for k, v in keywords.items() if k in accept}
    unknown = sorted(set(keywords) - set(r) - set(c) - set(rest))
    if unknown:
        raise TypeError(f"unknown keyword(s) {unknown}: routing options are "
                        f"{sorted(routing_fields)}, calibration options {sorted(FIELDS)}"
                        + (f", and {sorted(accept)}" if accept else ""))
    return RoutingOptions.build(routing, **r), CalibrationOptions.build(calibration, **c), rest


def calibrator_options(model: Any, options: RoutingOptions | None,
                       calibration: CalibrationOptions | None,
                       engine_options: dict[str, Any] | None, keywords: dict[str, Any]
                       ) -> tuple[RoutingOptions, CalibrationOptions, dict[str, Any]]:
    """A calibrator's routing and calibration options (its IRF is ``model``'s; routing
    options found in ``engine_options`` amend them too) and the engine options left."""
    eng = dict(engine_options or {})
    routing_fields = RoutingOptions.field_names()
    moved = {k: eng.pop(k) for k in list(eng) if k in routing_fields}
    routing, cal, _ = build_options(options, calibration,
                                    {"irf": model.spec, **moved, **keywords})
    return routing, cal, eng
