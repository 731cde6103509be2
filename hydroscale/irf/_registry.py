"""The IRF registry: one frozen spec per impulse response, registered by name."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where tensors are made: the registry loads without it
    import torch

__all__ = [
    "IRFSpec",
    "UnstableParametersError",
    "register_irf",
    "get_irf",
    "list_irfs",
    "stack_params",
    "irf_kernel",
    "irf_recursion",
    "time_exponent",
    "UNIT_SYMBOLS",
]

KernelFn = Callable[[dict[str, "torch.Tensor"], int, int], "torch.Tensor"]
CheckFn = Callable[[dict[str, "torch.Tensor"], int], "tuple[str, torch.Tensor] | None"]
RecursionFn = Callable[[dict[str, "torch.Tensor"], int], "torch.Tensor"]


class UnstableParametersError(ValueError):
    """IRF parameters that give a kernel with negative coefficients or unbounded growth."""


#: symbols a parameter unit may use (SI, UDUNITS-style: ``"m2 s-1"``); ``"1"`` is dimensionless
UNIT_SYMBOLS = ("s", "m", "kg")
_UNIT_TERM = re.compile(r"([A-Za-z]+)(-?[0-9]+)?")


def time_exponent(unit: str) -> int:
    """The power of seconds in a unit string: ``"s"`` -> 1, ``"m2 s-1"`` -> -1, ``"1"`` -> 0.

    Units are SI products of :data:`UNIT_SYMBOLS` with integer powers, separated by spaces
    (``"m"``, ``"m s-1"``, ``"kg m-3"``), or ``"1"`` for a dimensionless parameter.
    """
    if not isinstance(unit, str):
        raise TypeError(f"a unit must be a string such as 's', 'm s-1' or '1', got {unit!r}")
    if unit.strip() == "1":
        return 0
    terms = unit.split()
    powers: dict[str, int] = {}
    for term in terms:
        m = _UNIT_TERM.fullmatch(term)
        if m is None or m.group(1) not in UNIT_SYMBOLS or m.group(1) in powers:
            raise ValueError(
                f"unit {unit!r}: expected SI symbols {list(UNIT_SYMBOLS)} each once with an "
                "optional integer power, separated by spaces (e.g. 's', 'm2 s-1', 'm s-1'), "
                "or '1' for dimensionless"
            )
        powers[m.group(1)] = int(m.group(2) or 1)
    if not terms:
        raise ValueError(f"unit {unit!r} is empty; use '1' for a dimensionless parameter")
    return powers.get("s", 0)


@dataclass(frozen=True)
class IRFSpec:
    """An impulse-response family.

    Attributes
    ----------
    name : registry key.
    kernel : ``kernel(params, n_taps, substeps) -> Tensor [..., n_taps]``.  ``params`` maps
        each parameter name to a float64 tensor of shape ``[...]`` in routing-step time units;
        the result is the response at sub-step resolution ``dt = 1 / substeps``: tap ``k`` is
        the outflow averaged over sub-step ``k`` for a unit inflow held during sub-step 0.
    params : parameter names, in column order.
    bounds : name -> (low, high), the default calibration range (routing-step units).
    check : optional ``check(params, substeps) -> (message, bad_mask) or None`` that flags
        invalid or unstable parameters (``bad_mask`` has the parameters' shape).
    differentiable : names of parameters that carry gradients.
    doc : one-line description with units.
    units : name -> SI unit of the parameter (``"s"``, ``"m"``, ``"m2 s-1"``, ``"m s-1"``, ``"1"``;
        see :func:`time_exponent`).  Kernels take parameters in routing-step units: the unit
        with seconds replaced by routing steps (``k`` in steps, ``c`` in m/step).  The unit says
        how a value in SI converts when the routing step ``dt`` (seconds) is given:
        ``value_steps = value_si * dt ** -e``, ``e`` the power of seconds
        (:attr:`time_exponents`, :meth:`step_factors`).  A parameter not named is
        dimensionless (``"1"``, never converted); after creation ``units`` names every
        parameter and :attr:`units_declared` says whether any unit was given at all (an IRF
        that gives none cannot convert SI values: converting with ``dt`` is an error).
    recursion : optional ``recursion(params, substeps) -> Tensor [..., 3]``, the coefficients
        ``(b0, b1, a1)`` of the first-order recursive filter
        ``y[n] = b0 x[n] + b1 x[n - 1] + a1 y[n - 1]`` whose impulse response is ``kernel``
        (``h[0] = b0``, ``h[1] = b1 + a1 b0``, ``h[n] = a1 h[n - 1]`` after).  IRFs that have
        one (Muskingum, the linear reservoir) are aggregated by running the filter along each
        path (:func:`hydroscale.kernels.extend_recursive`) instead of FFT convolutions, and
        their kernel mass is ``(b0 + b1) / (1 - a1)``.
    """

    name: str
    kernel: KernelFn
    params: tuple[str, ...]
    bounds: Mapping[str, tuple[float, float]]
    check: CheckFn | None = None
    differentiable: tuple[str, ...] = field(default=())
    doc: str = ""
    recursion: RecursionFn | None = None
    units: Mapping[str, str] = field(default_factory=dict)
    units_declared: bool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.name or not self.name.isidentifier():
            raise ValueError(f"IRF name must be an identifier, got {self.name!r}")
        if not self.params or len(set(self.params)) != len(self.params):
            raise ValueError(f"IRF {self.name!r}: params must be unique names, got {self.params}")
        if set(self.bounds) != set(self.params):
            raise ValueError(
                f"IRF {self.name!r}: bounds must name exactly the params {self.params}, "
                f"got {sorted(self.bounds)}"
            )
        for p, (lo, hi) in self.bounds.items():
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(f"IRF {self.name!r}: bounds of {p!r} must be finite lo < hi")
        if not self.differentiable:
            object.__setattr__(self, "differentiable", self.params)
        unknown = sorted(set(self.units) - set(self.params))
        if unknown:
            raise ValueError(
                f"IRF {self.name!r}: units name unknown parameters {unknown}; "
                f"the params are {list(self.params)}"
            )
        for p, unit in self.units.items():
            try:
                time_exponent(unit)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"IRF {self.name!r}: units[{p!r}]: {exc}") from None
        object.__setattr__(self, "units_declared", bool(self.units))
        # a plain dict (like bounds), so that specs pickle to Dask workers
        object.__setattr__(self, "units", {p: self.units.get(p, "1") for p in self.params})

    @property
    def n_params(self) -> int:
        return len(self.params)

    @property
    def time_exponents(self) -> dict[str, int]:
        """name -> power of seconds in the parameter's unit (0 for dimensionless ones)."""
        return {p: time_exponent(u) for p, u in self.units.items()}

    def step_factors(self, dt: float) -> tuple[float, ...]:
        """Factors ``[P]`` (column order) that turn SI values into routing-step units.

        ``value_steps = value_si * factor`` with ``factor = dt ** -e`` (``dt``: the routing
        step in seconds, ``e``: :attr:`time_exponents`).  Refused for an IRF that declares no
        units, whose SI values cannot be told from routing-step ones.
        """
        if not self.units_declared:
            raise ValueError(
                f"IRF {self.name!r} declares no parameter units, so dt cannot convert them; "
                "give them in routing-step units (dt=None), or register the IRF with units="
            )
        dt = float(dt)
        if not (math.isfinite(dt) and dt > 0):
            raise ValueError(f"dt must be a positive number of seconds, got {dt}")
        exps = self.time_exponents
        return tuple(dt ** -exps[p] for p in self.params)


_REGISTRY: dict[str, IRFSpec] = {}


def register_irf(spec: IRFSpec, *, overwrite: bool = False) -> IRFSpec:
    """Register ``spec`` under ``spec.name``; refuse to replace an existing one silently."""
    if not isinstance(spec, IRFSpec):
        raise TypeError(f"register_irf takes an IRFSpec, got {type(spec).__name__}")
    if spec.name in _REGISTRY and not overwrite:
        raise ValueError(
            f"an IRF named {spec.name!r} is already registered; pass overwrite=True to replace it"
        )
    _REGISTRY[spec.name] = spec
    return spec


def get_irf(name: str | IRFSpec) -> IRFSpec:
    """Look up a registered IRF by name (an :class:`IRFSpec` is returned as is)."""
    if isinstance(name, IRFSpec):
        return name
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown IRF {name!r}; registered IRFs: {', '.join(sorted(_REGISTRY))}"
        ) from None


