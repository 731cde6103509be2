r"""The built-in impulse responses.

Continuous-time IRFs :math:`u(t)` are sampled for step-averaged flows: inflow held constant
over one sub-step of length :math:`\Delta t`, outflow averaged over each sub-step.  With the
ramp response :math:`S_2(t) = \int_0^t \int_0^s u(r)\,dr\,ds` this is exactly

.. math:: h_k = \frac{S_2((k+1)\Delta t) - 2 S_2(k\Delta t) + S_2((k-1)\Delta t)}{\Delta t},

which sums to one (mass is conserved) and needs no renormalisation.  Muskingum is discrete by
definition and is the impulse response of its difference equation at the sub-step.
All arithmetic is float64; time-like parameters are in routing steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ._registry import CheckFn, IRFSpec, register_irf

__all__ = ["from_ramp_response", "muskingum_coefficients", "muskingum_from_length"]

if TYPE_CHECKING:  # torch is imported where a kernel runs: the registry loads without it
    import torch

    Params = dict[str, torch.Tensor]


def from_ramp_response(
    ramp: Callable[[torch.Tensor], torch.Tensor], n_taps: int, substeps: int, like: torch.Tensor
) -> torch.Tensor:
    """Kernel ``[..., n_taps]`` from a ramp response ``S2(t)`` (t ``[..., n_taps + 2]``, steps).

    ``ramp`` is evaluated at ``t = k / substeps`` for ``k = -1 .. n_taps``; it must return 0
    for ``t <= 0`` and broadcast over the parameter shape of ``like``.
    """
    import torch

    k = torch.arange(-1, n_taps + 1, dtype=torch.float64, device=like.device)
    t = (k / substeps).expand(*like.shape, n_taps + 2)
    s2 = ramp(t)
    return (s2[..., 2:] - 2.0 * s2[..., 1:-1] + s2[..., :-2]) * substeps


def _pos(t: torch.Tensor) -> torch.Tensor:
    import torch

    return torch.clamp(t, min=0.0)


# ---------------------------------------------------------------- pure lag
def _pure_lag(p: Params, n: int, f: int) -> torch.Tensor:
    d = p["delay"].unsqueeze(-1)
    return from_ramp_response(lambda t: _pos(t - d), n, f, p["delay"])


def _check_nonneg(name: str) -> CheckFn:
    def check(p: Params, f: int) -> tuple[str, torch.Tensor] | None:
        bad = p[name] < 0
        return (f"{name} must be >= 0", bad) if bad.any() else None

    return check


register_irf(
    IRFSpec(
        name="pure_lag",
        kernel=_pure_lag,
        params=("delay",),
        bounds={"delay": (0.0, 10.0)},
        check=_check_nonneg("delay"),
        doc="translation by `delay` routing steps (fractional delays interpolate linearly)",
        units={"delay": "s"},
    )
)


# ---------------------------------------------------------------- linear storage
def _linear_storage(p: Params, n: int, f: int) -> torch.Tensor:
    import torch

    tau = p["tau"].unsqueeze(-1)

    def ramp(t: torch.Tensor) -> torch.Tensor:
        tp = _pos(t)
        return tp + tau * torch.expm1(-tp / tau)

    return from_ramp_response(ramp, n, f, p["tau"])


def _linear_storage_recursion(p: Params, f: int) -> torch.Tensor:
    import torch

    # the kernel above is h[0] = 1 + f tau (a - 1), then f tau (1 - a)^2 a^(n-1), a = e^(-1/f tau)
    ftau = f * p["tau"]
    a = torch.exp(-1.0 / ftau)
    h0 = 1.0 + ftau * (a - 1.0)
    h1 = ftau * (1.0 - a) ** 2
    return torch.stack([h0, h1 - a * h0, a], dim=-1)


def _check_positive(*names: str) -> CheckFn:
    def check(p: Params, f: int) -> tuple[str, torch.Tensor] | None:
        for name in names:
            bad = p[name] <= 0
            if bad.any():
                return f"{name} must be > 0", bad
        return None

    return check


register_irf(
    IRFSpec(
        name="linear_storage",
        kernel=_linear_storage,
        recursion=_linear_storage_recursion,
        params=("tau",),
        bounds={"tau": (0.01, 10.0)},
        check=_check_positive("tau"),
        doc="linear reservoir, u(t) = exp(-t/tau)/tau, tau in routing steps",
        units={"tau": "s"},
    )
)


# ---------------------------------------------------------------- Nash cascade
def _nash_cascade(p: Params, n: int, f: int) -> torch.Tensor:
    import torch

    tau = p["tau"].unsqueeze(-1)
    shape = p["n"].unsqueeze(-1)

    def ramp(t: torch.Tensor) -> torch.Tensor:
        tp = _pos(t)
        x = tp / tau
        a = shape.expand_as(x)
        return tp * torch.special.gammainc(a, x) - shape * tau * torch.special.gammainc(a + 1, x)

    return from_ramp_response(ramp, n, f, p["tau"])


register_irf(
    IRFSpec(
        name="nash_cascade",
        kernel=_nash_cascade,
        params=("tau", "n"),
        bounds={"tau": (0.01, 10.0), "n": (1.0, 10.0)},
        check=_check_positive("tau", "n"),
        differentiable=("tau",),
        doc="n linear reservoirs in series (gamma IRF), tau in routing steps; "
        "n may be fractional and carries no gradient",
        units={"tau": "s", "n": "1"},
    )
)


# ---------------------------------------------------------------- Hayami (diffusive wave)
def _hayami(p: Params, n: int, f: int) -> torch.Tensor:
    import torch

    length = p["L"].unsqueeze(-1)
    diff = p["D"].unsqueeze(-1)
    cel = p["c"].unsqueeze(-1)
    mu = length / cel  # mean travel time (steps)
    lam = length * length / (2.0 * diff)  # inverse-Gaussian shape (steps)

    def ramp(t: torch.Tensor) -> torch.Tensor:
        pos = t > 0
        tp = torch.where(pos, t, torch.ones_like(t))  # a safe dummy keeps gradients finite
        r = torch.sqrt(lam / tp)
        a = r * (tp / mu - 1.0)
        b = -r * (tp / mu + 1.0)
        e = torch.exp(2.0 * lam / mu + torch.special.log_ndtr(b))  # e^{2λ/μ} Φ(b), no overflow
        cdf = torch.special.ndtr(a) + e
        partial_mean = mu * (torch.special.ndtr(a) - e)  # ∫_0^t s u(s) ds
        return torch.where(pos, tp * cdf - partial_mean, torch.zeros_like(tp))

    return from_ramp_response(ramp, n, f, p["L"])


register_irf(
    IRFSpec(
        name="hayami",
        kernel=_hayami,
        params=("L", "D", "c"),
        bounds={"L": (10.0, 1.0e5), "D": (1.0e2, 1.0e8), "c": (1.0e2, 1.0e6)},
        check=_check_positive("L", "D", "c"),
        doc="diffusive-wave (Hayami) IRF: reach length L (m), diffusivity D (m²/step), "
        "celerity c (m/step); the inverse-Gaussian travel-time law",
        units={"L": "m", "D": "m2 s-1", "c": "m s-1"},
    )
)


# ---------------------------------------------------------------- Muskingum
def muskingum_coefficients(
    k: torch.Tensor, x: torch.Tensor, dt: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Muskingum C0, C1, C2 for ``Q[t+1] = C0 I[t+1] + C1 I[t] + C2 Q[t]`` at step ``dt``."""
    den = 2.0 * k * (1.0 - x) + dt
    c0 = (dt - 2.0 * k * x) / den
    c1 = (dt + 2.0 * k * x) / den
    c2 = (2.0 * k * (1.0 - x) - dt) / den
    return c0, c1, c2


