"""The training step, a pure function ``train_step(state, batch, key, hyper) -> (state, metrics)``
to be run under ``jax.jit`` with the state donated.

One step of the official trainer (``BaseTrainingWrapper.training_loops`` / ``gradient_clip``):

1. λ per image (variable rate, :func:`~lvae_jax.models.lambdas.sample_lmb`), training-mode
   forward (uniform noise / reparameterised latents) and the official loss; gradients (of the
   official batch mean, or with ``loss_weighting="per-image"`` each image reweighted by the
   inverse of its own loss — an option, not the official recipe).
2. ``g = ‖grads‖₂`` over all parameters (before clipping, as ``clip_grad_norm_`` returns it) is
   written into the ring buffer of the last ``spike_window`` norms; ``m`` is their median
   (``numpy.median`` over the norms seen so far, this one included). The step is a *spike* if
   ``g > spike_factor · m``.
3. Clip to ``grad_clip`` (global norm) and take Adam's step at
   ``lr · schedule(t) · s``. ``s`` is the spike-guard multiplier: the official trainer multiplies
   its optimiser's LR by 0.1 on a spike and only restores it at the next scheduled LR update
   (every 10 steps), so ``s`` is reset to 1 when ``t % 10 == 0`` and multiplied by 0.1 on each
   spike in between.
4. Unless the step is a spike, ``ema ← d · ema + (1 − d) · params`` with the warmed-up decay ``d``.

Everything stays on the device (no host synchronisation); the batch may be sharded over a
``data`` mesh axis — the loss and the gradients are means over the global batch.

The run's numbers — learning rate, clipping norm, length (the schedules), EMA decay, spike guard —
are an input of the step (:class:`StepHyper`, :func:`step_hyper`), not constants of its program:
runs that differ only in them (a sweep over the learning rate, a longer resumed run, a fine-tune)
compile it once and share it through JAX's persistent cache. The model, the precision, the loss
weighting, the kind of LR schedule, the spike window and whether there is an EMA shape the program.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from lvae_jax.models.lambdas import sample_lmb
from lvae_jax.training.precision import compute_params
from lvae_jax.training.schedule import ema_decay_schedule, lr_factor_schedule
from lvae_jax.training.state import TrainState, make_optimizer


class StepHyper(NamedTuple):
    """The numbers of a run that the training step takes as inputs (scalars: float32, the step
    counts int32), from :func:`step_hyper`."""
    lr: np.ndarray
    grad_clip: np.ndarray
    iterations: np.ndarray
    lrf_min: np.ndarray
    lr_warmup: np.ndarray
    ema_decay: np.ndarray
    ema_warmup: np.ndarray
    spike_factor: np.ndarray
    spike_lr_scale: np.ndarray


def step_hyper(cfg) -> StepHyper:
    """The :class:`StepHyper` of a training configuration (host values). The EMA warm-up is the
    official ``ema_warmup or T // 20`` (at least 1)."""
    f32, i32 = np.float32, np.int32
    return StepHyper(lr=f32(cfg.lr), grad_clip=f32(cfg.grad_clip), iterations=i32(cfg.iterations),
                     lrf_min=f32(cfg.lrf_min), lr_warmup=i32(cfg.lr_warmup),
                     ema_decay=f32(cfg.ema_decay),
                     ema_warmup=f32(cfg.ema_warmup or max(cfg.iterations // 20, 1)),
                     spike_factor=f32(cfg.spike_factor), spike_lr_scale=f32(cfg.spike_lr_scale))


def median_of_first(values: jax.Array, count: jax.Array) -> jax.Array:
    """``numpy.median(values[:count])`` for a traced ``count`` in ``[1, len(values)]`` (float32;
    an even count averages the two middle values)."""
    n = values.shape[0]
    live = jnp.arange(n) < count
    s = jnp.sort(jnp.where(live, values, jnp.inf))
    count = jnp.asarray(count, jnp.int32)
    two = jnp.int32(2)              # count >= 1: truncating division is floor division here
    lo = s[jax.lax.div(count - 1, two)]
    hi = s[jax.lax.div(count, two)]
    return (lo + hi) / 2.0


def batch_loss(per_image: jax.Array, weighting: str = "official") -> jax.Array:
    """The batch loss of per-image losses ``L_n`` (N,) (``TrainConfig.loss_weighting``).

    "official": ``mean(L)``. "per-image": the same value, with gradient
    ``Σ_n mean(L) / L_n · ∇L_n / N`` — ∇ mean(log L_n) scaled by mean(L): every image's term
    weighed by the inverse of its own value (stop-gradient)."""
    if weighting == "official":
        return jnp.mean(per_image)
    if weighting != "per-image":
        raise ValueError(f"unknown loss weighting {weighting!r}")
    sg = jax.lax.stop_gradient
    return jnp.mean(per_image / sg(per_image)) * sg(jnp.mean(per_image))


def make_train_step(graphdef, model_config, cfg, tx: optax.GradientTransformation | None = None):
    """Build ``train_step(state, batch, key, hyper) -> (state, metrics)``.

    ``batch``: (N, H, W, 3) uint8 NHWC. ``key``: raw PRNG key data (uint32) of this step.
    ``hyper``: the run's :class:`StepHyper` (``step_hyper(cfg)``). ``metrics``: float32 scalars —
    the model's stats (``loss``, ``kl`` nats/dim, ``bppix``, ``mse``/``nll``, ``psnr``) and
    ``grad_norm``, ``lr``, ``spike`` (0/1), ``ema_decay``. ``tx``: the optimiser, by default the
    official one (:func:`~lvae_jax.training.state.make_optimizer`) clipping at
    ``hyper.grad_clip``; one given here keeps its own constants.
    """
    window = cfg.spike_window

    def train_step(state: TrainState, batch: jax.Array, key: jax.Array, hyper: StepHyper):
        lr_factor = lr_factor_schedule(cfg.lr_schedule, hyper.iterations, hyper.lrf_min,
                                       hyper.lr_warmup, cfg.lr_update_every)
        ema_decay = ema_decay_schedule(hyper.ema_decay, hyper.ema_warmup)
        opt = make_optimizer(cfg, grad_clip=hyper.grad_clip) if tx is None else tx
        im = batch.astype(jnp.float32) / 255.0     # float32 input: the model casts per layer
        k_lmb, k_fwd = jax.random.split(jax.random.wrap_key_data(key))
        lmb = sample_lmb(k_lmb, model_config, im.shape[0])

        def loss_fn(params):
            out = nnx.merge(graphdef, compute_params(params, cfg.precision))(
                im, lmb, training=True, key=k_fwd)
            return batch_loss(out.loss_per_image, cfg.loss_weighting), out.metrics

        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)

        # Selections and integer division as lax primitives (t >= 0), not jnp.where / % / //:
        # those lower to private functions that JAX shares or duplicates depending on what the
        # process traced before, which changes the persistent cache key of the same program.
        t = state.step
        grad_norm = optax.tree.norm(grads)
        grad_norms = state.grad_norms.at[jax.lax.rem(t, jnp.int32(window))].set(grad_norm)
        median = median_of_first(grad_norms, jnp.minimum(t + 1, window))
        spike = grad_norm > hyper.spike_factor * median

        updates, opt_state = opt.update(grads, state.opt_state, state.params)
        one = jnp.ones((), jnp.float32)
        lr_scale = jax.lax.select(jax.lax.rem(t, jnp.int32(cfg.lr_update_every)) == 0, one,
                                  state.lr_scale)
        lr_scale = jax.lax.select(spike, lr_scale * hyper.spike_lr_scale, lr_scale)
        lr = (hyper.lr * lr_factor(t) * lr_scale).astype(jnp.float32)
        params = optax.apply_updates(state.params, jax.tree.map(lambda u: -lr * u, updates))

        ema, decay = state.ema, ema_decay(t)
        if ema is not None:
            ema = jax.tree.map(lambda e, p: jax.lax.select(spike, e, decay * e + (1.0 - decay) * p),
                               ema, params)

        metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
        metrics.update(grad_norm=grad_norm, lr=lr, spike=spike.astype(jnp.float32),
                       ema_decay=decay)
        new_state = state.replace(step=t + 1, params=params, opt_state=opt_state, ema=ema,
                                  grad_norms=grad_norms, lr_scale=lr_scale)
        return new_state, metrics

    return train_step


def step_key(rng: jax.Array, step) -> jax.Array:
    """The raw key data of step ``step``: ``fold_in(run key, step)``."""
    return jax.random.key_data(jax.random.fold_in(jax.random.wrap_key_data(rng), step))
