"""λ, the rate–distortion trade-off of the variable-rate models: every λ rule in one place.

QARV and rd_model_base minimise ``R + λ · MSE`` (MSE in [-1, 1] units) for a λ given at run time,
inside the range a model was trained for (``config.lmb_range``); QRes models are trained for one
fixed λ and take none. This module owns:

- :func:`check_lmb` / :func:`lmb_vector`: the range check, one rule for every consumer. λ is used
  as float32 by the models (and stored as float32 in bitstreams), so the check is made on the
  float32 value, with a tolerance of :data:`LMB_RTOL` (two float32 steps) that admits the end
  points of the official grids, whose ``exp(log λ)`` may land one step outside;
- :func:`lambda_grid`: the official grids (``torch.linspace(...).exp()`` or ``.pow(3)`` in
  float32), one float rule: PyTorch's float32 linspace, then ``exp`` correctly rounded to float32
  or ``x·x·x`` in float32 (what torch computes for the official grids);
- the official protocols: :data:`PROTOCOLS` (estimated R(D) curves), :func:`self_evaluate_lambdas`
  (the training-time evaluation), :data:`BITSTREAM_STEPS` (``eval-var-rate.py``);
- :func:`lambdas_for`: the λ of an evaluation, as chosen on a command line;
- :func:`sample_lmb`: the training draw (one λ per image).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from lvae_jax.numerics import torch_linspace_f32

#: Relative tolerance of the range check: two float32 steps.
LMB_RTOL = 2.0 ** -22
#: λ count of the official ``eval-var-rate.py`` (its ``--steps`` default): real-bitstream curves.
BITSTREAM_STEPS = 16
SPACINGS = ("log", "cube-root")


class LambdaError(ValueError):
    """A λ that a model cannot take (outside its range, not finite, given to a fixed-rate model)."""


# ------------------------------------------------------------------------------------------------
# The range check
# ------------------------------------------------------------------------------------------------


def _in_range(v32: float, lo: float, hi: float) -> bool:
    return math.isfinite(v32) and lo * (1 - LMB_RTOL) <= v32 <= hi * (1 + LMB_RTOL)


def check_lmb(config, lmb, what: str = "λ") -> float | None:
    """λ for a model: the float32 value (as a Python float) for a variable-rate model — required,
    finite and within the trained range —, None for a fixed-rate model, which takes no λ.
    Raises :class:`LambdaError`."""
    if not config.variable_rate:
        if lmb is not None:
            trained = (f"trained at λ = {config.default_lmb:g}" if config.default_lmb is not None
                       else "lossless")
            raise LambdaError(f"{config.name} is a fixed-rate model ({trained}); it takes no λ")
        return None
    lo, hi = config.lmb_range
    if lmb is None:
        raise LambdaError(f"{config.name} is variable-rate: choose λ in [{lo:g}, {hi:g}] (larger "
                          "λ = higher quality and larger files; the official default is the "
                          f"highest, {config.default_lmb:g})")
    try:
        v = float(lmb)
    except (TypeError, ValueError):
        raise LambdaError(f"{what} must be a number, got {lmb!r}") from None
    v32 = float(np.float32(v)) if math.isfinite(v) else v
    if not _in_range(v32, lo, hi):
        raise LambdaError(f"{what} = {v:.10g} is outside the range {config.name} was trained for, "
                          f"[{lo:g}, {hi:g}]")
    return v32


def lmb_vector(config, lmb, n: int) -> np.ndarray | None:
    """λ for a batch of ``n`` images: a scalar or ``n`` values, each checked by :func:`check_lmb`
    -> (n,) float32, or None for a fixed-rate model."""
    if not config.variable_rate:
        check_lmb(config, lmb)
        return None
    values = np.asarray(lmb, dtype=np.float64).reshape(-1) if lmb is not None else None
    if values is None:
        check_lmb(config, None)
    if values.size not in (1, n):
        raise LambdaError(f"got {values.size} values of λ for {n} images")
    checked = [check_lmb(config, v) for v in values]
    return np.broadcast_to(np.asarray(checked, np.float32), (n,)).copy()


# ------------------------------------------------------------------------------------------------
# Grids and the official protocols
# ------------------------------------------------------------------------------------------------


def lambda_grid(start: float, end: float, steps: int, spacing: str = "log") -> list[float]:
    """λ values of the official evaluation scripts, as the float32 numbers they use.

    ``"log"``: ``torch.linspace(log(start), log(end), steps).exp()`` (QARV ``self_evaluate``,
    ``eval-var-rate.py``, rd ``evaluate.py``); ``"cube-root"``:
    ``torch.linspace(start^⅓, end^⅓, steps).pow(3)`` (rd_model_base ``self_evaluate``). The
    linspace is PyTorch's float32 kernel (:func:`lvae_jax.numerics.torch_linspace_f32`); exp is
    correctly rounded to float32, which equals torch's value for the official grids (torch's
    vectorised exp is off by one float32 step for under 1 % of arbitrary inputs); ``pow(3)`` is
    torch's ``x·x·x`` in float32."""
    if steps < 1:
        raise LambdaError(f"the number of λ values must be >= 1, got {steps}")
    if not (math.isfinite(start) and math.isfinite(end) and 0 < start <= end):
        raise LambdaError(f"λ range must satisfy 0 < start <= end, got ({start}, {end})")
    if spacing == "log":
        lin = torch_linspace_f32(math.log(start), math.log(end), steps)
        values = np.exp(lin.astype(np.float64)).astype(np.float32)
    elif spacing == "cube-root":
        lin = torch_linspace_f32(math.pow(start, 1 / 3), math.pow(end, 1 / 3), steps)
        values = lin * lin * lin
    else:
        raise LambdaError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
    return [float(v) for v in values]


