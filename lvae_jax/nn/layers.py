"""Primitive layers with PyTorch semantics, NHWC.

Parameters are stored in JAX layouts (conv kernels HWIO, linear kernels (in, out)); the converter
(:mod:`lvae_jax.checkpoint.keymap`) owns the transposes to and from PyTorch layouts.

Initialisation mirrors PyTorch's defaults (``kaiming_uniform(a=sqrt(5))``, i.e.
``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for weights and biases) with the official code's tweaks
(``zero_bias``, ``zero_weights``, residual scaling) available as arguments.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lvae_jax import numerics
from lvae_jax.nn.depthwise import depthwise_conv2d

_DIMS = ("NHWC", "HWIO", "NHWC")


class KeyStream:
    """A deterministic stream of PRNG keys (``fold_in(key, 0)``, ``fold_in(key, 1)``, ...).

    Accepted wherever a layer takes ``rngs``; much cheaper than drawing from an ``nnx.Rngs``
    stream per parameter when a large model is built under ``nnx.eval_shape``.
    """

    def __init__(self, key: jax.Array):
        self.key, self.count = key, 0

    def params(self) -> jax.Array:
        self.count += 1
        return jax.random.fold_in(self.key, self.count)


class HostInit:
    """Initial parameters drawn on the host with NumPy: the k-th parameter of a model built with
    ``seed`` is ``numpy.random.default_rng([seed, k]).uniform(-b, b)`` in float64, rounded to
    float32. Building a model this way compiles nothing (a JAX RNG compiles one kernel per
    parameter shape, or the whole initialisation as one slow-to-compile program) and is reproducible
    on any machine: ``u = rng.random(float32)``, ``(2·bound·u − bound)·gain``. ``abstract=True`` yields zeros (shapes only, under ``nnx.eval_shape``).
    Accepted wherever a layer takes ``rngs``."""

    def __init__(self, seed: int, abstract: bool = False):
        self.seed, self.abstract, self.count = int(seed), bool(abstract), 0

    def uniform(self, shape, bound: float, gain: float = 1.0) -> np.ndarray:
        """U(-bound, bound) · gain as float32 (a host array; ``build_model`` moves the whole
        state to the device at once)."""
        self.count += 1
        if self.abstract:     # a zero-stride placeholder: shape and dtype, no memory
            return np.broadcast_to(np.float32(0.0), shape)
        u = np.random.default_rng([self.seed, self.count]).random(shape, dtype=np.float32)
        return (u * np.float32(2 * bound) - np.float32(bound)) * np.float32(gain)


def constant(shape, value: float) -> np.ndarray:
    """A float32 host array filled with ``value`` (no per-shape compilation, as ``jnp.full``)."""
    return np.full(shape, value, np.float32)


def _uniform(rngs, shape, bound, gain: float = 1.0):
    if isinstance(rngs, HostInit):
        return rngs.uniform(shape, bound, gain)
    return jax.random.uniform(rngs.params(), shape, jnp.float32, -bound, bound) * gain


def _init_weight(rngs: nnx.Rngs, shape, fan_in: int, zero: bool = False, gain: float = 1.0):
    if zero:
        return constant(shape, 0.0)
    return _uniform(rngs, shape, 1.0 / math.sqrt(fan_in), gain)


def _init_bias(rngs: nnx.Rngs, shape, fan_in: int, zero: bool):
    if zero:
        return constant(shape, 0.0)
    return _uniform(rngs, shape, 1.0 / math.sqrt(fan_in))


class Linear(nnx.Module):
    """``nn.Linear``. kernel: (in, out); x: (..., in) -> (..., out)."""

    def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs,
                 zero_bias: bool = False):
        self.kernel = nnx.Param(_init_weight(rngs, (in_features, out_features), in_features))
        self.bias = nnx.Param(_init_bias(rngs, (out_features,), in_features, zero_bias))

    def __call__(self, x: jax.Array) -> jax.Array:
        w = self.kernel[...]
        return x.astype(w.dtype) @ w + self.bias[...]


class Conv2d(nnx.Module):
    """``nn.Conv2d`` (groups=1) on NHWC. kernel: (kh, kw, in, out).

    1×1 convolutions run as a matmul and non-overlapping patch convolutions (kernel == stride,
    no padding) as space-to-depth + matmul; both are exact rewrites of the same sums.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, *, rngs: nnx.Rngs,
                 zero_weights: bool = False, weight_gain: float = 1.0):
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        fan_in = in_ch * kernel_size * kernel_size
        self.kernel = nnx.Param(_init_weight(rngs, (kernel_size, kernel_size, in_ch, out_ch), fan_in,
                                             zero=zero_weights, gain=weight_gain))
        self.bias = nnx.Param(_init_bias(rngs, (out_ch,), fan_in, True))   # official: zero bias

    def __call__(self, x: jax.Array) -> jax.Array:
        k, s, p = self.kernel_size, self.stride, self.padding
        w = self.kernel[...]
        x = x.astype(w.dtype)          # the compute dtype is the parameters' (mixed precision)
        if k == 1 and s == 1 and p == 0:
            y = x @ w[0, 0]
        elif k == s and p == 0:
            n, h, wd, c = x.shape
            x = x.reshape(n, h // k, k, wd // k, k, c).transpose(0, 1, 3, 2, 4, 5)
            y = x.reshape(n, h // k, wd // k, k * k * c) @ w.reshape(k * k * c, -1)
        else:
            y = jax.lax.conv_general_dilated(x, w, (s, s), [(p, p), (p, p)], dimension_numbers=_DIMS)
        return y + self.bias[...]


class DepthwiseConv2d(nnx.Module):
    """``nn.Conv2d(C, C, k, padding=(k-1)//2, groups=C)`` on NHWC. kernel: (k, k, C).
    The convolution itself and its kernels per backend: :mod:`lvae_jax.nn.depthwise`."""

    def __init__(self, channels: int, kernel_size: int, *, rngs: nnx.Rngs):
        fan_in = kernel_size * kernel_size
        self.kernel = nnx.Param(_init_weight(rngs, (kernel_size, kernel_size, channels), fan_in))
        self.bias = nnx.Param(_init_bias(rngs, (channels,), fan_in, zero=False))

    def __call__(self, x: jax.Array) -> jax.Array:
        w = self.kernel[...]
        return depthwise_conv2d(x.astype(w.dtype), w) + self.bias[...]


class ConvTranspose2d(nnx.Module):
    """``nn.ConvTranspose2d(in, out, k, stride, padding, output_padding)`` on NHWC.

    kernel: (kh, kw, in, out) — PyTorch's (in, out, kh, kw) with the axes moved, *not* flipped;
    the flip that turns a transposed convolution into a dilated correlation happens here.
    Output size: ``(H - 1) * stride - 2 * padding + k + output_padding``.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int, padding: int,
                 output_padding: int, *, rngs: nnx.Rngs, zero_weights: bool = False):
        self.kernel_size, self.stride = kernel_size, stride
        self.padding, self.output_padding = padding, output_padding
        # PyTorch computes fan_in from weight.size(1) * k * k = out_ch * k * k for transposed convs.
        fan_in = out_ch * kernel_size * kernel_size
        self.kernel = nnx.Param(_init_weight(rngs, (kernel_size, kernel_size, in_ch, out_ch), fan_in,
                                             zero=zero_weights))
        self.bias = nnx.Param(_init_bias(rngs, (out_ch,), fan_in, zero=False))

    def __call__(self, x: jax.Array) -> jax.Array:
        k, s, p, op = self.kernel_size, self.stride, self.padding, self.output_padding
        w = jnp.flip(self.kernel[...], axis=(0, 1))
        x = x.astype(w.dtype)
        pad = [(k - 1 - p, k - 1 - p + op)] * 2
        y = jax.lax.conv_general_dilated(x, w, (1, 1), pad, lhs_dilation=(s, s), dimension_numbers=_DIMS)
        return y + self.bias[...]


class LayerNorm(nnx.Module):
    """``nn.LayerNorm(dim, eps=1e-6)`` over channels (last axis), affine or not."""

    def __init__(self, dim: int, affine: bool = True):
        self.affine = affine
        if affine:
            self.scale = nnx.Param(constant((dim,), 1.0))
            self.bias = nnx.Param(constant((dim,), 0.0))

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.affine:
            return numerics.layer_norm(x, self.scale[...], self.bias[...])
        return numerics.layer_norm(x)


class Mlp(nnx.Module):
    """timm ``Mlp``: fc1 -> exact GELU -> fc2 (no dropout, no norm)."""

    def __init__(self, in_features: int, hidden: int, out_features: int, *, rngs: nnx.Rngs):
        self.fc1 = Linear(in_features, hidden, rngs=rngs)
        self.fc2 = Linear(hidden, out_features, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(numerics.gelu(self.fc1(x)))
