"""Compress and decompress images and files.

    codec = Codec(lvae_jax.load_model("qarv_base_jax"))
    data = compress(codec, image_u8, lmb=256)                 # bytes (lvae container)
    data = compress(codec, image_u8, lmb=256, fmt="official")  # the official QARV/QRes layout
    result = decompress(codec, data)                            # any of the three layouts
    result.image                                                # (H, W, 3) float32 in [0, 1]

Images of any size are padded right/bottom by edge replication to multiples of 64 and cropped
back, like the official code. ``decompress`` recognises the layout by itself, checks that a
container was written by this very model (config + weights id), and can decode progressively from
the first k latent blocks — also of a truncated container.

Decoding verifies every latent string by re-encoding it (a wrong table index — e.g. a prior scale
that lands on the other side of a table boundary on another platform — or corruption of a file
without checksums would otherwise decode silently into a wrong image). When verification fails
and the latent has prior scales within float error of a table boundary, the decoder retries with
those indexes flipped (see :func:`decode_latent_robust`) and reports it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from lvae_jax import image as imageio
from lvae_jax.limits import check_image_size
from lvae_jax.codec import container, formats, tiles
from lvae_jax.codec.core import NEAR_BOUNDARY, Codec, DecodeReport, EncodedImage
from lvae_jax.entropy import coder, hints
from lvae_jax.entropy.coder import BitstreamError

FORMATS = ("lvae", "official")


# ------------------------------------------------------------------------------------------------
# Compression
# ------------------------------------------------------------------------------------------------


def _as_float_image(im) -> np.ndarray:
    a = np.asarray(im)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {a.shape}")
    if a.dtype == np.uint8:
        return imageio.to_float(a)
    a = a.astype(np.float32)
    if not np.all(np.isfinite(a)) or a.min() < 0 or a.max() > 1:
        raise ValueError("float images must be finite and within [0, 1]")
    return a


def official_risk_note(at_risk: int) -> str:
    """The warning for an official-layout file with ``at_risk`` elements near a table threshold."""
    return (f"{at_risk} latent element(s) have a prior scale within {NEAR_BOUNDARY:g} of a table "
            "boundary: the official decoder (PyTorch, another float path) may pick the other table "
            "there and decode this file silently wrong — the official layout has no checksum. The "
            "lvae container (the default --format) checks every symbol and recovers such flips "
            "(docs/cross_implementation.md)")


def compress_batch(codec: Codec, images, lmb=None, fmt: str = "lvae",
                   notes: list | None = None,
                   hint_bound_exp: int | None = hints.DEFAULT_BOUND_EXP) -> list[bytes]:
    """Compress images (each (H, W, 3), uint8 or float in [0, 1]); images of one padded size go
    through the device in one pass. Returns one file (bytes) per image. ``notes``: a list that
    receives, per official-layout file with elements at risk, :func:`official_risk_note`.
    ``hint_bound_exp``: lvae files carry portable-index hints for decoders whose prior scales
    are within 2^-exp (relative) of this encoder's (:mod:`lvae_jax.entropy.hints`; None: a
    version-1 file without hints)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}")
    cfg = codec.config
    s = cfg.max_stride
    floats = [_as_float_image(im) for im in images]
    for f in floats:
        if max(f.shape[:2]) > 65535:
            raise ValueError(f"image of {f.shape[0]}x{f.shape[1]}: sides above 65535 px are not supported")
    out: list = [None] * len(floats)
    groups: dict = {}
    for i, f in enumerate(floats):
        groups.setdefault(imageio.padded_size(f.shape[0], f.shape[1], s), []).append(i)
    for idx in groups.values():
        batch = np.stack([imageio.pad_to_multiple(floats[i], s) for i in idx])
        hint_exp = hint_bound_exp if fmt == "lvae" else None
        for i, enc in zip(idx, codec.encode(batch, lmb, hint_bound_exp=hint_exp)):
            out[i] = _write(codec, enc, floats[i].shape[:2], lmb, fmt)
            if fmt == "official" and enc.at_risk and notes is not None:
                notes.append(official_risk_note(enc.at_risk))
    return out


