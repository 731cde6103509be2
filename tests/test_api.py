"""hydroscale.route through numpy, torch, xarray, jax and cupy, against the float64 oracle."""

from __future__ import annotations

import datetime

import numpy as np
import pytest
import torch
import xarray as xr

import hydroscale as hs
from hydroscale import api
from hydroscale.network import RiverNetwork, continental_forest
from hydroscale.routing import EngineSpec, route_oracle
from hydroscale.routing import _engines as engines

T = 40

# (dtype, rtol, atol relative to the largest discharge)
DTYPES = [(np.float64, 1e-12), (np.float32, 2e-6)]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def net() -> RiverNetwork:
    return continental_forest(400, seed=7)


@pytest.fixture(scope="module")
def case(net):
    rng = np.random.default_rng(11)
    n = net.n_reaches
    params = {"k": rng.uniform(1.0, 2.0, n), "x": rng.uniform(0.1, 0.25, n)}
    runoff = rng.uniform(0.0, 2.0, (3, n, T))
    return runoff, params


def oracle(net, runoff, params, **kw):
    # float64 arrays: the oracle would take plain float scalars as float32 (torch's default)
    params = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    r = np.asarray(runoff, dtype=np.float64)
    return route_oracle(net, r, "muskingum", params, **kw).numpy()


def close(got, want, tol):
    got = np.asarray(got, dtype=np.float64)
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * np.abs(want).max())


# ---------------------------------------------------------------------------- numpy and torch
@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("batched", [False, True])
def test_numpy_round_trip(net, case, dtype, tol, batched):
    runoff, params = case
    r = runoff if batched else runoff[0]
    q = hs.route(net, r.astype(dtype), "muskingum", params)
    assert type(q) is np.ndarray and q.dtype == dtype and q.shape == r.shape
    close(q, oracle(net, r, params), tol)


def test_numpy_integer_runoff_gives_float64(net, case):
    _, params = case
    r = np.ones((net.n_reaches, 5), dtype=np.int32)
    q = hs.route(net, r, "muskingum", params)
    assert q.dtype == np.float64
    close(q, oracle(net, r, params), 1e-12)


def test_numpy_read_only_and_strided_inputs(net, case):
    runoff, params = case
    r = np.asfortranarray(runoff[0])
    r.setflags(write=False)
    q = hs.route(net, r, "muskingum", params)
    close(q, oracle(net, runoff[0], params), 1e-12)
    flipped = runoff[0][:, ::-1]
    close(hs.route(net, flipped, "muskingum", params), oracle(net, flipped.copy(), params), 1e-12)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
def test_torch_round_trip(net, case, device, dtype, tol):
    runoff, params = case
    r = torch.as_tensor(runoff, dtype=dtype, device=device)
    p = {k: torch.as_tensor(v, device=device) for k, v in params.items()}
    q = hs.route(net, r, "muskingum", p)
    assert isinstance(q, torch.Tensor) and q.dtype == dtype and q.device == r.device
    assert q.shape == r.shape
    close(q.cpu(), oracle(net, runoff, params), tol)


def test_substeps_and_irfs(net, case):
    runoff, _ = case
    n = net.n_reaches
    rng = np.random.default_rng(3)
    tau = rng.uniform(0.5, 3.0, n)
    q = hs.route(net, runoff[0], "linear_storage", {"tau": tau}, substeps=4)
    want = route_oracle(net, runoff[0], "linear_storage", {"tau": tau}, substeps=4).numpy()
    close(q, want, 1e-12)
    q = hs.route(net, runoff[0], "nash_cascade", {"tau": 0.7, "n": 2.5})
    # np.float64 scalars: the oracle would take plain floats as float32 (torch's default)
    nash = {"tau": np.float64(0.7), "n": np.float64(2.5)}
    want = route_oracle(net, runoff[0], "nash_cascade", nash).numpy()
    close(q, want, 1e-12)


