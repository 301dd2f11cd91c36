"""λ for training and evaluation of the variable-rate models, by the official rules.

Training draws one λ per image (``sample_lmb`` of the official models):

- QARV (``lmb_sampling="cube_root"``): uniform in λ^(1/3) over ``lmb_range``, then cubed;
- rd_model_base (``"log_uniform"``): uniform in log λ, then exponentiated.

Evaluation uses ``steps`` λ (``self_evaluate``), spaced the *other* way round, exactly as the
official code does: QARV log-spaced (``linspace(log lo, log hi).exp()``), rd cube-root spaced
(``linspace(lo^(1/3), hi^(1/3))^3``). Fixed-rate models have no λ to choose (None).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from lvae_jax.numerics import torch_linspace_f32


def sample_lmb(key: jax.Array, model_config, n: int) -> jax.Array | None:
    """(n,) float32 λ for a training batch, or None for a fixed-rate model."""
    if not model_config.variable_rate:
        return None
    lo, hi = model_config.lmb_range
    u = jax.random.uniform(key, (n,), jnp.float32)
    if model_config.lmb_sampling == "cube_root":
        a, b = math.pow(lo, 1 / 3), math.pow(hi, 1 / 3)
        return jnp.power(a + (b - a) * u, 3.0)
    if model_config.lmb_sampling == "log_uniform":
        a, b = math.log(lo), math.log(hi)
        return jnp.exp(a + (b - a) * u)
    raise ValueError(f"unknown lmb_sampling {model_config.lmb_sampling!r}")


def eval_lambdas(model_config, steps: int) -> list[float | None]:
    """The λ of the official ``self_evaluate`` (float32 values, as torch computes them);
    ``[None]`` for a fixed-rate model."""
    if not model_config.variable_rate:
        return [None]
    lo, hi = model_config.lmb_range
    if model_config.lmb_sampling == "log_uniform":  # rd: cube-root spaced
        grid = np.power(torch_linspace_f32(math.pow(lo, 1 / 3), math.pow(hi, 1 / 3), steps),
                        np.float32(3))
    else:  # QARV: log spaced
        grid = np.exp(torch_linspace_f32(math.log(lo), math.log(hi), steps))
    return [float(v) for v in np.asarray(grid, np.float32)]