def list_irfs() -> list[str]:
    """Names of the registered IRFs."""
    return sorted(_REGISTRY)


def _as_float_tensor(value: Any) -> torch.Tensor:
    """A tensor; Python numbers and lists become float64 (not torch's float32 default)."""
    import torch

    if isinstance(value, torch.Tensor) or hasattr(value, "dtype"):
        t = torch.as_tensor(value)
    else:
        t = torch.as_tensor(value, dtype=torch.float64)
    return t if t.is_floating_point() else t.to(torch.float64)


def stack_params(spec: IRFSpec, params: Any, n: int | None = None) -> torch.Tensor:
    """Parameters as a tensor ``[..., P]`` with columns in ``spec.params`` order.

    ``params`` is a tensor/array ``[..., P]``, or a mapping name -> values (scalars broadcast
    to ``n`` reaches when ``n`` is given).  A missing or unknown name is an error.
    """
    import torch

    if isinstance(params, Mapping):
        missing = [p for p in spec.params if p not in params]
        unknown = [p for p in params if p not in spec.params]
        if missing or unknown:
            raise ValueError(
                f"IRF {spec.name!r} takes parameters {list(spec.params)}; "
                f"missing {missing}, unknown {unknown}"
            )
        cols = [_as_float_tensor(params[p]) for p in spec.params]
        dtype = torch.promote_types(cols[0].dtype, torch.float32)
        for c in cols[1:]:
            dtype = torch.promote_types(dtype, c.dtype)
        shape = torch.broadcast_shapes(*(c.shape for c in cols))
        if n is not None and shape == ():
            shape = (n,)
        return torch.stack([c.to(dtype).expand(shape) for c in cols], dim=-1)
    t = _as_float_tensor(params)
    if t.shape[-1:] != (spec.n_params,):
        raise ValueError(
            f"IRF {spec.name!r} params must be [..., {spec.n_params}] with columns "
            f"{list(spec.params)}, got shape {tuple(t.shape)}"
        )
    return t


