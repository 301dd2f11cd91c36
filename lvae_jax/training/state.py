"""The training state: everything a step reads and writes, one pytree, checkpointed as a whole.

``params`` and ``ema`` are the :class:`flax.nnx.State` of the model's ``nnx.Param`` variables
(``graphdef, params = nnx.split(model, nnx.Param)``, split once). The optimizer is Optax:
``clip_by_global_norm(grad_clip)`` then ``scale_by_adam`` (torch ``Adam`` with
``weight_decay=0``: the same moments, bias corrections and ``eps`` outside the square root); the
learning rate is applied by the step because it changes per step (schedule × spike guard).

The EMA is kept here rather than with ``optax.ema``: the official decay is warmed up by the step
(``decay · (1 − exp(−t / warm-up))``) and the update is skipped on spike steps, and the EMA
follows the *parameters* after the update, not the updates — ``optax.ema`` (a fixed decay over the
update stream, with optional debiasing) expresses none of the three.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    """All arrays; ``step`` counts completed steps (int32 scalar)."""
    step: jax.Array
    params: Any
    opt_state: Any
    #: EMA of ``params`` (None when the run has no EMA).
    ema: Any
    #: raw PRNG key data (uint32) of the run; the key of step t is ``fold_in(key, t)``.
    rng: jax.Array
    #: the last ``spike_window`` gradient norms (ring buffer, slot ``t % window``).
    grad_norms: jax.Array
    #: spike-guard LR multiplier in force until the next scheduled LR update (1 when none).
    lr_scale: jax.Array

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, d: dict) -> "TrainState":
        return cls(**d)


def make_optimizer(cfg, grad_clip=None) -> optax.GradientTransformation:
    """Gradient clipping at ``cfg.grad_clip`` (global norm; ``grad_clip``, possibly traced,
    instead if given) followed by Adam's scaling."""
    clip = cfg.grad_clip if grad_clip is None else grad_clip
    return optax.chain(optax.clip_by_global_norm(clip),
                       optax.scale_by_adam(b1=cfg.adam_b1, b2=cfg.adam_b2, eps=cfg.adam_eps))


def init_train_state(params, tx: optax.GradientTransformation, cfg, seed: int | None = None,
                     ema=None) -> TrainState:
    """A fresh state at step 0: the EMA starts as a copy of ``params`` (timm ``ModelEmaV2``) unless
    ``ema`` is given; the run key is ``jax.random.key(seed)`` (default ``cfg.seed``). All arrays
    are new buffers (the state is donated to the step)."""
    seed = cfg.seed if seed is None else seed
    return _init_state(params, ema, tx, bool(cfg.ema), int(seed), int(cfg.spike_window))


@partial(jax.jit, static_argnums=(2, 3, 4, 5))  # one compilation, not one per parameter shape
def _init_state(params, ema, tx, use_ema: bool, seed: int, window: int) -> TrainState:
    params = jax.tree.map(lambda x: x + 0, params)
    if use_ema:
        ema = jax.tree.map(lambda x: x + 0, params if ema is None else ema)
    else:
        ema = None
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        ema=ema,
        rng=jax.random.key_data(jax.random.key(seed)),
        grad_norms=jnp.zeros((window,), jnp.float32),
        lr_scale=jnp.ones((), jnp.float32),
    )
