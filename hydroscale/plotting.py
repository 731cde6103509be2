"""Hydrograph figures (matplotlib, Agg backend; imported lazily by callers)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["plot_hydrographs"]

logger = logging.getLogger(__name__)


def plot_hydrographs(
    path: str | Path,
    panels: Sequence[tuple[str, Mapping[str, tuple[np.ndarray, np.ndarray]]]],
    *,
    ylabel: str = "discharge (m³/s)",
    xlabel: str = "time (UTC)",
    title: str | None = None,
) -> Path:
    """Write a PNG with one panel per reach.

    ``panels`` is a sequence of ``(panel title, {series label: (time [T], values [T])})``;
    times are ``datetime64`` in UTC (naive values are taken as UTC) and every panel's x axis
    is labelled ``xlabel`` with dates as ``MM-DD HH:MM``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    n = max(1, len(panels))
    cols = min(2, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 3.4 * rows), squeeze=False)
    for ax, (name, series) in zip(axes.flat, panels):
        for label, (t, v) in series.items():
            ax.plot(t, v, label=label, lw=1.4)
        ax.set_title(name, fontsize=10)
        ax.set_ylabel(ylabel)
        ax.set_xlabel(xlabel)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M", tz="UTC"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    logger.info("wrote %s", path)
    return path
