"""Array in, array out: :func:`route`, :func:`accumulate`, :func:`upstream`, :func:`downstream`.

These functions meet users in the array library they already use and return the same type,
device and dtype: numpy arrays, torch tensors (CPU or CUDA, autograd flows through), cupy and
jax arrays (through DLPack, without copies), dask arrays (lazy) and ``xarray.DataArray``
(aligned by reach id, labels kept).  They convert arrays and nothing more: routing goes to the
engine :func:`hydroscale.routing.select_engine` picks, accumulation is a level-by-level sum.

Layout (DESIGN §1): plain arrays are ``[N, T]`` or ``[B, N, T]`` (``accumulate`` and the
neighbour operations also take ``[N]``) with reaches in network order; a ``DataArray`` has dims
``reach``, optionally ``time`` and at most one batch dimension (e.g. ``member``) in any order,
and a ``reach`` coordinate holding reach ids, matched to the network's ids in any order.
"""

from __future__ import annotations

import datetime
import logging
import os
from functools import partial
from typing import Any

import numpy as np
import torch

from ._adapters import (
    REACH,
    array_kind,
    compute_dtype,
    dt_seconds,
    is_dataarray,
    map_reach_blocks,
    param_values,
    params_tensor,
    reach_alignment,
    reach_dim,
    to_torch,
    xarray_adapter,
)
from .irf import IRFSpec, get_irf
from .network import RiverNetwork
from .routing import (
    DISCHARGE_ATTRS,
    DISCHARGE_NAME,
    ENGINE_ENV_VAR,
    RouteState,
    accumulate_reaches,
    available_bytes,
    check_fits,
    check_runoff,
    check_steady_inflow,
    downstream_reaches,
    estimate_engine_bytes,
    get_engine,
    list_engines,
    route_with_state,
    select_engine,
    steady_discharge,
    steady_inflow,
    upstream_reaches,
)
from .routing import route_rapid as _route_rapid_tensors

__all__ = ["route", "route_rapid", "accumulate", "upstream", "downstream", "SMALL_WORK",
           "SMALL_DEPTH"]

logger = logging.getLogger(__name__)

#: Routing problems of at most this many reach-sub-steps (B·N·T·f) go to the simplest engine
#: (the float64 oracle): no set-up cost, and exact.  Larger ones go to the fastest engine.
SMALL_WORK = 1 << 20
#: ... unless the network is deeper than this many levels: the oracle takes one Python step
#: per level (~1 ms each), the engines a few per chain round whatever the depth
SMALL_DEPTH = 256


