"""Every numeric rule of the official lossy-vae models, in one place.

Each function or constant names the official rule it mirrors (lossy-vae at commit 005c3c2, timm
1.0, CompressAI 1.2.8, PyTorch semantics). Everything else in :mod:`lvae_jax` calls these instead
of re-deriving them, so a fidelity question has exactly one place to look.

Conventions: arrays are float32 unless stated; rates are in **nats** (natural log) per element.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

# ---------------------------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------------------------

#: ``nn.LayerNorm(dim, eps=1e-6)`` in timm's ConvNeXt block and in ``ConvNeXtBlockAdaLN``.
LAYER_NORM_EPS = 1e-6

#: ``plogv = softplus(plogv + 2.3) - 2.3`` in QRes ``QLatentBlockX`` and QARV ``VRLVBlockBase``:
#: keeps the prior log-scale above -2.3.
LATENT_LOGSCALE_FLOOR = 2.3

#: ``p_logscale = softplus(p_logscale + 16) - 16`` in QRes ``GaussianNLLOutputNet.forward_loss``.
PIXEL_LOGSCALE_FLOOR = 16.0

#: Pixel bin width of the lossless output head: ``bin_size = 1/127.5`` (``GaussianNLLOutputNet``).
PIXEL_BIN_SIZE = 1.0 / 127.5

#: ``gaussian_log_prob_mass(..., prob_clamp=1e-6)``: below this probability the log-density
#: approximation ``log pdf(x) + log(bin)`` is used instead of ``log(cdf(x+b/2) - cdf(x-b/2))``.
PROB_CLAMP = 1e-6
#: ``torch.log(prob_mass.clamp(min=1e-8))`` inside ``_safe_log_prob_mass``.
PROB_MASS_FLOOR = 1e-8

#: CompressAI ``EntropyModel(likelihood_bound=1e-9)``: eval-mode likelihoods are bounded below.
LIKELIHOOD_BOUND = 1e-9

#: CompressAI ``GaussianConditional(None)``: ``scale_bound=0.11`` (QRes latents).
#: QARV's ``DiscretizedGaussian`` bounds at ``scale_table[0]`` = float32(exp(log(0.11))), the same
#: float32 value.
SCALE_BOUND = float(np.float32(0.11))

#: ``VariableRateLossyVAE.MAX_LMB``: the λ embedding input is ``log(λ) * sin_period / log(8192)``.
MAX_LMB = 8192.0

#: ``LatentVariableBlock.softplus_beta`` (rd_model_base std smoothing), and torch's softplus
#: ``threshold=12`` used with it.
RD_SOFTPLUS_BETA = math.log(2.0)
RD_SOFTPLUS_THRESHOLD = 12.0

#: ``linear_sqrt(x, threshold=6.0)`` in rd_model_base.
LINEAR_SQRT_THRESHOLD = 6.0

LOG2_E = math.log2(math.e)

#: The largest prior temperature lvae-jax accepts (sampling, inpainting, decoding latents that a
#: file does not hold). The temperature multiplies the prior's standard deviations; the official
#: experiments use 0 … 1, and far above that every latent lands outside what the decoder was
#: trained on and the image only saturates (at 1e30 it is all black). Not an official rule.
MAX_TEMPERATURE = 10.0


def check_temperature(t, what: str = "temperature") -> float:
    """``t`` as a float in [0, :data:`MAX_TEMPERATURE`], or ValueError saying why not."""
    try:
        v = float(t)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {t!r}") from None
    if not (math.isfinite(v) and 0.0 <= v <= MAX_TEMPERATURE):
        raise ValueError(f"{what} must be in [0, {MAX_TEMPERATURE:g}] (it scales the prior's "
                         f"standard deviations; 0 = the prior mean, 1 = the prior), got {v:g}")
    return v

#: Matmul/convolution precision of the codec's device passes: full float32, what the official
#: code computes on CPU. TF32 (XLA's and cuDNN's GPU default for float32) keeps 10 mantissa bits
#: instead of 23, so prior scales would move by far more than the 2^-15 relative tolerance the
#: index hints are built for (docs/cross_implementation.md). On CPU this changes nothing.
#: It is not a setting: a benchmark that measures the rule's cost passes another precision to
#: :class:`~lvae_jax.codec.engine.CodecEngine` itself (files coded so may not decode elsewhere).
CODEC_PRECISION = "highest"

# ---------------------------------------------------------------------------------------------
# Activations and normalisation
# ---------------------------------------------------------------------------------------------


def gelu(x: jax.Array) -> jax.Array:
    """``nn.GELU()`` (PyTorch default ``approximate='none'``): the exact erf form.

    ``jax.nn.gelu`` defaults to the tanh approximation, which is *not* what the official models use.
    """
    return jax.nn.gelu(x, approximate=False)


def torch_softplus(x: jax.Array, beta: float = 1.0, threshold: float = 20.0) -> jax.Array:
    """``torch.nn.functional.softplus(x, beta, threshold)``.

    ``log1p(exp(beta*x)) / beta``, reverting to the identity where ``beta*x > threshold``.
    """
    bx = x * beta
    soft = jnp.log1p(jnp.exp(jnp.minimum(bx, threshold))) / beta
    return jnp.where(bx > threshold, x, soft)


def bounded_logscale(logscale: jax.Array, floor: float = LATENT_LOGSCALE_FLOOR) -> jax.Array:
    """``softplus(logscale + floor) - floor``: a smooth lower bound at ``-floor``.

    Mirrors QRes/QARV latent priors (floor 2.3) and the lossless pixel head (floor 16).
    """
    return torch_softplus(logscale + floor) - floor


def pinned(x: jax.Array) -> jax.Array:
    """``x`` in float32: where a rule of this module takes over from the network (prior and
    posterior parameters, rates, likelihood bounds), whatever the compute dtype (bf16 training);
    a no-op in float32."""
    return x.astype(jnp.float32)


def layer_norm(x: jax.Array, scale: jax.Array | None = None, bias: jax.Array | None = None,
               eps: float = LAYER_NORM_EPS) -> jax.Array:
    """``F.layer_norm`` over the last axis (channels, NHWC): biased variance, eps inside the sqrt.

    Computed as ``mean((x - mean)^2)`` like PyTorch, not ``E[x^2] - E[x]^2``.
    """
    dtype = x.dtype                       # statistics in float32 also under bfloat16
    x = x.astype(jnp.float32)
    mean = jnp.mean(x, axis=-1, keepdims=True)
    xc = x - mean
    var = jnp.mean(jnp.square(xc), axis=-1, keepdims=True)
    y = xc * jax.lax.rsqrt(var + eps)
    if scale is not None:
        y = y * scale
    if bias is not None:
        y = y + bias
    return y.astype(dtype)


def linear_sqrt(x: jax.Array, threshold: float = LINEAR_SQRT_THRESHOLD) -> jax.Array:
    """rd_model_base ``linear_sqrt``: ``sign(x)|x|^(1 - tanh(|x|)/2)`` for ``|x| <= threshold``,
    ``sign(x) sqrt(|x| + 1e-8)`` above; exactly ``x`` where ``x == 0``.

    The power is evaluated only where it is used, so gradients stay finite at 0.
    """
    ax = jnp.abs(x)
    safe = jnp.where(ax == 0, 1.0, ax)
    soft = jnp.sign(x) * jnp.power(safe, 1.0 - 0.5 * jnp.tanh(safe))
    soft = jnp.where(ax == 0, x, soft)
    signed_sqrt = jnp.sign(x) * jnp.sqrt(ax + 1e-8)
    return jnp.where(ax <= threshold, soft, signed_sqrt)


def rd_std_smooth(v: jax.Array) -> jax.Array:
    """rd_model_base ``std_smooth``: ``softplus(v, beta=log 2, threshold=12)``."""
    return torch_softplus(v, beta=RD_SOFTPLUS_BETA, threshold=RD_SOFTPLUS_THRESHOLD)


# ---------------------------------------------------------------------------------------------
# Rearrangements with PyTorch semantics (NHWC here)
# ---------------------------------------------------------------------------------------------


def pixel_shuffle(x: jax.Array, r: int) -> jax.Array:
    """``nn.PixelShuffle(r)`` on NHWC data.

    PyTorch maps input channel ``c*r*r + i*r + j`` to output channel ``c`` at sub-pixel ``(i, j)``.
    (N, H, W, C*r*r) -> (N, H*r, W*r, C).
    """
    n, h, w, c = x.shape
    oc = c // (r * r)
    x = x.reshape(n, h, w, oc, r, r)
    x = x.transpose(0, 1, 4, 2, 5, 3)
    return x.reshape(n, h * r, w * r, oc)


def nearest_upsample(x: jax.Array, r: int) -> jax.Array:
    """``nn.Upsample(scale_factor=r)`` (mode 'nearest') on NHWC data: ``out[h] = in[h // r]``."""
    return jnp.repeat(jnp.repeat(x, r, axis=1), r, axis=2)


# ---------------------------------------------------------------------------------------------
# The λ embedding (QARV, rd_model_base)
# ---------------------------------------------------------------------------------------------


def torch_linspace_f32(start: float, end: float, steps: int) -> np.ndarray:
    """``torch.linspace(start, end, steps)`` in float32, symmetric from both ends like PyTorch's
    CPU kernel (``start + i*step`` for the first half, ``end - (steps-1-i)*step`` for the rest)."""
    if steps == 1:
        return np.array([start], np.float32)
    step = np.float32((np.float32(end) - np.float32(start)) / np.float32(steps - 1))
    i = np.arange(steps)
    half = steps // 2
    lo = np.float32(start) + step * i[:half].astype(np.float32)
    hi = np.float32(end) - step * (steps - 1 - i[half:]).astype(np.float32)
    return np.concatenate([lo, hi]).astype(np.float32)


def lmb_to_embedding_input(lmb: jax.Array, sin_period: float, max_lmb: float = MAX_LMB) -> jax.Array:
    """``VariableRateLossyVAE._lmb_scaling``: ``log(λ) * sin_period / log(MAX_LMB)``."""
    return jnp.log(lmb) * sin_period / math.log(max_lmb)


def sinusoidal_embedding(values: jax.Array, dim: int, max_period: float) -> jax.Array:
    """``common.sinusoidal_embedding``: ``[cos(v f), sin(v f)]`` with
    ``f = max_period ** -linspace(0, 1, dim/2)``. (N,) -> (N, dim)."""
    assert dim % 2 == 0
    exponents = torch_linspace_f32(0.0, 1.0, dim // 2)
    freqs = jnp.power(jnp.float32(max_period), -jnp.asarray(exponents))
    args = values.reshape(-1, 1) * freqs.reshape(1, -1)
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


# ---------------------------------------------------------------------------------------------
# Quantisation and probability mass
# ---------------------------------------------------------------------------------------------


def quantize_symbols(x: jax.Array, means: jax.Array) -> jax.Array:
    """CompressAI ``quantize(x, 'symbols', means)``: ``round(x - means)`` as int32.

    ``jnp.round`` rounds half to even, like ``torch.round``.
    """
    return jnp.round(x - means).astype(jnp.int32)


def quantize_dequantize(x: jax.Array, means: jax.Array) -> jax.Array:
    """CompressAI ``quantize(x, 'dequantize', means)``: ``round(x - means) + means``."""
    return jnp.round(x - means) + means


def normal_cdf_erf(x: jax.Array) -> jax.Array:
    """``torch.distributions.Normal(0, 1).cdf``: ``0.5 * (1 + erf(x / sqrt(2)))``.

    The form used by QARV's ``DiscretizedGaussian`` and by ``gaussian_log_prob_mass``."""
    return 0.5 * (1.0 + jax.scipy.special.erf(x / math.sqrt(2.0)))


def normal_cdf_erfc(x: jax.Array) -> jax.Array:
    """CompressAI ``GaussianConditional._standardized_cumulative``: ``0.5 * erfc(-x / sqrt(2))``.

    The form used by QRes latents (plain ``GaussianConditional``)."""
    return 0.5 * jax.scipy.special.erfc(-(2.0 ** -0.5) * x)


def gaussian_likelihood(z: jax.Array, means: jax.Array, scales: jax.Array, cdf=normal_cdf_erfc,
                        scale_bound: float = SCALE_BOUND) -> jax.Array:
    """CompressAI ``GaussianConditional._likelihood`` followed by the 1e-9 likelihood bound.

    ``P = Φ((0.5 - |z - μ|)/σ) - Φ((-0.5 - |z - μ|)/σ)`` with ``σ = max(σ, scale_bound)``.
    """
    values = jnp.abs(z - means)
    scales = jnp.maximum(scales, scale_bound)
    upper = cdf((0.5 - values) / scales)
    lower = cdf((-0.5 - values) / scales)
    return jnp.maximum(upper - lower, LIKELIHOOD_BOUND)


def gaussian_log_prob_mass(mean: jax.Array, scale: jax.Array, x: jax.Array, bin_size: float = 1.0,
                           prob_clamp: float = PROB_CLAMP) -> jax.Array:
    """``entropy_coding.gaussian_log_prob_mass``: log P of a quantised Normal(mean, scale) at x.

    ``P = cdf(x + b/2) - cdf(x - b/2)``; where ``P <= prob_clamp`` the density approximation
    ``log pdf(x) + log b`` is used. Mirrors torch's ``Normal.cdf`` (``(x - μ) * (1/σ) / sqrt 2``)
    and ``Normal.log_prob``.
    """
    inv = 1.0 / scale
    half = 0.5 * bin_size
    upper = 0.5 * (1.0 + jax.scipy.special.erf((x + half - mean) * inv / math.sqrt(2.0)))
    lower = 0.5 * (1.0 + jax.scipy.special.erf((x - half - mean) * inv / math.sqrt(2.0)))
    prob_mass = upper - lower
    log_pdf = (-jnp.square(x - mean) / (2.0 * jnp.square(scale)) - jnp.log(scale)
               - math.log(math.sqrt(2.0 * math.pi)))
    return jnp.where(prob_mass > prob_clamp,
                     jnp.log(jnp.maximum(prob_mass, PROB_MASS_FLOOR)),
                     log_pdf + math.log(bin_size))


def gaussian_kl(mu1: jax.Array, v1: jax.Array, mu2: jax.Array, v2: jax.Array) -> jax.Array:
    """rd_model_base ``gaussian_kl``: KL(N(mu1, v1²) || N(mu2, v2²)) in nats, v = std.

    The official ``-0.5 + log v2 - log v1 + 0.5 * (v1² + (mu1-mu2)²) / v2²`` divides by ``v2``
    twice instead of by ``v2²``: for stds below ~1e-19, ``v2²`` is a float32 *subnormal*, which
    PyTorch on CPU keeps (a large finite KL) and XLA flushes to zero (``inf``). The numerator
    ``0.5 * (v1² + (mu1-mu2)²)`` is formed first, as in the official expression, so values near
    the float32 limit overflow (or not) the same way.
    """
    # The barrier stops XLA from folding the two divisions back into one by v2*v2.
    half_sq = jax.lax.optimization_barrier((0.5 * (jnp.square(v1) + jnp.square(mu1 - mu2))) / v2)
    return -0.5 + jnp.log(v2) - jnp.log(v1) + half_sq / v2


# ---------------------------------------------------------------------------------------------
# Image scaling
# ---------------------------------------------------------------------------------------------


def preprocess_input(im: jax.Array, im_shift: float, im_scale: float) -> jax.Array:
    """``preprocess_input``: ``(im + shift) * scale`` on images in [0, 1]."""
    return (im + im_shift) * im_scale


def preprocess_target(im: jax.Array) -> jax.Array:
    """``preprocess_target``: ``(im - 0.5) * 2`` — the reconstruction target in [-1, 1]."""
    return (im - 0.5) * 2.0


def process_output(x: jax.Array) -> jax.Array:
    """``process_output``: ``clamp(x, -1, 1) * 0.5 + 0.5`` — decoder output to an image in [0, 1]."""
    return jnp.clip(x, -1.0, 1.0) * 0.5 + 0.5


def process_output_host(x) -> np.ndarray:
    """:func:`process_output` on the host, in float32 (the same operations on NumPy arrays)."""
    return np.clip(np.asarray(x, np.float32), -1.0, 1.0) * np.float32(0.5) + np.float32(0.5)