def _muskingum(p: Params, n: int, f: int) -> torch.Tensor:
    import torch

    c0, c1, c2 = (c.unsqueeze(-1) for c in muskingum_coefficients(p["k"], p["x"], 1.0 / f))
    if n == 1:
        return c0
    j = torch.arange(1, n - 1, dtype=torch.float64, device=c0.device)
    powers = torch.cat([torch.ones_like(c2), c2**j], dim=-1)  # C2^(m-1), m = 1..n-1
    return torch.cat([c0, (c1 + c0 * c2) * powers], dim=-1)


def _muskingum_recursion(p: Params, f: int) -> torch.Tensor:
    import torch

    return torch.stack(muskingum_coefficients(p["k"], p["x"], 1.0 / f), dim=-1)


def _check_muskingum(p: Params, f: int) -> tuple[str, torch.Tensor] | None:
    import torch

    k, x = p["k"].detach(), p["x"].detach()
    bad = (k <= 0) | (x < 0) | (x > 0.5)
    if bad.any():
        return "Muskingum needs k > 0 and 0 <= x <= 0.5", bad
    c0, _, c2 = muskingum_coefficients(k, x, 1.0 / f)
    neg = (c0 < -1e-12) | (c2 < -1e-12)  # rounding at the stability edge is fine
    if neg.any():
        i = tuple(torch.nonzero(neg)[0].tolist())
        return (
            f"negative Muskingum coefficient at sub-step dt=1/{f} step (first: k={float(k[i]):.4g}"
            f" steps, x={float(x[i]):.3g} gives C0={float(c0[i]):.3g}, C2={float(c2[i]):.3g}); "
            "non-negative coefficients need 2kx <= dt <= 2k(1-x): change substeps or k, x",
            neg,
        )
    return None


register_irf(
    IRFSpec(
        name="muskingum",
        kernel=_muskingum,
        recursion=_muskingum_recursion,
        params=("k", "x"),
        bounds={"k": (0.01, 5.0), "x": (0.0, 0.5)},
        check=_check_muskingum,
        doc="Muskingum: storage constant k (routing steps), weighting x (-)",
        units={"k": "s", "x": "1"},
    )
)


def muskingum_from_length(
    length_m: torch.Tensor,
    celerity_m_s: float,
    step_seconds: float,
    substeps: int,
    x: float = 0.2,
) -> dict[str, torch.Tensor]:
    """Muskingum ``k`` (routing steps) and ``x`` from reach length and a wave celerity.

    ``k = L / c`` is the kinematic travel time.  So that every coefficient is non-negative at
    the sub-step ``dt = 1/substeps``, ``k`` is raised to at least ``dt / (2 (1 - x))`` (very
    short reaches) and ``x`` is lowered to at most ``dt / (2k)`` (long reaches, which then
    attenuate a little more).
    """
    import torch

    length = torch.as_tensor(length_m, dtype=torch.float64)
    if torch.any(length <= 0) or celerity_m_s <= 0 or step_seconds <= 0:
        raise ValueError("reach lengths, celerity and step length must be positive")
    dt = 1.0 / substeps
    if not 0.0 <= x <= 0.5:
        raise ValueError(f"x must be in [0, 0.5], got {x}")
    k = torch.clamp(length / celerity_m_s / step_seconds, min=dt / (2 * (1 - x)))
    xs = torch.clamp(torch.full_like(k, x), max=dt / (2 * k))
    return {"k": k, "x": xs}