# ---------------------------------------------------------------------------- routing
@xarray_adapter("runoff", time_required=True, result=(DISCHARGE_NAME, DISCHARGE_ATTRS))
def route(
    network: RiverNetwork,
    runoff: Any,
    irf: str | IRFSpec = "muskingum",
    params: Any = None,
    *,
    dt: float | datetime.timedelta | np.timedelta64 | str | None = None,
    substeps: int = 1,
    engine: str | None = None,
    allow_unstable: bool = False,
    allow_negative: bool = False,
    initial: Any = "dry",
    return_state: bool = False,
    lakes: Any = None,
    lake_params: Any = None,
) -> Any:
    r"""Route lateral inflow through ``network``: discharge leaving every reach.

    Applies :math:`Q_j = h_j \circledast (r_j + \sum_{i \to j} Q_i)` exactly (DESIGN §1).

    Parameters
    ----------
    network : RiverNetwork
        The river network (N reaches).
    runoff : array ``[N, T]`` or ``[B, N, T]``, or DataArray with dims ``reach`` (or
        ``feature_id``, ``rivid``, ``COMID``, ``seg_id``), ``time`` and optionally one batch dim
        Lateral inflow (m³/s, averaged over each routing step).  numpy, torch (CPU/CUDA),
        cupy, jax, dask or xarray (any of those inside).  Dask arrays stay lazy: they may be
        chunked over the batch axis, and over reaches only where every chunk holds whole basins
        (in network order); otherwise the reach axis, and always the time axis, are rechunked
        to one chunk.  The dask path is not differentiable.
    irf : str or IRFSpec
        Registered impulse response: ``"muskingum"`` (k, x), ``"linear_storage"`` (tau),
        ``"nash_cascade"`` (tau, n), ``"pure_lag"`` (delay), ``"hayami"`` (L, D, c), ...
    params : mapping or array
        Per-reach parameters: a mapping name -> scalar or ``[N]`` array, or an ``[N, P]``
        array with columns in the IRF's order.  Any supported array type; plain arrays are in
        network order (also when ``runoff`` is a DataArray in another order), a DataArray with
        a ``reach`` coordinate is aligned by id (an ``[reach, P]`` one may name its columns).
        Torch tensors keep their autograd graph.
    dt : float (seconds), timedelta, numpy timedelta64 or pandas string (``"1D"``), optional
        Length of a routing step.  ``None`` (default): time-like parameters are in routing
        steps.  Given: they are in the SI units the IRF declares (:attr:`IRFSpec.units
        <hydroscale.irf.IRFSpec>`: ``k``, ``tau``, ``delay`` in s; hayami ``D`` in m²/s and
        ``c`` in m/s) and are converted with ``dt``.
    substeps : int
        f, route at ``Δt / f``: inflow spread evenly over sub-steps, outflow averaged back.
    engine : str, optional
        Engine name (see :func:`hydroscale.routing.list_engines`); default: the
        ``HYDROSCALE_ENGINE`` environment variable, else the oracle for small problems
        (at most :data:`SMALL_WORK` reach-sub-steps, :data:`SMALL_DEPTH` levels) and the
        best-ranked engine otherwise, or the next one when the sub-step arrays of the
        best-ranked one would not fit in memory (CPU: "levels", else the block-sparse
        "torch").
    allow_unstable : bool
        Accept parameters the IRF's check rejects (e.g. Muskingum with a negative C0).
    allow_negative : bool
        Accept negative lateral inflow (losing reaches); NaN and inf are always refused.
    initial : ``"dry"``, ``"steady"``, a discharge ``[N]`` / ``[B, N]``, or a RouteState
        The state before the first step (see :mod:`hydroscale.routing._restart`):
        ``"dry"`` (default) nothing flowed before; ``"steady"`` the steady state of the first
        step's inflow ``r0`` (discharge ``accumulate(r0)``); a discharge ``Q0`` (m³/s, network
        order, or a DataArray with a reach dimension) the steady state that yields it: the
        constant inflow ``r* = Q0 - upstream(Q0)`` having flowed forever, so the run routes
        ``r - r*`` from dry and adds ``Q0`` (a ``Q0`` smaller than the sum upstream of it
        means negative ``r*``: refused unless ``allow_negative``); a
        :class:`~hydroscale.routing.RouteState` returned by an earlier call (``return_state``)
        or :meth:`RouteState.load` continues that run (same network, parameters, IRF,
        sub-steps and ``dt``, else :class:`~hydroscale.routing.RestartMismatchError`).
    return_state : bool
        Also return the :class:`~hydroscale.routing.RouteState` after the last step (save it
        with ``.save(path)``).  States are carried by the block-sparse engines (``torch``,
        ``triton``; the default then), with a kernel window fitted to ``window_tolerance``
        whatever the run's length: routing ``T1`` steps, then ``T - T1`` from the state
        equals routing ``T`` steps to within 1e-6 of the discharge (the window's truncation
        and rounding).  Dask inputs take neither a state nor ``return_state``.
    lakes : :class:`~hydroscale.routing.Lakes`, optional
        Level-pool lakes (NWM's reservoirs; :func:`hydroscale.io.open_lakes` reads them):
        their reaches are replaced by the lakes, each stepped at ``dt / substeps``
        (:class:`~hydroscale.routing.LakeRouter`); a lake's reaches all report its outflow.
        Needs ``dt`` (so time-like ``params`` are in SI) and the runoff in memory.  A dry
        start puts each lake at its initial fractional depth ``ifd``; ``initial`` "steady" or
        a discharge ``Q0`` starts the reaches outside lakes in the steady state that yields
        it and each lake at the level releasing ``Q0`` at its outlet reach.  ``return_state``
        and a RouteState are not supported with lakes yet (route time chunks with
        :class:`~hydroscale.routing.LakeRouter`, which carries a
        :class:`~hydroscale.routing.LakeState`).
    lake_params : array ``[L, P]`` or mapping, optional
        Level-pool parameters replacing ``lakes.params`` (columns
        :data:`~hydroscale.routing.LEVEL_POOL_PARAMS`, SI); torch tensors keep their graph.

    Returns
    -------
    Discharge (m³/s, averaged over each routing step) with the shape, type, device and dtype of
    ``runoff`` (integer inputs give float64); a DataArray keeps dims (the reach dimension's
    name too: ``reach``, ``feature_id``, ``rivid``, ``COMID`` or ``seg_id``) and coords, and
    is named ``discharge`` with its own CF attributes (``units`` m3 s-1, ``standard_name``,
    ``long_name``, ``cell_methods``), never the input's.  With ``return_state``: the tuple
    ``(discharge, RouteState)``.

    Raises
    ------
    TypeError
        ``runoff`` or ``params`` of an unsupported type.
    ValueError
        Wrong shape or dims (no time step included), reach ids that do not match the network,
        bad parameters.
    MemoryError
        (:class:`hydroscale.routing.RunTooLargeError`) before anything is allocated, when a
        lower bound of the memory the engine needs (inflow and discharge, sub-step arrays,
        one kernel per reach) exceeds the memory available on the device (the free memory of
        a GPU, ``MemAvailable`` on CPU, or ``$HYDROSCALE_MEMORY_LIMIT``); the message gives
        both figures and what to lower.
    """
    spec = get_irf(irf)
    n = network.n_reaches
    kind = array_kind(runoff, "runoff")
    if runoff.ndim not in (2, 3) or runoff.shape[-2] != n:
        raise ValueError(
            f"runoff must be [N, T] or [B, N, T] with N = {n} reaches of the network, "
            f"got shape {tuple(runoff.shape)}"
        )
    if runoff.shape[-1] == 0:
        raise ValueError(
            f"runoff has 0 time steps (shape {tuple(runoff.shape)}): route needs at least one "
            "step of lateral inflow on the last axis"
        )
    if int(substeps) != substeps or substeps < 1:
        raise ValueError(f"substeps must be a positive integer, got {substeps!r}")
    p = params_tensor(network, spec, params, dt)
    dry = isinstance(initial, str) and initial == "dry"
    if lakes is not None:
        if dt is None:
            raise ValueError("lakes need dt= (the routing step: seconds, timedelta or '1h'): "
                             "a lake's level moves by inflow x seconds / area")
        if kind == "dask":
            raise ValueError("lakes need the runoff in memory (numpy, torch, ...): compute "
                             "the dask array first (runoff.compute())")
        if return_state or isinstance(initial, RouteState):
            raise ValueError("return_state=True and initial=<RouteState> are not supported "
                             "with lakes yet: route time chunks with "
                             "hydroscale.routing.LakeRouter (it carries a LakeState)")
    elif lake_params is not None:
        raise ValueError("lake_params= needs lakes=")
    if kind == "dask" and (return_state or not dry):
        raise ValueError(
            "initial= (other than 'dry') and return_state=True need the runoff in memory "
            "(numpy, torch, ...): compute the dask array first (runoff.compute())")
    run = partial(
        _route_block, spec=spec, substeps=int(substeps), engine=engine,
        allow_unstable=allow_unstable, allow_negative=allow_negative,
        initial=initial, return_state=return_state,
        dt_s=None if dt is None else dt_seconds(dt), lakes=lakes, lake_params=lake_params,
    )
    if kind == "dask":
        return map_reach_blocks(
            runoff,
            network,
            run,
            reach_axis=runoff.ndim - 2,
            whole_axes=(runoff.ndim - 1,),
            reach_args=(p.detach().cpu().numpy(),),
            dtype=_float_result_dtype(runoff.dtype),
            name="route",
        )
    return run(network, runoff, p)