def compress(codec: Codec, image, lmb=None, fmt: str = "lvae", tile=None,
             notes: list | None = None,
             hint_bound_exp: int | None = hints.DEFAULT_BOUND_EXP) -> bytes:
    """Compress one (H, W, 3) image (uint8, or float in [0, 1]) into one file's bytes.

    ``tile``: None codes the image whole; ``"auto"`` tiles it only when the whole image does not
    fit the memory budget (:func:`lvae_jax.codec.tiles.choose_tile`); an int N codes it in N × N
    tiles (a tiled file, :mod:`lvae_jax.codec.tiles`; the lvae format only). ``notes``,
    ``hint_bound_exp``: see :func:`compress_batch`."""
    size = tuple(np.shape(image)[:2])
    tile_size = resolve_tile(codec, size, tile)
    if tile_size is None:
        return compress_batch(codec, [image], lmb, fmt, notes, hint_bound_exp)[0]
    if fmt != "lvae":
        raise ValueError("tiled files need the lvae format: the official layouts hold one whole "
                         f"image ({size[1]}x{size[0]} would be coded in tiles of "
                         f"{tile_size[1]}x{tile_size[0]})")
    tiles.check_tiled(codec.config, size, tile_size)
    n = tiles.num_tiles(size, tile_size)
    out = []
    for k in range(n):   # one tile at a time: memory for one tile's activations
        t = _as_float_image(tiles.padded_tile(np.asarray(image), tile_size, k))
        enc = codec.encode(t[None], lmb, hint_bound_exp=hint_bound_exp)[0]
        out.append(_write(codec, enc, tile_size, lmb, "lvae"))
    return tiles.write_tiled(size, tile_size, out)


def resolve_tile(codec: Codec, image_size, tile) -> tuple[int, int] | None:
    """The tile size ``compress`` uses for ``tile`` (None, ``"auto"`` or pixels) on an image of
    ``image_size`` = (H, W): None for a whole-image file."""
    if tile is None:
        return None
    if tile == "auto":
        return tiles.choose_tile(codec.config, image_size)
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)):
        raise ValueError(f"tile must be None, 'auto' or a number of pixels, got {tile!r}")
    size = tiles.tile_size_for(image_size, int(tile), codec.config.max_stride)
    return None if size == imageio.padded_size(*image_size, codec.config.max_stride) else size


def _write(codec: Codec, enc: EncodedImage, image_size, lmb, fmt: str) -> bytes:
    cfg = codec.config
    if fmt == "lvae":
        return container.write_container(
            model_name=cfg.name, model_id=codec.model_id,
            lmb=None if lmb is None else float(lmb), image_size=tuple(image_size), stride=cfg.max_stride,
            latent_strings=[[s] for s in enc.latents],
            pixel_strings=None if enc.pixels is None else [enc.pixels], symbol_crcs=enc.symbol_crcs,
            hints=enc.hints, hint_bound_exp=enc.hint_bound_exp,
            image_crc=enc.image_crc if enc.hints is not None else None,
            level_hints=enc.level_hints)
    if cfg.family == "qarv":
        body = formats.write_qarv_body(lmb, enc.grid, enc.latents)
        return formats.write_qarv_file(tuple(image_size), body)
    width = cfg.dec_blocks[0].width
    return formats.write_qres_file([[s] for s in enc.latents], (1, width, *enc.grid), tuple(image_size),
                                   pixel_strings=None if enc.pixels is None else [enc.pixels])


# ------------------------------------------------------------------------------------------------
# Reading any of the three layouts
# ------------------------------------------------------------------------------------------------


@dataclass
class ParsedFile:
    """A file in any layout, reduced to what decoding needs (one image)."""
    fmt: str                      # "lvae" | "qres-official" | "qarv-official"
    image_size: tuple
    grid: tuple
    lmb: float | None
    latents: list                 # strings of the latents present (all, or a prefix if truncated)
    pixels: bytes | None
    model_name: str | None = None
    model_id: bytes | None = None
    total_latents: int | None = None
    notes: list = field(default_factory=list)
    symbol_crcs: list | None = None
    lossless: bool = False
    hints: bytes | None = None
    hint_bound_exp: int | None = None
    image_crc: int | None = None
    level_hints: bool = False

    def encoded(self) -> EncodedImage:
        """What :meth:`Codec.decode` takes: the strings and every check the file carries."""
        return EncodedImage(self.latents, self.pixels, tuple(self.grid), self.symbol_crcs,
                            hints=self.hints, hint_bound_exp=self.hint_bound_exp,
                            image_crc=self.image_crc, level_hints=self.level_hints)


