"""Building blocks shared by the official model families, NHWC.

Each class mirrors one official block; the docstring names it. Blocks that take the λ embedding
(QARV, rd_model_base) have ``requires_embedding = True`` and are called as ``block(x, emb)``;
``emb`` is (N, embed_dim).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from lvae_jax import numerics
from lvae_jax.nn.layers import (Conv2d, ConvTranspose2d, DepthwiseConv2d, LayerNorm, Linear, Mlp,
                                 constant)

#: Official ``ls_init_value`` of both ConvNeXt variants: layer-scale gamma starts at 1e-6.
LAYER_SCALE_INIT = 1e-6


class ConvNeXtBlock(nnx.Module):
    """timm ``ConvNeXtBlock`` as used by QRes (``MyConvNeXtBlock``): depthwise k×k conv ->
    affine LayerNorm (eps 1e-6) -> Mlp(dim, mlp_ratio*dim, dim) -> layer scale gamma (C,) ->
    residual. (N, H, W, C) -> same."""

    requires_embedding = False

    def __init__(self, dim: int, kernel_size: int = 7, mlp_ratio: float = 2.0, *, rngs: nnx.Rngs):
        self.conv_dw = DepthwiseConv2d(dim, kernel_size, rngs=rngs)
        self.norm = LayerNorm(dim, affine=True)
        self.mlp = Mlp(dim, int(mlp_ratio * dim), dim, rngs=rngs)
        self.gamma = nnx.Param(constant((dim,), LAYER_SCALE_INIT))

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.mlp(self.norm(self.conv_dw(x)))
        return x + y * self.gamma[...]


class ConvNeXtPatchDown(nnx.Module):
    """QRes ``MyConvNeXtPatchDown``: a ConvNeXt block, then a ``rate``×``rate`` patch conv.
    (N, H, W, in) -> (N, H/rate, W/rate, out)."""

    requires_embedding = False

    def __init__(self, in_ch: int, out_ch: int, rate: int = 2, kernel_size: int = 7,
                 mlp_ratio: float = 2.0, *, rngs: nnx.Rngs):
        self.block = ConvNeXtBlock(in_ch, kernel_size, mlp_ratio, rngs=rngs)
        self.downsample = Conv2d(in_ch, out_ch, rate, rate, 0, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.downsample(self.block(x))


class AdaLNConvNeXtBlock(nnx.Module):
    """``common.ConvNeXtBlockAdaLN``: depthwise conv -> LayerNorm without affine (eps 1e-6) ->
    ``x * (1 + scale) + shift`` with ``[shift, scale] = Linear(GELU(emb))`` -> Mlp -> gamma ->
    residual. (N, H, W, dim) -> (N, H, W, out_dim); emb: (N, embed_dim)."""

    requires_embedding = True

    def __init__(self, dim: int, embed_dim: int = 256, kernel_size: int = 7, mlp_ratio: float = 2.0,
                 out_dim: int | None = None, residual: bool = True, *, rngs: nnx.Rngs):
        out_dim = out_dim or dim
        self.residual = residual
        self.conv_dw = DepthwiseConv2d(dim, kernel_size, rngs=rngs)
        self.norm = LayerNorm(dim, affine=False)
        self.embedding_layer = Linear(embed_dim, 2 * dim, rngs=rngs)
        self.mlp = Mlp(dim, int(mlp_ratio * dim), out_dim, rngs=rngs)
        self.gamma = nnx.Param(constant((out_dim,), LAYER_SCALE_INIT))

    def __call__(self, x: jax.Array, emb: jax.Array) -> jax.Array:
        y = self.norm(self.conv_dw(x))
        shift, scale = jnp.split(self.embedding_layer(numerics.gelu(emb)), 2, axis=-1)
        y = y * (1.0 + scale[:, None, None, :]) + shift[:, None, None, :]
        y = self.mlp(y) * self.gamma[...]
        return x + y if self.residual else y


class AdaLNConvNeXtPatchDown(nnx.Module):
    """rd_model_base ``ConvNeXtAdaLNPatchDown``: an AdaLN ConvNeXt block, then a patch conv."""

    requires_embedding = True

    def __init__(self, in_ch: int, out_ch: int, rate: int = 2, embed_dim: int = 256,
                 kernel_size: int = 7, mlp_ratio: float = 2.0, *, rngs: nnx.Rngs):
        self.block = AdaLNConvNeXtBlock(in_ch, embed_dim, kernel_size, mlp_ratio, rngs=rngs)
        self.downsample = Conv2d(in_ch, out_ch, rate, rate, 0, rngs=rngs)

    def __call__(self, x: jax.Array, emb: jax.Array) -> jax.Array:
        return self.downsample(self.block(x, emb))


class VDBlock(nnx.Module):
    """QRes ``VDBlock`` (from VDVAE): GELU -> c1 (1×1) -> GELU -> c2 -> GELU -> c3 -> GELU -> c4
    (1×1), optionally residual. c2/c3 are 3×3 when ``use_3x3`` else 1×1. Biases start at zero."""

    requires_embedding = False

    def __init__(self, in_ch: int, hidden_ch: int, out_ch: int, residual: bool, use_3x3: bool,
                 zero_last: bool = False, *, rngs: nnx.Rngs):
        self.residual = residual
        k, p = (3, 1) if use_3x3 else (1, 0)
        self.c1 = Conv2d(in_ch, hidden_ch, 1, rngs=rngs)
        self.c2 = Conv2d(hidden_ch, hidden_ch, k, 1, p, rngs=rngs)
        self.c3 = Conv2d(hidden_ch, hidden_ch, k, 1, p, rngs=rngs)
        self.c4 = Conv2d(hidden_ch, out_ch, 1, rngs=rngs, zero_weights=zero_last)

    def __call__(self, x: jax.Array) -> jax.Array:
        g = numerics.gelu
        y = self.c4(g(self.c3(g(self.c2(g(self.c1(g(x))))))))
        return x + y if self.residual else y


class PatchDown(nnx.Module):
    """``common.patch_downsample``: Conv2d(k=rate, stride=rate). (N,H,W,in) -> (N,H/r,W/r,out)."""

    requires_embedding = False

    def __init__(self, in_ch: int, out_ch: int, rate: int, *, rngs: nnx.Rngs):
        self.conv = Conv2d(in_ch, out_ch, rate, rate, 0, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(x)


class PatchUp(nnx.Module):
    """``common.patch_upsample``: 1×1 conv to ``out*rate²`` channels, then PyTorch's PixelShuffle.
    (N,H,W,in) -> (N,H*r,W*r,out)."""

    requires_embedding = False

    def __init__(self, in_ch: int, out_ch: int, rate: int, *, rngs: nnx.Rngs):
        self.rate = rate
        self.conv = Conv2d(in_ch, out_ch * rate * rate, 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return numerics.pixel_shuffle(self.conv(x), self.rate)


class NearestUp(nnx.Module):
    """``nn.Upsample(scale_factor=rate)`` (nearest). No parameters."""

    requires_embedding = False

    def __init__(self, rate: int, *, rngs: nnx.Rngs | None = None):
        self.rate = rate

    def __call__(self, x: jax.Array) -> jax.Array:
        return numerics.nearest_upsample(x, self.rate)


class Deconv(nnx.Module):
    """``common.deconv``: ConvTranspose2d(k, stride, padding=k//2, output_padding=stride-1),
    which doubles H and W for stride 2."""

    requires_embedding = False

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 5, stride: int = 2, *,
                 rngs: nnx.Rngs):
        self.conv = ConvTranspose2d(in_ch, out_ch, kernel_size, stride, kernel_size // 2, stride - 1,
                                    rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(x)


class Tap(nnx.Module):
    """``common.SetKey``: records the current encoder feature under ``key`` (QARV named taps)."""

    requires_embedding = False

    def __init__(self, key: str, *, rngs: nnx.Rngs | None = None):
        self.key = key

    def __call__(self, x: jax.Array) -> jax.Array:
        return x


class StopFlag(nnx.Module):
    """``common.CompresionStopFlag``: marks where encoding may stop (all latents are known)."""

    requires_embedding = False

    def __init__(self, *, rngs: nnx.Rngs | None = None):
        pass

    def __call__(self, x: jax.Array) -> jax.Array:
        return x