def _route_block(
    network: RiverNetwork,
    runoff: Any,
    params: torch.Tensor | np.ndarray,
    *,
    spec: IRFSpec,
    substeps: int,
    engine: str | None,
    allow_unstable: bool,
    allow_negative: bool,
    initial: Any = "dry",
    return_state: bool = False,
    dt_s: float | None = None,
    lakes: Any = None,
    lake_params: Any = None,
) -> Any:
    r, back = to_torch(runoff)
    work = compute_dtype(r.dtype)
    out_dtype = r.dtype if r.is_floating_point() else torch.float64
    added = r.ndim == 2
    b, n, t = (1, *r.shape) if added else tuple(r.shape)
    state = initial if isinstance(initial, RouteState) else None
    stateful = return_state or state is not None
    size = b * n * t * substeps
    auto = engine is None and not os.environ.get(ENGINE_ENV_VAR)
    if auto and stateful:
        engine = _best_clustered(r.device)
    elif auto:
        small = size <= SMALL_WORK and network.n_levels <= SMALL_DEPTH
        engine = _fitting_engine(r.device, b, n, t, substeps, work, oracle_first=small)
    eng = select_engine(r.device, explicit=engine)
    if stateful and not eng.clustered:
        raise ValueError(
            f"engine {eng.name!r} carries no state between calls: initial=<RouteState> and "
            "return_state=True route with a block-sparse engine (engine='torch' or "
            "'triton', or leave engine=None)")
    _check_memory(eng.name, b, n, t, substeps, work, r.device)
    rb = (r.unsqueeze(0) if added else r).to(work)
    check_runoff(rb, network.ids, allow_negative=allow_negative)
    p = torch.as_tensor(params).to(device=rb.device, dtype=work)
    if lakes is not None:
        q = _route_lakes(network, rb, spec, p, substeps, eng, dt_s, lakes, lake_params,
                         initial, allow_unstable, allow_negative)
        return back((q[0] if added else q).to(out_dtype))
    r_off, q_off = _initial_offsets(network, rb, initial, allow_negative)
    if r_off is not None:  # a steady start: route r - r*, add its discharge Q0 after
        rb = rb - r_off[..., None]
    logger.debug("route: %s reach-sub-steps on %s with engine %s", size, rb.device, eng.name)
    options: dict[str, Any] = {}
    if eng.clustered:  # the block-sparse engines route clusters of bounded size
        from .partition import partition_network

        options["cluster_of"] = partition_network(network, max_reaches=512).cluster_of
    new = None
    if stateful:
        q, new = route_with_state(network, rb, spec, p, substeps, eng.name, state, dt_s,
                                 allow_unstable, options["cluster_of"], r_off, q_off)
    else:
        q = eng.fn(network, rb, spec.name, p, substeps, allow_unstable=allow_unstable,
                   **options)
    if q_off is not None:
        q = q + q_off[..., None].to(q.dtype)
    out = back((q[0] if added else q).to(out_dtype))
    return (out, new) if return_state else out


