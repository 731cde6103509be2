"""Calibration: losses and metrics, gauge observations, the single-device and distributed
calibrators with checkpoints, and their control switch (DESIGN §2)."""

from ..routing.levelwise import LevelRouter
from ._calibrator import CHECKPOINT_FORMAT, Calibrator, latest_checkpoint
from ._control import CalibrationControl
from ._distributed import DISTRIBUTED_CHECKPOINT_FORMAT, DistributedCalibrator
from .losses import gauge_loss, get_loss, kge_loss, nse_loss, vnmse, vnmse_loss
from .metrics import kge, nse
from .observations import GaugeObservations, Period

__all__ = [
    "CHECKPOINT_FORMAT",
    "CalibrationControl",
    "Calibrator",
    "DISTRIBUTED_CHECKPOINT_FORMAT",
    "DistributedCalibrator",
    "GaugeObservations",
    "LevelRouter",
    "Period",
    "gauge_loss",
    "get_loss",
    "kge",
    "kge_loss",
    "latest_checkpoint",
    "nse",
    "nse_loss",
    "vnmse",
    "vnmse_loss",
]
