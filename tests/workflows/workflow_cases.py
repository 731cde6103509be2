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