def _route_lakes(network: RiverNetwork, rb: torch.Tensor, spec: IRFSpec, p: torch.Tensor,
                 substeps: int, eng: Any, dt_s: float, lakes: Any, lake_params: Any,
                 initial: Any, allow_unstable: bool, allow_negative: bool) -> torch.Tensor:
    """:func:`hydroscale.routing.route_lakes` with the API's partition and warm start."""
    from .routing import route_lakes

    partition = None
    if eng.clustered:
        from .partition import partition_network

        def partition(sub: RiverNetwork) -> np.ndarray:
            return partition_network(sub, max_reaches=512).cluster_of
    q0 = None
    if not (isinstance(initial, str) and initial == "dry"):
        q0 = _initial_offsets(network, rb, initial, True)[1]
    lp = None if lake_params is None else to_torch(lake_params)[0] \
        if not isinstance(lake_params, dict) else lake_params
    return route_lakes(network, rb, spec, p, lakes=lakes, dt=dt_s, substeps=substeps,
                       engine=eng.name, partition=partition, lake_params=lp,
                       initial_discharge=q0, allow_unstable=allow_unstable,
                       allow_negative=allow_negative)


def _best_clustered(device: torch.device) -> str:
    """The best-ranked block-sparse engine for ``device`` (the engines that carry state)."""
    specs = [get_engine(name) for name in list_engines()]
    ok = [e for e in specs if e.clustered and e.supports(device.type)]
    return max(ok, key=lambda e: e.rank[device.type]).name


