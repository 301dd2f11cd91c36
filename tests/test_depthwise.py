"""The depthwise convolution's implementations agree with XLA's grouped convolution — forward,
input gradient and kernel gradient — within a float32 error bound derived per element, and the
native kernel is deterministic.

Bound: each output is a sum of n products; any summation order computes it with an error of at
most γ_n · Σ|terms|, γ_n = n·u / (1 − n·u), u = 2⁻²⁴ (Higham, Accuracy and Stability of
Numerical Algorithms, §3.1; an FMA only lowers it). Two implementations may differ by twice that.
Σ|terms| is the same convolution applied to |x| and |k| (or |x| and |g|), computed in float64.
"""

from __future__ import annotations

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from lvae_jax import native
from lvae_jax.nn import depthwise as D

U = 2.0 ** -24

pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu", reason="the native kernel is CPU-only")


def gamma(n: int) -> float:
    return n * U / (1 - n * U)


def _grouped64(x, k):
    """The grouped convolution in float64 (numpy, exact enough to serve as |terms| sums)."""
    kk = k.shape[0]
    p = (kk - 1) // 2
    n, h, w, c = x.shape
    xp = np.pad(np.asarray(x, np.float64), ((0, 0), (p, p), (p, p), (0, 0)))
    out = np.zeros((n, h, w, c))
    for i in range(kk):
        for j in range(kk):
            out += xp[:, i:i + h, j:j + w, :] * np.asarray(k, np.float64)[i, j]
    return out


def _kgrad64(x, g, kk):
    p = (kk - 1) // 2
    n, h, w, c = x.shape
    xp = np.pad(np.asarray(x, np.float64), ((0, 0), (p, p), (p, p), (0, 0)))
    g = np.asarray(g, np.float64)
    return np.stack([np.stack([np.sum(xp[:, i:i + h, j:j + w, :] * g, axis=(0, 1, 2))
                               for j in range(kk)]) for i in range(kk)])


CASES = [((2, 9, 13, 19), 3), ((1, 11, 10, 24), 7), ((2, 5, 4, 16), 5), ((1, 3, 2, 8), 7),
         ((1, 17, 33, 40), 9), ((3, 16, 24, 32), 7), ((1, 1, 1, 8), 3)]


@pytest.fixture(scope="module")
def built():
    if not native.available():
        pytest.fail(f"the native kernels are not available: {native.unavailable_reason()}")


@pytest.mark.parametrize("impl", ["native", "shift"])
@pytest.mark.parametrize("shape,k", CASES)
def test_matches_grouped_convolution(built, impl, shape, k):
    rng = np.random.default_rng(sum(shape) + k)
    x = rng.standard_normal(shape).astype(np.float32)
    kern = rng.standard_normal((k, k, shape[-1])).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)

    def loss(fn):
        return lambda x, kern: jnp.sum(fn(x, kern) * g)

    fwd = jax.jit(lambda x, kern: D.depthwise_conv2d(x, kern, impl))(x, kern)
    dx, dk = jax.jit(jax.grad(loss(lambda a, b: D.depthwise_conv2d(a, b, impl)), (0, 1)))(x, kern)

    exact = _grouped64(x, kern)
    bound = 2 * gamma(k * k) * _grouped64(np.abs(x), np.abs(kern)) + 1e-30
    assert np.all(np.abs(np.asarray(fwd, np.float64) - exact) <= bound)
    exact_dx = _grouped64(g, np.flip(kern, (0, 1)))
    bound_dx = 2 * gamma(k * k) * _grouped64(np.abs(g), np.abs(np.flip(kern, (0, 1)))) + 1e-30
    assert np.all(np.abs(np.asarray(dx, np.float64) - exact_dx) <= bound_dx)
    n_terms = shape[0] * shape[1] * shape[2]
    exact_dk = _kgrad64(x, g, k)
    bound_dk = 2 * gamma(n_terms) * _kgrad64(np.abs(x), np.abs(g), k) + 1e-30
    assert np.all(np.abs(np.asarray(dk, np.float64) - exact_dk) <= bound_dk)

    # and XLA's grouped convolution itself, the reference implementation on GPU/TPU
    ref = jax.jit(D.grouped_conv)(x, kern)
    assert np.all(np.abs(np.asarray(ref, np.float64) - exact) <= bound)


def test_native_is_deterministic_and_batched_like_a_loop(built):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 32, 48, 64)).astype(np.float32)
    kern = rng.standard_normal((7, 7, 64)).astype(np.float32)
    grad = jax.jit(jax.grad(lambda a, b: jnp.sum(jnp.sin(D.depthwise_conv2d(a, b, "native"))), (0, 1)))
    first = [np.asarray(v) for v in grad(x, kern)]
    for _ in range(3):
        again = [np.asarray(v) for v in grad(x, kern)]
        for a, b in zip(first, again):
            np.testing.assert_array_equal(a, b)
    # vmap over an extra leading axis = the same convolution per slice
    xs = x.reshape(2, 2, 32, 48, 64)
    batched = jax.vmap(lambda a: D.depthwise_conv2d(a, kern, "native"))(xs)
    looped = np.stack([np.asarray(D.depthwise_conv2d(a, kern, "native")) for a in xs])
    np.testing.assert_array_equal(np.asarray(batched), looped)


def test_auto_uses_native_on_cpu(built, monkeypatch):
    monkeypatch.delenv("LVAE_DEPTHWISE", raising=False)
    assert D.depthwise_impl() == "native"
    assert D.depthwise_impl("gpu") == "grouped"
    monkeypatch.setenv("LVAE_DEPTHWISE", "bogus")
    with pytest.raises(ValueError, match="LVAE_DEPTHWISE"):
        D.depthwise_impl()
