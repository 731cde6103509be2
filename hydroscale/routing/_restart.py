"""Restart states: what a run carries out of its last step, saved to a file and resumed.

A run that ends with :class:`RouteState` can be continued by another run started from it; the
continuation equals one uninterrupted run (DESIGN §1 "State"): bit for bit when both route
the same time chunks on the same engine and device, within rounding (~1e-6 relative in
float32) otherwise.

The state is the block-sparse router's carried input history (:class:`RouterState`: the last
``K - 1`` steps of every reach's inflow and of every cluster inlet's sub-step transfer
inflow), plus the *offset* the run started from:

- a dry start routes the runoff ``r`` as it is (offsets 0);
- a steady start at discharge ``Q0`` (``initial="steady"``: ``Q0`` is the steady discharge of
  the first step's inflow; or an initial discharge given) is the state the network reaches
  when the constant lateral inflow ``r* = Q0 - Σ_upstream-adjacent Q0`` has flowed forever:
  discharge stays ``Q0`` everywhere as long as the inflow stays ``r*``.  By linearity (and
  unit-mass impulse responses) the run routes ``r - r*`` from a dry state and adds ``Q0``;
  the continuation keeps subtracting the same ``r*`` and adding the same ``Q0``.

A state fits only the run it came from: its :attr:`RouteState.fingerprint` records the
network, the parameters, the IRF, the sub-steps, the window, the partition into clusters
and the step length, and :meth:`RouteState.check` refuses a state whose fingerprint differs,
naming each difference.  Files are ``.npz`` (plain arrays and one JSON string; read with
``allow_pickle=False``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._digest import digest
from ..network import RiverNetwork, format_ids
from ._router import RouterState

__all__ = ["RestartMismatchError", "RouteState", "restart_fingerprint", "route_with_state"]

_FORMAT = "hydroscale-route-state-1"
_ARRAYS = ("runoff_hist", "inflow_hist", "reach_ids", "inflow_offset", "discharge_offset")


class RestartMismatchError(ValueError):
    """A restart state does not fit the run asked to continue from it."""


def restart_fingerprint(network: RiverNetwork, params: Any, irf: str, substeps: int,
                        window: int, cluster_of: Any, dt_s: float | None) -> dict[str, Any]:
    """What a carried state depends on: ``network`` (ids and downstream links), ``params``
    ``[N, P]`` (routing-step units, digested in float64), the ``irf`` name, ``substeps``, the
    kernel ``window`` (steps), the partition ``cluster_of`` ``[N]`` and the step length
    ``dt_s`` (seconds; None: not known, parameters in steps)."""
    p = params.detach().cpu().numpy() if isinstance(params, torch.Tensor) else params
    return {
        "network": digest(network.ids, network.downstream),
        "params": digest(np.asarray(p, np.float64)),
        "irf": str(irf), "substeps": int(substeps), "window": int(window),
        "partition": digest(np.asarray(cluster_of, np.int64)),
        "dt_s": None if dt_s is None else float(dt_s),
    }


@dataclass
class RouteState:
    """The state a run ends with, to continue from (a restart file).

    Attributes
    ----------
    router : the carried input history (:class:`RouterState`; ``runoff_hist``
        ``[B, N, K - 1]`` m³/s in network order, ``inflow_hist`` ``[B, n_inlet, f, K - 1]``).
    reach_ids : ``[N]`` the network's reach ids (network order).
    inflow_offset : ``[B, N]`` m³/s, ``r*``: the constant inflow of the steady start the run
        began from, subtracted from the runoff it routes (zeros for a dry start).
    discharge_offset : ``[B, N]`` m³/s, ``Q0``: the steady discharge of ``r*``, added to what
        it routes (zeros for a dry start).
    fingerprint : :func:`restart_fingerprint` of the run.
    steps : routing steps routed since the dry or steady start.
    time : start of the next step (the first one a continuation routes; datetime64), when
        the run knew its times.
    """

    router: RouterState
    reach_ids: np.ndarray
    inflow_offset: np.ndarray
    discharge_offset: np.ndarray
    fingerprint: dict[str, Any]
    steps: int = 0
    time: np.datetime64 | None = None
    path: str | None = field(default=None, compare=False)

    @property
    def window(self) -> int:
        return int(self.fingerprint["window"])

    @property
    def batch(self) -> int:
        return int(self.router.runoff_hist.shape[0])

    def save(self, path: str | os.PathLike) -> Path:
        """Write the state to ``path`` (``.npz``; atomically: a temporary file renamed)."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        meta = {"format": _FORMAT, "fingerprint": self.fingerprint, "steps": int(self.steps),
                "time": None if self.time is None else str(np.datetime64(self.time, "s")),
                "dtype": str(self.router.runoff_hist.dtype).removeprefix("torch.")}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
        np.savez(tmp, runoff_hist=self.router.runoff_hist.detach().cpu().numpy(),
                 inflow_hist=self.router.inflow_hist.detach().cpu().numpy(),
                 reach_ids=np.asarray(self.reach_ids, np.int64),
                 inflow_offset=np.asarray(self.inflow_offset, np.float64),
                 discharge_offset=np.asarray(self.discharge_offset, np.float64),
                 meta=np.array(json.dumps(meta)))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, device: Any = None) -> RouteState:
        """Read a state written by :meth:`save` (no pickle)."""
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"restart state {str(p)!r} does not exist (it is written "
                                    "by a run with a final state: `hydroscale route "
                                    "--final-state FILE`, or route(..., return_state=True))")
        try:
            with np.load(p, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (ValueError, OSError) as err:
            raise ValueError(f"{p}: not a hydroscale restart state (.npz): {err}") from None
        missing = [k for k in (*_ARRAYS, "meta") if k not in arrays]
        meta = json.loads(str(arrays["meta"])) if "meta" in arrays else {}
        if missing or meta.get("format") != _FORMAT:
            raise ValueError(f"{p}: not a hydroscale restart state (format "
                             f"{meta.get('format')!r}, missing {missing}); write one with "
                             "`hydroscale route --final-state FILE`")
        t = meta.get("time")
        return cls(
            RouterState(torch.as_tensor(arrays["runoff_hist"], device=device),
                        torch.as_tensor(arrays["inflow_hist"], device=device)),
            arrays["reach_ids"], arrays["inflow_offset"], arrays["discharge_offset"],
            dict(meta["fingerprint"]), int(meta.get("steps", 0)),
            None if t is None else np.datetime64(t, "s"), str(p))

    def check(self, network: RiverNetwork, fingerprint: dict[str, Any],
              batch: int | None = None, time: Any = None) -> None:
        """Raise :class:`RestartMismatchError` unless this state fits a run of ``network``
        with ``fingerprint`` (:func:`restart_fingerprint`), ``batch`` members and its first
        step starting at ``time`` (when both are known); the message names each
        difference."""
        where = f"restart state {self.path!r}" if self.path else "the initial state"
        ids = np.asarray(self.reach_ids, np.int64)
        if ids.shape != network.ids.shape or not np.array_equal(ids, network.ids):
            missing = np.setdiff1d(network.ids, ids)
            extra = np.setdiff1d(ids, network.ids)
            raise RestartMismatchError(
                f"{where} holds another network's reaches (missing {format_ids(missing)}; "
                f"not in the network {format_ids(extra)}"
                + ("; same ids in another order" if not (missing.size or extra.size) else "")
                + "): continue with the network of the run that wrote it")
        diff = [f"{k}: state {self.fingerprint.get(k)!r}, this run {fingerprint.get(k)!r}"
                for k in sorted(set(fingerprint) | set(self.fingerprint))
                if self.fingerprint.get(k) != fingerprint.get(k)]
        if diff:
            raise RestartMismatchError(
                f"{where} was written by another routing ({'; '.join(diff)}); a state "
                "resumes only the run it came from: continue with the same network, "
                "parameters, IRF, substeps, window, partition and step length")
        if batch is not None and batch != self.batch:
            raise RestartMismatchError(f"{where} holds {self.batch} batch member(s), the "
                                       f"runoff {batch}")
        if time is not None and self.time is not None:
            t = np.datetime64(np.datetime64(time), "s")
            if t != self.time:
                raise RestartMismatchError(
                    f"{where} ends at {self.time} (the next step starts then), but this "
                    f"run's first step starts at {t}: give the forcing from {self.time} on")


def route_with_state(network: RiverNetwork, runoff: torch.Tensor, spec: Any, params: torch.Tensor,
                     substeps: int, engine: str, state: RouteState | None, dt_s: float | None,
                     allow_unstable: bool, cluster_of: np.ndarray, inflow_offset: Any,
                     discharge_offset: Any) -> tuple[torch.Tensor, RouteState]:
    """Route ``runoff`` ``[B, N, T]`` (m³/s, already less the steady inflow ``r*`` of a warm
    start) with a :class:`~hydroscale.routing.StagedRouter` over clusters ``cluster_of``
    ``[N]``, from ``state`` (dry when None; refused with the differences named when it does
    not fit this run); returns the discharge ``[B, N, T]`` and the state after the last step,
    which records the warm start's offsets (``inflow_offset`` ``r*``, ``discharge_offset``
    ``Q0``, ``[B, N]`` tensors or None for a dry start).  ``engine`` "torch"/"triton" picks the
    router's backend (anything else: the device's default); ``dt_s`` (s) is recorded in the
    fingerprint."""
    from ._rivtree import RivTreeCluster
    from ._router import StagedRouter

    router = StagedRouter(
        RivTreeCluster(network, cluster_of), irf=spec, substeps=substeps,
        window="auto" if state is None else state.window, dtype=runoff.dtype,
        backend=engine if engine in ("torch", "triton") else "auto", device=runoff.device,
        allow_unstable=allow_unstable)
    if router.window is None:  # fitted to the tolerance, whatever this call's length
        router.window = router.auto_window(params)
    fp = restart_fingerprint(network, params, spec.name, substeps, router.window, cluster_of,
                             dt_s)
    b, n, t = runoff.shape
    if state is not None:
        state.check(network, fp, batch=b)
    before = 0 if state is None else state.steps
    kernels = router.aggregate(params)
    router.check_window(kernels, before + t, "route(initial=<state>)")
    rs = None if state is None else state.router.to(runoff.device, runoff.dtype)
    q, new = router(runoff, kernels=kernels, state=rs, return_state=True)
    zeros = np.zeros((b, n))
    off = lambda x: zeros if x is None else x.detach().cpu().double().numpy()  # noqa: E731
    return q, RouteState(new, network.ids.copy(), off(inflow_offset), off(discharge_offset), fp,
                         before + t)