def _fitting_engine(device: torch.device, b: int, n: int, t: int, substeps: int,
                    dtype: torch.dtype, *, oracle_first: bool = False) -> str:
    """The first engine for ``device`` (the oracle if ``oracle_first``, then by rank) whose
    memory lower bound (:func:`hydroscale.routing.estimate_engine_bytes`) fits what the
    device has; the first one when none fits (its memory check then refuses the run, naming
    the figures).

    On a CPU the "levels" engine ranks first (no path kernels to build; a chain of any
    depth is one round of its prefix scan) but holds sub-step arrays ``[B, N, T·f]``; a run
    whose sub-step arrays exceed the memory goes to the block-sparse "torch" engine.
    """
    specs = [get_engine(name) for name in list_engines()]
    ok = sorted((e for e in specs if e.supports(device.type) and e.name != "oracle"),
                key=lambda e: -e.rank[device.type])
    if oracle_first:
        ok.insert(0, get_engine("oracle"))
    avail, _ = available_bytes(device)
    for e in ok:
        if avail is None or estimate_engine_bytes(e.name, n, t, substeps, b, dtype) <= avail:
            if e is not ok[0]:
                logger.info("route: engine %s (%s does not fit in %.3g GB)", e.name,
                            ok[0].name, avail / 1e9)
            return e.name
    return ok[0].name


