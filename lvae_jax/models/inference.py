"""Inference-time services of a model, one owner for every consumer: the evaluation pass, the
per-block decode step and the prior draw.

- :func:`prior_draw`: latent i from its prior at temperature t (the official sampling rule) —
  used by the generative decoder and by the codec for latents a progressive decode does not read;
- :func:`decode_step`: fuse latent i − 1 into the top-down feature, run to the prior of latent i
  (the sequential decoder's unit of work, also used by the codec);
- :class:`InferenceModel` / :func:`eval_pass`: the jitted evaluation-mode forward of whole images
  -> quantised latents, rates per block and image, pixel NLL (lossless), reconstruction; the one
  pass behind estimated R(D) (:mod:`lvae_jax.evaluation.estimate`), the latents of the generative
  tools and the training-time evaluation.

Arrays are NHWC float32; rates are nats. Every jitted function is a plain ``jax.jit`` over the
model state split once (``nnx.split``) and is cached per graph definition (equal for equal model
structures), so two loads of one model share their compilations.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lvae_jax import numerics
from lvae_jax.models.runners import DIRECT, BlockRunner


def prior_draw(quantized: bool, pm, pv, key, i: int, t):
    """Latent i drawn from its prior at temperature ``t`` (official ``forward_uncond`` /
    ``mode='sampling'``): ``z = pm + pv·ε·t`` plus, for quantised latents (QRes, QARV),
    ``u·t`` with u ~ U(−½, ½); ``t = 0`` is exactly ``pm``. Keys: ``k_normal, k_uniform =
    split(fold_in(key, i))``. Works under ``jit`` and on host arrays."""
    k_normal, k_uniform = jax.random.split(jax.random.fold_in(key, i))
    shape = jnp.shape(pm)
    z = pm + pv * jax.random.normal(k_normal, shape, jnp.float32) * t
    if quantized:
        z = z + jax.random.uniform(k_uniform, shape, jnp.float32, -0.5, 0.5) * t
    return jnp.where(t > 0, z, pm)


def is_quantized(model, i: int) -> bool:
    """Whether latent i of ``model`` is quantised (QRes/QARV) rather than Gaussian (rd)."""
    return model.dec_blocks[model.latent_positions[i]].rate_rule == "quantized"


def decode_step(model, i: int, feature, z_prev, emb, run: BlockRunner = DIRECT):
    """Fuse latent ``i − 1`` (``z_prev``; nothing when i = 0) and run the decoder to the prior of
    latent i. -> (feature, pm, pv). ``run``: how blocks run (:mod:`lvae_jax.models.runners`)."""
    if i > 0:
        feature = model.fuse_step(i - 1, feature, z_prev, emb, run)
    return model.prior_step(i, feature, emb, run)


class EvalOutput(NamedTuple):
    """The evaluation-mode forward of images. ``latents``: per block (N, h, w, zdim) — QRes/QARV
    ``round(qm − pm) + pm`` (what the codec transmits), rd_model_base a posterior *draw*.
    ``rates``: (N, L) nats per image and block: −log P under the discretised prior (QRes, QARV)
    or KL(q‖p) (rd). ``pixel_nats``: (N,) the lossless head's NLL of the image (nats, summed over
    its pixels), zeros for the other models. ``recon``: (N, H, W, 3) the reconstruction in
    [0, 1] (the pixel mean for the lossless model)."""
    latents: tuple
    rates: jax.Array
    pixel_nats: jax.Array
    recon: jax.Array


@functools.lru_cache(maxsize=32)
def eval_pass(graphdef):
    """``jit((state, im, lmb, key) -> EvalOutput)`` of one graph definition. ``im``: (N, H, W, 3)
    in [0, 1], H and W multiples of 64; ``lmb``: (N,) float32 or None; ``key``: a PRNG key
    (rd_model_base samples its latents even in eval mode; the others ignore it)."""

    def run(state, im, lmb, key):
        model = nnx.merge(graphdef, state)
        out = model(im, lmb, training=False, key=key)
        rates = jnp.stack([jnp.sum(st.rate, axis=(1, 2, 3)) for st in out.latents], axis=-1)
        pixel = out.pixel_nll if out.pixel_nll is not None else jnp.zeros(im.shape[:1], jnp.float32)
        return EvalOutput(tuple(st.z for st in out.latents), rates, pixel,
                          numerics.process_output(out.x_hat))

    return jax.jit(run)


class InferenceModel:
    """A model split once (``graphdef``, ``state``) with its configuration: what the inference
    services need. Build it from a model (:meth:`of`) or from a graph definition and a state
    (e.g. the parameters of a training step)."""

    def __init__(self, graphdef, state, config):
        self.graphdef, self.state, self.config = graphdef, state, config

    @classmethod
    def of(cls, model) -> "InferenceModel":
        if isinstance(model, InferenceModel):
            return model
        if hasattr(model, "graphdef") and hasattr(model, "state") and hasattr(model, "config"):
            return cls(model.graphdef, model.state, model.config)   # GenerativeModel, Codec engine
        graphdef, state = nnx.split(model)
        return cls(graphdef, state, model.config)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def stride(self) -> int:
        return self.config.max_stride

    def evaluate(self, im, lmb=None, key=None) -> EvalOutput:
        """:func:`eval_pass` on images (N, H, W, 3) in [0, 1]; ``lmb`` a checked (N,) vector or
        None; ``key`` required for rd_model_base."""
        if key is None:
            key = jax.random.key(0)   # unused by QRes/QARV in eval mode
        lmb = None if lmb is None else jnp.asarray(np.asarray(lmb, np.float32))
        return eval_pass(self.graphdef)(self.state, jnp.asarray(im, jnp.float32), lmb, key)
