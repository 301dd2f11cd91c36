"""The hierarchical VAE shared by all official families, NHWC.

One class, :class:`HierarchicalVAE`, built from a :class:`~lvae_jax.models.specs.ModelConfig`.
The family decides three things: how the decoder finds its encoder feature (by resolution for
QRes/rd — the last encoder block at that resolution wins — or by named tap for QARV), whether a λ
embedding conditions the blocks (QARV, rd), and the output head (QRes MSE / lossless NLL, or the
decoder output itself).

Images are (N, H, W, 3) float32 in [0, 1] with H and W multiples of ``max_stride`` (64).
Rates are nats per latent element; ``bpp`` figures are bits per pixel.

The top-down pass is written once, as steps the sequential decoder can also call one at a time:
``initial_feature`` -> for each latent i: ``prior_step(i)`` -> choose z -> ``fuse_step(i)`` ->
``tail``.

Every block is invoked through one hook, a :class:`~lvae_jax.models.runners.BlockRunner`
(``run=``; default :data:`~lvae_jax.models.runners.DIRECT`: in the caller's trace). The codec's
decoder passes :class:`lvae_jax.models.piecewise.Piecewise`, which runs each block as its own
compiled executable, shared by all blocks of one structure and input shape.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from lvae_jax import numerics
from lvae_jax.models import latents as L
from lvae_jax.models import specs as S
from lvae_jax.nn import blocks as B
from lvae_jax.models.runners import DIRECT, BlockRunner
from lvae_jax.nn.layers import HostInit, KeyStream, Linear, constant


class LatentStats(NamedTuple):
    """Per latent block, all (N, h, w, zdim): prior mean/std, posterior mean (and std for rd),
    the latent used, and its rate (nats per element)."""
    pm: jax.Array
    pv: jax.Array
    qm: jax.Array | None
    qv: jax.Array | None
    z: jax.Array
    rate: jax.Array | None


class ForwardOutput(NamedTuple):
    """``x_hat``: decoder output before ``process_output`` (no clamp), NHWC, [-1, 1] units; the
    pixel mean for the lossless model. ``loss``: scalar (official training loss).
    ``metrics``: official stats, batch means (see :meth:`HierarchicalVAE.loss_and_metrics`).
    ``pixel_nll``: the lossless model's NLL of each image, (N,) nats summed over its pixels
    (None for the other models). ``loss_per_image``: (N,) each image's term of ``loss`` (its mean).
    """
    x_hat: jax.Array
    latents: list
    loss: jax.Array
    metrics: dict
    pixel_nll: jax.Array | None = None
    loss_per_image: jax.Array | None = None


def build_block(spec, *, rngs: nnx.Rngs, num_latents: int = 1):
    """Instantiate the module for one block spec (each spec builds its own: ``spec.build``)."""
    return spec.build(rngs=rngs, num_latents=num_latents)


def _call(block, x, emb, run: BlockRunner = DIRECT):
    return run(block, "__call__", x, emb) if block.requires_embedding else run(block, "__call__", x)


def _width_of(spec) -> int:
    return getattr(spec, "width", None) or getattr(spec, "in_ch", None) or spec.dim


class LambdaEmbedding(nnx.Module):
    """``VariableRateLossyVAE.lmb_embedding``: sinusoidal(log λ · period / log 8192) ->
    Linear -> GELU -> Linear. λ: (N,) -> (N, embed_dim)."""

    def __init__(self, dims: tuple[int, int], sin_period: float, *, rngs: nnx.Rngs):
        self.in_dim, self.sin_period = dims[0], sin_period
        self.fc1 = Linear(dims[0], dims[1], rngs=rngs)
        self.fc2 = Linear(dims[1], dims[1], rngs=rngs)

    def __call__(self, lmb: jax.Array) -> jax.Array:
        scaled = numerics.lmb_to_embedding_input(lmb, self.sin_period)
        emb = numerics.sinusoidal_embedding(scaled, self.in_dim, self.sin_period)
        return self.fc2(numerics.gelu(self.fc1(emb)))


class NLLHead(nnx.Module):
    """QRes ``GaussianNLLOutputNet``: per-pixel discretised Gaussian over [-1, 1] images with bins
    of 1/127.5. ``conv_mean``/``conv_scale``: (N, h, w, in_ch) -> (N, H, W, 3)."""

    def __init__(self, in_ch: int, rate: int, im_channels: int, *, rngs: nnx.Rngs):
        self.conv_mean = B.PatchUp(in_ch, im_channels, rate, rngs=rngs)
        self.conv_scale = B.PatchUp(in_ch, im_channels, rate, rngs=rngs)

    def nll(self, feature, x_target):
        """Per-image NLL, nats per dimension (N,), and the pixel mean."""
        p_mean = self.conv_mean(feature)
        p_logscale = numerics.bounded_logscale(self.conv_scale(feature), numerics.PIXEL_LOGSCALE_FLOOR)
        log_prob = numerics.gaussian_log_prob_mass(p_mean, jnp.exp(p_logscale), x_target,
                                                   bin_size=numerics.PIXEL_BIN_SIZE)
        return -jnp.mean(log_prob, axis=(1, 2, 3)), p_mean

    def mean(self, feature):
        """The pixel mean in [-1, 1] units (the reconstruction)."""
        return self.conv_mean(feature)

    def codec_inputs(self, feature):
        """The coding parameters (official ``GaussianNLLOutputNet._preapre_codec``): the mean is
        snapped to the 8-bit grid, ``round(pm·127.5 + 127.5)/127.5 − 1``, and mean and log-scale
        are rescaled to units of one pixel bin (1/127.5); the log-scale is used *without* the
        training-time softplus bound. -> (mean, scale) in bin units and the raw level
        ``pm·127.5 + 127.5`` before rounding (float32; what a decoder with other floats may round
        to the other side of a half-integer, :mod:`lvae_jax.entropy.hints`), all (N, H, W, 3)."""
        pm = self.conv_mean(feature)
        level = pm * 127.5 + 127.5
        pm = jnp.round(level) / 127.5 - 1.0
        plogv = self.conv_scale(feature)
        return (pm / numerics.PIXEL_BIN_SIZE,
                jnp.exp(plogv - math.log(numerics.PIXEL_BIN_SIZE)), level)


class HierarchicalVAE(nnx.Module):
    """All five official models. Build with :func:`lvae_jax.get_model`.

    Attributes mirror the official module tree: ``encoder_blocks`` (``encoder.enc_blocks``),
    ``dec_blocks`` (``decoder.dec_blocks`` / ``dec_blocks``), ``bias``, ``lmb_embedding``, ``head``.
    """

    def __init__(self, config: S.ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        n_lat = config.num_latents
        rngs = KeyStream(rngs.params()) if isinstance(rngs, nnx.Rngs) else rngs
        self.encoder_blocks = nnx.List([build_block(s, rngs=rngs) for s in config.enc_blocks])
        self.dec_blocks = nnx.List([build_block(s, rngs=rngs, num_latents=n_lat)
                                    for s in config.dec_blocks])
        self.latent_positions = tuple(i for i, s in enumerate(config.dec_blocks) if S.is_latent(s))
        self.bias = nnx.Param(constant((_width_of(config.dec_blocks[0]),), 0.0))
        if config.variable_rate:
            self.lmb_embedding = LambdaEmbedding(config.lmb_embed_dim, config.sin_period, rngs=rngs)
        if config.lossless:
            head = config.head
            self.head = NLLHead(head.in_ch, head.rate, head.im_channels, rngs=rngs)

    # -- pieces ---------------------------------------------------------------------------------

    @property
    def num_latents(self) -> int:
        return len(self.latent_positions)

    @property
    def lossless(self) -> bool:
        return self.config.lossless

    def lmb_array(self, lmb, n: int) -> jax.Array | None:
        """λ as an (N,) float32 array (variable-rate models), or None (QRes: λ is fixed). The
        range is checked where λ enters the library (:func:`lvae_jax.models.lambdas.check_lmb`);
        here λ may be traced."""
        if not self.config.variable_rate:
            return None
        if lmb is None:
            raise ValueError(f"{self.config.name} is variable-rate: pass lmb (range "
                             f"{self.config.lmb_range}); the official default is the highest, "
                             f"{self.config.default_lmb}")
        lmb = jnp.asarray(lmb, jnp.float32)
        return jnp.broadcast_to(lmb.reshape(-1), (n,)) if lmb.size == 1 else lmb.reshape(n)

    def embed(self, lmb: jax.Array | None, run: BlockRunner = DIRECT) -> jax.Array | None:
        return None if lmb is None else run(self.lmb_embedding, "__call__", lmb)

    def encode(self, x: jax.Array, emb: jax.Array | None, run: BlockRunner = DIRECT) -> dict:
        """Bottom-up pass on the preprocessed input. Returns the features the decoder reads:
        keyed by resolution H (QRes, rd: the last block at each resolution wins) or by tap name."""
        feats = {}
        by_tap = self.config.family == "qarv"
        for blk in self.encoder_blocks:
            if isinstance(blk, B.Tap):
                feats[blk.key] = x
                continue
            x = _call(blk, x, emb, run)
            if not by_tap:
                feats[x.shape[1]] = x
        return feats

    def initial_feature(self, n: int, h: int, w: int) -> jax.Array:
        """The learned constant ``bias`` broadcast to (N, h, w, width), h = H / max_stride."""
        return jnp.broadcast_to(self.bias[...], (n, h, w, self.bias.shape[0]))

    def _run(self, feature, emb, lo: int, hi: int, run: BlockRunner = DIRECT):
        for j in range(lo, hi):
            feature = _call(self.dec_blocks[j], feature, emb, run)
        return feature

    def prior_step(self, i: int, feature, emb, run: BlockRunner = DIRECT):
        """Run the decoder up to latent block i and its prior: -> (feature, pm, pv)."""
        lo = self.latent_positions[i - 1] + 1 if i > 0 else 0
        feature = self._run(feature, emb, lo, self.latent_positions[i], run)
        return run(self.dec_blocks[self.latent_positions[i]], "prior", feature, emb)

    def posterior(self, i: int, feature, enc_feats: dict, emb, run: BlockRunner = DIRECT):
        blk = self.dec_blocks[self.latent_positions[i]]
        spec = self.config.dec_blocks[self.latent_positions[i]]
        key = spec.enc_key if self.config.family == "qarv" else feature.shape[1]
        return run(blk, "posterior", feature, enc_feats[key], emb)

    def fuse_step(self, i: int, feature, z, emb, run: BlockRunner = DIRECT):
        return run(self.dec_blocks[self.latent_positions[i]], "fuse", feature, z, emb)

    def tail(self, feature, emb, run: BlockRunner = DIRECT):
        """Blocks after the last latent: -> decoder output (QRes lossless: the head's input)."""
        return self._run(feature, emb, self.latent_positions[-1] + 1, len(self.dec_blocks), run)

    def mean_output(self, feature, run: BlockRunner = DIRECT):
        """Reconstruction x̂ in [-1, 1] units from the decoder output (lossless: pixel mean)."""
        return run(self.head, "mean", feature) if self.lossless else feature

    # -- the top-down pass ----------------------------------------------------------------------

    def top_down(self, feature, emb, choose_z: Callable, enc_feats: dict | None = None):
        """Run the decoder; ``choose_z(i, block, pm, pv, qm, qv) -> (z, rate)`` decides each latent.
        Returns (decoder output, [LatentStats])."""
        stats = []
        for i in range(self.num_latents):
            feature, pm, pv = self.prior_step(i, feature, emb)
            qm = qv = None
            if enc_feats is not None:
                qm, qv = self.posterior(i, feature, enc_feats, emb)
            blk = self.dec_blocks[self.latent_positions[i]]
            z, rate = choose_z(i, blk, pm, pv, qm, qv)
            stats.append(LatentStats(pm, pv, qm, qv, z, rate))
            feature = self.fuse_step(i, feature, z, emb)
        return self.tail(feature, emb), stats

    def __call__(self, im: jax.Array, lmb=None, *, training: bool = False,
                 key: jax.Array | None = None, noise: Sequence[jax.Array] | None = None,
                 latents: Sequence[jax.Array | None] | None = None) -> ForwardOutput:
        """Forward pass with loss and the official stats.

        Args:
          im: (N, H, W, 3) in [0, 1].
          lmb: λ, scalar or (N,), for variable-rate models (QRes uses its fixed λ).
          training: training rule (uniform noise / reparameterised sample and ``log_prob_mass``
            rate) if True, else evaluation rule (``round(q − μ) + μ`` and the coder's likelihood).
          key: PRNG key for the noise (training, and rd in either mode, like the official code).
          noise: given noise per latent instead of ``key``: ``u = z − qm`` (QRes/QARV) or
            ``ε = (z − qm)/qv`` (rd), each (N, h, w, zdim).
          latents: given z per latent (teacher forcing); an entry of None falls back to the rule.
        """
        n, h, w, c = im.shape
        s = self.config.max_stride
        if h % s or w % s:
            raise ValueError(f"image size {h}x{w} is not a multiple of {s}; pad it first "
                             "(lvae_jax.image.pad_to_multiple)")
        lmb_arr = self.lmb_array(lmb, n)
        emb = self.embed(lmb_arr)
        enc = self.encode(numerics.preprocess_input(im, self.config.im_shift, self.config.im_scale), emb)

        def choose_z(i, blk, pm, pv, qm, qv):
            given = latents[i] if latents is not None else None
            if blk.rate_rule == "gaussian":
                if given is None:
                    eps = noise[i] if noise is not None else self._normal(key, i, pm.shape)
                    return L.gaussian_sample(pm, pv, qm, qv, eps)
                return given, numerics.gaussian_kl(qm, qv, pm, pv)
            if given is not None:
                return given, L.quantized_rate_of(blk, pm, pv, given, training)
            if training:
                u = noise[i] if noise is not None else self._uniform(key, i, pm.shape)
                return L.quantized_train(pm, pv, qm, u)
            return L.quantized_eval(blk, pm, pv, qm)

        feature, stats = self.top_down(self.initial_feature(n, h // s, w // s), emb, choose_z, enc)
        loss, metrics, x_hat, pixel_nll, loss_per = self.loss_and_metrics(im, feature, stats, lmb_arr)
        return ForwardOutput(x_hat, stats, loss, metrics, pixel_nll, loss_per)

    @staticmethod
    def _uniform(key, i, shape):
        if key is None:
            raise ValueError("training mode needs a PRNG key (or given noise)")
        return jax.random.uniform(jax.random.fold_in(key, i), shape, jnp.float32, -0.5, 0.5)

    @staticmethod
    def _normal(key, i, shape):
        if key is None:
            raise ValueError("rd_model_base samples its latents: pass a PRNG key (or noise/latents)")
        return jax.random.normal(jax.random.fold_in(key, i), shape, jnp.float32)

    def loss_and_metrics(self, im, feature, stats, lmb_arr):
        """The official loss and stats.

        rate per image (nats/dim) ``kl = Σ_blocks Σ rate / (C·H·W)``; QRes loss
        ``mean(kl + λ·MSE)`` or ``mean(kl + NLL)``; QARV/rd ``mean(kl + λ_n · MSE_n)``. MSE is in
        [-1, 1] units. ``bppix = mean(kl) · log2(e) · C``; ``psnr`` from the clamped [0, 1] output.
        -> (loss, metrics, x_hat, per-image pixel NLL in nats or None, per-image loss (N,)).
        """
        n, h, w, c = im.shape
        ndims = float(c * h * w)
        kl = sum(jnp.sum(st.rate, axis=(1, 2, 3)) for st in stats) / ndims
        target = numerics.preprocess_target(im)
        metrics = {}
        pixel_nll = None
        if self.lossless:
            out_loss, x_hat = self.head.nll(feature, target)
            loss_per = kl + out_loss
            metrics["nll"] = jnp.mean(out_loss)
            pixel_nll = out_loss * ndims
        else:
            x_hat = feature
            dist = jnp.mean(jnp.square(x_hat - target), axis=(1, 2, 3))
            if self.config.family == "qres":
                out_loss = dist * self.config.head.lmb
                loss_per = kl + out_loss
                metrics["mse"] = jnp.mean(out_loss)       # official: λ · MSE
            else:
                loss_per = kl + lmb_arr * dist
                metrics["mse"] = jnp.mean(dist)
        loss = jnp.mean(loss_per)
        im_hat = numerics.process_output(jax.lax.stop_gradient(x_hat))
        mse_img = jnp.mean(jnp.square(im_hat - im))
        metrics.update({
            "loss": loss,
            "kl": jnp.mean(kl),
            "bppix": jnp.mean(kl) * numerics.LOG2_E * c,
            "psnr": -10.0 * jnp.log10(mse_img),
        })
        return loss, metrics, x_hat, pixel_nll, loss_per


def build_model(config: S.ModelConfig, *, seed: int = 0, abstract: bool = False) -> HierarchicalVAE:
    """A :class:`HierarchicalVAE` of ``config``, initialised on the host from ``seed`` and moved to
    the device in one transfer; ``abstract=True``: shapes only (no memory), a target to load into."""
    if abstract:
        return nnx.eval_shape(lambda: HierarchicalVAE(config, rngs=HostInit(seed, abstract=True)))
    graphdef, state = nnx.split(HierarchicalVAE(config, rngs=HostInit(seed)))
    return nnx.merge(graphdef, jax.device_put(state))  # host arrays -> device, in one transfer