def _initial_offsets(network: RiverNetwork, rb: torch.Tensor, initial: Any,
                     allow_negative: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The steady start of ``initial`` as (inflow ``r*`` [B, N], discharge ``Q0`` [B, N])
    in ``rb``'s dtype and device, or (None, None) for a dry start."""
    b, n = rb.shape[0], rb.shape[1]
    as_t = lambda a: torch.as_tensor(np.asarray(a), dtype=rb.dtype).to(rb.device)  # noqa: E731
    if isinstance(initial, RouteState):
        if np.any(initial.inflow_offset) or np.any(initial.discharge_offset):
            return as_t(initial.inflow_offset), as_t(initial.discharge_offset)
        return None, None
    if isinstance(initial, str):
        if initial == "dry":
            return None, None
        if initial == "steady":
            r0 = rb[:, :, 0].detach().clone()
            return r0, steady_discharge(network, r0)
        raise ValueError(f"initial must be 'dry', 'steady', a discharge [N] or [B, N] "
                         f"(m³/s) or a RouteState, got {initial!r}")
    q0 = initial
    if is_dataarray(q0):
        dim = reach_dim(q0.dims, "initial")
        order = reach_alignment(network, q0[dim].values, "initial", dim)
        q0 = q0.transpose(..., dim)
        q0 = (q0 if order is None else q0.isel({dim: order})).values
    q0, _ = to_torch(q0) if not isinstance(q0, (list, tuple)) else to_torch(np.asarray(q0))
    q0 = q0.detach().to(device=rb.device, dtype=rb.dtype)
    if q0.ndim == 1:
        q0 = q0.unsqueeze(0).expand(b, -1)
    if tuple(q0.shape) != (b, n):
        raise ValueError(f"initial discharge must be [N = {n}] or [B = {b}, N = {n}] m³/s in "
                         f"network order, got shape {tuple(q0.shape)}")
    bad = ~torch.isfinite(q0)
    if bool(bad.any()):
        j = int(torch.nonzero(bad)[0, 1])
        raise ValueError(f"initial discharge has {int(bad.sum())} NaN or infinite value(s); "
                         f"first at reach id {int(network.ids[j])}: fill them first")
    r_star = steady_inflow(network, q0)
    if not allow_negative:
        check_steady_inflow(network, r_star)
    return r_star, q0.clone()


def _check_memory(engine: str, b: int, n: int, t: int, substeps: int, dtype: torch.dtype,
                  device: torch.device) -> None:
    """Refuse, before allocating, a run whose memory lower bound exceeds what the device has
    (:func:`hydroscale.routing.check_fits`)."""
    nbytes = estimate_engine_bytes(engine, n, t, substeps, b, dtype)
    other = "" if engine in ("torch", "triton") else (
        ", or engine='torch'/'triton' (block-sparse: no sub-step arrays)")
    check_fits(
        nbytes, device, "route",
        detail=f"batch {b} x {n} reaches x {t} steps x substeps={substeps}, "
               f"{str(dtype).removeprefix('torch.')}, engine {engine!r}",
        hint=f"lower substeps, route fewer time steps at a time (split the time axis, or a "
             f"`hydroscale route` workflow with routing.time_chunk), or a smaller batch{other}",
    )


def _float_result_dtype(dtype: Any) -> np.dtype:
    dtype = np.dtype(dtype)
    return dtype if dtype.kind == "f" else np.dtype(np.float64)


# ---------------------------------------------------------------------------- RAPID mode
def route_rapid(
    network: RiverNetwork,
    qext: Any,
    k: Any,
    x: Any,
    *,
    dt: float | datetime.timedelta | np.timedelta64 | str | None = None,
    dtR: float | datetime.timedelta | np.timedelta64 | str | None = None,
    qinit: Any = None,
) -> tuple[Any, Any]:
    r"""Route external inflow exactly as RAPID's matrix Muskingum does (RAPID mode).

    The same array type comes back: numpy in, numpy out; torch in, torch out (on its device,
    differentiable w.r.t. ``qext``, ``k``, ``x`` and ``qinit``); a DataArray in (e.g. what
    :func:`hydroscale.io.rapid.read_rapid_inflow` returns, reaches in any order), DataArrays
    out with its dims and coords.  The arithmetic is
    :func:`hydroscale.routing.route_rapid` (float64, exact; DESIGN §1's RAPID mode).

    Parameters
    ----------
    network : RiverNetwork of N reaches.
    qext : ``[N, T]`` or ``[B, N, T]`` external inflow (m³/s, interval means), numpy, torch
        or a DataArray with dims ``reach``, ``time`` and at most one batch dim.
    k : Muskingum k (s): a scalar or ``[N]`` (a DataArray over ``reach`` is aligned by id).
    x : Muskingum x (-): a scalar or ``[N]``.
    dt : the inflow interval (seconds, timedelta, ``"3h"``), RAPID's ``ZS_TauR``; default for
        a DataArray: its ``interval_s`` attribute, else the step of its ``time`` coordinate;
        required for plain arrays.
    dtR : the routing sub-step, RAPID's ``ZS_dtR`` (``dt / dtR`` must be an integer);
        default ``dt`` (one sub-step per interval).
    qinit : initial discharge (m³/s): a scalar, ``[N]`` or ``[B, N]``; default 0.

    Returns
    -------
    (Qout, Qfinal) : ``Qout`` with the shape of ``qext`` (m³/s, each interval's mean of the
    discharges at the start of its sub-steps, as RAPID reports it) and ``Qfinal`` with its
    time axis dropped (m³/s, instantaneous at the end of the run: the ``qinit`` of the next
    run).  For a DataArray, ``Qfinal`` has a scalar ``time`` coordinate: the end of the run.
    Dtypes: float64 for numpy and DataArray input, the input's float dtype for torch.
    """
    n = network.n_reaches
    is_da = is_dataarray(qext)
    order = None
    if is_da:
        dims = tuple(qext.dims)
        if REACH not in dims or "time" not in dims or qext.ndim not in (2, 3):
            raise ValueError(f"qext must have dims ('reach', 'time') and at most one batch "
                             f"dim, got {dims}")
        if REACH not in qext.coords:
            raise ValueError("qext has no 'reach' coordinate; label the rows with the "
                             "network's reach ids, e.g. .assign_coords(reach=network.ids)")
        order = reach_alignment(network, qext[REACH].values, "qext")
        canon = (*[d for d in dims if d not in (REACH, "time")], REACH, "time")
        aligned = qext.transpose(*canon)
        if order is not None:
            aligned = aligned.isel({REACH: order})
        if dt is None:
            dt = _dataarray_interval(qext)
        values = np.asarray(aligned.values, np.float64)
    else:
        if array_kind(qext, "qext") == "dask":
            raise TypeError("qext: RAPID mode takes numpy, torch or xarray input; compute a "
                            "dask array first (.compute())")
        values = qext
    if dt is None:
        raise ValueError("dt is required for plain arrays: the inflow interval (e.g. "
                         "dt=10800 or dt='3h'); a DataArray gives it by its time coordinate")
    dt_s = dt_seconds(dt)
    dtr_s = dt_s if dtR is None else dt_seconds(dtR)
    q, back = to_torch(values)
    if q.ndim not in (2, 3) or q.shape[-2] != n:
        raise ValueError(f"qext must be [N, T] or [B, N, T] with N = {n} reaches of the "
                         f"network, got shape {tuple(q.shape)}")
    if q.shape[-1] == 0:
        raise ValueError(f"qext has 0 time steps (shape {tuple(q.shape)})")
    check_runoff((q.unsqueeze(0) if q.ndim == 2 else q).detach(), network.ids,
                 allow_negative=True)
    kk = _rapid_param(network, k, "k", q.device)
    xx = _rapid_param(network, x, "x", q.device)
    q0 = None
    if qinit is not None:
        q0 = param_values(network, qinit, "qinit").to(q.device)
        if q0.ndim == 0:
            q0 = q0.expand(n)
    qout, qfinal = _route_rapid_tensors(network, q, kk, xx, dt_s, dtr_s, qinit=q0)
    out_dtype = q.dtype if q.is_floating_point() else torch.float64
    if not is_da:
        return back(qout.to(out_dtype)), back(qfinal.to(out_dtype))
    inverse = None
    if order is not None:
        inverse = np.empty_like(order)
        inverse[order] = np.arange(order.size)
    res = aligned.copy(deep=False, data=qout.detach().cpu().numpy())
    fin = aligned.isel(time=-1, drop=True).copy(deep=False, data=qfinal.detach().cpu().numpy())
    t = np.asarray(qext["time"].values)
    if t.dtype.kind == "M":
        fin = fin.assign_coords(time=t[-1] + np.timedelta64(int(round(dt_s * 1e9)), "ns"))
    if inverse is not None:
        res, fin = res.isel({REACH: inverse}), fin.isel({REACH: inverse})
    res.attrs.update(units="m3 s-1", interval_s=dt_s)
    fin.attrs.update(units="m3 s-1")
    fin.name = "Qfinal"
    return res.transpose(*dims), fin.transpose(*[d for d in dims if d != "time"])


def _dataarray_interval(da: Any) -> float:
    """The interval (s) of a DataArray: its ``interval_s`` attribute or its time step."""
    if da.attrs.get("interval_s"):
        return float(da.attrs["interval_s"])
    t = np.asarray(da["time"].values) if "time" in da.coords else np.zeros(0)
    if t.dtype.kind == "M" and t.size > 1:
        steps = np.unique(np.diff(t).astype("timedelta64[ns]").astype(np.int64))
        if steps.size == 1 and steps[0] > 0:
            return steps[0] / 1e9
        raise ValueError(f"qext: irregular time steps {np.unique(steps) / 1e9} s: pass dt=")
    raise ValueError("qext: no interval_s attribute and fewer than two datetime times: pass "
                     "dt= (the inflow interval)")


def _rapid_param(network: RiverNetwork, value: Any, name: str, device: Any) -> torch.Tensor:
    v = param_values(network, value, name).to(device)
    if v.ndim == 0:
        v = v.expand(network.n_reaches)
    if v.shape != (network.n_reaches,):
        raise ValueError(f"{name} must be a scalar or [N = {network.n_reaches}] values, got "
                         f"{tuple(v.shape)}")
    return v


# ---------------------------------------------------------------------------- accumulation
def _check_field(x: torch.Tensor, ids: np.ndarray, ndim: int, skipna: bool) -> torch.Tensor:
    """Refuse NaN (unless ``skipna``: counted as 0) and inf in a summed field ``[B, N, T]``
    (the caller's ``ndim``: 1 ``[N]``, 2 ``[N, T]``, 3 ``[B, N, T]``), naming the first reach
    id and step as :func:`route` does."""
    if not x.is_floating_point() and not x.is_complex():
        return x
    with torch.no_grad():
        nan = torch.isnan(x)
        bad = torch.isinf(x) if skipna else nan | torch.isinf(x)
        if bool(bad.any()):
            b, j, t = (int(v) for v in torch.nonzero(bad)[0].tolist())
            where = f"reach id {int(ids[j])}" + (f", step {t}" if ndim >= 2 else "") + (
                f", batch {b}" if ndim == 3 else "")
            what, fix = ("infinite", "replace the infinite values") if skipna else (
                "NaN or infinite", "fill the missing values (e.g. field.fillna(0), "
                "np.nan_to_num) or pass skipna=True to count NaN as 0")
            raise ValueError(f"field has {int(bad.sum())} {what} value(s); first at {where}: "
                             f"{fix}")
    return torch.where(nan, torch.zeros((), dtype=x.dtype, device=x.device), x) \
        if skipna and bool(nan.any()) else x


def _reach_op(network: RiverNetwork, field: Any, op: Any, name: str, summing: bool,
              skipna: bool = False) -> Any:
    n = network.n_reaches
    kind = array_kind(field, "field")
    axis = 0 if field.ndim <= 2 else 1
    if field.ndim not in (1, 2, 3) or field.shape[axis] != n:
        raise ValueError(
            f"field must be [N], [N, T] or [B, N, T] with N = {n} reaches of the network, "
            f"got shape {tuple(field.shape)}"
        )
    block = partial(_reach_op_block, op=op, summing=summing, skipna=skipna)
    if kind == "dask":
        dtype = np.dtype(np.int64) if field.dtype == bool and summing else field.dtype
        return map_reach_blocks(field, network, block, reach_axis=axis, dtype=dtype, name=name)
    return block(network, field)


def _reach_op_block(network: RiverNetwork, field: Any, *, op: Any, summing: bool,
                    skipna: bool = False) -> Any:
    x, back = to_torch(field)
    shape = x.shape
    out_dtype = torch.int64 if (x.dtype == torch.bool and summing) else x.dtype
    canon = x.reshape(1, shape[0], -1) if x.ndim <= 2 else x
    if summing:
        canon = _check_field(canon, network.ids, x.ndim, skipna)
        canon = canon.to(compute_dtype(x.dtype, integer_ok=True))
    y = op(network, canon)
    return back(y.reshape(shape).to(out_dtype))


@xarray_adapter("field", time_required=False)
def accumulate(network: RiverNetwork, field: Any, *, skipna: bool = False) -> Any:
    """Upstream sum: each reach's value plus the values of all reaches upstream of it.

    The flow accumulation of a per-reach quantity (area, runoff volume, a count), at every
    time step independently: ``routing with pure_lag(delay=0)``, computed directly by one
    index-add per topological level (no FFT).

    Parameters
    ----------
    network : RiverNetwork
        The river network (N reaches).
    field : array ``[N]``, ``[N, T]`` or ``[B, N, T]``, or DataArray with dim ``reach`` and
        optionally ``time`` and one batch dim
        Values per reach (any unit), in network order for plain arrays.  numpy, torch
        (autograd flows), cupy, jax, dask or xarray.  Dask arrays stay lazy, chunked freely
        over batch and time, and over reaches only where every chunk holds whole basins (else
        the reach axis is rechunked to one chunk).
    skipna : bool
        False (default): NaN is refused, as infinite values always are (the error names the
        first reach id and step).  True: NaN counts as 0 (a missing value adds nothing).

    Returns
    -------
    The accumulated field, with ``field``'s shape, type, device and dtype (bool gives int64).

    Raises
    ------
    ValueError
        Wrong shape, or NaN (unless ``skipna``) or infinite values in ``field``.
    """
    return _reach_op(network, field, accumulate_reaches, "accumulate", summing=True, skipna=skipna)


@xarray_adapter("field", time_required=False)
def upstream(network: RiverNetwork, field: Any, *, skipna: bool = False) -> Any:
    """Sum of the values of the upstream-adjacent reaches of each reach (0 at headwaters).

    ``field``, ``skipna`` and the result are as in :func:`accumulate`.
    """
    return _reach_op(network, field, upstream_reaches, "upstream", summing=True, skipna=skipna)


@xarray_adapter("field", time_required=False)
def downstream(network: RiverNetwork, field: Any, fill_value: float = 0) -> Any:
    """The value of each reach's downstream reach; ``fill_value`` at outlets.

    ``field`` and the result are as in :func:`accumulate` (the dtype is kept, bool included).
    """
    op = partial(downstream_reaches, fill_value=fill_value)
    return _reach_op(network, field, op, "downstream", summing=False)

