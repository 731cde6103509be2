"""Calibration: objectives (losses and metrics at gauges), the optimiser registry, the
single-device and distributed calibrators with checkpoints and their control switch, the
distributed gradient of a gauge loss, runoff sources, and the training recipes (hybrid
pipelines, synthetic twins) (DESIGN §2)."""

from ..routing import LevelRouter
from ._calibrator import CHECKPOINT_FORMAT, Calibrator, latest_checkpoint
from ._control import CalibrationControl
from ._distributed import DISTRIBUTED_CHECKPOINT_FORMAT, DistributedCalibrator
from ._gradient import DistributedGradient, IterationInterrupted
from ._objective import loss_defined
from ._optim import list_optimizers, make_optimizer, register_optimizer
from ._options import CalibrationOptions
from ._sources import RunoffModelSource, TensorSource, as_runoff_source, pull_runoff_model
from .losses import gauge_loss, get_loss, kge_loss, nse_loss, vnmse, vnmse_loss
from .metrics import kge, nse
from .observations import GaugeObservations, Period
from .pipelines import (
    HybridPipeline,
    RoutingStage,
    SyntheticTwin,
    Windows,
    learned_routing,
    routing_calibration,
    runoff_routing,
    split_by_basin,
    synthetic_twin,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "CalibrationControl",
    "CalibrationOptions",
    "Calibrator",
    "DISTRIBUTED_CHECKPOINT_FORMAT",
    "DistributedCalibrator",
    "DistributedGradient",
    "GaugeObservations",
    "HybridPipeline",
    "IterationInterrupted",
    "LevelRouter",
    "Period",
    "RoutingStage",
    "RunoffModelSource",
    "SyntheticTwin",
    "TensorSource",
    "Windows",
    "as_runoff_source",
    "gauge_loss",
    "get_loss",
    "kge",
    "kge_loss",
    "latest_checkpoint",
    "learned_routing",
    "list_optimizers",
    "loss_defined",
    "make_optimizer",
    "nse",
    "nse_loss",
    "pull_runoff_model",
    "register_optimizer",
    "routing_calibration",
    "runoff_routing",
    "split_by_basin",
    "synthetic_twin",
    "vnmse",
    "vnmse_loss",
]