def parse(data: bytes, allow_partial: bool = False) -> ParsedFile:
    """Recognise and parse a file; raises :class:`BitstreamError` with a clear message."""
    data = formats.as_bytes(data)
    kind, official = ((container.detect(data)) if not (allow_partial and data[:4] == container.MAGIC)
                      else ("lvae", None))
    if kind == "lvae":
        if allow_partial:
            part = container.read_partial(data)
            h = part.header
            strings = [s[0] for s in part.latent_strings]
            pixels = part.chunks[h.pixel_chunk_index(0)] if (h.lossless and part.complete) else None
            notes = [] if part.complete else [f"file incomplete: {part.stop_reason}"]
        else:
            f = container.read_container(data)
            h = f.header
            strings = [s[0] for s in f.latent_strings]
            pixels = f.pixel_strings[0] if f.pixel_strings else None
            notes = []
        if h.batch != 1:
            raise BitstreamError(f"this file holds {h.batch} images; lvae-jax writes one image per file")
        crcs = list(h.symbol_crcs) if h.symbol_crcs is not None else None
        return ParsedFile("lvae", h.image_size, h.latent_grid, h.lmb, strings, pixels,
                          h.model_name, h.model_id, h.num_latents, notes, crcs, h.lossless,
                          h.hints, h.hint_bound_exp, h.image_crc, h.level_hints)
    if kind == container.LVAE_TILED:
        raise BitstreamError("a tiled file: decode it with decompress (it holds one file per tile)")
    if kind == "qres-official":
        f = official                    # parsed once, by the detection
        if f.batch != 1:
            raise BitstreamError(f"official QRes file with a batch of {f.batch} images; only single images are supported")
        return ParsedFile(kind, f.image_size, f.latent_grid, None, [s[0] for s in f.latent_strings],
                          f.pixel_strings[0] if f.pixel_strings else None, total_latents=len(f.latent_strings),
                          notes=["official QRes file: no checksums; decoded strings are verified by re-encoding"],
                          lossless=f.pixel_strings is not None)
    f = official
    return ParsedFile(kind, f.image_size, f.body.latent_grid, f.body.lmb, list(f.body.strings), None,
                      total_latents=len(f.body.strings),
                      notes=["official QARV file: no checksums; decoded strings are verified by re-encoding"])


def check_model(codec: Codec, p: ParsedFile):
    """Refuse a file that was not written by (a model compatible with) this codec's model."""
    cfg = codec.config
    if p.fmt == "lvae":
        if p.model_id != codec.model_id:
            raise BitstreamError(
                f"this file was written by model {p.model_name!r} with other weights or config "
                f"(id {p.model_id.hex()}), not by the loaded {cfg.name!r} (id {codec.model_id.hex()})")
    elif p.fmt == "qarv-official" and cfg.family != "qarv":
        raise BitstreamError(f"an official QARV file cannot be decoded with {cfg.name} ({cfg.family})")
    elif p.fmt == "qres-official" and cfg.family != "qres":
        raise BitstreamError(f"an official QRes file cannot be decoded with {cfg.name} ({cfg.family})")
    if p.total_latents is not None and p.total_latents != codec.num_latents:
        raise BitstreamError(f"the file has {p.total_latents} latent blocks, {cfg.name} has "
                             f"{codec.num_latents} (wrong model?)")
    if p.lossless != codec.model.lossless:
        raise BitstreamError(f"a {'lossless' if p.lossless else 'lossy'} file cannot be decoded with "
                             f"{'lossless' if codec.model.lossless else 'lossy'} {cfg.name}")
    h, w = p.image_size
    if imageio.padded_size(h, w, cfg.max_stride) != (p.grid[0] * cfg.max_stride, p.grid[1] * cfg.max_stride):
        raise BitstreamError(f"image size {h}x{w} does not match the latent grid {p.grid}")


# ------------------------------------------------------------------------------------------------
# Decompression
# ------------------------------------------------------------------------------------------------


@dataclass
class DecodeResult:
    image: np.ndarray              # (H, W, 3) float32 in [0, 1], cropped to the original size
    fmt: str
    blocks_decoded: int
    total_blocks: int
    lmb: float | None
    seconds: float
    notes: list
    report: DecodeReport | None = None