def test_unstable_parameters_need_allow_unstable(net, case):
    runoff, _ = case
    params = {"k": 3.0, "x": 0.3}  # 2kx = 1.8 > dt: C0 < 0
    with pytest.raises(hs.irf.UnstableParametersError, match="allow_unstable"):
        hs.route(net, runoff[0], "muskingum", params)
    q = hs.route(net, runoff[0], "muskingum", params, allow_unstable=True)
    close(q, oracle(net, runoff[0], params, allow_unstable=True), 1e-12)


# ---------------------------------------------------------------------------- parameters
def test_params_forms_agree(net, case):
    runoff, params = case
    n = net.n_reaches
    want = oracle(net, runoff[0], params)
    table = np.stack([params["k"], params["x"]], axis=-1)
    perm = np.random.default_rng(5).permutation(n)
    k_xr = xr.DataArray(params["k"][perm], dims="reach", coords={"reach": net.ids[perm]})
    named = xr.DataArray(
        table[perm][:, ::-1], dims=("reach", "param"),
        coords={"reach": net.ids[perm], "param": ["x", "k"]},
    )
    forms = [
        table,
        torch.as_tensor(table, dtype=torch.float32),
        {"k": k_xr, "x": torch.as_tensor(params["x"])},
        {"k": list(params["k"]), "x": params["x"]},
        named,
    ]
    for form in forms:
        close(hs.route(net, runoff[0], "muskingum", form), want, 2e-6)
    scalar = hs.route(net, runoff[0], "muskingum", {"k": 1.5, "x": np.float32(0.2)})
    close(scalar, oracle(net, runoff[0], {"k": np.float64(1.5), "x": np.float64(0.2)}), 1e-7)


@pytest.mark.parametrize(
    "dt", [3600.0, datetime.timedelta(hours=1), np.timedelta64(60, "m"), "1h"]
)
def test_dt_converts_seconds_to_steps(net, case, dt):
    runoff, params = case
    seconds = {"k": params["k"] * 3600.0, "x": params["x"]}
    close(hs.route(net, runoff[0], "muskingum", seconds, dt=dt), oracle(net, runoff[0], params),
          1e-12)


def test_dt_hayami_rates_scale_with_dt(small_tree):
    n = small_tree.n_reaches
    r = np.random.default_rng(0).uniform(size=(n, 30))
    steps = {"L": 5000.0, "D": 2.0e6, "c": 4000.0}  # per routing step of 1 day
    si = {"L": 5000.0, "D": 2.0e6 / 86400.0, "c": 4000.0 / 86400.0}  # m²/s, m/s
    close(hs.route(small_tree, r, "hayami", si, dt="1D"),
          route_oracle(small_tree, r, "hayami", steps).numpy(), 1e-10)


