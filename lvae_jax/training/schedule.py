"""Learning-rate and EMA-decay schedules of the official trainer (``lvae/trainer.py``), as pure
``jnp`` functions of the (traced) step, so they run inside the jitted training step.

Learning rate (``BaseTrainingWrapper.adjust_lr``), factor ``f(t)`` of the base LR at step ``t``
(0-based) of ``T`` iterations:

- warm-up ``t < W``: ``(t + 1) / W``;
- ``constant``: 1;
- ``cosine``: ``cos_factor(t − W, T − W − 1)``;
- ``const-0.5-cos``: 1 while ``t ≤ round(T / 2)``, then ``cos_factor(t − b, T − b − 1)`` with
  ``b = round(T / 2)`` (Python's round: half to even);

with ``cos_factor(t, T) = m + (1 − m) · (1 + cos(π t / T)) / 2`` going from 1 to ``m = lrf_min``.
The official trainer evaluates this only when ``t % 10 == 0`` and keeps the LR for the next ten
steps, so the factor at step ``t`` is ``f(t − t mod 10)``.

EMA (``training_loops``): after each accepted step the EMA weights move with decay
``ema_decay · (1 − exp(−t / ema_warmup))`` (0 at the first step: the EMA starts as a copy).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import optax


def _cosine(t, period, final):
    return final + 0.5 * (1.0 - final) * (1.0 + jnp.cos(t * math.pi / period))


def lr_factor_schedule(kind: str, iterations: int, lrf_min: float = 0.01, warmup: int = 0,
                       update_every: int = 10) -> optax.Schedule:
    """``step -> factor`` (an Optax schedule) of the official trainer; see the module docstring."""
    T, W = int(iterations), int(warmup)
    boundary = round(T * 0.5)

    def factor(step):
        t = jnp.asarray(step, jnp.int32)
        t = (t - t % update_every).astype(jnp.float32)
        if kind == "constant":
            main = jnp.ones_like(t)
        elif kind == "cosine":
            main = _cosine(t - W, max(T - W - 1, 1), lrf_min)
        elif kind == "const-0.5-cos":
            main = jnp.where(t <= boundary, 1.0, _cosine(t - boundary, max(T - boundary - 1, 1), lrf_min))
        else:
            raise ValueError(f"unknown LR schedule {kind!r}")
        if W > 0:
            main = jnp.where(t < W, (t + 1.0) / W, main)
        return main.astype(jnp.float32)

    return factor


def ema_decay_schedule(decay: float, warmup: int) -> optax.Schedule:
    """``step -> decay · (1 − exp(−step / warmup))``."""
    def schedule(step):
        t = jnp.asarray(step, jnp.float32)
        return (decay * (1.0 - jnp.exp(-t / float(warmup)))).astype(jnp.float32)
    return schedule
