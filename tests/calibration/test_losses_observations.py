"""Losses (hand-computed, warm-up, NaN), gauge observations (CSV/NetCDF/Zarr round trips,
ids, periods) and the control switch."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from hydroscale.calibration import (
    CalibrationControl,
    GaugeObservations,
    Period,
    gauge_loss,
    kge_loss,
    nse,
    nse_loss,
    vnmse,
    vnmse_loss,
)
from hydroscale.network import RiverNetwork


def test_vnmse_hand_computed():
    o = torch.tensor([1.0, 2.0, 3.0, float("nan")], dtype=torch.float64)
    s = torch.tensor([1.0, 3.0, 2.0, 100.0], dtype=torch.float64)
    # valid steps 0..2: mse = 2/3, std(o) = sqrt(2/3); eps = 0 gives mse/var = 1
    assert float(vnmse(s, o, eps=0.0)) == pytest.approx(1.0, rel=1e-14)
    assert float(vnmse(s, o, eps=0.1)) == pytest.approx((2 / 3) / (np.sqrt(2 / 3) + 0.1) ** 2)


def test_losses_mean_over_gauges_and_warmup():
    rng = np.random.default_rng(0)
    obs = torch.as_tensor(rng.uniform(1, 2, (3, 20)))
    sim = obs + torch.as_tensor(rng.normal(0, 0.1, (3, 20)))
    want = float((1 - nse(sim[:, 5:], obs[:, 5:])).mean())
    assert float(nse_loss(sim, obs, warmup=5)) == pytest.approx(want, rel=1e-12)
    # nothing in the warm-up counts
    sim2 = sim.clone()
    sim2[:, :5] = 1e6
    assert float(nse_loss(sim2, obs, warmup=5)) == pytest.approx(want, rel=1e-12)
    assert float(kge_loss(obs, obs)) == pytest.approx(0.0, abs=1e-12)
    assert float(vnmse_loss(obs, obs)) == 0.0


def test_loss_skips_undefined_gauges_and_refuses_none():
    obs = torch.tensor([[1.0, 2.0, 3.0], [float("nan")] * 3], dtype=torch.float64)
    sim = torch.tensor([[1.0, 2.0, 4.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    # gauge 1 has no observation: the loss is gauge 0's alone, 1 / 2
    assert float(nse_loss(sim, obs)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="undefined at every gauge"):
        gauge_loss("nse", sim[1:], obs[1:])
    with pytest.raises(KeyError, match="unknown loss 'mse'"):
        gauge_loss("mse", sim, obs)


@pytest.fixture
def gauges() -> GaugeObservations:
    values = np.array([[1.0, np.nan, 3.0, 4.0], [0.5, 0.25, np.nan, 1.0]])
    time = np.array(["2021-08-23T13", "2021-08-23T14", "2021-08-23T15", "2021-08-23T16"],
                    dtype="datetime64[ns]")
    return GaugeObservations([30, 10], values, time)


def test_csv_round_trip(tmp_path, gauges):
    path = gauges.to_csv(tmp_path / "obs.csv")
    back = GaugeObservations.from_csv(path)
    assert back.ids.tolist() == [30, 10]
    np.testing.assert_array_equal(back.values, gauges.values)
    np.testing.assert_array_equal(back.time, gauges.time)


def test_netcdf_and_zarr_round_trip(tmp_path, gauges):
    da = gauges.to_dataarray()
    da.to_dataset().to_netcdf(tmp_path / "obs.nc")
    da.to_dataset().to_zarr(tmp_path / "obs.zarr", consolidated=False)
    for back in (GaugeObservations.from_netcdf(tmp_path / "obs.nc"),
                 GaugeObservations.from_zarr(tmp_path / "obs.zarr", "discharge")):
        assert back.ids.tolist() == [30, 10]
        np.testing.assert_array_equal(back.values, gauges.values)
        np.testing.assert_array_equal(back.time, gauges.time)


def test_ids_periods_and_errors(gauges):
    net = RiverNetwork.from_arrays([10, 20, 30], [20, 30, 0])
    assert gauges.index_in(net).tolist() == [2, 0]
    assert gauges.subset([10]).values.tolist()[0][1] == 0.25
    assert gauges.valid_counts().tolist() == [3, 3]
    assert gauges.period(Period(1, None)) == slice(1, 4)
    assert gauges.period(Period("2021-08-23T14", "2021-08-23T16")) == slice(1, 3)
    assert gauges.valid_counts(slice(0, 2)).tolist() == [1, 2]
    other = RiverNetwork.from_arrays([10, 20], [20, 0])
    with pytest.raises(ValueError, match="30"):
        gauges.index_in(other)
    with pytest.raises(ValueError, match="listed twice: \\[5\\]"):
        GaugeObservations([5, 5], np.zeros((2, 3)))
    with pytest.raises(ValueError, match="selects no step"):
        gauges.period(Period(3, 3))


def test_control_pause_resume_stop():
    c = CalibrationControl()
    assert c.state == "running" and c.wait_while_paused(timeout=0.01)
    c.apply("pause")
    assert c.state == "paused" and not c.wait_while_paused(timeout=0.01)
    released = []
    t = threading.Thread(target=lambda: released.append(c.wait_while_paused()))
    t.start()
    c.resume()
    t.join(timeout=5)
    assert released == [True]
    c.stop()
    c.pause()  # a stop wins
    assert c.state == "stopped" and not c.wait_while_paused(timeout=0.01)
    with pytest.raises(ValueError, match="unknown command 'halt'"):
        c.apply("halt")