# ---------------------------------------------------------------------------- gradient
def test_gradient_matches_finite_differences(small_tree):
    n = small_tree.n_reaches
    gen = torch.Generator().manual_seed(0)
    r = torch.rand(2, n, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    k = (1.0 + torch.rand(n, dtype=torch.float64, generator=gen)).requires_grad_()
    x = (0.1 + 0.15 * torch.rand(n, dtype=torch.float64, generator=gen)).requires_grad_()
    w = torch.rand(2, n, 6, dtype=torch.float64, generator=gen)

    def loss(r, k, x):
        return (hs.route(small_tree, r, "muskingum", {"k": k, "x": x}) * w).sum()

    assert torch.autograd.gradcheck(loss, (r, k, x), eps=1e-6, atol=1e-7, rtol=1e-6)
    # and against plain central differences, independently of gradcheck
    g_k = torch.autograd.grad(loss(r, k, x), k)[0]
    with torch.no_grad():
        for i in range(n):
            e = torch.zeros(n, dtype=torch.float64)
            e[i] = 1e-6
            fd = (loss(r, k + e, x) - loss(r, k - e, x)) / 2e-6
            assert float(g_k[i]) == pytest.approx(float(fd), rel=1e-6, abs=1e-8)


def test_gradient_flows_through_params_on_every_engine(small_tree, monkeypatch):
    n = small_tree.n_reaches
    r = torch.rand(n, 10, dtype=torch.float64)
    want_q = route_oracle(small_tree, r, "muskingum", {"k": np.float64(1.5), "x": np.float64(0.2)})
    for name in engines.list_engines():
        if not engines.get_engine(name).supports("cpu"):
            continue
        k = torch.full((n,), 1.5, dtype=torch.float64, requires_grad=True)
        q = hs.route(small_tree, r, "muskingum", {"k": k, "x": 0.2}, engine=name)
        close(q.detach(), want_q.numpy(), 1e-9)
        q.sum().backward()
        assert k.grad is not None and torch.isfinite(k.grad).all()


# ---------------------------------------------------------------------------- engine choice
def test_small_inputs_use_oracle_large_ones_the_best_engine(net, case, monkeypatch):
    runoff, params = case
    calls = []

    def spy(network, runoff, irf, params, substeps=1, **options):
        calls.append(runoff.shape)
        return route_oracle(network, runoff, irf, params, substeps=substeps, **options).to(
            runoff.dtype
        )

    monkeypatch.setitem(engines._ENGINES, "spy", EngineSpec("spy", spy, rank={"cpu": 1000}))
    monkeypatch.delenv(engines.ENGINE_ENV_VAR, raising=False)
    want = oracle(net, runoff[0], params)
    close(hs.route(net, runoff[0], "muskingum", params), want, 1e-12)
    assert calls == []  # small: the oracle
    monkeypatch.setattr(api, "SMALL_WORK", 10)
    close(hs.route(net, runoff[0], "muskingum", params), want, 1e-12)
    assert calls == [(1, net.n_reaches, T)]  # large: the best-ranked engine
    monkeypatch.setattr(api, "SMALL_WORK", 1 << 40)
    hs.route(net, runoff[0], "muskingum", params, engine="spy")
    monkeypatch.setenv(engines.ENGINE_ENV_VAR, "spy")
    hs.route(net, runoff[0], "muskingum", params)
    assert len(calls) == 3


# ---------------------------------------------------------------------------- xarray
def _labelled(net, runoff, perm):
    n_t = runoff.shape[-1]
    return xr.DataArray(
        runoff[:, perm],
        dims=("member", "reach", "time"),
        coords={
            "member": [10, 20, 30],
            "reach": net.ids[perm],
            "time": np.datetime64("2020-01-01") + np.arange(n_t).astype("timedelta64[D]"),
            "reach_name": ("reach", [f"r{i}" for i in net.ids[perm]]),
        },
        attrs={"units": "m3 s-1", "source": "test"},
        name="flow",
    )


@pytest.mark.parametrize("shuffle", [False, True])
def test_xarray_aligned_and_labels_kept(net, case, shuffle):
    runoff, params = case
    n = net.n_reaches
    perm = np.random.default_rng(1).permutation(n) if shuffle else np.arange(n)
    da = _labelled(net, runoff.astype(np.float32), perm).transpose("time", "reach", "member")
    q = hs.route(net, da, "muskingum", params)
    assert isinstance(q, xr.DataArray) and q.dims == ("time", "reach", "member")
    # discharge is labelled as discharge, never with the runoff's name and attributes
    assert q.dtype == np.float32 and q.name == "discharge" and "source" not in q.attrs
    assert q.attrs == {"units": "m3 s-1",
                       "standard_name": "water_volume_transport_in_river_channel",
                       "long_name": "discharge leaving each reach (mean over each time step)",
                       "cell_methods": "time: mean"}
    assert da.name == "flow" and da.attrs["source"] == "test"  # the input is left alone
    for c in da.coords:
        np.testing.assert_array_equal(q[c].values, da[c].values)
    want = oracle(net, runoff, params)[:, perm]  # input reach order
    close(q.transpose("member", "reach", "time").values, want, 2e-6)


@pytest.mark.parametrize("dim", ["feature_id", "rivid", "COMID", "seg_id"])
def test_xarray_reach_dim_aliases(small_tree, dim):
    """NWM's feature_id, RAPID's rivid, NHDPlus COMID, mizuRoute seg_id name the reach
    dimension; the result keeps the input's name, and parameters may use it too."""
    n = small_tree.n_reaches
    r = np.random.default_rng(3).uniform(size=(n, 9))
    ids = small_tree.ids[::-1]
    da = xr.DataArray(r, dims=(dim, "time"), coords={dim: ids})
    tau = xr.DataArray(np.linspace(0.5, 2.0, n), dims=dim, coords={dim: ids})
    q = hs.route(small_tree, da, "linear_storage", {"tau": tau})
    assert q.dims == (dim, "time") and "reach" not in q.coords
    np.testing.assert_array_equal(q[dim].values, ids)
    want = route_oracle(small_tree, r[::-1].copy(), "linear_storage",
                        {"tau": np.linspace(0.5, 2.0, n)[::-1].copy()}).numpy()
    close(q.values, want[::-1], 1e-12)
    a = hs.accumulate(small_tree, da.isel(time=0))
    assert a.dims == (dim,)
    close(a.values, hs.accumulate(small_tree, r[::-1, 0].copy())[::-1], 1e-12)


def test_two_reach_dims_are_refused(small_tree):
    n = small_tree.n_reaches
    da = xr.DataArray(np.zeros((n, 2, 3)), dims=("reach", "rivid", "time"),
                      coords={"reach": small_tree.ids, "rivid": [1, 2]})
    with pytest.raises(ValueError, match=r"several reach dimensions \['reach', 'rivid'\]"):
        hs.route(small_tree, da, "linear_storage", {"tau": 1.0})


def test_xarray_without_batch_dim(net, case):
    runoff, params = case
    da = _labelled(net, runoff, np.arange(net.n_reaches)).isel(member=0)
    q = hs.route(net, da, "muskingum", params)
    assert q.dims == ("reach", "time") and q["member"].item() == 10
    close(q.values, oracle(net, runoff[0], params), 1e-12)


def test_xarray_torch_backed(small_tree):
    n = small_tree.n_reaches
    r = np.random.default_rng(2).uniform(size=(n, 8))
    da = xr.DataArray(r, dims=("reach", "time"), coords={"reach": small_tree.ids[::-1]})
    q = hs.route(small_tree, da, "linear_storage", {"tau": 1.0})
    want = route_oracle(small_tree, r[::-1].copy(), "linear_storage", {"tau": 1.0}).numpy()
    close(q.values, want[::-1], 1e-12)


# ---------------------------------------------------------------------------- DLPack libraries
def test_jax_round_trip(net, case):
    jnp = pytest.importorskip("jax.numpy", reason="jax is not installed")
    import jax

    runoff, params = case
    r = jnp.asarray(runoff[0], dtype=jnp.float32)
    q = hs.route(net, r, "muskingum", {"k": jnp.asarray(params["k"]), "x": params["x"]})
    assert isinstance(q, jax.Array) and q.dtype == jnp.float32 and q.shape == r.shape
    assert q.devices() == r.devices()
    close(np.asarray(q), oracle(net, np.asarray(r), params), 2e-6)
    a = hs.accumulate(net, r)
    assert isinstance(a, jax.Array) and a.dtype == jnp.float32
    close(np.asarray(a), hs.accumulate(net, np.asarray(r, dtype=np.float64)), 2e-6)


def test_cupy_round_trip(net, case):
    cp = pytest.importorskip("cupy", reason="cupy is not installed")
    runoff, params = case
    r = cp.asarray(runoff[0], dtype=cp.float32)
    q = hs.route(net, r, "muskingum", params)
    assert isinstance(q, cp.ndarray) and q.dtype == cp.float32 and q.device == r.device
    close(cp.asnumpy(q), oracle(net, runoff[0], params), 2e-6)


# ---------------------------------------------------------------------------- errors
def test_unsupported_types_name_the_supported_ones(net, case):
    runoff, params = case
    with pytest.raises(TypeError, match="numpy.ndarray, torch.Tensor, xarray.DataArray"):
        hs.route(net, runoff[0].tolist(), "muskingum", params)
    with pytest.raises(TypeError, match="got builtins.dict"):
        hs.route(net, runoff[0], "muskingum", {"k": {"a": 1}, "x": 0.2})
    with pytest.raises(TypeError, match="complex"):
        hs.route(net, runoff[0].astype(np.complex128), "muskingum", params)


def test_shape_and_dims_errors(net, case, small_tree):
    runoff, params = case
    n = net.n_reaches
    with pytest.raises(ValueError, match=rf"\[N, T\] or \[B, N, T\] with N = {n}"):
        hs.route(net, runoff[0, :-1], "muskingum", params)
    with pytest.raises(ValueError, match=r"got shape \(40,\)"):
        hs.route(net, runoff[0, 0], "muskingum", params)
    da = _labelled(net, runoff, np.arange(n))
    with pytest.raises(ValueError, match="'time' dimension, got dims \\('member', 'reach'\\)"):
        hs.route(net, da.isel(time=0), "muskingum", params)
    with pytest.raises(ValueError, match=r"must have a reach dimension \(one of \['reach', "
                                         r"'feature_id', 'rivid', 'COMID', 'seg_id'\]\)"):
        hs.route(net, da.rename(reach="link"), "muskingum", params)
    with pytest.raises(ValueError, match="one batch dimension"):
        hs.route(net, da.expand_dims(run=[1]), "muskingum", params)
    with pytest.raises(ValueError, match="no 'reach' coordinate"):
        hs.route(net, da.drop_vars(["reach", "reach_name"]), "muskingum", params)


def test_reach_id_errors_name_the_ids(small_tree):
    r = np.zeros((7, 4))
    ids = small_tree.ids.copy()
    p = {"tau": 1.0}
    bad = ids.copy()
    bad[2] = 77
    with pytest.raises(ValueError, match=r"not in the network: \[77\]"):
        hs.route(small_tree, xr.DataArray(r, dims=("reach", "time"), coords={"reach": bad}),
                 "linear_storage", p)
    dup = ids.copy()
    dup[2] = dup[0]
    with pytest.raises(ValueError, match=r"more than once: \[6\]"):
        hs.route(small_tree, xr.DataArray(r, dims=("reach", "time"), coords={"reach": dup}),
                 "linear_storage", p)
    short = xr.DataArray(r[:5], dims=("reach", "time"), coords={"reach": ids[:5]})
    with pytest.raises(ValueError, match=r"lacks 2 reach\(es\) of the network: ids \[2, 5\]"):
        hs.route(small_tree, short, "linear_storage", p)
    tau = xr.DataArray(np.ones(6), dims="reach", coords={"reach": ids[:6]})
    with pytest.raises(ValueError, match=r"params\['tau'\] lacks 1 reach\(es\).*\[5\]"):
        hs.route(small_tree, r, "linear_storage", {"tau": tau})


def test_params_errors(small_tree):
    r = np.zeros((7, 4))
    with pytest.raises(ValueError, match=r"params are required.*\['k', 'x'\]"):
        hs.route(small_tree, r, "muskingum")
    with pytest.raises(ValueError, match=r"missing \['x'\]"):
        hs.route(small_tree, r, "muskingum", {"k": 1.0})
    with pytest.raises(ValueError, match=r"params\['k'\] must be a scalar or \[N = 7\]"):
        hs.route(small_tree, r, "muskingum", {"k": np.ones(6), "x": 0.2})
    with pytest.raises(ValueError, match=r"params must be \[N = 7, P = 2\]"):
        hs.route(small_tree, r, "muskingum", np.ones((6, 2)))
    with pytest.raises(ValueError, match="substeps must be a positive integer"):
        hs.route(small_tree, r, "muskingum", {"k": 1.0, "x": 0.2}, substeps=0)
    with pytest.raises(ValueError, match="dt must be a positive duration"):
        hs.route(small_tree, r, "muskingum", {"k": 1.0, "x": 0.2}, dt=-5)
    with pytest.raises(KeyError, match="unknown IRF 'nope'"):
        hs.route(small_tree, r, "nope", {"k": 1.0})
