"""Images <-> per-latent byte strings: the device passes of :mod:`~lvae_jax.codec.engine` joined
with CompressAI's range coder on host.

This layer knows nothing about files: :mod:`lvae_jax.codec.formats` writes and reads the layouts,
:mod:`lvae_jax.codec.api` pads and crops. Strings are exactly the official ones: latent i of
image n is the rANS coding of ``round(qm − pm)`` in (C, h, w) order with the table indexes of its
prior scales. What a string needs besides its bytes to decode checked and exact travels with it in
one :class:`~lvae_jax.codec.records.Checks` (created here by the encoder, consumed here by the
decoder).
"""

from __future__ import annotations

import copy
import itertools
import time
import zlib
from dataclasses import dataclass, field

import jax
import numpy as np

from lvae_jax import numerics
from lvae_jax.codec.engine import CodecEngine, from_coder_order, to_coder_order
from lvae_jax.codec.records import Checks, EncodedImage
from lvae_jax.entropy import coder, hints
from lvae_jax.entropy.coder import BitstreamError, symbols_crc
from lvae_jax.entropy.tables import NEAR_BOUNDARY, nearest_threshold, tables_for
from lvae_jax.image import to_uint8
from lvae_jax.limits import check_image_size
from lvae_jax.models import inference, lambdas

#: Single and pairwise index flips tried per latent before giving up.
MAX_FLIP_TRIALS = 256
#: Near-boundary scales beyond this share of a latent block (at least :data:`MIN_FLIP_CANDIDATES`)
#: are not cross-implementation flips (about 3e-4 of the elements of a 512² image are,
#: docs/cross_implementation.md) but a forged or foreign file: an error, before any trial.
MAX_FLIP_CANDIDATE_SHARE = 2e-3
MIN_FLIP_CANDIDATES = 256
#: Wall-clock bound of one block's flip search (seconds).
MAX_FLIP_SECONDS = 20.0


@dataclass(frozen=True)
class Perturbation:
    """A decoder "on another device", for tests and the portability study
    (``scripts/portable_bitstreams.py``): every prior scale the decoder computes is moved by a
    deterministic relative error uniform in ±``scale`` before its table index is taken (the index
    then recomputed on the host, bit-identical to the device rule), and every raw pixel level of
    the lossless head by one uniform in ±127.5·``level`` (its pixel mean by up to ±``level``)."""

    scale: float = 0.0
    level: float = 0.0


@dataclass
class DecodeReport:
    """What robust decoding noticed. ``flips``: (string, number of indexes flipped, largest
    relative distance to the boundary); ``at_risk``: string -> number of prior scales near a table
    boundary in strings decoded without a symbol checksum; ``hinted``: (string, number of
    indexes set from the file's portable-index hints)."""
    flips: list = field(default_factory=list)
    at_risk: dict = field(default_factory=dict)
    hinted: list = field(default_factory=list)
    near_boundary: float = NEAR_BOUNDARY

    def notes(self) -> list[str]:
        out = [f"{what}: {n} table index(es) set from the file's portable-index hints (this "
               "decoder's floats put those prior scales on the other side of a table boundary)"
               for what, n in self.hinted]
        out += [f"{what}: {n} table index(es) at prior scales within {rel:.1e} of a table boundary were "
               "flipped to match the encoder (float differences between implementations or devices)"
               for what, n, rel in self.flips]
        if self.at_risk:
            total = sum(self.at_risk.values())
            out.append(f"{total} prior scale(s) in {len(self.at_risk)} string(s) lie within "
                       f"{self.near_boundary:g} of a table boundary; this file has no symbol "
                       "checksums, so if it was written by another implementation the symbols "
                       "there may differ (docs/cross_implementation.md)")
        return out

    def merge(self, other: "DecodeReport", prefix: str) -> None:
        """Add what ``other`` noticed, its strings named with ``prefix`` (a tile)."""
        self.flips += [(f"{prefix} {w}", n, r) for w, n, r in other.flips]
        self.hinted += [(f"{prefix} {w}", n) for w, n in other.hinted]
        self.at_risk.update({f"{prefix} {w}": n for w, n in other.at_risk.items()})


def image_crc(image) -> int:
    """CRC32 of an (H, W, 3) image in [0, 1] as 8-bit values (HWC, row-major)."""
    return zlib.crc32(np.ascontiguousarray(to_uint8(image)).tobytes())


