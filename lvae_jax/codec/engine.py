"""Device side of the codec: the jitted passes that feed CompressAI's range coder.

Encoding is one jitted pass over a batch: for every latent block the symbols
``round(qm − pm)`` and the coder table indexes of the prior scales (and, for the lossless model,
the pixel symbols and indexes). Decoding is sequential: per latent block one jitted step
(fuse the previous latent, run the decoder to the next prior) and host decoding of its symbols.

All arrays crossing to the host are NHWC; :func:`to_coder_order` flattens them per image in the
official NCHW (C, H, W) order, which the bitstreams depend on.

The model is split once (``nnx.split``) and every pass is a plain ``jax.jit`` over the state,
compiled once per image size and cached.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lvae_jax import numerics
from lvae_jax.entropy import tables as T
from lvae_jax.models import inference

#: Which scale table each model family's latents use (the official update() of each block).
LATENT_TABLE = {"qres": "qres_latent", "qarv": "qarv_latent"}
PIXEL_TABLE = "lossless_pixel"


class CodecUnsupported(ValueError):
    """The model has no entropy coder (rd_model_base)."""


class EncodedLatents(NamedTuple):
    """Host arrays of one encoding pass. ``symbols[i]``/``indexes[i]``: int32 (N, h, w, C) per
    latent; ``pixel_symbols``/``pixel_indexes``: (N, H, W, 3) for the lossless model, else None;
    ``at_risk``: (N,) int32, per image the latent elements whose prior scale lies within a relative
    ``near_boundary`` of a table threshold (another float path may pick the other index there)."""
    symbols: list
    indexes: list
    pixel_symbols: np.ndarray | None
    pixel_indexes: np.ndarray | None
    at_risk: np.ndarray | None = None
    #: raw prior scales per latent (N, h, w, C) float32, and the lossless pixel scales
    scales: list | None = None
    pixel_scales: np.ndarray | None = None
    #: lossless: the raw pixel means in 8-bit units before rounding, ``pm·127.5 + 127.5``
    #: (N, H, W, 3) float32 (:func:`_pixel_codec_inputs`)
    pixel_levels: np.ndarray | None = None


def to_coder_order(a: np.ndarray, dtype=np.int32) -> np.ndarray:
    """(h, w, C) of one image -> flat ``dtype`` (int32 symbols and indexes, float32 scales) in the
    official (C, h, w) order."""
    return np.ascontiguousarray(np.asarray(a).transpose(2, 0, 1), dtype=dtype).reshape(-1)


def from_coder_order(flat: np.ndarray, shape_hwc) -> np.ndarray:
    """Inverse of :func:`to_coder_order`: flat (C·h·w,) -> (h, w, C)."""
    h, w, c = shape_hwc
    return np.asarray(flat).reshape(c, h, w).transpose(1, 2, 0)


def _pixel_codec_inputs(model, feature):
    """The lossless head's coding parameters (official ``GaussianNLLOutputNet._preapre_codec``):
    the mean is snapped to the 8-bit grid, ``round(pm·127.5 + 127.5)/127.5 − 1``, and mean and
    log-scale are rescaled to units of one pixel bin (1/127.5); the log-scale is used *without*
    the training-time softplus bound. Returns (mean, scale) in bin units and the raw level
    ``pm·127.5 + 127.5`` before rounding (float32; what a decoder with other floats may round to
    the other side of a half-integer, :mod:`lvae_jax.entropy.hints`)."""
    pm = model.head.conv_mean(feature)
    level = pm * 127.5 + 127.5
    pm = jnp.round(level) / 127.5 - 1.0
    plogv = model.head.conv_scale(feature)
    return (pm / numerics.PIXEL_BIN_SIZE, jnp.exp(plogv - math.log(numerics.PIXEL_BIN_SIZE)),
            level)


class CodecEngine:
    """Jitted encode/decode passes of one model. ``model``: a loaded
    :class:`~lvae_jax.models.HierarchicalVAE` (QRes or QARV)."""

    def __init__(self, model, near_boundary: float = 1e-5):
        cfg = model.config
        self.near_boundary = float(near_boundary)
        if cfg.family not in LATENT_TABLE:
            raise CodecUnsupported(f"{cfg.name} ({cfg.family}) has no entropy coder: it estimates R(D) "
                                   "and samples its latents; use qres34m, qres17m, qres34m_lossless or qarv_base")
        self.model = model
        self.config = cfg
        self.graphdef, self.state = nnx.split(model)
        self.latent_tables = T.get_tables(LATENT_TABLE[cfg.family])
        self.pixel_tables = T.get_tables(PIXEL_TABLE) if model.lossless else None
        self.num_latents = model.num_latents
        self._encode = jax.jit(self._encode_impl)
        self._steps: dict = {}

    # -- encoding -----------------------------------------------------------------------------

    def _encode_impl(self, state, im, lmb):
        model = nnx.merge(self.graphdef, state)
        n, h, w, _ = im.shape
        s = self.config.max_stride
        lmb_arr = model.lmb_array(lmb, n)
        emb = model.embed(lmb_arr)
        enc = model.encode(numerics.preprocess_input(im, self.config.im_shift, self.config.im_scale), emb)
        feature = model.initial_feature(n, h // s, w // s)
        table = jnp.asarray(self.latent_tables.scale_table)
        bound = self.latent_tables.bound
        symbols, indexes, scales = [], [], []
        at_risk = jnp.zeros((n,), jnp.int32)
        for i in range(self.num_latents):
            feature, pm, pv = model.prior_step(i, feature, emb)
            qm, _ = model.posterior(i, feature, enc, emb)
            sym = numerics.quantize_symbols(qm, pm)
            symbols.append(sym)
            indexes.append(T.build_indexes_jnp(pv, table, bound))
            scales.append(pv)
            # a threshold within ±near_boundary (relative) of the scale: the index is at risk
            lo = T.build_indexes_jnp(pv * (1.0 - self.near_boundary), table, bound)
            hi = T.build_indexes_jnp(pv * (1.0 + self.near_boundary), table, bound)
            at_risk = at_risk + jnp.sum(lo != hi, axis=(1, 2, 3), dtype=jnp.int32)
            feature = model.fuse_step(i, feature, sym.astype(jnp.float32) + pm, emb)
        pix_sym = pix_idx = pix_scale = pix_level = None
        if model.lossless:
            feature = model.tail(feature, emb)
            mean, scale, pix_level = _pixel_codec_inputs(model, feature)
            x = numerics.preprocess_target(im) / numerics.PIXEL_BIN_SIZE
            pix_sym = numerics.quantize_symbols(x, mean)
            pix_idx = T.build_indexes_jnp(scale, jnp.asarray(self.pixel_tables.scale_table),
                                          self.pixel_tables.bound)
            pix_scale = scale
        return symbols, indexes, pix_sym, pix_idx, at_risk, scales, pix_scale, pix_level

    def encode(self, im: np.ndarray, lmb=None) -> EncodedLatents:
        """One device pass. im: (N, H, W, 3) float32 in [0, 1], H, W multiples of 64."""
        out = self._encode(self.state, jnp.asarray(im, jnp.float32), lmb)
        symbols, indexes, ps, pi, risk, scales, pscale, plevel = jax.device_get(out)
        opt = lambda a: None if a is None else np.asarray(a)  # noqa: E731
        return EncodedLatents([np.asarray(x) for x in symbols], [np.asarray(x) for x in indexes],
                              opt(ps), opt(pi), np.asarray(risk), [np.asarray(x) for x in scales],
                              opt(pscale), opt(plevel))

    # -- decoding -----------------------------------------------------------------------------

    def _step(self, i: int):
        """Jitted step i: fuse latent i−1 (if any), run to the prior of latent i.
        -> (feature, pm, pv, indexes)."""
        if i not in self._steps:
            table = jnp.asarray(self.latent_tables.scale_table)
            bound = self.latent_tables.bound

            def step(state, feature, z_prev, emb):
                model = nnx.merge(self.graphdef, state)
                feature, pm, pv = inference.decode_step(model, i, feature, z_prev, emb)
                return feature, pm, pv, T.build_indexes_jnp(pv, table, bound)

            self._steps[i] = jax.jit(step)
        return self._steps[i]

    def _final(self):
        """Jitted last step: fuse the last latent, run the tail. Lossy: -> image in [0, 1];
        lossless: -> (pixel mean, pixel scale, pixel indexes) in bin units, raw pixel levels."""
        if "final" not in self._steps:
            last = self.num_latents - 1

            def final(state, feature, z_last, emb):
                model = nnx.merge(self.graphdef, state)
                feature = model.tail(model.fuse_step(last, feature, z_last, emb), emb)
                if model.lossless:
                    mean, scale, level = _pixel_codec_inputs(model, feature)
                    idx = T.build_indexes_jnp(scale, jnp.asarray(self.pixel_tables.scale_table),
                                              self.pixel_tables.bound)
                    return mean, scale, idx, level
                return numerics.process_output(model.mean_output(feature)), None, None, None

            self._steps["final"] = jax.jit(final)
        return self._steps["final"]

    def _embed(self, lmb, n):
        """The λ embedding (N, embed_dim) of a variable-rate model, or None."""
        if not self.config.variable_rate:
            return None
        key = ("embed", n)
        if key not in self._steps:
            def embed(state, lmb):
                model = nnx.merge(self.graphdef, state)
                return model.embed(model.lmb_array(lmb, n))
            self._steps[key] = jax.jit(embed)
        return self._steps[key](self.state, lmb)

    def decode(self, latent_grid: tuple[int, int, int], lmb, decode_latent,
               decode_pixels=None) -> np.ndarray:
        """Sequential decoding.

        ``latent_grid``: (N, h, w) of the first latent (image size / 64).
        ``decode_latent(i, pm, pv, indexes) -> z``: host callback deciding latent i from its
        prior (decode its symbols and return ``symbols + pm``, or take the mean, or sample).
        Returns images (N, H, W, 3) in [0, 1]; lossless: ``decode_pixels(mean, scale, indexes,
        levels)`` receives the pixel head's mean, scale and indexes (bin units) and the raw levels
        before rounding (:func:`_pixel_codec_inputs`), and returns the image in [0, 1].
        """
        n, h, w = latent_grid
        emb = self._embed(jnp.float32(lmb) if lmb is not None else None, n)
        model = nnx.merge(self.graphdef, self.state)
        feature = model.initial_feature(n, h, w)
        z = None
        for i in range(self.num_latents):
            feature, pm, pv, idx = self._step(i)(self.state, feature, z, emb)
            pm_h, pv_h, idx_h = jax.device_get((pm, pv, idx))
            z = jnp.asarray(decode_latent(i, np.asarray(pm_h), np.asarray(pv_h), np.asarray(idx_h)),
                            jnp.float32)
        out, scale, idx, level = self._final()(self.state, feature, z, emb)
        if self.model.lossless:
            if decode_pixels is None:
                raise ValueError("decoding the lossless model needs decode_pixels")
            mean, scale, idx, level = jax.device_get((out, scale, idx, level))
            return decode_pixels(np.asarray(mean), np.asarray(scale), np.asarray(idx),
                                 np.asarray(level))
        return np.asarray(jax.device_get(out))
