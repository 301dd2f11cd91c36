"""Latent-variable blocks of the three families, NHWC.

Every block exposes the same three steps, which the top-down pass (:mod:`lvae_jax.models.vae`)
strings together and the sequential decoder calls one at a time:

- ``prior(feature, emb) -> (feature, pm, pv)``: p(z_i | z_<i); ``pv`` is the prior *std*.
- ``posterior(feature, enc_feature, emb) -> (qm, qv)``: q(z_i | z_<i, x); ``qv`` is None except rd.
- ``fuse(feature, z, emb) -> feature``: add z's information and run the closing block.

and a rate rule (``quantized`` latents: uniform noise in training, rounding at evaluation, rate
from the discretised Gaussian; ``gaussian`` latents: reparameterised sample, analytic KL).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from lvae_jax import numerics
from lvae_jax.nn.blocks import AdaLNConvNeXtBlock, ConvNeXtBlock, VDBlock
from lvae_jax.nn.layers import Conv2d


class QResLatentBlock(nnx.Module):
    """QRes ``QLatentBlockX``.

    prior: ``[pm, plogv] = VDBlock(resnet_front(f))``, ``pv = exp(softplus(plogv + 2.3) - 2.3)``.
    posterior: ``qm = VDBlock(concat[f, enc])`` (decoder feature first).
    fuse: ``resnet_end(f + z_proj(z))`` with ``z_proj = conv(k) -> GELU -> conv1×1``.
    Eval-mode rate uses CompressAI's ``GaussianConditional`` (erfc form, scale bound 0.11).
    """

    rate_rule = "quantized"
    cdf = staticmethod(numerics.normal_cdf_erfc)

    def __init__(self, width: int, zdim: int, kernel_size: int = 7, *, rngs: nnx.Rngs,
                 num_latents: int = 1):
        hidden = int(width * 0.25)
        use_3x3 = kernel_size >= 3
        k, p = (3, 1) if use_3x3 else (1, 0)
        self.zdim = zdim
        self.resnet_front = ConvNeXtBlock(width, kernel_size, rngs=rngs)
        self.resnet_end = ConvNeXtBlock(width, kernel_size, rngs=rngs)
        self.posterior_net = VDBlock(2 * width, hidden, zdim, residual=False, use_3x3=use_3x3, rngs=rngs)
        self.prior_net = VDBlock(width, hidden, 2 * zdim, residual=False, use_3x3=use_3x3,
                                 zero_last=True, rngs=rngs)
        self.z_proj_in = Conv2d(zdim, hidden // 2, k, 1, p, rngs=rngs)
        # Official residual_scaling: z_proj[2].weight *= sqrt(1 / 3*N) (sic: (1/3)*N).
        self.z_proj_out = Conv2d(hidden // 2, width, 1, rngs=rngs,
                                 weight_gain=(1.0 / 3.0 * num_latents) ** 0.5)

    def prior(self, feature, emb=None):
        feature = self.resnet_front(feature)
        pm, plogv = jnp.split(numerics.pinned(self.prior_net(feature)), 2, axis=-1)
        pv = jnp.exp(numerics.bounded_logscale(plogv))
        return feature, pm, pv

    def posterior(self, feature, enc_feature, emb=None):
        return numerics.pinned(self.posterior_net(jnp.concatenate([feature, enc_feature], axis=-1))), None

    def fuse(self, feature, z, emb=None):
        feature = feature + self.z_proj_out(numerics.gelu(self.z_proj_in(z)))
        return self.resnet_end(feature)


class QARVLatentBlock(nnx.Module):
    """QARV ``VRLVBlockBase`` (AdaLN ConvNeXt blocks conditioned on the λ embedding).

    prior: ``[pm, plogv] = prior_conv1×1(resnet_front(f))``, ``pv = exp(softplus(plogv+2.3)-2.3)``.
    posterior: ``qm = conv3×3(posterior2(merge1×1(concat[posterior1(f), posterior0(enc)])))``.
    fuse: ``resnet_end(f + z_proj(z))``.
    Eval-mode rate uses ``DiscretizedGaussian`` (erf form of the Normal CDF, bound 0.11).
    """

    rate_rule = "quantized"
    cdf = staticmethod(numerics.normal_cdf_erf)

    def __init__(self, width: int, zdim: int, enc_width: int, kernel_size: int = 7,
                 mlp_ratio: float = 2.0, embed_dim: int = 256, *, rngs: nnx.Rngs):
        blk = AdaLNConvNeXtBlock
        self.zdim = zdim
        self.resnet_front = blk(width, embed_dim, kernel_size, mlp_ratio, rngs=rngs)
        self.resnet_end = blk(width, embed_dim, kernel_size, mlp_ratio, rngs=rngs)
        self.posterior0 = blk(enc_width, embed_dim, kernel_size, rngs=rngs)
        self.posterior1 = blk(width, embed_dim, kernel_size, rngs=rngs)
        self.posterior2 = blk(width, embed_dim, kernel_size, rngs=rngs)
        self.post_merge = Conv2d(width + enc_width, width, 1, rngs=rngs)
        self.posterior_conv = Conv2d(width, zdim, 3, 1, 1, rngs=rngs)
        self.z_proj = Conv2d(zdim, width, 1, rngs=rngs)
        self.prior_conv = Conv2d(width, 2 * zdim, 1, rngs=rngs)

    def prior(self, feature, emb):
        feature = self.resnet_front(feature, emb)
        pm, plogv = jnp.split(numerics.pinned(self.prior_conv(feature)), 2, axis=-1)
        pv = jnp.exp(numerics.bounded_logscale(plogv))
        return feature, pm, pv

    def posterior(self, feature, enc_feature, emb):
        enc_feature = self.posterior0(enc_feature, emb)
        feature = self.posterior1(feature, emb)
        merged = self.post_merge(jnp.concatenate([feature, enc_feature], axis=-1))
        merged = self.posterior2(merged, emb)
        return numerics.pinned(self.posterior_conv(merged)), None

    def fuse(self, feature, z, emb):
        return self.resnet_end(feature + self.z_proj(z), emb)


class RDLatentBlock(nnx.Module):
    """rd_model_base ``LatentVariableBlock``: Gaussian latents with learned std.

    prior: ``[pm, pv] = prior_conv(resnet_front(f))``, ``pm = linear_sqrt(pm)``,
    ``pv = softplus_{β=log2}(pv)``. posterior likewise from the merged features.
    Rate: analytic ``KL(q || p)`` (nats); z = qm + qv·ε.
    """

    rate_rule = "gaussian"

    def __init__(self, width: int, zdim: int, enc_width: int, kernel_size: int = 7,
                 mlp_ratio: float = 2.0, embed_dim: int = 256, *, rngs: nnx.Rngs):
        blk = AdaLNConvNeXtBlock
        self.zdim = zdim
        self.resnet_front = blk(width, embed_dim, kernel_size, mlp_ratio, rngs=rngs)
        self.resnet_end = blk(width, embed_dim, kernel_size, mlp_ratio, rngs=rngs)
        self.posterior0 = blk(enc_width, embed_dim, kernel_size, rngs=rngs)
        self.posterior1 = blk(width, embed_dim, kernel_size, rngs=rngs)
        self.posterior2 = blk(width, embed_dim, kernel_size, rngs=rngs)
        self.post_merge = Conv2d(width + enc_width, width, 1, rngs=rngs)
        self.posterior_conv = Conv2d(width, 2 * zdim, 3, 1, 1, rngs=rngs)
        self.prior_conv = Conv2d(width, 2 * zdim, 1, rngs=rngs)
        self.z_proj = Conv2d(zdim, width, 1, rngs=rngs)

    def prior(self, feature, emb):
        feature = self.resnet_front(feature, emb)
        pm, pv = jnp.split(numerics.pinned(self.prior_conv(feature)), 2, axis=-1)
        return feature, numerics.linear_sqrt(pm), numerics.rd_std_smooth(pv)

    def posterior(self, feature, enc_feature, emb):
        enc_feature = self.posterior0(enc_feature, emb)
        feature = self.posterior1(feature, emb)
        merged = self.post_merge(jnp.concatenate([feature, enc_feature], axis=-1))
        merged = self.posterior2(merged, emb)
        qm, qv = jnp.split(numerics.pinned(self.posterior_conv(merged)), 2, axis=-1)
        return numerics.linear_sqrt(qm), numerics.rd_std_smooth(qv)

    def fuse(self, feature, z, emb):
        return self.resnet_end(feature + self.z_proj(z), emb)


# ------------------------------------------------------------------------------------------------
# Rate rules. Each returns (z, rate) with rate = −log P or KL in nats per element.
# ------------------------------------------------------------------------------------------------


def quantized_eval(block, pm, pv, qm):
    """Evaluation: ``z = round(qm − pm) + pm``, rate ``−log P(z)`` under the discretised Gaussian
    (CompressAI ``GaussianConditional.forward`` in eval mode)."""
    z = numerics.quantize_dequantize(qm, pm)
    return z, -jnp.log(numerics.gaussian_likelihood(z, pm, pv, cdf=block.cdf))


def quantized_train(pm, pv, qm, u):
    """Training: ``z = qm + u``, ``u ~ U(−½, ½)``; rate ``−log P`` from ``gaussian_log_prob_mass``."""
    z = qm + u
    return z, -numerics.gaussian_log_prob_mass(pm, pv, z)


def quantized_rate_of(block, pm, pv, z, training: bool):
    """Rate of a *given* z (teacher forcing): the training or evaluation rule applied to z."""
    if training:
        return -numerics.gaussian_log_prob_mass(pm, pv, z)
    return -jnp.log(numerics.gaussian_likelihood(z, pm, pv, cdf=block.cdf))


def gaussian_sample(pm, pv, qm, qv, eps):
    """rd: ``z = qm + qv·ε``, rate ``KL(N(qm, qv) || N(pm, pv))``."""
    return qm + qv * eps, numerics.gaussian_kl(qm, qv, pm, pv)

