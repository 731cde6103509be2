"""The on-disk cache of fitted windows: a later router of the same clusters, parameters and
options reads the window back without aggregating; anything that changes the fit misses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _engine_cases import random_clusters, random_forest

from hydroscale.routing import RivTreeCluster, StagedRouter
from hydroscale.routing import _router as router_module
from hydroscale.routing._window_cache import CACHE_ENV_VAR, cache_dir


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "cache"))
    return tmp_path / "cache"


def _setup(seed=4):
    net = random_forest([40, 25, 10], seed=seed)
    cs = RivTreeCluster(net, random_clusters(net, 0.2, 0.5, seed=seed))
    rng = np.random.default_rng(seed)
    p = torch.tensor(np.stack([rng.uniform(0.3, 2.0, net.n_reaches),
                               rng.uniform(0.1, 0.3, net.n_reaches)], 1))
    return cs, p


def _router(cs, **kw):
    return StagedRouter(cs, irf="muskingum", substeps=3, backend="torch", allow_unstable=True,
                        dtype=torch.float64, **kw)


def test_second_router_reads_the_fitted_window_back(cache, monkeypatch):
    cs, p = _setup()
    fitted = _router(cs).auto_window(p, max_steps=200)
    assert len(list((cache / "windows").glob("*.json"))) == 1

    def no_aggregation(*a, **k):
        raise AssertionError("aggregated although the window was cached")

    monkeypatch.setattr(router_module, "aggregate", no_aggregation)
    assert _router(cs).auto_window(p.clone(), max_steps=200) == fitted
    # what changes the fit misses the cache: parameters, cap, sub-steps, a subset
    for call in (lambda: _router(cs).auto_window(p * 1.5, max_steps=200),
                 lambda: _router(cs).auto_window(p, max_steps=100),
                 lambda: StagedRouter(cs, irf="muskingum", substeps=4, backend="torch",
                                      allow_unstable=True).auto_window(p, max_steps=200),
                 lambda: _router(cs, only=[0, 1]).auto_window(p, max_steps=200)):
        with pytest.raises(AssertionError, match="aggregated although"):
            call()


def test_cached_window_equals_a_fresh_fit(cache, monkeypatch):
    cs, p = _setup(seed=7)
    first = _router(cs).auto_window(p, max_steps=300)
    monkeypatch.setenv(CACHE_ENV_VAR, "off")
    assert cache_dir() is None
    assert _router(cs).auto_window(p, max_steps=300) == first  # fitted again, same window
    assert first > 2


def test_unreadable_cache_entry_is_refitted(cache):
    cs, p = _setup(seed=9)
    first = _router(cs).auto_window(p, max_steps=200)
    (entry,) = (cache / "windows").glob("*.json")
    entry.write_text("{not json")
    assert _router(cs).auto_window(p, max_steps=200) == first
    assert '"window"' in entry.read_text()  # rewritten whole
