"""Hydrograph figures: station ids in the titles, UTC times on a labelled x axis, references
beside ours (the figure is captured as it is saved)."""

from __future__ import annotations

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")


@pytest.fixture
def saved(monkeypatch):
    """The figures saved during a test (their axes are inspected after the PNG is written)."""
    from matplotlib.figure import Figure

    figs = []
    original = Figure.savefig

    def keep(self, *args, **kwargs):
        figs.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    return figs


def test_time_axis_is_labelled_utc(tmp_path, saved):
    from hydroscale.plotting import plot_hydrographs

    t = np.datetime64("2021-08-23T13:00") + np.arange(3) * np.timedelta64(1, "h")
    path = plot_hydrographs(tmp_path / "h.png", [("reach 7", {"ours": (t, [1.0, 2.0, 3.0])})])
    assert path.stat().st_size > 5_000
    ax = saved[0].axes[0]
    assert ax.get_xlabel() == "time (UTC)" and ax.get_ylabel() == "discharge (m³/s)"
    fmt = ax.xaxis.get_major_formatter()
    assert fmt(matplotlib.dates.date2num(t[1])) == "08-23 14:00"  # the UTC hour as given


def test_demo_figure_names_stations_and_shows_nwm_and_usgs(tmp_path, saved):
    from hydroscale.workflows import build_inputs, load_workflow
    from hydroscale.workflows._route import _figure

    cfg = load_workflow("workflows/demo.yaml", ["forcing.steps=4", "cluster=null"])
    inputs = build_inputs(cfg)
    net = inputs.network
    station = "08158000"  # Colorado River at Austin, on a gauged reach of the bundled basin
    g = int(np.nonzero(np.char.strip(net.attrs["gages"].astype(str)) == station)[0][0])
    keep = np.array([int(net.outlets[0]), g])
    _figure(tmp_path / "h.png", inputs, keep, np.ones((2, 4)), "demo", "ours (warm start)")
    titles = [ax.get_title() for ax in saved[0].axes[:2]]
    assert titles == [f"outlet {net.ids[keep[0]]}", f"reach {net.ids[g]}, USGS {station}"]
    labels = [[line.get_label() for line in ax.get_lines()] for ax in saved[0].axes[:2]]
    assert labels[0] == ["ours (warm start)", "NWM streamflow"]  # no gauge at the outlet
    assert labels[1] == ["ours (warm start)", "NWM streamflow", "USGS"]
    # ours is plotted at the end of each hourly step: 13:00 .. 16:00 UTC for the first four
    x = saved[0].axes[1].get_lines()[0].get_xdata()
    assert np.datetime64(x[0], "m") == np.datetime64("2021-08-23T13:00")
