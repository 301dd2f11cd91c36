"""A research fork in one file: QARV with squeeze-and-excitation in its decoder (``qarv_se``).

A variant the official code does not have: every AdaLN ConvNeXt block of the decoder gains a
squeeze-and-excitation gate (Hu et al., 2018) — a per-channel weight computed from the block's
spatially pooled output, conditioned on λ like the block itself. Everything lvae-jax needs is
registered here; nothing inside the package changes:

* :class:`SEAdaLNSpec` — the block's configuration (a frozen dataclass, saved in model
  directories as ``{"type": "se_adaln", ...}``), with ``build`` returning the module;
* :class:`SEAdaLNBlock` — the Flax NNX module, ``(N, H, W, C), emb (N, E) -> (N, H, W, C)``;
* ``qarv_se`` — a model name for ``python -m train --model qarv_se``: qarv_base's configuration
  (every builder argument of :func:`lvae_jax.models.zoo.qarv_base_config`, ``--model-arg``) with
  its decoder blocks swapped.

Load it with ``LVAE_PLUGINS=examples.se_block`` (a module name, or a path to this file) for every
command — ``train``, ``compress``, ``decompress``, ``eval``: docs/extending.md.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from lvae_jax import numerics
from lvae_jax.models import zoo
from lvae_jax.models.registry import register_model
from lvae_jax.models.specs import AdaLNSpec, register_block
from lvae_jax.nn.blocks import AdaLNConvNeXtBlock
from lvae_jax.nn.layers import Linear, constant


class SEAdaLNBlock(nnx.Module):
    """An AdaLN ConvNeXt block whose residual branch is gated per channel:
    ``y = block(x, emb) − x``, ``g = σ(W₂ · gelu(W₁ · [mean_hw(y), emb]))``, out ``x + g · y``.
    The gate starts open at ½ everywhere (``W₂`` zero), so a fresh block is the AdaLN block with
    its branch halved."""

    requires_embedding = True

    def __init__(self, dim: int, embed_dim: int, kernel_size: int, mlp_ratio: float,
                 se_ratio: float, *, rngs: nnx.Rngs):
        self.block = AdaLNConvNeXtBlock(dim, embed_dim, kernel_size, mlp_ratio, rngs=rngs)
        hidden = max(4, int(dim * se_ratio))
        self.squeeze = Linear(dim + embed_dim, hidden, rngs=rngs)
        self.excite = Linear(hidden, dim, rngs=rngs, zero_bias=True)
        self.excite.kernel = nnx.Param(constant((hidden, dim), 0.0))    # the gate starts at ½

    def __call__(self, x: jax.Array, emb: jax.Array) -> jax.Array:
        y = self.block(x, emb) - x
        pooled = jnp.mean(y, axis=(1, 2))
        gate = jax.nn.sigmoid(self.excite(numerics.gelu(self.squeeze(
            jnp.concatenate([pooled, emb.astype(pooled.dtype)], axis=-1)))))
        return x + y * gate[:, None, None, :].astype(y.dtype)


@register_block
@dataclass(frozen=True)
class SEAdaLNSpec:
    """Configuration of :class:`SEAdaLNBlock` (an :class:`~lvae_jax.models.specs.AdaLNSpec` plus
    the squeeze ratio)."""
    dim: int
    kernel_size: int = 7
    mlp_ratio: float = 2.0
    embed_dim: int = 256
    se_ratio: float = 0.25
    type: ClassVar[str] = "se_adaln"

    def build(self, *, rngs: nnx.Rngs, num_latents: int = 1) -> SEAdaLNBlock:
        return SEAdaLNBlock(self.dim, self.embed_dim, self.kernel_size, self.mlp_ratio,
                            self.se_ratio, rngs=rngs)


def qarv_se_config(se_ratio: float = 0.25, **qarv_args):
    """qarv_base's configuration (``qarv_args``: :func:`~lvae_jax.models.zoo.qarv_base_config`'s
    arguments) with every AdaLN block of the decoder gated by squeeze-and-excitation."""
    base = zoo.qarv_base_config(**qarv_args)

    def se(spec):
        if isinstance(spec, AdaLNSpec):
            return SEAdaLNSpec(spec.dim, spec.kernel_size, spec.mlp_ratio, spec.embed_dim, se_ratio)
        return spec
    return dataclasses.replace(base, name="qarv_se", dec_blocks=tuple(se(s) for s in base.dec_blocks),
                               args={"se_ratio": se_ratio, **qarv_args})


register_model("qarv_se", qarv_se_config,
               "QARV with squeeze-and-excitation decoder blocks (examples/se_block.py)")