def decompress(codec: Codec, data: bytes, *, num_blocks: int | None = None, temperature: float = 0.0,
               key=None, allow_partial: bool = False, verify: bool = True) -> DecodeResult:
    """Decode a file of any layout. ``num_blocks``: decode only the first k latent blocks
    (progressive); missing ones are the prior mean (``temperature`` 0) or sampled with ``key``.
    ``allow_partial``: accept a truncated container and decode the latents it still has."""
    t0 = time.perf_counter()
    if tiles.is_tiled(data):
        return _decompress_tiled(codec, data, t0, num_blocks=num_blocks, temperature=temperature,
                                 key=key, allow_partial=allow_partial, verify=verify)
    p = parse(data, allow_partial=allow_partial)
    check_model(codec, p)
    check_image_size(codec.config, *p.image_size, what="bitstream")   # before any allocation
    k = len(p.latents) if num_blocks is None else min(num_blocks, len(p.latents))
    notes = list(p.notes)
    if k < codec.num_latents:
        notes.append(f"decoded {k} of {codec.num_latents} latent blocks; the rest "
                     + ("at the prior mean" if temperature == 0 else f"sampled at temperature {temperature:g}"))
    item = p.encoded()
    report = DecodeReport()
    img = codec.decode([item], p.lmb, num_blocks=k, temperature=temperature, key=key,
                       verify=verify, robust=verify, report=report)[0]
    notes += report.notes()
    h, w = p.image_size
    return DecodeResult(img[:h, :w], p.fmt, k, codec.num_latents, p.lmb, time.perf_counter() - t0, notes, report)


