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

The numbers (``T``, ``W``, ``m``, the decay and its warm-up) may be traced values: the training
step takes them as inputs (:class:`lvae_jax.training.step.StepHyper`), so that runs that differ
only in them — length, learning rate, clipping — share one compiled program. Only the kind of
schedule and the update interval shape the program.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def cos_factor(t, period, lrf_min):
    """``m + (1 − m) · (1 + cos(π · min(t, P) / P)) / 2``: 1 at ``t = 0``, ``m`` from ``t = P`` on
    (Optax's ``cosine_decay_schedule(1, P, alpha=m)``, with ``P`` possibly traced)."""
    t = jnp.minimum(jnp.asarray(t, jnp.float32), period)
    return lrf_min + (1.0 - lrf_min) * 0.5 * (1.0 + jnp.cos(jnp.pi * t / period))


def lr_factor_schedule(kind: str, iterations, lrf_min=0.01, warmup=0, update_every: int = 10):
    """``step -> factor`` of the official trainer (see the module docstring). ``kind`` and
    ``update_every`` are Python values; ``iterations``, ``lrf_min`` and ``warmup`` may be traced."""
    if kind not in ("constant", "cosine", "const-0.5-cos"):
        raise ValueError(f"unknown LR schedule {kind!r}")
    T = jnp.asarray(iterations, jnp.int32)
    W = jnp.asarray(warmup, jnp.int32)
    m = jnp.asarray(lrf_min, jnp.float32)

    def main(t):
        if kind == "constant":
            return jnp.float32(1.0)
        if kind == "cosine":               # counted from the end of the warm-up
            return cos_factor(t - W, jnp.maximum(T - W - 1, 1).astype(jnp.float32), m)
        # 1 up to and including step b = round(T / 2) (half to even, as Python's round); from b
        # on cos_factor(t − b), which is 1 at t = b
        b = jnp.round(T.astype(jnp.float32) * 0.5).astype(jnp.int32)
        return jax.lax.select(t < b, jnp.ones((), jnp.float32),
                              cos_factor(t - b, jnp.maximum(T - b - 1, 1).astype(jnp.float32), m))

    def factor(step):                  # lax primitives: see the comment in training/step.py
        t = jnp.asarray(step, jnp.int32)
        t = t - jax.lax.rem(t, jnp.int32(update_every))
        warm = (t + 1).astype(jnp.float32) / jnp.maximum(W, 1).astype(jnp.float32)
        return jax.lax.select(t < W, warm, jnp.asarray(main(t), jnp.float32))

    return factor


def ema_decay_schedule(decay, warmup):
    """``step -> decay · (1 − exp(−step / warmup))``, as ``−expm1`` so that float32 keeps the
    small early values accurate (the official trainer computes it in float64). ``decay`` and
    ``warmup`` may be traced."""
    def schedule(step):
        t = jnp.asarray(step, jnp.float32)
        return (decay * -jnp.expm1(-t / jnp.asarray(warmup, jnp.float32))).astype(jnp.float32)
    return schedule