def _where(mask: torch.Tensor, labels: Any) -> str:
    import torch

    rows = torch.nonzero(mask.reshape(-1)).flatten()
    n = rows.numel()
    shown = rows[:10].tolist()
    if labels is not None:
        flat = [int(v) for v in torch.as_tensor(labels).reshape(-1)[rows[:10]].tolist()]
        text = f"{n} reach(es), ids {flat}"
    else:
        text = f"{n} row(s) {shown}"
    return text + (" ..." if n > 10 else "")


def _columns(
    spec: IRFSpec, params: Any, substeps: int, allow_unstable: bool, labels: Any
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``params`` stacked ``[..., P]`` and as float64 columns by name (gradients cut where the
    spec says a parameter is not differentiable), after the finiteness and stability checks."""
    import torch

    if int(substeps) != substeps or substeps < 1:
        raise ValueError(f"substeps must be a positive integer, got {substeps}")
    p = stack_params(spec, params)
    cols = {name: p[..., i].to(torch.float64) for i, name in enumerate(spec.params)}
    for name in spec.params:
        if name not in spec.differentiable:
            cols[name] = cols[name].detach()
    bad = ~torch.isfinite(p).all(dim=-1)
    if bad.any():
        raise ValueError(f"IRF {spec.name!r}: non-finite parameters at {_where(bad, labels)}")
    if spec.check is not None and not allow_unstable:
        found = spec.check(cols, int(substeps))
        if found is not None:
            msg, mask = found
            raise UnstableParametersError(
                f"IRF {spec.name!r}: {msg}; offending {_where(mask, labels)} "
                "(pass allow_unstable=True to route anyway)"
            )
    return p, cols


def irf_kernel(
    irf: str | IRFSpec,
    params: Any,
    n_taps: int,
    substeps: int = 1,
    *,
    allow_unstable: bool = False,
    labels: Any = None,
) -> torch.Tensor:
    """Sample an IRF at sub-step resolution.

    Parameters
    ----------
    irf : registered name or spec.
    params : ``[..., P]`` tensor or mapping name -> ``[...]`` (routing-step time units).
    n_taps : number of sub-steps of the kernel.
    substeps : f, sub-steps per routing step (``dt = 1/f`` routing steps).
    allow_unstable : accept parameters the IRF's check rejects (e.g. Muskingum with a
        negative coefficient); otherwise :class:`UnstableParametersError`.
    labels : optional ``[...]`` reach ids used to name offending rows in errors.

    Returns
    -------
    Tensor ``[..., n_taps]``, float64 arithmetic, cast back to the dtype of ``params``.
    """
    spec = get_irf(irf)
    if n_taps < 1:
        raise ValueError(f"n_taps must be >= 1, got {n_taps}")
    p, cols = _columns(spec, params, substeps, allow_unstable, labels)
    h = spec.kernel(cols, int(n_taps), int(substeps))
    return h.to(p.dtype)


def irf_recursion(
    irf: str | IRFSpec,
    params: Any,
    substeps: int = 1,
    *,
    allow_unstable: bool = False,
    labels: Any = None,
) -> torch.Tensor | None:
    """The recursive-filter coefficients ``[..., 3]`` = ``(b0, b1, a1)`` of an IRF at
    sub-step resolution (see :class:`IRFSpec`), or None when the IRF has no recursive form.
    Same parameters, checks and dtype rule as :func:`irf_kernel`."""
    spec = get_irf(irf)
    if spec.recursion is None:
        return None
    p, cols = _columns(spec, params, substeps, allow_unstable, labels)
    return spec.recursion(cols, int(substeps)).to(p.dtype)
