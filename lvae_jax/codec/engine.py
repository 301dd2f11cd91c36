"""Device side of the codec: the jitted passes that feed CompressAI's range coder.

Encoding is one pass over a batch: for every latent block the symbols ``round(qm − pm)`` and the
coder table indexes of the prior scales (and, for the lossless model, the pixel symbols and
indexes). Decoding is sequential: per latent block, fuse the previous latent, run the decoder to
the next prior, and decode its symbols on the host.

All arrays crossing to the host are NHWC; :func:`to_coder_order` flattens them per image in the
official NCHW (C, H, W) order, which the bitstreams depend on.

The encoding pass is one jitted program per image size (run by
:data:`~lvae_jax.models.runners.DIRECT`). The decoder runs block by block
(:class:`~lvae_jax.models.piecewise.Piecewise`): one compiled executable per distinct block
structure and input shape, the weights as arguments, compiled on a thread pool before the first
image of a size — a first decode compiles far less than one program per latent step would, and
the encoder stays whole because XLA runs it faster that way (figures: docs/benchmarks.md).

The engine is given its coder tables (:func:`lvae_jax.entropy.tables.tables_for`) by the
:class:`~lvae_jax.codec.core.StringCoder` that owns them.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lvae_jax import numerics
from lvae_jax.entropy import tables as T
from lvae_jax.models import inference
from lvae_jax.models.piecewise import Piecewise
from lvae_jax.models.runners import DIRECT


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
    #: (N, H, W, 3) float32 (:meth:`lvae_jax.models.vae.NLLHead.codec_inputs`)
    pixel_levels: np.ndarray | None = None


def to_coder_order(a: np.ndarray, dtype=np.int32) -> np.ndarray:
    """(h, w, C) of one image -> flat ``dtype`` (int32 symbols and indexes, float32 scales) in the
    official (C, h, w) order."""
    return np.ascontiguousarray(np.asarray(a).transpose(2, 0, 1), dtype=dtype).reshape(-1)


def from_coder_order(flat: np.ndarray, shape_hwc) -> np.ndarray:
    """Inverse of :func:`to_coder_order`: flat (C·h·w,) -> (h, w, C)."""
    h, w, c = shape_hwc
    return np.asarray(flat).reshape(c, h, w).transpose(1, 2, 0)


def _latent_symbols(pm, pv, qm, table, *, bound: int, near_boundary: float):
    """Encoder side of one latent: symbols ``round(qm − pm)``, the table indexes of the prior
    scales, the count per image of elements whose scale lies within a relative ``near_boundary``
    of a table threshold (another float path may pick the other index there), and the latent
    the decoder will see, ``symbols + pm``."""
    sym = numerics.quantize_symbols(qm, pm)
    idx = T.build_indexes_jnp(pv, table, bound)
    lo = T.build_indexes_jnp(pv * (1.0 - near_boundary), table, bound)
    hi = T.build_indexes_jnp(pv * (1.0 + near_boundary), table, bound)
    at_risk = jnp.sum(lo != hi, axis=(1, 2, 3), dtype=jnp.int32)
    return sym, idx, at_risk, sym.astype(jnp.float32) + pm


def _indexes(scale, table, *, bound: int):
    return T.build_indexes_jnp(scale, table, bound)


def _pixel_symbols(im, mean):
    """Lossless: the pixel symbols ``round(x − mean)`` in bin units."""
    return numerics.quantize_symbols(numerics.preprocess_target(im) / numerics.PIXEL_BIN_SIZE, mean)


@functools.lru_cache(maxsize=None)
def _jitted(fn, **static):
    """``jax.jit(fn)`` with its static keyword arguments bound, one per (fn, values)."""
    return jax.jit(functools.partial(fn, **static))


def check_codable(config) -> None:
    """Raise :class:`CodecUnsupported` for a model without an entropy coder (rd_model_base)."""
    if config.family not in T.LATENT_TABLE:
        raise CodecUnsupported(f"{config.name} ({config.family}) has no entropy coder: it estimates "
                               "R(D) and samples its latents; use qres34m, qres17m, "
                               "qres34m_lossless or qarv_base")


class CodecEngine:
    """Encode/decode passes of one model: encoding one jitted program per image size, decoding
    block by block (:mod:`lvae_jax.models.piecewise`). ``model``: a loaded
    :class:`~lvae_jax.models.HierarchicalVAE` (QRes or QARV); ``latent_tables`` /
    ``pixel_tables``: its coder tables (the pixel tables for the lossless model);
    ``near_boundary``: the relative band around a table threshold counted as at risk;
    ``precision``: the matmul precision of the passes (:data:`lvae_jax.numerics.CODEC_PRECISION`
    unless a benchmark measures another — files coded otherwise may not decode elsewhere)."""

    def __init__(self, model, latent_tables, pixel_tables=None, *,
                 near_boundary: float = T.NEAR_BOUNDARY,
                 precision: str = numerics.CODEC_PRECISION):
        cfg = model.config
        check_codable(cfg)
        self.near_boundary, self.precision = float(near_boundary), precision
        self.model = model
        self.config = cfg
        self.graphdef, self.state = nnx.split(model)
        self.pieces = Piecewise(model)
        self.latent_tables, self.pixel_tables = latent_tables, pixel_tables
        self._latent_table = jnp.asarray(self.latent_tables.scale_table)
        # the decoder's small functions, run (and warmed) like its blocks
        self._latent_indexes = _jitted(_indexes, bound=self.latent_tables.bound)
        if model.lossless:
            self._pixel_table = jnp.asarray(self.pixel_tables.scale_table)
            self._pixel_indexes = _jitted(_indexes, bound=self.pixel_tables.bound)
        else:
            self._output = _jitted(numerics.process_output)
        self.num_latents = model.num_latents
        self._warmed: set = set()
        # The encoding pass is one program per image size: XLA runs it faster whole than block
        # by block, for about the same compile time (docs/benchmarks.md).
        graphdef = self.graphdef
        self._encode = jax.jit(lambda state, im, lmb: self._encode_pass(
            nnx.merge(graphdef, state), im, lmb))

    def _warm(self, key, run):
        """Compile what ``run()`` needs, in parallel, once per ``key`` (pass and shape)."""
        if key not in self._warmed:
            self.pieces.warm(run)
            self._warmed.add(key)

    def _embed(self, model, run, lmb, n):
        """The λ embedding (N, embed_dim) of a variable-rate model, or None."""
        if not self.config.variable_rate:
            return None
        return model.embed(model.lmb_array(lmb, n), run)

    def _pixel_head(self, model, run, feature):
        """Lossless head: (mean, scale, indexes) in bin units and the raw levels
        (:meth:`lvae_jax.models.vae.NLLHead.codec_inputs`)."""
        mean, scale, level = run(model.head, "codec_inputs", feature)
        return mean, scale, run.call(self._pixel_indexes, scale, self._pixel_table), level

    # -- encoding -----------------------------------------------------------------------------

    def _encode_pass(self, model, im, lmb):
        """The device side of :meth:`encode`, traced as one program: (symbols, indexes, scales,
        at-risk counts per latent; the lossless pixel symbols, indexes, scales and levels or
        Nones)."""
        cfg, run = self.config, DIRECT
        n, h, w, _ = im.shape
        s = cfg.max_stride
        emb = self._embed(model, run, lmb, n)
        enc = model.encode(numerics.preprocess_input(im, cfg.im_shift, cfg.im_scale), emb)
        feature = model.initial_feature(n, h // s, w // s)
        symbols, indexes, scales, risks = [], [], [], []
        for i in range(self.num_latents):
            feature, pm, pv = model.prior_step(i, feature, emb)
            qm, _ = model.posterior(i, feature, enc, emb)
            sym, idx, risk, z = _latent_symbols(pm, pv, qm, self._latent_table,
                                                bound=self.latent_tables.bound,
                                                near_boundary=self.near_boundary)
            symbols.append(sym)
            indexes.append(idx)
            scales.append(pv)
            risks.append(risk)
            feature = model.fuse_step(i, feature, z, emb)
        pixel = (None,) * 4
        if model.lossless:
            mean, scale, idx, level = self._pixel_head(model, run, model.tail(feature, emb))
            pixel = (_pixel_symbols(im, mean), idx, scale, level)
        return symbols, indexes, scales, risks, pixel

    def encode(self, im: np.ndarray, lmb=None) -> EncodedLatents:
        """One pass over a batch. im: (N, H, W, 3) float32 in [0, 1], H, W multiples of 64."""
        with jax.default_matmul_precision(self.precision):
            out = self._encode(self.state, jnp.asarray(im, jnp.float32), lmb)
        symbols, indexes, scales, risks, pixel = jax.device_get(out)
        opt = lambda a: None if a is None else np.asarray(a)  # noqa: E731
        pix_sym, pix_idx, pix_scale, pix_level = (opt(a) for a in pixel)
        return EncodedLatents([np.asarray(x) for x in symbols], [np.asarray(x) for x in indexes],
                              pix_sym, pix_idx, np.sum(risks, axis=0, dtype=np.int32),
                              [np.asarray(x) for x in scales], pix_scale, pix_level)

    # -- decoding -----------------------------------------------------------------------------

    def _decode_pass(self, latent_grid, lmb, choose):
        """The device side of :meth:`decode`; ``choose(i, pm, pv, indexes) -> z`` (device arrays
        in, a device array out). -> the image in [0, 1], or the lossless pixel head's outputs."""
        model, run = self.model, self.pieces
        n, h, w = latent_grid
        emb = self._embed(model, run, lmb, n)
        feature = model.initial_feature(n, h, w)
        z = None
        for i in range(self.num_latents):
            feature, pm, pv = inference.decode_step(model, i, feature, z, emb, run)
            z = choose(i, pm, pv, run.call(self._latent_indexes, pv, self._latent_table))
        feature = model.tail(model.fuse_step(self.num_latents - 1, feature, z, emb, run), emb, run)
        if model.lossless:
            return self._pixel_head(model, run, feature)
        return run.call(self._output, model.mean_output(feature, run))

    def decode(self, latent_grid: tuple[int, int, int], lmb, decode_latent,
               decode_pixels=None) -> np.ndarray:
        """Sequential decoding.

        ``latent_grid``: (N, h, w) of the first latent (image size / 64).
        ``decode_latent(i, pm, pv, indexes) -> z``: host callback deciding latent i from its
        prior (decode its symbols and return ``symbols + pm``, or take the mean, or sample).
        Returns images (N, H, W, 3) in [0, 1]; lossless: ``decode_pixels(mean, scale, indexes,
        levels)`` receives the pixel head's mean, scale and indexes (bin units) and the raw levels
        before rounding (:meth:`lvae_jax.models.vae.NLLHead.codec_inputs`), and returns the image
        in [0, 1].
        """
        if self.model.lossless and decode_pixels is None:
            raise ValueError("decoding the lossless model needs decode_pixels")
        lmb = jnp.float32(lmb) if lmb is not None else None
        grid = tuple(int(v) for v in latent_grid)
        def host(i, pm, pv, idx):
            pm, pv, idx = (np.asarray(a) for a in jax.device_get((pm, pv, idx)))
            return jnp.asarray(decode_latent(i, pm, pv, idx), jnp.float32)

        with jax.default_matmul_precision(self.precision):
            # the plan: the same pass with the prior mean standing in for each decoded latent
            self._warm(("decode", grid, lmb is None),
                       lambda: self._decode_pass(grid, lmb, lambda i, pm, pv, idx: pm))
            out = jax.device_get(self._decode_pass(grid, lmb, host))
        if self.model.lossless:
            return decode_pixels(*(np.asarray(a) for a in out))
        return np.asarray(out)
