"""Small workflows shared by the workflow and CLI tests."""

from __future__ import annotations

from typing import Any


def small_route(out_dir: Any, **sections: Any) -> dict[str, Any]:
    """A route workflow mapping: 150 synthetic reaches, 12 daily steps, linear storage."""
    wf: dict[str, Any] = {
        "kind": "route",
        "name": "tiny",
        "network": {"source": "synthetic", "reaches": 150, "seed": 3},
        "forcing": {"source": "synthetic", "steps": 12, "seed": 5, "scale": 2.0},
        "routing": {"irf": "linear_storage", "params": {"tau": {"uniform": [0.5, 1.5]}},
                    "substeps": 2, "time_chunk": 5, "engine": "torch", "dtype": "float64"},
        "partition": {"max_reaches": 32},
        "output": {"dir": str(out_dir), "overwrite": True,
                   "hydrographs": {"outlets": 2, "gauges": False}},
    }
    for name, values in sections.items():
        wf.setdefault(name, {}).update(values)
    return wf


def small_calibrate(out_dir: Any, **sections: Any) -> dict[str, Any]:
    """A calibrate workflow mapping: synthetic twin, 80 reaches, 24 daily steps, levels."""
    wf: dict[str, Any] = {
        "kind": "calibrate",
        "name": "tiny-twin",
        "network": {"source": "synthetic", "reaches": 80, "seed": 2},
        "forcing": {"source": "synthetic", "steps": 24, "seed": 1, "scale": 3.0},
        "routing": {"irf": "linear_storage", "engine": "levels", "window": 24,
                    "dtype": "float64"},
        "observations": {"source": "twin", "truth": {"tau": {"uniform": [0.5, 2.0],
                                                             "seed": 4}},
                         "gauges": 5},
        "model": {"kind": "free", "bounds": {"tau": [0.2, 4.0]}, "init": {"tau": 1.0}},
        "calibration": {"iterations": 4, "lr": 0.1, "warmup": 2},
        "output": {"dir": str(out_dir), "hydrographs": 2},
    }
    for name, values in sections.items():
        wf.setdefault(name, {}).update(values)
    return wf
