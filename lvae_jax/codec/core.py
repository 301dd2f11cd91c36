"""Images <-> per-latent byte strings: the device passes of :mod:`~lvae_jax.codec.engine` joined
with CompressAI's range coder on host.

This layer knows nothing about files: :mod:`lvae_jax.codec.api` adds padding, the container and
the official layouts. Strings are exactly the official ones: latent i of image n is the rANS
coding of ``round(qm − pm)`` in (C, h, w) order with the table indexes of its prior scales.
"""

from __future__ import annotations

import functools
import itertools
import time
from dataclasses import dataclass, field

import jax
import numpy as np

from lvae_jax import numerics
from lvae_jax.codec.engine import CodecEngine, from_coder_order, to_coder_order
from lvae_jax.entropy import coder, hints
from lvae_jax.entropy.coder import BitstreamError, symbols_crc
from lvae_jax.limits import check_image_size
from lvae_jax.models import inference, lambdas

#: Relative distance of a prior scale to a table threshold below which its index may differ
#: between two correct float32 implementations (see docs/cross_implementation.md).
NEAR_BOUNDARY = 1e-5
#: Single and pairwise index flips tried per latent before giving up.
MAX_FLIP_TRIALS = 256
#: Near-boundary scales beyond this share of a latent block (at least :data:`MIN_FLIP_CANDIDATES`)
#: are not cross-implementation flips (about 3e-4 of the elements of a 512² image are,
#: docs/cross_implementation.md) but a forged or foreign file: an error, before any trial.
MAX_FLIP_CANDIDATE_SHARE = 2e-3
MIN_FLIP_CANDIDATES = 256
#: Wall-clock bound of one block's flip search (seconds).
MAX_FLIP_SECONDS = 20.0


@dataclass
class DecodeReport:
    """What robust decoding noticed. ``flips``: (string, number of indexes flipped, largest
    relative distance to the boundary); ``at_risk``: string -> number of prior scales within
    :data:`NEAR_BOUNDARY` of a table boundary in strings decoded without a symbol checksum."""
    flips: list = field(default_factory=list)
    at_risk: dict = field(default_factory=dict)
    #: (string, number of indexes set from the file's portable-index hints)
    hinted: list = field(default_factory=list)

    def notes(self) -> list[str]:
        out = [f"{what}: {n} table index(es) set from the file's portable-index hints (this "
               "decoder's floats put those prior scales on the other side of a table boundary)"
               for what, n in self.hinted]
        out += [f"{what}: {n} table index(es) at prior scales within {rel:.1e} of a table boundary were "
               "flipped to match the encoder (float differences between implementations or devices)"
               for what, n, rel in self.flips]
        if self.at_risk:
            total = sum(self.at_risk.values())
            out.append(f"{total} prior scale(s) in {len(self.at_risk)} string(s) lie within {NEAR_BOUNDARY:g} "
                       "of a table boundary; this file has no symbol checksums, so if it was written by "
                       "another implementation the symbols there may differ (docs/cross_implementation.md)")
        return out


@dataclass
class EncodedImage:
    """The strings of one image: one per latent block (decoding order) and, for the lossless
    model, the pixel string. ``grid``: (h, w) of the first latent = padded size / 64.
    ``symbol_crcs``: CRC32 of each string's symbols (latents, then pixels), when known — the
    decoder uses them to confirm (or recover) the encoder's table indexes."""
    latents: list
    pixels: bytes | None
    grid: tuple
    symbol_crcs: list | None = None
    #: latent elements whose prior scale lies within :data:`NEAR_BOUNDARY` of a table threshold
    #: (known after encoding): where a decoder with other floats may pick the other table.
    at_risk: int = 0
    #: portable-index hints (:mod:`lvae_jax.entropy.hints`): the structure's bytes and its bound
    #: exponent (δ = 2^-exp), or None (files without hints)
    hints: bytes | None = None
    hint_bound_exp: int | None = None
    #: lossless model: CRC32 of the (padded) 8-bit image the decoder must reproduce, or None
    image_crc: int | None = None
    #: the hints also hold the pixel levels' rounding sides (lossless; :mod:`lvae_jax.entropy.hints`)
    level_hints: bool = False


