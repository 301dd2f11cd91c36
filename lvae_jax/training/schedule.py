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

import jax.numpy as jnp
import optax


def lr_factor_schedule(kind: str, iterations: int, lrf_min: float = 0.01, warmup: int = 0,
                       update_every: int = 10) -> optax.Schedule:
    """``step -> factor`` of the official trainer (see the module docstring), built from Optax
    schedules: ``cosine_decay_schedule(1, P, alpha=lrf_min)`` is exactly ``cos_factor(t, P)``, and
    ``join_schedules`` hands each piece the step counted from its boundary."""
    T, W = int(iterations), int(warmup)
    if kind == "constant":
        main, start = optax.constant_schedule(1.0), W
    elif kind == "cosine":
        main, start = optax.cosine_decay_schedule(1.0, max(T - W - 1, 1), alpha=lrf_min), W
    elif kind == "const-0.5-cos":
        # 1 up to and including step b; from b on cos_factor(t - b), which is 1 at t = b.
        b = round(T * 0.5)
        main = optax.join_schedules(
            [optax.constant_schedule(1.0),
             optax.cosine_decay_schedule(1.0, max(T - b - 1, 1), alpha=lrf_min)], [b])
        start = W
    else:
        raise ValueError(f"unknown LR schedule {kind!r}")
    if W > 0:  # (t + 1) / W for t < W
        warm = optax.linear_schedule(1.0 / W, 1.0, max(W - 1, 1))
        if kind == "cosine":
            main = optax.join_schedules([warm, main], [start])
        else:
            inner = main
            main = lambda t: jnp.where(t < W, warm(t), inner(t))  # noqa: E731

    def factor(step):
        t = jnp.asarray(step, jnp.int32)
        return jnp.asarray(main(t - t % update_every), jnp.float32)

    return factor


def ema_decay_schedule(decay: float, warmup: int) -> optax.Schedule:
    """``step -> decay · (1 − exp(−step / warmup))``, as ``−expm1`` so that float32 keeps the
    small early values accurate (the official trainer computes it in float64)."""
    def schedule(step):
        t = jnp.asarray(step, jnp.float32)
        return (decay * -jnp.expm1(-t / float(warmup))).astype(jnp.float32)
    return schedule
