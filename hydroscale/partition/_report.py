"""Text and PNG reports of a :class:`~hydroscale.partition.Partition`.

The functions take any object with a partition's arrays and summaries (:class:`PartitionLike`),
so this module does not import :mod:`._partition` (which calls it from ``report``/``plot``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

__all__ = ["PartitionLike", "report_text", "plot_partition"]

logger = logging.getLogger(__name__)

_MAX_WAVE_ROWS = 40


class PartitionLike(Protocol):
    """What the reports read from a :class:`~hydroscale.partition.Partition`."""

    n_workers: int
    size: np.ndarray  # reaches per cluster [C]
    travel_time: np.ndarray  # longest in-cluster travel time per cluster [C], steps
    work: np.ndarray  # work per cluster [C]
    wave: np.ndarray  # wave of each cluster [C]
    worker: np.ndarray  # worker of each cluster [C]
    src_cluster: np.ndarray  # upstream cluster of each transfer edge [E]
    dst_cluster: np.ndarray  # downstream cluster of each transfer edge [E]
    options: Mapping[str, Any]

    @property
    def n_reaches(self) -> int: ...

    @property
    def n_clusters(self) -> int: ...

    @property
    def n_waves(self) -> int: ...

    @property
    def n_transfer_edges(self) -> int: ...

    def wave_load(self) -> np.ndarray: ...  # [n_waves, n_workers]

    def wave_imbalance(self) -> np.ndarray: ...  # [n_waves]

    def critical_path_work(self) -> float: ...


def _stats(x: np.ndarray) -> str:
    if x.size == 0:
        return "-"
    q = np.percentile(x, [0, 50, 100])
    return f"min {q[0]:.4g}  median {q[1]:.4g}  mean {x.mean():.4g}  max {q[2]:.4g}"


def report_text(p: PartitionLike) -> str:
    """The partition summary and a per-wave table, as text."""
    load = p.wave_load()
    imb = p.wave_imbalance()
    per_wave = np.bincount(p.wave, minlength=p.n_waves)
    cross = p.worker[p.src_cluster] != p.worker[p.dst_cluster]
    cross_in = np.bincount(p.wave[p.dst_cluster][cross], minlength=p.n_waves)
    edges_in = np.bincount(p.wave[p.dst_cluster], minlength=p.n_waves)
    total = float(p.work.sum())
    cp = p.critical_path_work()
    opts = p.options
    tt = opts.get("max_travel_time")
    lines = [
        f"partition of {p.n_reaches} reaches into {p.n_clusters} clusters, "
        f"{p.n_waves} waves, {p.n_workers} worker(s)",
        f"bounds: max_reaches {opts.get('max_reaches')}, min_reaches {opts.get('min_reaches')}, "
        f"max_travel_time {'-' if tt is None else f'{tt:.4g} steps'}",
        f"reaches per cluster: {_stats(p.size)}",
        f"longest in-cluster travel time (steps): {_stats(p.travel_time)}",
        f"work: total {total:.6g}, critical path {cp:.6g} "
        f"({cp / total if total else 0:.2%} of total; "
        f"ideal speed-up {total / max(cp, 1e-300):.1f})",
        f"transfer edges: {p.n_transfer_edges}, cross-worker {int(cross.sum())}",
        "",
        f"{'wave':>5} {'clusters':>9} {'work':>11} {'min/worker':>11} {'max/worker':>11} "
        f"{'imbalance':>10} {'edges in':>9} {'cross-wk':>9}",
    ]
    rows = range(p.n_waves)
    if p.n_waves > _MAX_WAVE_ROWS:
        half = _MAX_WAVE_ROWS // 2
        rows = list(range(half)) + [-1] + list(range(p.n_waves - half, p.n_waves))
    for w in rows:
        if w < 0:
            lines.append(f"{'...':>5}")
            continue
        lines.append(
            f"{w:>5} {per_wave[w]:>9} {load[w].sum():>11.6g} {load[w].min():>11.6g} "
            f"{load[w].max():>11.6g} {imb[w]:>10.2%} {edges_in[w]:>9} {cross_in[w]:>9}"
        )
    return "\n".join(lines)


def plot_partition(p: PartitionLike, path: str | Path) -> Path:
    """Four panels: cluster sizes, work per wave and worker shares, imbalance, travel times."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    load = p.wave_load()
    waves = np.arange(p.n_waves)
    fig, ax = plt.subplots(2, 2, figsize=(11, 8))
    ax[0, 0].hist(p.size, bins=50, color="tab:blue")
    ax[0, 0].set(xlabel="reaches per cluster", ylabel="clusters", title="cluster sizes")
    total = load.sum(axis=1)
    share = load / np.where(total > 0, total, 1.0)[:, None]
    bottom = np.zeros(p.n_waves)
    for k in range(p.n_workers):
        ax[0, 1].bar(waves, share[:, k], bottom=bottom, width=1.0, label=f"worker {k}")
        bottom += share[:, k]
    ax[0, 1].set(xlabel="wave", ylabel="share of the wave's work", title="work per wave")
    if p.n_workers <= 8:
        ax[0, 1].legend(fontsize=7, loc="lower left")
    twin = ax[0, 1].twinx()
    twin.plot(waves, total, "k.-", ms=3, label="total work")
    twin.set_yscale("log")
    twin.set_ylabel("total work (black)")
    ax[1, 0].plot(waves, 100 * p.wave_imbalance(), "o-", ms=3)
    ax[1, 0].set(xlabel="wave", ylabel="max / mean worker load - 1 (%)", title="load imbalance")
    ax[1, 1].hist(p.travel_time, bins=50, color="tab:green")
    ax[1, 1].set(
        xlabel="longest in-cluster travel time (routing steps)",
        ylabel="clusters",
        title="within-cluster travel time",
    )
    fig.suptitle(
        f"{p.n_reaches} reaches, {p.n_clusters} clusters, {p.n_waves} waves, {p.n_workers} workers"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    logger.info("partition plot written to %s", path)
    return path