@dataclass(frozen=True)
class Protocol:
    """The official estimated-R(D) settings of one model family."""
    lmb_range: tuple[float, float]
    steps: int
    spacing: str
    bpp_pixels: str
    source: str


#: Estimated R(D) curves, per family: the official script's λ grid and bpp denominator.
PROTOCOLS = {
    "rd": Protocol((4.0, 2048.0), 16, "log", "padded", "lvae/models/rd/evaluate.py"),
    "qarv": Protocol((16.0, 2048.0), 8, "log", "original",
                     "scripts/qarv/eval-theoretical.py (VariableRateLossyVAE.self_evaluate)"),
}

#: The training-time evaluation (``self_evaluate``) spaces λ the other way round from the
#: training draw: QARV log-spaced, rd_model_base cube-root spaced.
SELF_EVALUATE_SPACING = {"cube_root": "log", "log_uniform": "cube-root"}


def official_lambdas(family: str, steps: int | None = None,
                     lmb_range: tuple[float, float] | None = None) -> list[float]:
    """The official estimated-R(D) λ grid of a family (``"rd"``, ``"qarv"``), optionally with
    another count or range."""
    if family not in PROTOCOLS:
        raise LambdaError(f"no R(D) estimation protocol for {family!r} models "
                          f"(variable-rate families: {', '.join(PROTOCOLS)})")
    p = PROTOCOLS[family]
    lo, hi = lmb_range or p.lmb_range
    return lambda_grid(lo, hi, steps or p.steps, p.spacing)


def self_evaluate_lambdas(config, steps: int) -> list[float | None]:
    """The λ of the official training-time ``self_evaluate`` over the model's range; ``[None]``
    for a fixed-rate model."""
    if not config.variable_rate:
        return [None]
    lo, hi = config.lmb_range
    return lambda_grid(lo, hi, steps, SELF_EVALUATE_SPACING[config.lmb_sampling])


def lambdas_for(config, lambdas: Sequence[float] | None = None, num: int | None = None,
                lmb_range: Sequence[float] | None = None, default_num: int = BITSTREAM_STEPS,
                spacing: str = "log") -> list[float]:
    """The λ at which to evaluate a model: ``lambdas`` as given, or ``num`` (default
    ``default_num``) values spaced like the official scripts over ``lmb_range`` (default: the
    model's range); ``[]`` for a fixed-rate model (one point, no λ). Every value is checked by
    :func:`check_lmb`. Raises :class:`LambdaError` for a fixed-rate model given any choice, or an
    empty or malformed choice."""
    name = config.name
    if not config.variable_rate:
        if lambdas is not None or num is not None or lmb_range is not None:
            lmb = config.default_lmb
            trained = f"trained at λ = {lmb:g}" if lmb is not None else "lossless"
            raise LambdaError(f"{name} is a fixed-rate model ({trained}): it gives one point and "
                              "takes no λ; for a QRes curve pass one model directory per λ")
        return []
    if lambdas is not None and (num is not None or lmb_range is not None):
        raise LambdaError("give λ values or a λ count (with an optional range), not both")
    if lambdas is not None:
        values = [float(v) for v in lambdas]
        if not values:
            raise LambdaError("the λ list is empty")
        for v in values:
            check_lmb(config, v)
        return values
    lo, hi = config.lmb_range
    a, b = (lo, hi) if lmb_range is None else (float(v) for v in lmb_range)
    check_lmb(config, a, "λ range start")
    check_lmb(config, b, "λ range end")
    if a > b:
        raise LambdaError(f"λ range start {a:g} is above its end {b:g}")
    n = default_num if num is None else int(num)
    values = lambda_grid(a, b, n, spacing)
    for v in values:
        check_lmb(config, v)
    return values


# ------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------


def sample_lmb(key, config, n: int):
    """(n,) float32 λ for a training batch (official ``sample_lmb``), or None for a fixed-rate
    model: QARV (``lmb_sampling="cube_root"``) uniform in λ^(1/3) over the range, then cubed;
    rd_model_base (``"log_uniform"``) uniform in log λ, then exponentiated."""
    if not config.variable_rate:
        return None
    import jax
    import jax.numpy as jnp
    lo, hi = config.lmb_range
    u = jax.random.uniform(key, (n,), jnp.float32)
    if config.lmb_sampling == "cube_root":
        a, b = math.pow(lo, 1 / 3), math.pow(hi, 1 / 3)
        return jnp.power(a + (b - a) * u, 3.0)
    if config.lmb_sampling == "log_uniform":
        a, b = math.log(lo), math.log(hi)
        return jnp.exp(a + (b - a) * u)
    raise LambdaError(f"unknown lmb_sampling {config.lmb_sampling!r}")
