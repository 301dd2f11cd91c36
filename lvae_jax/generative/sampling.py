"""Sampling from the hierarchical prior: unconditional samples, decoding with given latents, and
coarse-to-fine (progressive) decoding.

Mirrors the official ``HierarchicalVAE.uncond_sample`` / ``cond_sample`` /
``forward_get_latents`` (QRes, ``lvae/models/qresvae/model.py``) and
``VariableRateLossyVAE.unconditional_sample`` / ``conditional_sample`` (QARV and rd_model_base),
as used by the notebooks ``scripts/qresvae/uncond-sampling.ipynb`` and
``progressive-decoding.ipynb``.

Temperature ``t`` (official rules):

* QRes and QARV latents: ``z = pm + t·pv·ε + t·u``, ε ~ N(0, 1), u ~ U(−½, ½);
* rd_model_base latents: ``z = pm + t·pv·ε`` (no uniform noise);
* the QRes lossless pixel head (``GaussianNLLOutputNet.sample``): ``x = mean + t·exp(s)·ε`` with the
  head's raw log-scale ``s`` (the official sampler does not apply the training-time
  ``softplus(s + 16) − 16`` floor); MSE heads and QARV/rd output the decoder feature itself.

``t = 0`` takes exactly the prior mean (and the pixel mean). Images are NHWC float32 in [0, 1];
latents are NHWC ``(N, h, w, zdim)``. Every model call is a plain ``jax.jit`` over the model state,
split once; the compiled passes are shared by all :class:`GenerativeModel` built from equal
graph definitions (e.g. the same model loaded twice) and cached per input shape.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lvae_jax import numerics
from lvae_jax.models import inference, lambdas


class GenerativeError(ValueError):
    """Bad input to a generative function (wrong model family, λ out of range, bad sizes...)."""


class Inference(NamedTuple):
    """The latents a model infers from images (official ``forward_get_latents``), eval mode.

    ``latents``: per latent block ``(N, h, w, zdim)``: QRes/QARV ``round(qm − pm) + pm`` (the
    quantised posterior, what the codec transmits); rd_model_base a posterior *draw*
    ``qm + qv·ε`` (it samples even in eval mode). ``rates``: ``(N, L)`` nats per image and block
    (summed over the block's elements): −log P under the discretised prior (QRes/QARV) or
    KL(q‖p) (rd). ``recon``: ``(N, H, W, 3)`` the eval reconstruction in [0, 1] (pixel mean for
    the lossless model).
    """
    latents: tuple
    rates: jax.Array
    recon: jax.Array

    def bpp(self, num_pixels: int | None = None, upto: int | None = None) -> np.ndarray:
        """Bits per pixel of the first ``upto`` latents (all by default), per image:
        ``Σ rates · log2(e) / num_pixels``; ``num_pixels`` defaults to the padded H·W (as the
        progressive-decoding notebook)."""
        if num_pixels is None:
            num_pixels = int(self.recon.shape[1] * self.recon.shape[2])
        r = np.asarray(self.rates, np.float64)[:, :upto]
        return r.sum(axis=1) * numerics.LOG2_E / num_pixels


# ------------------------------------------------------------------------------------------------
# The jitted passes (shared per graph definition)
# ------------------------------------------------------------------------------------------------


def _output_draw(model, feature, key, t):
    """Decoder output -> image in [-1, 1] units: the lossless head samples pixels at temperature t
    (official ``GaussianNLLOutputNet.sample``, unbounded log-scale); other heads are the identity."""
    if not model.lossless:
        return feature
    mean = model.head.conv_mean(feature)
    scale = jnp.exp(model.head.conv_scale(feature))
    eps = jax.random.normal(jax.random.fold_in(key, model.num_latents), mean.shape, jnp.float32)
    return jnp.where(t > 0, mean + (scale * t) * eps, mean)


class _Passes(NamedTuple):
    decode: object
    prior_means: object


@functools.lru_cache(maxsize=16)
def _passes(graphdef) -> _Passes:
    """Jitted functions of one graph definition (hashable: equal for equal model structures).
    The evaluation pass (latents, rates) is :func:`lvae_jax.models.inference.eval_pass`."""

    def decode(state, given, keep, key, t, lmb, grid):
        model = nnx.merge(graphdef, state)
        emb = model.embed(lmb)
        feature = model.initial_feature(*grid)
        z = None
        for i in range(model.num_latents):
            feature, pm, pv = inference.decode_step(model, i, feature, z, emb)
            drawn = inference.prior_draw(inference.is_quantized(model, i), pm, pv, key, i, t)
            z = jnp.where(keep[i], given[i], drawn)
        feature = model.tail(model.fuse_step(model.num_latents - 1, feature, z, emb), emb)
        return numerics.process_output(_output_draw(model, feature, key, t))

    def prior_means(state, lmb, n, h, w):
        model = nnx.merge(graphdef, state)
        emb = model.embed(lmb)
        feature = model.initial_feature(n, h, w)
        pms = []
        for i in range(model.num_latents):
            feature, pm, _ = model.prior_step(i, feature, emb)
            pms.append(pm)
            feature = model.fuse_step(i, feature, pm, emb)
        return tuple(pms)

    return _Passes(jax.jit(decode, static_argnums=(6,)), prior_means)


# ------------------------------------------------------------------------------------------------
# The model wrapper
# ------------------------------------------------------------------------------------------------


def _require_key(key, what: str):
    if key is None:
        raise GenerativeError(f"{what} is random: pass a PRNG key (jax.random.key(seed))")
    return key


class GenerativeModel:
    """A :class:`~lvae_jax.models.HierarchicalVAE` split once (``nnx.split``), with its jitted
    generative passes. Build it once per model and reuse it: the compiled passes are cached.

    Attributes: ``config``, ``family`` (``qres``/``qarv``/``rd``), ``num_latents``, ``lossless``,
    ``stride`` (64: image sizes must be multiples of it).
    """

    def __init__(self, model):
        self.config = model.config
        self.family = model.config.family
        self.num_latents = model.num_latents
        self.lossless = model.lossless
        self.stride = model.config.max_stride
        self.graphdef, self.state = nnx.split(model)
        self._p = _passes(self.graphdef)
        self._shapes: dict = {}

    @property
    def name(self) -> str:
        return self.config.name

    # -- validation ------------------------------------------------------------------------------

    def lmb_array(self, lmb, n: int):
        """λ as an (N,) float32 device array (variable-rate models; default: the model's highest,
        the official ``default_lmb``), or None for QRes — checked by
        :func:`lvae_jax.models.lambdas.lmb_vector`. Raises :class:`GenerativeError`."""
        cfg = self.config
        if cfg.variable_rate and lmb is None:
            lmb = cfg.default_lmb
        try:
            values = lambdas.lmb_vector(cfg, lmb, n)
        except lambdas.LambdaError as e:
            raise GenerativeError(str(e)) from None
        return None if values is None else jnp.asarray(values)

    def check_images(self, im) -> jax.Array:
        """(N, H, W, 3) or (H, W, 3) float in [0, 1], H and W multiples of the stride ->
        (N, H, W, 3) float32 device array."""
        a = np.asarray(im)
        if a.ndim == 3:
            a = a[None]
        if a.ndim != 4 or a.shape[-1] != 3:
            raise GenerativeError(f"expected (N, H, W, 3) or (H, W, 3) RGB images, got shape {a.shape}")
        if a.dtype == np.uint8:
            raise GenerativeError("expected float images in [0, 1], got uint8 "
                                  "(convert with lvae_jax.image.to_float)")
        n, h, w, _ = a.shape
        if n < 1 or h < self.stride or w < self.stride or h % self.stride or w % self.stride:
            raise GenerativeError(f"image size {h}x{w} is not a positive multiple of {self.stride}; "
                                  "pad it first (lvae_jax.image.pad_to_multiple)")
        a = a.astype(np.float32, copy=False)
        if not np.all(np.isfinite(a)) or a.min() < 0.0 or a.max() > 1.0:
            raise GenerativeError("image values must lie in [0, 1]")
        return jnp.asarray(a)

    @staticmethod
    def _temperature(t) -> jax.Array:
        try:
            return jnp.float32(numerics.check_temperature(t))
        except ValueError as e:
            raise GenerativeError(str(e)) from None

    # -- passes ----------------------------------------------------------------------------------

    def infer(self, im, lmb=None, key=None) -> Inference:
        """Latents of images, eval mode (official ``forward_get_latents``). ``im``: (N, H, W, 3)
        in [0, 1]. rd_model_base draws its latents from the posterior and needs ``key``; the
        other models ignore it."""
        x = self.check_images(im)
        lmb_arr = self.lmb_array(lmb, x.shape[0])
        if self.family == "rd":
            key = _require_key(key, "rd_model_base's posterior (it samples z even in eval mode)")
        elif key is None:
            key = jax.random.key(0)   # unused by QRes/QARV in eval mode
        out = inference.eval_pass(self.graphdef)(self.state, x, lmb_arr, key)
        return Inference(out.latents, out.rates, out.recon)

    def latent_shapes(self, n: int, h: int, w: int) -> tuple:
        """Shapes ``(N, h_i, w_i, zdim_i)`` of every latent for a latent grid (h, w) = image/64."""
        k = (n, h, w)
        if k not in self._shapes:
            lmb = None if not self.config.variable_rate else jnp.ones((n,), jnp.float32)
            fn = functools.partial(self._p.prior_means, n=n, h=h, w=w)
            out = jax.eval_shape(fn, self.state, lmb)
            self._shapes[k] = tuple(tuple(s.shape) for s in out)
        return self._shapes[k]

    def decode(self, n: int, h: int, w: int, *, latents: Sequence | None = None,
               keep: Sequence | None = None, temperature: float = 1.0, key=None,
               lmb=None) -> jax.Array:
        """Top-down decoding with some latents given and the rest drawn from the prior.

        ``(n, h, w)``: batch and latent grid (image size / 64). ``latents[i]``: (N, h_i, w_i, zdim)
        or None (drawn). ``keep[i]``: where to use the given latent — None (everywhere, if
        given) or a boolean array broadcastable to (N, h_i, w_i, 1); elsewhere latent i is drawn
        from its prior at ``temperature``. The lossless model samples its pixels at
        ``temperature`` too. ``key`` is needed unless ``temperature == 0``. Returns images
        (N, 64h, 64w, 3) in [0, 1].

        One compiled program per (n, h, w) serves every choice of given latents and masks.
        """
        t = self._temperature(temperature)
        if float(t) > 0:
            key = _require_key(key, f"decoding at temperature {float(t):g}")
        elif key is None:
            key = jax.random.key(0)   # the draws are multiplied by t = 0 and discarded
        shapes = self.latent_shapes(n, h, w)
        L = self.num_latents
        latents = list(latents) if latents is not None else [None] * L
        keep = list(keep) if keep is not None else [None] * L
        if len(latents) != L or len(keep) != L:
            raise GenerativeError(f"{self.name} has {L} latents; got {len(latents)} latents and "
                                  f"{len(keep)} masks")
        given, masks = [], []
        for i, (z, m, shape) in enumerate(zip(latents, keep, shapes)):
            if z is None:
                given.append(jnp.zeros(shape, jnp.float32))
                masks.append(jnp.zeros(shape[:3] + (1,), bool))
                continue
            z = jnp.asarray(z, jnp.float32)
            if tuple(z.shape) != shape:
                raise GenerativeError(f"latent {i} has shape {tuple(z.shape)}, expected {shape}")
            given.append(z)
            m = np.ones((1, 1, 1, 1), bool) if m is None else np.asarray(m, bool)
            try:
                m = np.broadcast_to(m, shape[:3] + (1,))
            except ValueError:
                raise GenerativeError(f"mask {i} of shape {m.shape} does not broadcast to "
                                      f"{shape[:3] + (1,)}") from None
            masks.append(jnp.asarray(m))
        return self._p.decode(self.state, tuple(given), tuple(masks), key, t,
                              self.lmb_array(lmb, n), (n, h, w))

    def grid_of(self, im) -> tuple[int, int, int]:
        n, h, w = np.shape(im)[:3]
        return n, h // self.stride, w // self.stride


def as_generative(model) -> GenerativeModel:
    """A :class:`GenerativeModel` from a HierarchicalVAE (or the same object if already one)."""
    return model if isinstance(model, GenerativeModel) else GenerativeModel(model)


# ------------------------------------------------------------------------------------------------
# Public functions
# ------------------------------------------------------------------------------------------------


def sample(model, key, n: int, h: int = 1, w: int = 1, *, lmb=None,
           temperature: float = 1.0) -> jax.Array:
    """Unconditional samples (official ``uncond_sample(nhw_repeat=(n, h, w), temprature=t)`` /
    ``unconditional_sample(lmb, bhw_repeat=(n, h, w), t)``).

    ``h, w``: latent grid, i.e. image size / 64 (1, 1 -> 64×64 images). ``lmb``: λ for
    variable-rate models (default: the model's highest). Returns (n, 64h, 64w, 3) in [0, 1].
    """
    gm = as_generative(model)
    if min(n, h, w) < 1:
        raise GenerativeError(f"n, h, w must be >= 1, got {(n, h, w)}")
    return gm.decode(n, h, w, temperature=temperature, key=key, lmb=lmb)


def decode_with_latents(model, latents: Sequence, *, key=None, temperature: float = 0.0,
                        lmb=None, keep: Sequence | None = None) -> jax.Array:
    """Decode given latents (official ``cond_sample(latents, temprature=t)`` /
    ``conditional_sample``). ``latents``: one (N, h_i, w_i, zdim) array or None per latent block;
    the first must be given (it fixes the batch and grid). None entries are drawn from the prior
    at ``temperature``; the lossless head samples pixels at ``temperature`` (0: the mean)."""
    gm = as_generative(model)
    if not latents or latents[0] is None:
        raise GenerativeError("the first latent must be given (it sets the batch and the grid); "
                              "use sample() for unconditional samples")
    n, h, w = np.shape(latents[0])[:3]
    return gm.decode(n, h, w, latents=latents, keep=keep, temperature=temperature, key=key, lmb=lmb)


def decode_prefix(model, prefix: Sequence, n: int, h: int, w: int, *, temperature: float = 0.0,
                  key=None, lmb=None) -> jax.Array:
    """Decode with the first ``k = len(prefix)`` latents given and the rest at the prior mean
    (``temperature = 0``, the progressive-decoding notebook) or drawn at ``temperature``.

    ``prefix``: the first k latents, e.g. decoded from the first k parts of a bitstream.
    ``(n, h, w)``: batch and latent grid. Returns (n, 64h, 64w, 3) in [0, 1]."""
    gm = as_generative(model)
    k = len(prefix)
    if k > gm.num_latents:
        raise GenerativeError(f"{gm.name} has {gm.num_latents} latents; got {k}")
    latents = list(prefix) + [None] * (gm.num_latents - k)
    return gm.decode(n, h, w, latents=latents, temperature=temperature, key=key, lmb=lmb)


class ProgressiveResult(NamedTuple):
    """``frames``: (K, N, H, W, 3) one decoding per k in ``ks``; ``ks``: number of latents taken
    from the image per frame; ``bpp``: (K, N) bits per pixel of those latents (padded H·W,
    the notebook's rule); ``inference``: the image's latents."""
    frames: np.ndarray
    ks: tuple
    bpp: np.ndarray
    inference: Inference


def progressive(model, im, *, ks: Sequence[int] | None = None, temperature: float = 0.0,
                key=None, lmb=None) -> ProgressiveResult:
    """Coarse-to-fine decodings of images (official ``progressive-decoding.ipynb``): for each k,
    keep the first k latents of the image (eval-mode posterior, quantised for QRes/QARV) and take
    the rest at the prior mean (``temperature = 0``) or drawn at ``temperature``.

    ``im``: (N, H, W, 3) in [0, 1], H and W multiples of 64. ``ks``: default ``0..L`` (the
    notebook shows ``1..L``; k = 0 is the pure prior-mean image). The frame for k = L is the
    eval reconstruction. rd_model_base needs ``key`` (its posterior is a draw)."""
    gm = as_generative(model)
    x = gm.check_images(im)
    ks = tuple(range(gm.num_latents + 1)) if ks is None else tuple(int(k) for k in ks)
    for k in ks:
        if not 0 <= k <= gm.num_latents:
            raise GenerativeError(f"k = {k} is outside 0..{gm.num_latents}")
    k_post = k_dec = None
    if key is not None:
        k_post, k_dec = jax.random.split(key)
    inf = gm.infer(x, lmb, k_post)
    n, h, w = gm.grid_of(x)
    frames, bpps = [], []
    for k in ks:
        frames.append(np.asarray(decode_prefix(gm, inf.latents[:k], n, h, w,
                                               temperature=temperature,
                                               key=None if k_dec is None else jax.random.fold_in(k_dec, k),
                                               lmb=lmb)))
        bpps.append(inf.bpp(upto=k))
    return ProgressiveResult(np.stack(frames), ks, np.stack(bpps), inf)