def _decompress_tiled(codec: Codec, data, t0, *, num_blocks, temperature, key, allow_partial,
                      verify) -> DecodeResult:
    """Decode a tiled file tile by tile into the whole image (memory: one tile + the image)."""
    import jax
    data = formats.as_bytes(data)
    hdr = tiles.read_tiled_header(data)
    h, w = hdr.image_size
    tiles.check_tiled(codec.config, hdr.image_size, hdr.tile_size, what="bitstream")
    if len(data) > hdr.total_size:
        raise BitstreamError(f"lvae tiled file: {len(data) - hdr.total_size} bytes after the last "
                             "tile (extended or corrupt)")
    if len(data) < hdr.total_size and not allow_partial:
        raise BitstreamError(f"lvae tiled file: {len(data)} bytes, the header announces "
                             f"{hdr.total_size} (truncated; --partial decodes what it holds)")
    out = np.empty((h, w, 3), np.float32)
    notes, lmb, blocks, report = [], None, codec.num_latents, DecodeReport()
    for k, payload, problem in tiles.iter_tiles(data, hdr, allow_partial):
        tkey = None if key is None else jax.random.fold_in(key, k)
        res = None
        if payload is not None:
            try:
                inner = container.read_header(payload)   # an lvae container of one full tile
                if inner.image_size != hdr.tile_size:
                    raise BitstreamError(f"lvae tiled file: tile {k} holds a {inner.image_size[1]}x"
                                         f"{inner.image_size[0]} image, not a {hdr.tile_size[1]}x"
                                         f"{hdr.tile_size[0]} tile (corrupt)")
                res = decompress(codec, payload, num_blocks=num_blocks, temperature=temperature,
                                 key=tkey, allow_partial=problem is not None, verify=verify)
            except BitstreamError:
                if problem is None:
                    raise
                payload = None       # not even the tile's header survived
        if payload is None:          # a tile the file no longer holds: the prior alone
            if lmb is None and codec.config.variable_rate:
                raise BitstreamError(f"tile {k} is missing and no earlier tile gives λ")
            s = codec.config.max_stride
            item = EncodedImage([], None, (hdr.tile_size[0] // s, hdr.tile_size[1] // s))
            img = codec.decode([item], lmb, num_blocks=0, temperature=temperature, key=tkey,
                               verify=False, robust=False)[0]
            res_blocks, res_lmb = 0, lmb
        else:
            if lmb is not None and res.lmb != lmb:
                raise BitstreamError(f"lvae tiled file: tile {k} has λ = {res.lmb:g}, tile 0 "
                                     f"λ = {lmb:g} (corrupt)")
            img, res_blocks, res_lmb = res.image, res.blocks_decoded, res.lmb
            notes += [f"tile {k}: {n}" for n in res.notes]
            if res.report is not None:
                report.flips += res.report.flips
                for s_, n_ in res.report.at_risk.items():
                    report.at_risk[f"tile {k} {s_}"] = n_
        if problem is not None:
            notes.append(f"tile {k}: {problem}; " + ("decoded from the prior alone" if payload is None
                                                      else "decoded from the latent blocks it holds"))
        lmb = res_lmb if lmb is None else lmb
        blocks = min(blocks, res_blocks)
        rs, cs = hdr.region(k)
        out[rs, cs] = img[: rs.stop - rs.start, : cs.stop - cs.start]
    rows, cols = hdr.grid
    notes.insert(0, f"tiled file: {rows}×{cols} tiles of {hdr.tile_size[1]}x{hdr.tile_size[0]}")
    return DecodeResult(out, "lvae-tiled", blocks, codec.num_latents, lmb,
                        time.perf_counter() - t0, notes, report)


# ------------------------------------------------------------------------------------------------
# Rate control
# ------------------------------------------------------------------------------------------------


@dataclass
class RateControlResult:
    data: bytes
    lmb: float
    trials: list                   # (λ, bytes) per trial
    within_tolerance: bool
    message: str
    notes: list = field(default_factory=list)   # of the chosen file (see compress_batch)


def compress_to_target(codec: Codec, image, *, target_bytes: int, fmt: str = "lvae",
                       tolerance: float = 0.02, max_iter: int = 24, grid: int = 9,
                       tile=None) -> RateControlResult:
    """Variable-rate models: the file of at most ``target_bytes`` and within ``tolerance`` of it.

    File size is *not* monotone in λ (a few bytes of range-coder tail, rounding of latents), so a
    single bisection like the official ``test-at-target-bytes`` can miss files that exist. This
    search first encodes at ``grid`` λ spaced evenly in log λ over the model's range, then bisects
    (in log λ) every interval whose ends bracket the target, the most promising first, until a
    file lands in ``[target·(1 − tolerance), target]`` or ``max_iter`` encodes are spent. The
    answer is the largest file seen that is not above the target (the smallest one seen when
    every file is too big); the message says how close it landed and, if the target is out of
    reach, over which trials."""
    cfg = codec.config
    if not cfg.variable_rate:
        raise ValueError(f"{cfg.name} is fixed-rate: rate control needs a variable-rate model (qarv_base)")
    if target_bytes <= 0:
        raise ValueError(f"target_bytes must be positive, got {target_bytes}")
    lo, hi = (math.log(v) for v in cfg.lmb_range)
    cache: dict = {}
    risk_notes: dict = {}

    def size_at(log_l):
        lmb = float(np.float32(math.exp(log_l)))
        if lmb not in cache:
            risk_notes[lmb] = []
            cache[lmb] = compress(codec, image, lmb, fmt, tile=tile, notes=risk_notes[lmb])
        return len(cache[lmb])

    def hit(n):
        return target_bytes * (1 - tolerance) <= n <= target_bytes

    points = [lo + (hi - lo) * i / (grid - 1) for i in range(grid)]
    sizes = [size_at(p) for p in points]
    # intervals whose ends bracket the target, as (log λ below, log λ above)
    brackets = [(points[i], points[i + 1]) for i in range(grid - 1)
                if min(sizes[i], sizes[i + 1]) <= target_bytes < max(sizes[i], sizes[i + 1])]
    spent = len(cache)
    while brackets and spent < max_iter and not any(hit(len(d)) for d in cache.values()):
        # the bracket whose end under the target is closest to it
        brackets.sort(key=lambda ab: -max(n for n in (size_at(ab[0]), size_at(ab[1]))
                                          if n <= target_bytes))
        a, b = brackets.pop(0)
        if abs(b - a) < 1e-6:
            continue
        m = (a + b) / 2
        n = size_at(m)
        spent = len(cache)
        for lo_, hi_ in ((a, m), (m, b)):
            if min(size_at(lo_), size_at(hi_)) <= target_bytes < max(size_at(lo_), size_at(hi_)):
                brackets.append((lo_, hi_))
    trials = sorted((l, len(d)) for l, d in cache.items())
    under = [(l, d) for l, d in cache.items() if len(d) <= target_bytes]
    span = f"λ ∈ [{cfg.lmb_range[0]:g}, {cfg.lmb_range[1]:g}], {len(trials)} trials"
    if not under:
        lmb, d = min(cache.items(), key=lambda x: (len(x[1]), x[0]))
        return RateControlResult(d, lmb, trials, False,
                                 f"target {target_bytes} B is below the smallest file found for this "
                                 f"image ({len(d)} B at λ = {lmb:g}; {span})", risk_notes[lmb])
    lmb, d = max(under, key=lambda x: (len(x[1]), -x[0]))
    ok = hit(len(d))
    msg = f"{len(d)} B at λ = {lmb:g} ({100 * (len(d) - target_bytes) / target_bytes:+.2f} % of the target)"
    if not ok:
        biggest = max(len(v) for v in cache.values())
        msg += (f"; target {target_bytes} B is above the largest file found for this image "
                f"({biggest} B; {span})" if biggest <= target_bytes else
                f"; no file found within {100 * tolerance:g} % below the target ({span})")
    return RateControlResult(d, lmb, trials, ok, msg, risk_notes[lmb])
