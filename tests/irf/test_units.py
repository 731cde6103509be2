"""Parameter units live on the IRF registry (IRFSpec.units) and drive every SI conversion."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from hydroscale.irf import IRFSpec, get_irf, list_irfs, time_exponent

CATALOGUE_UNITS = {
    "pure_lag": {"delay": "s"},
    "linear_storage": {"tau": "s"},
    "nash_cascade": {"tau": "s", "n": "1"},
    "muskingum": {"k": "s", "x": "1"},
    "hayami": {"L": "m", "D": "m2 s-1", "c": "m s-1"},
}


def _kernel(p, n, f):
    return torch.ones(*p["a"].shape, n, dtype=torch.float64) / n


@pytest.mark.parametrize("name", sorted(CATALOGUE_UNITS))
def test_catalogue_declares_a_unit_for_every_parameter(name: str) -> None:
    spec = get_irf(name)
    assert spec.units_declared
    assert spec.units == CATALOGUE_UNITS[name]
    assert list(spec.units) == list(spec.params)


def test_every_registered_irf_names_every_parameter() -> None:
    for name in list_irfs():
        spec = get_irf(name)
        assert set(spec.units) == set(spec.params), name


def test_time_exponents_and_step_factors() -> None:
    assert get_irf("muskingum").time_exponents == {"k": 1, "x": 0}
    assert get_irf("hayami").time_exponents == {"L": 0, "D": -1, "c": -1}
    assert get_irf("nash_cascade").time_exponents == {"tau": 1, "n": 0}
    # k = 7200 s with hourly steps is 2 steps; c = 1 m/s is 3600 m/step; D = 10 m²/s ...
    np.testing.assert_allclose(get_irf("muskingum").step_factors(3600.0), [1 / 3600.0, 1.0])
    np.testing.assert_allclose(get_irf("hayami").step_factors(3600.0), [1.0, 3600.0, 3600.0])
    with pytest.raises(ValueError, match="dt must be a positive number of seconds"):
        get_irf("muskingum").step_factors(0.0)


@pytest.mark.parametrize("unit, e", [("1", 0), ("s", 1), ("m", 0), ("m s-1", -1),
                                     ("m2 s-1", -1), ("s2", 2), ("kg m-3", 0)])
def test_time_exponent_parses_si_units(unit: str, e: int) -> None:
    assert time_exponent(unit) == e


@pytest.mark.parametrize("unit", ["", "h", "m/s", "s s", "m^2", "days"])
def test_bad_units_are_refused_naming_the_form(unit: str) -> None:
    with pytest.raises(ValueError, match="unit"):
        time_exponent(unit)


def test_custom_irf_units_default_to_dimensionless() -> None:
    spec = IRFSpec("units_default_test", _kernel, params=("a", "b"),
                   bounds={"a": (0.0, 1.0), "b": (0.0, 1.0)})
    assert spec.units == {"a": "1", "b": "1"} and not spec.units_declared
    with pytest.raises(ValueError, match="declares no parameter units"):
        spec.step_factors(3600.0)
    half = IRFSpec("units_half_test", _kernel, params=("a", "b"),
                   bounds={"a": (0.0, 1.0), "b": (0.0, 1.0)}, units={"a": "s"})
    assert half.units == {"a": "s", "b": "1"} and half.units_declared
    assert half.step_factors(10.0) == (0.1, 1.0)
    assert pickle.loads(pickle.dumps(half)).units == half.units  # specs travel to workers


def test_bad_units_on_a_spec_are_refused() -> None:
    with pytest.raises(ValueError, match=r"units name unknown parameters \['z'\]"):
        IRFSpec("units_bad_test", _kernel, params=("a",), bounds={"a": (0.0, 1.0)},
                units={"z": "s"})
    with pytest.raises(ValueError, match=r"units\['a'\]: unit 'hours'"):
        IRFSpec("units_bad_test", _kernel, params=("a",), bounds={"a": (0.0, 1.0)},
                units={"a": "hours"})