class Codec:
    """Compress and decompress (padded) images with one model.

    ``model``: a loaded QRes or QARV :class:`~lvae_jax.models.HierarchicalVAE`.
    """

    def __init__(self, model):
        self.engine = CodecEngine(model, NEAR_BOUNDARY)
        self.model = model
        self.config = model.config

    @property
    def num_latents(self) -> int:
        return self.engine.num_latents

    @functools.cached_property
    def model_id(self) -> bytes:
        """16-byte id of the model (config fingerprint + weights digest) that the container
        records: computed once — from the digest a loaded model carries
        (``model.weights_sha256``, verified when it was loaded), else by hashing the weights."""
        from lvae_jax.checkpoint.orbax_io import flat_params, weights_digest
        from lvae_jax.codec.container import model_id
        digest = getattr(self.model, "weights_sha256", None) or weights_digest(flat_params(self.model))
        return model_id(self.config.fingerprint(), digest)

    def check_lmb(self, lmb):
        """λ for a variable-rate model (required, within the trained range); None for QRes
        (:func:`lvae_jax.models.lambdas.check_lmb`)."""
        return lambdas.check_lmb(self.config, lmb)

    # -- encoding -------------------------------------------------------------------------------

    def encode(self, images: np.ndarray, lmb=None, hint_bound_exp: int | None = None) -> list[EncodedImage]:
        """images: (N, H, W, 3) float32 in [0, 1], H, W multiples of 64 -> one EncodedImage each.
        One device pass for the whole batch, then host range coding per image and latent.
        ``hint_bound_exp``: also build portable-index hints for decoders whose prior scales lie
        within 2^-exp (relative) of this encoder's, and whose lossless pixel means lie within
        2^-exp (absolute, [-1, 1] units) of this encoder's (:mod:`lvae_jax.entropy.hints`)."""
        lmb = self.check_lmb(lmb)
        n, h, w, _ = images.shape
        check_image_size(self.config, h, w, batch=n, what="encode")
        s = self.config.max_stride
        enc = self.engine.encode(images, lmb)
        lt = self.engine.latent_tables
        out = []
        for k in range(n):
            strings, crcs = [], []
            for sym, idx in zip(enc.symbols, enc.indexes):
                flat = to_coder_order(sym[k])
                strings.append(coder.encode(flat, to_coder_order(idx[k]), lt))
                crcs.append(symbols_crc(flat))
            pixels = None
            if enc.pixel_symbols is not None:
                flat = to_coder_order(enc.pixel_symbols[k])
                pixels = coder.encode(flat, to_coder_order(enc.pixel_indexes[k]), self.engine.pixel_tables)
                crcs.append(symbols_crc(flat))
            item = EncodedImage(strings, pixels, (h // s, w // s), crcs, int(enc.at_risk[k]))
            if pixels is not None:
                item.image_crc = image_crc(images[k])
            if hint_bound_exp is not None:
                parts = [(to_coder_order(sc[k], np.float32), lt) for sc in enc.scales]
                levels = None
                if enc.pixel_scales is not None:
                    parts.append((to_coder_order(enc.pixel_scales[k], np.float32),
                                  self.engine.pixel_tables))
                    if hint_bound_exp >= hints.LEVEL_MIN_EXP:
                        levels = to_coder_order(enc.pixel_levels[k], np.float32)
                item.hints, _ = hints.encode_hints(parts, hint_bound_exp, levels=levels)
                item.hint_bound_exp = int(hint_bound_exp)
                item.level_hints = levels is not None
            out.append(item)
        return out

    # -- decoding -------------------------------------------------------------------------------

    def decode(self, items: list[EncodedImage], lmb=None, *, num_blocks: int | None = None,
               temperature: float = 0.0, key: jax.Array | None = None, verify: bool = True,
               robust: bool = True, report: DecodeReport | None = None) -> np.ndarray:
        """Decode a batch of images of the same size. -> (N, H, W, 3) float32 in [0, 1].

        Progressive decoding: only the first ``num_blocks`` latents are read (default: all that
        each item has); the rest are the prior mean (``temperature`` 0) or drawn from the prior at
        ``temperature`` with ``key``. The lossless pixel string is used only when every latent was
        decoded; otherwise the pixel mean is returned.
        ``verify``: re-encode each decoded string and require the same bytes (catches corruption
        and wrong table indexes). ``robust``: on a failed verification, retry with the indexes of
        near-boundary prior scales flipped (:func:`decode_latent_robust`); what it notices goes
        to ``report``.
        """
        if not items:
            raise ValueError("nothing to decode")
        lmb = self.check_lmb(lmb)
        grid = items[0].grid
        if any(it.grid != grid for it in items):
            raise ValueError("a batch must hold images of one size")
        if len(grid) != 2 or min(grid) < 1:
            raise coder.BitstreamError(f"invalid latent grid {grid}")
        s = self.config.max_stride       # before anything of that size is allocated
        check_image_size(self.config, grid[0] * s, grid[1] * s, batch=len(items), what="bitstream")
        available = min(len(it.latents) for it in items)
        if available > self.num_latents:
            raise coder.BitstreamError(f"{available} latent strings but {self.config.name} has "
                                       f"{self.num_latents} latent blocks (wrong model?)")
        k = available if num_blocks is None else min(num_blocks, available)
        if k < 0:
            raise ValueError("num_blocks must be >= 0")
        if k < self.num_latents and temperature > 0 and key is None:
            raise ValueError("sampling the missing latents at temperature > 0 needs a PRNG key")
        lt = self.engine.latent_tables
        n = len(items)
        portable = [None if it.hints is None else hints.Retrieval(it.hints) for it in items]
        offsets = [0] * n                 # key of the next string's first element, per image

        def decode_latent(i, pm, pv, idx):
            if i < k:
                z = np.empty_like(pm)
                for j, it in enumerate(items):
                    what = f"latent block {i}" + (f" of image {j}" if n > 1 else "")
                    ij, sj = _perturbed(idx[j], pv[j], lt, i)
                    if portable[j] is not None:
                        sym = _decode_hinted(it.latents[i], portable[j], offsets[j], ij, sj, lt,
                                             it.hint_bound_exp, report, what, _crc_of(it, i))
                    elif robust:
                        sym = decode_latent_robust(it.latents[i], ij, sj, lt, report,
                                                   what, expected_crc=_crc_of(it, i))
                    else:
                        sym = coder.decode(it.latents[i], ij, lt, verify=verify)
                    z[j] = from_coder_order(sym, pm.shape[1:]).astype(np.float32) + pm[j]
                    offsets[j] += sj.size
                return z
            if temperature == 0:
                return pm
            return np.asarray(inference.prior_draw(True, pm, pv, key, i, np.float32(temperature)))

        def decode_pixels(mean, scale, idx, levels):
            return self._decode_pixels(items, mean, scale, idx, levels, full=(k == self.num_latents),
                                       verify=verify, robust=robust, report=report,
                                       portable=portable, offsets=offsets)

        out = self.engine.decode((n, *grid), lmb, decode_latent, decode_pixels)
        if self.model.lossless and k == self.num_latents:
            for j, it in enumerate(items):
                if it.image_crc is not None and image_crc(out[j]) != it.image_crc:
                    raise BitstreamError(
                        "the decoded image does not match the encoder's lossless checksum: this "
                        "decoder's float path rounds the pixel mean to the other 8-bit level at "
                        "some pixels (docs/cross_implementation.md) — the file is intact, but "
                        "this decode is not lossless")
        return out

    def _decode_pixels(self, items, mean, scale, idx, levels, full: bool, verify: bool,
                       robust: bool, report, portable=None, offsets=None):
        """Lossless head: pixel symbols + mean (in bins of 1/127.5) -> image, exactly like the
        official ``GaussianNLLOutputNet.decompress`` and ``process_output``. With level hints the
        mean's rounding is the encoder's (:func:`_rounded_means`)."""
        if not full or any(it.pixels is None for it in items):
            return numerics.process_output_host(mean * np.float32(numerics.PIXEL_BIN_SIZE))
        x = np.empty_like(mean)
        mean, levels = _perturbed_means(mean, levels)
        for j, it in enumerate(items):
            pt = self.engine.pixel_tables
            if it.level_hints and portable is not None and portable[j] is not None:
                mean[j] = _rounded_means(mean[j], levels[j], portable[j],
                                         offsets[j] + int(np.asarray(scale[j]).size),
                                         it.hint_bound_exp, report)
            ij, sj = _perturbed(idx[j], scale[j], pt, len(it.latents))
            if portable is not None and portable[j] is not None:
                sym = _decode_hinted(it.pixels, portable[j], offsets[j], ij, sj, pt,
                                     it.hint_bound_exp, report, "pixels",
                                     _crc_of(it, len(it.latents)))
            elif robust:
                sym = decode_latent_robust(it.pixels, ij, sj, pt, report,
                                           "pixels", expected_crc=_crc_of(it, len(it.latents)))
            else:
                sym = coder.decode(it.pixels, ij, pt, verify=verify)
            x[j] = (from_coder_order(sym, mean.shape[1:]).astype(np.float32) + mean[j]) * np.float32(
                numerics.PIXEL_BIN_SIZE)
        return numerics.process_output_host(x)


#: Test hook: perturb every prior scale a decoder computes by a deterministic relative error
#: uniform in ±this (0: off) before its table index is taken — a decoder on "another device".
SCALE_PERTURBATION = 0.0


#: Test hook: perturb every raw pixel level a lossless decoder computes by a deterministic error
#: uniform in ±127.5·this (i.e. its pixel mean ``pm`` by up to ±this, absolute) — "another device".
LEVEL_PERTURBATION = 0.0


def _perturbed_means(mean, levels):
    """(means, levels): ``mean`` (bin units, (N, H, W, 3)) as this decoder would round
    ``levels`` perturbed by :data:`LEVEL_PERTURBATION` (copies; the device's when it is off)."""
    mean = np.array(mean, np.float32, copy=True)
    if LEVEL_PERTURBATION and levels is not None:
        lv = np.asarray(levels, np.float32)
        u = np.random.default_rng(0x1E7E1).uniform(-1.0, 1.0, lv.shape)
        moved = (lv.astype(np.float64) + 127.5 * LEVEL_PERTURBATION * u).astype(np.float32)
        mean += (np.round(moved) - np.round(lv)).astype(np.float32)
        return mean, moved
    return mean, levels


def _rounded_means(mean_hwc, levels_hwc, structure, offset, bound_exp, report):
    """One image's pixel means (bin units) with each level rounded to the encoder's side where
    it lies within 127.5·δ of a half-integer (:func:`lvae_jax.entropy.hints.apply_level_hints`);
    the correction is in whole 8-bit levels, so the means stay on the device's float grid up to
    an error far below the final rounding to 8 bits."""
    lv = to_coder_order(levels_hwc, np.float32)
    rounded, n = hints.apply_level_hints(structure, offset, lv, bound_exp)
    if n == 0:
        return mean_hwc
    shift = (rounded - np.round(lv).astype(np.float64)).astype(np.float32)
    if report is not None:
        report.hinted.append(("pixel levels", n))
    return mean_hwc + from_coder_order(shift, mean_hwc.shape)


def _perturbed(idx_hwc, scales_hwc, tables, which: int):
    """(indexes, raw scales) of one string, flat in coder order — with :data:`SCALE_PERTURBATION`
    applied (the indexes then recomputed on the host, bit-identical to the device rule)."""
    idx = to_coder_order(idx_hwc)
    sc = to_coder_order(scales_hwc, np.float32)
    if SCALE_PERTURBATION:
        u = np.random.default_rng([0x5CA1E, which]).uniform(-1.0, 1.0, sc.size)
        sc = (sc.astype(np.float64) * (1.0 + SCALE_PERTURBATION * u)).astype(np.float32)
        idx = tables.build_indexes(sc).astype(np.int32)
    return idx, sc


def _decode_hinted(string, structure, offset, indexes, scales, tables, bound_exp, report, what,
                   expected_crc):
    """Decode a string of a file with portable-index hints: the indexes corrected by the hints,
    then the symbol checksum — exact by construction within the file's bound, else an error."""
    fixed, n = hints.apply_hints(structure, offset, scales, indexes, tables, bound_exp)
    if n and report is not None:
        report.hinted.append((what, n))
    try:
        out = coder.decode(string, fixed, tables, verify=True)
        if expected_crc is not None and symbols_crc(out) != expected_crc:
            raise BitstreamError("decoded symbols do not match the encoder's checksum")
    except BitstreamError as e:
        raise BitstreamError(
            f"{what}: {e} — with this file's portable-index hints, which cover decoders whose "
            f"prior scales lie within {hints.bound(bound_exp):.2g} (relative) of the encoder's: "
            "this decoder's floats differ more, or the file is corrupt") from None
    return out


def image_crc(image) -> int:
    """CRC32 of an (H, W, 3) image in [0, 1] as 8-bit values (HWC, row-major)."""
    import zlib
    from lvae_jax.image import to_uint8
    return zlib.crc32(np.ascontiguousarray(to_uint8(image)).tobytes())


def _crc_of(item: EncodedImage, i: int):
    crcs = item.symbol_crcs
    return None if crcs is None or i >= len(crcs) else crcs[i]


def decode_latent_robust(string: bytes, indexes: np.ndarray, scales: np.ndarray, tables,
                         report: DecodeReport | None = None, what: str = "latent",
                         expected_crc: int | None = None) -> np.ndarray:
    """Decode one string, making sure the table indexes are the encoder's.

    A table index is a threshold on a float32 prior scale; the encoder (another device, or the
    official PyTorch code) may have put a scale that lies within float error of a threshold on the
    other side. Decoding with the neighbouring table usually breaks the string's self-consistency
    (caught by re-encoding), but not always: adjacent tables are so alike that the string can
    re-encode to itself with one symbol changed. So: decode with re-encoding verification and, when
    ``expected_crc`` (the encoder's :func:`~lvae_jax.entropy.coder.symbols_crc`, stored by
    lvae-jax's container) is known, compare the symbols' CRC. On a mismatch, retry with the indexes
    of scales within :data:`NEAR_BOUNDARY` of a threshold flipped (singly, then in pairs, at most
    :data:`MAX_FLIP_TRIALS`). Without ``expected_crc`` (official files) a silent flip cannot be
    excluded; a note then says how many scales were at risk. ``indexes``/``scales``: flat, in coder
    order."""
    def attempt(idx):
        out = coder.decode(string, idx, tables, verify=True)
        if expected_crc is not None and symbols_crc(out) != expected_crc:
            raise BitstreamError("decoded symbols do not match the encoder's checksum")
        return out

    try:
        out = attempt(indexes)
        if expected_crc is None and report is not None:
            at_risk = int(np.sum(_near_boundary(scales, tables)[0] < NEAR_BOUNDARY))
            if at_risk:
                report.at_risk[what] = at_risk
        return out
    except BitstreamError as first:
        error = first
    rel, flip = _near_boundary(scales, tables)
    n_near = int(np.sum(rel < NEAR_BOUNDARY))
    if n_near == 0:
        raise BitstreamError(f"{what}: {error} — no prior scale lies near a table boundary, so this is "
                             "not a cross-implementation index flip: the file is corrupt or was "
                             "written by another model") from None
    cap = max(MIN_FLIP_CANDIDATES, int(MAX_FLIP_CANDIDATE_SHARE * rel.size))
    if n_near > cap:
        raise BitstreamError(f"{what}: {error} — {n_near} of {rel.size} prior scales lie within "
                             f"{NEAR_BOUNDARY:g} of a table boundary (more than {cap}): not a "
                             "cross-implementation index flip; the file is corrupt, forged or "
                             "was written by another model") from None
    cand = np.argpartition(rel, n_near - 1)[:n_near] if n_near < rel.size else np.arange(rel.size)
    cand = cand[np.argsort(rel[cand], kind="stable")]

    def combos():                     # singles, then pairs, generated lazily
        yield from ((c,) for c in cand)
        for i, a in enumerate(cand):
            for b in cand[i + 1:]:
                yield (a, b)

    trials = itertools.islice(combos(), MAX_FLIP_TRIALS)
    deadline = time.monotonic() + MAX_FLIP_SECONDS
    n_tables = len(np.asarray(tables.scale_table))
    for combo in trials:
        if time.monotonic() > deadline:
            break
        idx = np.array(indexes, np.int32, copy=True)
        for c in combo:
            idx[c] = np.clip(idx[c] + flip[c], 0, n_tables - 1)
        try:
            out = attempt(idx)
        except BitstreamError:
            continue
        if report is not None:
            report.flips.append((what, len(combo), float(rel[list(combo)].max())))
        return out
    raise BitstreamError(f"{what}: {error} — {n_near} prior scales lie within {NEAR_BOUNDARY:g} of a "
                         "table boundary and no combination of flipped indexes decodes: the encoder's "
                         "floats differ too much, or the file is corrupt") from None


def _near_boundary(scales, tables):
    """Per raw scale: relative distance to the nearest reachable index threshold, and the index
    change (±1) that crossing it means (:func:`lvae_jax.entropy.tables.nearest_threshold`)."""
    from lvae_jax.entropy.tables import nearest_threshold
    return nearest_threshold(scales, tables.scale_table, tables.bound)
