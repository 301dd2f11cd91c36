"""Every layout a bitstream file can have, in one place: their names, the output formats a user
picks, detection, and reading into / writing from what the codec works with
(:class:`~lvae_jax.codec.records.EncodedImage` + :class:`~lvae_jax.codec.records.FileMeta`).

======================  =========================================================================
layout                  what it is (owner module)
======================  =========================================================================
``lvae``                the lvae-jax container: one image, checked (:mod:`~lvae_jax.codec.container`)
``lvae-tiled``          one image as independent tiles, each an lvae container
                        (:mod:`~lvae_jax.codec.tiles`)
``qarv-official``       the official QARV ``compress_file`` layout (:mod:`~lvae_jax.codec.official`)
``qres-official``       the official QRes ``compress_file`` pickle (:mod:`~lvae_jax.codec.official`)
======================  =========================================================================

A user chooses among :data:`OUTPUT_FORMATS`: ``lvae`` (the container; tiled when the image is
coded in tiles) or ``official`` (the official layout of the model's family).

:func:`detect` tells the layouts apart: the containers by their magic (``LVAE`` / ``LVAT``) and a
valid header, official QRes files by a parse of their pickle (first byte 0x80), official QARV
files by a parse of their struct layout (everything else). All readers raise
:class:`~lvae_jax.entropy.coder.BitstreamError` (a ``ValueError``) with a clear message.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lvae_jax.codec import container, official, tiles
from lvae_jax.codec.records import EncodedImage, FileMeta
from lvae_jax.entropy.coder import BitstreamError, as_bytes

LVAE = "lvae"
LVAE_TILED = "lvae-tiled"
QRES_OFFICIAL = "qres-official"
QARV_OFFICIAL = "qarv-official"
#: The layouts, in the order :func:`detect` tries them.
LAYOUTS = (LVAE_TILED, LVAE, QRES_OFFICIAL, QARV_OFFICIAL)
#: What ``--format`` offers: the lvae container, or the official layout of the model's family.
OUTPUT_FORMATS = ("lvae", "official")
#: The official layout of each family that has one.
OFFICIAL_LAYOUT = {"qarv": QARV_OFFICIAL, "qres": QRES_OFFICIAL}


@dataclass
class ParsedFile:
    """A file of one image in any layout but the tiled one, reduced to what decoding needs.
    ``total_latents``: the latent blocks its writer coded (a truncated container holds a prefix
    of them in ``encoded.latents``); ``notes``: what the reader has to say about it."""

    layout: str
    meta: FileMeta
    encoded: EncodedImage
    total_latents: int
    lossless: bool
    notes: list = field(default_factory=list)


def detect(data) -> tuple[str, object | None]:
    """Which layout ``data`` is, and the parse that told (the official layouts' parsed file, None
    for the lvae layouts, whose body is read by the caller). The official layouts are recognised by
    a full structural parse, so a QARV file whose first bytes look like a pickle header or like a
    magic (possible image heights) is still told apart; if both official parses succeed the data
    is refused as ambiguous. Raises :class:`BitstreamError` naming why each layout was rejected."""
    data = as_bytes(data)
    reasons = []
    for magic, layout, read in ((tiles.MAGIC, LVAE_TILED, tiles.read_tiled_header),
                                (container.MAGIC, LVAE, container.read_header)):
        if data[:4] == magic:
            try:
                read(data)
                return layout, None
            except BitstreamError as e:
                reasons.append(str(e))
    qres = qarv = None
    if data[:1] == b"\x80":
        try:
            qres = official.read_qres_file(data)
        except BitstreamError as e:
            reasons.append(str(e))
    try:
        qarv = official.read_qarv_file(data)
    except BitstreamError as e:
        reasons.append(f"official QARV: {e}")
    if qres is not None and qarv is not None:
        raise BitstreamError("data parses both as an official QRes and an official QARV file (ambiguous)")
    if qres is not None:
        return QRES_OFFICIAL, qres
    if qarv is not None:
        return QARV_OFFICIAL, qarv
    raise BitstreamError("not a recognised bitstream: " + "; ".join(reasons))


def sniff(data) -> str:
    """The layout name of :func:`detect`."""
    return detect(data)[0]


def parse(data, allow_partial: bool = False) -> ParsedFile:
    """Read a file of one image (not a tiled file: :mod:`lvae_jax.codec.tiles` holds one per
    tile). ``allow_partial``: a truncated or damaged lvae container gives the latent blocks it
    still holds, with a note. Raises :class:`BitstreamError` with a clear message."""
    data = as_bytes(data)
    if allow_partial and data[:4] == container.MAGIC:
        return _parse_lvae(data, partial=True)
    layout, parsed = detect(data)
    if layout == LVAE:
        return _parse_lvae(data, partial=False)
    if layout == LVAE_TILED:
        raise BitstreamError("a tiled file: decode it with decompress (it holds one file per tile)")
    if layout == QRES_OFFICIAL:
        return _parse_qres(parsed)
    return _parse_qarv(parsed)


def _parse_lvae(data: bytes, partial: bool) -> ParsedFile:
    notes = []
    if partial:
        part = container.read_partial(data)
        h = part.header
        strings = [s[0] for s in part.latent_strings]
        pixels = part.chunks[h.pixel_chunk_index(0)] if (h.lossless and part.complete) else None
        if not part.complete:
            notes.append(f"file incomplete: {part.stop_reason}")
    else:
        f = container.read_container(data)
        h = f.header
        strings = [s[0] for s in f.latent_strings]
        pixels = f.pixel_strings[0] if f.pixel_strings else None
    if h.batch != 1:
        raise BitstreamError(f"this file holds {h.batch} images; lvae-jax writes one image per file")
    return ParsedFile(LVAE, h.meta, EncodedImage(strings, pixels, h.latent_grid, h.checks),
                      h.num_latents, h.lossless, notes)


def _parse_qres(f: official.QresFile) -> ParsedFile:
    if f.batch != 1:
        raise BitstreamError(f"official QRes file with a batch of {f.batch} images; only single images are supported")
    pixels = f.pixel_strings[0] if f.pixel_strings else None
    encoded = EncodedImage([s[0] for s in f.latent_strings], pixels, f.latent_grid)
    return ParsedFile(QRES_OFFICIAL, FileMeta(None, None, None, f.image_size), encoded,
                      len(f.latent_strings), pixels is not None,
                      ["official QRes file: no checksums; decoded strings are verified by re-encoding"])


def _parse_qarv(f: official.QarvFile) -> ParsedFile:
    encoded = EncodedImage(list(f.body.strings), None, f.body.latent_grid)
    return ParsedFile(QARV_OFFICIAL, FileMeta(None, None, f.body.lmb, f.image_size), encoded,
                      len(f.body.strings), False,
                      ["official QARV file: no checksums; decoded strings are verified by re-encoding"])


def write(fmt: str, meta: FileMeta, encoded: EncodedImage, config) -> bytes:
    """The file of one image in output format ``fmt`` (:data:`OUTPUT_FORMATS`) for the model
    ``config``: the lvae container with every check of ``encoded``, or the official layout of
    the model's family (no checks: the official layouts have no room for them)."""
    if fmt not in OUTPUT_FORMATS:
        raise ValueError(f"format must be one of {OUTPUT_FORMATS}, got {fmt!r}")
    pixels = None if encoded.pixels is None else [encoded.pixels]
    if fmt == "lvae":
        return container.write_container(meta, [[s] for s in encoded.latents], pixels,
                                         encoded.checks)
    if OFFICIAL_LAYOUT.get(config.family) == QARV_OFFICIAL:
        body = official.write_qarv_body(meta.lmb, encoded.grid, encoded.latents)
        return official.write_qarv_file(tuple(meta.image_size), body)
    width = config.dec_blocks[0].width
    return official.write_qres_file([[s] for s in encoded.latents], (1, width, *encoded.grid),
                                    tuple(meta.image_size), pixel_strings=pixels)

