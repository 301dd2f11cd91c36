"""The depthwise 'same' convolution of the ConvNeXt blocks, NHWC, and its kernels per backend.

``depthwise_conv2d(x, kernel)``: x (N, H, W, C), kernel (k, k, C), odd k, stride 1, zero padding
(k − 1)/2, cross-correlation like PyTorch's ``nn.Conv2d(C, C, k, padding=(k-1)//2, groups=C)``.

This one operation decides whether the models are fast on CPU: 7×7 depthwise convolutions over
full-resolution features are most of QARV's and QRes's work. Three implementations, numerically
the same sum (tested against each other and against XLA's grouped convolution):

- ``native`` (default on CPU): :mod:`lvae_jax.native`'s compiled kernel through the XLA FFI —
  every row visited once with the k² taps accumulated in registers; the input gradient is the
  same kernel with the kernel flipped, the kernel gradient a second compiled kernel (fixed
  summation order: deterministic whatever the thread count). One custom call per convolution
  also keeps the compiled graph small (compile time).
- ``shift``: k² shifted products summed by XLA (the CPU fallback when the native library is
  missing; its kernel gradient is k² full reductions, slow).
- ``grouped``: ``lax.conv_general_dilated(feature_group_count=C)`` — the fast path on GPU/TPU,
  ~30× slower than PyTorch on XLA:CPU.

``LVAE_DEPTHWISE`` = ``auto`` (default: native on CPU when built, else shift; grouped elsewhere)
| ``native`` | ``shift`` | ``grouped``. The choice is made when a function is traced.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

IMPLS = ("auto", "native", "shift", "grouped")
_DIMS = ("NHWC", "HWIO", "NHWC")
#: Kernel sizes the native kernel is compiled for (1×1 is a plain product everywhere).
NATIVE_KERNEL_SIZES = (3, 5, 7, 9)


def depthwise_impl(backend: str | None = None) -> str:
    """The implementation traced on ``backend`` (default: JAX's default backend)."""
    choice = os.environ.get("LVAE_DEPTHWISE", "auto")
    if choice not in IMPLS:
        raise ValueError(f"LVAE_DEPTHWISE must be one of {', '.join(IMPLS)}, got {choice!r}")
    backend = backend or jax.default_backend()
    if choice == "native":
        from lvae_jax import native   # lazy: the compiled library loads when a kernel is chosen
        if backend != "cpu":
            raise ValueError(f"LVAE_DEPTHWISE=native is a CPU kernel; the backend is {backend}")
        if not native.available():
            raise RuntimeError(f"LVAE_DEPTHWISE=native: {native.unavailable_reason()}")
        return "native"
    if choice != "auto":
        return choice
    if backend != "cpu":
        return "grouped"
    from lvae_jax import native   # lazy: the compiled library loads when a kernel is chosen
    return "native" if native.available() else "shift"


def depthwise_conv2d(x: jax.Array, kernel: jax.Array, impl: str | None = None) -> jax.Array:
    """Depthwise 'same' convolution. x: (N, H, W, C) float32; kernel: (k, k, C)."""
    k = kernel.shape[0]
    if k == 1:
        return x * kernel[0, 0]
    impl = impl or depthwise_impl()
    if impl == "native" and k in NATIVE_KERNEL_SIZES and x.dtype == jnp.float32:
        return _native(x, kernel)
    if impl == "grouped":
        return grouped_conv(x, kernel)
    return shift_sum(x, kernel)


def grouped_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """XLA's grouped convolution (one group per channel)."""
    p = (kernel.shape[0] - 1) // 2
    return jax.lax.conv_general_dilated(x, kernel[:, :, None, :], (1, 1), [(p, p), (p, p)],
                                        dimension_numbers=_DIMS, feature_group_count=x.shape[-1])


def shift_sum(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Σ_{i,j} x_padded[:, i:i+H, j:j+W, :] · kernel[i, j], taps in (i, j) order."""
    k = kernel.shape[0]
    p = (k - 1) // 2
    _, h, w, _ = x.shape
    xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    out = None
    for i in range(k):
        for j in range(k):
            term = xp[:, i:i + h, j:j + w, :] * kernel[i, j]
            out = term if out is None else out + term
    return out


# -- the native kernel ---------------------------------------------------------------------------


def _native_fwd_call(x, kernel):
    from lvae_jax import native   # lazy: the compiled library loads when a kernel is chosen
    native.available()  # registers the FFI targets
    return jax.ffi.ffi_call(native.DEPTHWISE_FWD, jax.ShapeDtypeStruct(x.shape, x.dtype),
                            vmap_method="sequential")(x, kernel)


def _native_kgrad_call(x, g, k: int):
    from lvae_jax import native   # lazy: the compiled library loads when a kernel is chosen
    native.available()
    out = jax.ShapeDtypeStruct((k, k, x.shape[-1]), x.dtype)
    return jax.ffi.ffi_call(native.DEPTHWISE_KGRAD, out, vmap_method="sequential")(x, g)


@jax.custom_vjp
def _native(x, kernel):
    return _native_fwd_call(x, kernel)


def _native_vjp_fwd(x, kernel):
    return _native_fwd_call(x, kernel), (x, kernel)


def _native_vjp_bwd(res, g):
    x, kernel = res
    # dL/dx is the correlation of g with the flipped kernel ('same' padding, odd k).
    dx = _native_fwd_call(g, jnp.flip(kernel, (0, 1)))
    return dx, _native_kgrad_call(x, g, kernel.shape[0])


_native.defvjp(_native_vjp_fwd, _native_vjp_bwd)