class StringCoder:
    """Compress and decompress (padded) images to per-latent strings with one model.

    ``model``: a loaded QRes or QARV :class:`~lvae_jax.models.HierarchicalVAE`;
    ``near_boundary``: the relative band around a table threshold the encoder counts as at risk
    and the decoder searches for flipped indexes; ``perturbation``: a simulated decoder on
    another device (:class:`Perturbation`); ``precision``: see
    :class:`~lvae_jax.codec.engine.CodecEngine`.
    """

    def __init__(self, model, *, near_boundary: float = NEAR_BOUNDARY,
                 perturbation: Perturbation | None = None,
                 precision: str = numerics.CODEC_PRECISION):
        self.model, self.config = model, model.config
        self.latent_tables, self.pixel_tables = tables_for(model.config)
        self.engine = CodecEngine(model, self.latent_tables, self.pixel_tables,
                                  near_boundary=near_boundary, precision=precision)
        self.near_boundary = float(near_boundary)
        self.perturbation = perturbation or Perturbation()

    @property
    def num_latents(self) -> int:
        return self.engine.num_latents

    def with_perturbation(self, perturbation: Perturbation) -> "StringCoder":
        """This coder (the same engine, tables and compiled passes) as a decoder "on another
        device" (:class:`Perturbation`)."""
        other = copy.copy(self)
        other.perturbation = perturbation
        return other

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
        enc = self.engine.encode(images, lmb)
        s = self.config.max_stride
        return [self._encode_one(enc, k, images[k], (h // s, w // s), hint_bound_exp)
                for k in range(n)]

    def _encode_one(self, enc, k: int, image, grid, hint_bound_exp) -> EncodedImage:
        """Range-code image ``k`` of an encoding pass ``enc`` and build its checks."""
        strings, crcs = [], []
        for sym, idx in zip(enc.symbols, enc.indexes):
            flat = to_coder_order(sym[k])
            strings.append(coder.encode(flat, to_coder_order(idx[k]), self.latent_tables))
            crcs.append(symbols_crc(flat))
        pixels = None
        if enc.pixel_symbols is not None:
            flat = to_coder_order(enc.pixel_symbols[k])
            pixels = coder.encode(flat, to_coder_order(enc.pixel_indexes[k]), self.pixel_tables)
            crcs.append(symbols_crc(flat))
        checks = Checks(tuple(crcs))
        if hint_bound_exp is not None:
            checks = self._with_hints(checks, enc, k, image, int(hint_bound_exp))
        return EncodedImage(strings, pixels, grid, checks, int(enc.at_risk[k]))

    def _with_hints(self, checks: Checks, enc, k: int, image, exp: int) -> Checks:
        """``checks`` plus the portable-index hints of image ``k`` (and, lossless, its image CRC
        and the pixel levels' rounding sides when the bound allows)."""
        parts = [(to_coder_order(sc[k], np.float32), self.latent_tables) for sc in enc.scales]
        levels = None
        if enc.pixel_scales is not None:
            parts.append((to_coder_order(enc.pixel_scales[k], np.float32), self.pixel_tables))
            if exp >= hints.LEVEL_MIN_EXP:
                levels = to_coder_order(enc.pixel_levels[k], np.float32)
        blob, _ = hints.encode_hints(parts, exp, levels=levels)
        lossless = enc.pixel_symbols is not None
        return Checks(checks.symbol_crcs, blob, exp, image_crc(image) if lossless else None,
                      levels is not None)

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
        lmb = self.check_lmb(lmb)
        k = self._check_items(items, num_blocks)
        if k < self.num_latents and temperature > 0 and key is None:
            raise ValueError("sampling the missing latents at temperature > 0 needs a PRNG key")
        run = _Decoding(self, items, k, verify, robust,
                        report if report is not None else DecodeReport(near_boundary=self.near_boundary))

        def decode_latent(i, pm, pv, idx):
            if i < k:
                return run.latent(i, pm, pv, idx)
            if temperature == 0:
                return pm
            return np.asarray(inference.prior_draw(True, pm, pv, key, i, np.float32(temperature)))

        out = self.engine.decode((len(items), *items[0].grid), lmb, decode_latent, run.pixels)
        if self.model.lossless and k == self.num_latents:
            run.check_images(out)
        return out

    def _check_items(self, items, num_blocks) -> int:
        """Validate a batch before anything of its size is allocated. -> latent blocks to read."""
        if not items:
            raise ValueError("nothing to decode")
        grid = items[0].grid
        if any(it.grid != grid for it in items):
            raise ValueError("a batch must hold images of one size")
        if len(grid) != 2 or min(grid) < 1:
            raise BitstreamError(f"invalid latent grid {grid}")
        s = self.config.max_stride
        check_image_size(self.config, grid[0] * s, grid[1] * s, batch=len(items), what="bitstream")
        available = min(len(it.latents) for it in items)
        if available > self.num_latents:
            raise BitstreamError(f"{available} latent strings but {self.config.name} has "
                                 f"{self.num_latents} latent blocks (wrong model?)")
        k = available if num_blocks is None else min(num_blocks, available)
        if k < 0:
            raise ValueError("num_blocks must be >= 0")
        return k


class _Decoding:
    """One decode of a batch: the host side of every string (which indexes, which check, which
    recovery), in decoding order. Keys of the portable-index hints run over an image's strings:
    ``offsets[j]`` is the key of image j's next element."""

    def __init__(self, owner: StringCoder, items, k: int, verify: bool, robust: bool,
                 report: DecodeReport):
        self.owner, self.items, self.k = owner, items, k
        self.verify, self.robust, self.report = verify, robust, report
        self.portable = [None if it.checks.hints is None else hints.Retrieval(it.checks.hints)
                         for it in items]
        self.offsets = [0] * len(items)

    def latent(self, i: int, pm, pv, idx) -> np.ndarray:
        """Latent block ``i`` of every image: symbols + prior mean, (N, h, w, C)."""
        z = np.empty_like(pm)
        n = len(self.items)
        for j, it in enumerate(self.items):
            what = f"latent block {i}" + (f" of image {j}" if n > 1 else "")
            ij, sj = self._indexes(idx[j], pv[j], self.owner.latent_tables, i)
            sym = self._string(j, it.latents[i], ij, sj, self.owner.latent_tables, what, i)
            z[j] = from_coder_order(sym, pm.shape[1:]).astype(np.float32) + pm[j]
            self.offsets[j] += sj.size
        return z

    def pixels(self, mean, scale, idx, levels) -> np.ndarray:
        """Lossless head: pixel symbols + mean (in bins of 1/127.5) -> image, exactly like the
        official ``GaussianNLLOutputNet.decompress`` and ``process_output``. With level hints the
        mean's rounding is the encoder's (:func:`_rounded_means`)."""
        full = self.k == self.owner.num_latents
        if not full or any(it.pixels is None for it in self.items):
            return numerics.process_output_host(mean * np.float32(numerics.PIXEL_BIN_SIZE))
        x = np.empty_like(mean)
        mean, levels = _perturbed_means(mean, levels, self.owner.perturbation.level)
        pt = self.owner.pixel_tables
        for j, it in enumerate(self.items):
            if it.checks.level_hints and self.portable[j] is not None:
                mean[j] = _rounded_means(mean[j], levels[j], self.portable[j],
                                         self.offsets[j] + int(np.asarray(scale[j]).size),
                                         it.checks.hint_bound_exp, self.report)
            ij, sj = self._indexes(idx[j], scale[j], pt, len(it.latents))
            sym = self._string(j, it.pixels, ij, sj, pt, "pixels", len(it.latents))
            x[j] = (from_coder_order(sym, mean.shape[1:]).astype(np.float32) + mean[j]) * np.float32(
                numerics.PIXEL_BIN_SIZE)
        return numerics.process_output_host(x)

    def check_images(self, out) -> None:
        """Lossless: the decoded images against the encoder's image checksums."""
        for j, it in enumerate(self.items):
            if it.checks.image_crc is not None and image_crc(out[j]) != it.checks.image_crc:
                raise BitstreamError(
                    "the decoded image does not match the encoder's lossless checksum: this "
                    "decoder's float path rounds the pixel mean to the other 8-bit level at "
                    "some pixels (docs/cross_implementation.md) — the file is intact, but "
                    "this decode is not lossless")

    def _indexes(self, idx_hwc, scales_hwc, tables, which: int):
        """(indexes, raw scales) of one string, flat in coder order — moved by the owner's
        :class:`Perturbation` when one is set."""
        idx = to_coder_order(idx_hwc)
        sc = to_coder_order(scales_hwc, np.float32)
        delta = self.owner.perturbation.scale
        if delta:
            u = np.random.default_rng([0x5CA1E, which]).uniform(-1.0, 1.0, sc.size)
            sc = (sc.astype(np.float64) * (1.0 + delta * u)).astype(np.float32)
            idx = tables.build_indexes(sc).astype(np.int32)
        return idx, sc

    def _string(self, j: int, string: bytes, indexes, scales, tables, what: str, i: int):
        """The symbols of string ``i`` of image ``j``, decoded by the rule its file allows."""
        it = self.items[j]
        crc = it.checks.symbol_crc(i)
        if self.portable[j] is not None:
            return self._hinted(j, string, indexes, scales, tables, what, crc)
        if self.robust:
            return decode_latent_robust(string, indexes, scales, tables, self.report, what,
                                        expected_crc=crc, near_boundary=self.owner.near_boundary)
        return coder.decode(string, indexes, tables, verify=self.verify)


    def _hinted(self, j: int, string, indexes, scales, tables, what: str, expected_crc):
        """Decode a string of a file with portable-index hints: the indexes corrected by the
        hints, then the symbol checksum — exact by construction within the file's bound, else
        an error."""
        exp = self.items[j].checks.hint_bound_exp
        fixed, n = hints.apply_hints(self.portable[j], self.offsets[j], scales, indexes, tables, exp)
        if n:
            self.report.hinted.append((what, n))
        try:
            out = coder.decode(string, fixed, tables, verify=True)
            if expected_crc is not None and symbols_crc(out) != expected_crc:
                raise BitstreamError("decoded symbols do not match the encoder's checksum")
        except BitstreamError as e:
            raise BitstreamError(
                f"{what}: {e} — with this file's portable-index hints, which cover decoders whose "
                f"prior scales lie within {hints.bound(exp):.2g} (relative) of the encoder's: "
                "this decoder's floats differ more, or the file is corrupt") from None
        return out


def _perturbed_means(mean, levels, delta: float):
    """(means, levels): ``mean`` (bin units, (N, H, W, 3)) as a decoder whose raw pixel levels
    differ by up to ±127.5·``delta`` would round ``levels`` (copies; the device's when 0)."""
    mean = np.array(mean, np.float32, copy=True)
    if delta and levels is not None:
        lv = np.asarray(levels, np.float32)
        u = np.random.default_rng(0x1E7E1).uniform(-1.0, 1.0, lv.shape)
        moved = (lv.astype(np.float64) + 127.5 * delta * u).astype(np.float32)
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
    report.hinted.append(("pixel levels", n))
    return mean_hwc + from_coder_order(shift, mean_hwc.shape)


def decode_latent_robust(string: bytes, indexes: np.ndarray, scales: np.ndarray, tables,
                         report: DecodeReport | None = None, what: str = "latent",
                         expected_crc: int | None = None,
                         near_boundary: float | None = None) -> np.ndarray:
    """Decode one string, making sure the table indexes are the encoder's.

    A table index is a threshold on a float32 prior scale; the encoder (another device, or the
    official PyTorch code) may have put a scale that lies within float error of a threshold on the
    other side. Decoding with the neighbouring table usually breaks the string's self-consistency
    (caught by re-encoding), but not always: adjacent tables are so alike that the string can
    re-encode to itself with one symbol changed. So: decode with re-encoding verification and, when
    ``expected_crc`` (the encoder's :func:`~lvae_jax.entropy.coder.symbols_crc`, stored by
    lvae-jax's container) is known, compare the symbols' CRC. On a mismatch, retry with the indexes
    of scales within ``near_boundary`` (default :data:`~lvae_jax.entropy.tables.NEAR_BOUNDARY`)
    of a threshold flipped (singly, then in pairs, at most
    :data:`MAX_FLIP_TRIALS`). Without ``expected_crc`` (official files) a silent flip cannot be
    excluded; a note then says how many scales were at risk. ``indexes``/``scales``: flat, in coder
    order."""
    near_boundary = NEAR_BOUNDARY if near_boundary is None else near_boundary

    def attempt(idx):
        out = coder.decode(string, idx, tables, verify=True)
        if expected_crc is not None and symbols_crc(out) != expected_crc:
            raise BitstreamError("decoded symbols do not match the encoder's checksum")
        return out

    try:
        out = attempt(indexes)
        if expected_crc is None and report is not None:
            at_risk = int(np.sum(_near_boundary(scales, tables)[0] < near_boundary))
            if at_risk:
                report.at_risk[what] = at_risk
        return out
    except BitstreamError as first:
        error = first
    rel, flip = _near_boundary(scales, tables)
    n_near = int(np.sum(rel < near_boundary))
    if n_near == 0:
        raise BitstreamError(f"{what}: {error} — no prior scale lies near a table boundary, so this is "
                             "not a cross-implementation index flip: the file is corrupt or was "
                             "written by another model") from None
    cap = max(MIN_FLIP_CANDIDATES, int(MAX_FLIP_CANDIDATE_SHARE * rel.size))
    if n_near > cap:
        raise BitstreamError(f"{what}: {error} — {n_near} of {rel.size} prior scales lie within "
                             f"{near_boundary:g} of a table boundary (more than {cap}): not a "
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
    raise BitstreamError(f"{what}: {error} — {n_near} prior scales lie within {near_boundary:g} of a "
                         "table boundary and no combination of flipped indexes decodes: the encoder's "
                         "floats differ too much, or the file is corrupt") from None


def _near_boundary(scales, tables):
    """Per raw scale: relative distance to the nearest reachable index threshold, and the index
    change (±1) that crossing it means (:func:`lvae_jax.entropy.tables.nearest_threshold`)."""
    return nearest_threshold(scales, tables.scale_table, tables.bound)
