"""Tiled files: an image of any size coded as independent tiles, in the memory of one tile.

A tiled file (layout in docs/bitstream.md) is a short header — magic ``b"LVAT"``, the image size,
the tile size, one (length, CRC32) entry per tile, its own CRC32 — followed by one complete lvae
container (:mod:`lvae_jax.codec.container`) per tile, in raster order (row-major, top-left
first). All integers are little-endian.

Tiles are ``tile_h`` × ``tile_w`` pixels (multiples of the model's stride, 64); the last row and
column of tiles extend past the image and are padded by edge replication, like the official
padding of a whole image, so that **every tile has the same size**: one compiled program encodes
(decodes) all of them. Each tile is coded independently (no context crosses a tile border; seams
may be visible at low rates), so encoding and decoding hold one tile's activations at a time,
plus the image itself (:func:`tiled_bytes`).

:func:`choose_tile` decides: no tiling when the whole image fits the memory budget
(:func:`lvae_jax.limits.memory_limit`), else the largest tiles that fit, made as equal as the
stride allows — and images with a side above :data:`MAX_UNTILED_SIDE` always in tiles of at most
that side, so that memory stays bounded on any machine.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from lvae_jax.entropy.coder import BitstreamError, as_bytes
from lvae_jax.limits import (MAX_PIXELS, MAX_SIDE, ResourceLimitError, activation_bytes,
                             budget_words, check_dimensions, format_gib,
                             memory_budget)

MAGIC = b"LVAT"
VERSION = 1
_HEAD = struct.Struct("<4sHHIIIIII")  # magic, version, flags, header_size, H, W, tile_h, tile_w, n_tiles
_ENTRY = struct.Struct("<II")         # length, crc32 (over the tile index, u32, then the bytes)
_CRC = struct.Struct("<I")
#: Smallest tile side accepted (pixels): one 64-pixel latent position.
MIN_TILE = 64
#: Most tiles in one file (a 65535² image in 256² tiles).
MAX_TILES = 1 << 16
#: ``tile="auto"`` codes images whose sides are all at most this whole (when they fit the memory
#: budget) and larger ones in tiles of at most this side: a 12-Mpx photo (4032×3024) stays one
#: file, a 48-Mpx one (8000×6000) is 2×2 tiles, whatever memory the machine has.
MAX_UNTILED_SIDE = 4096


@dataclass(frozen=True)
class TiledHeader:
    """A parsed, validated tiled-file header. Tile ``k`` covers rows ``r·tile_h …`` and columns
    ``c·tile_w …`` of the image, ``(r, c) = divmod(k, cols)``."""
    image_size: tuple[int, int]
    tile_size: tuple[int, int]
    tile_lengths: tuple[int, ...]
    tile_crcs: tuple[int, ...]
    header_size: int

    @property
    def grid(self) -> tuple[int, int]:
        return tile_grid(self.image_size, self.tile_size)

    @property
    def total_size(self) -> int:
        return self.header_size + sum(self.tile_lengths)

    def region(self, k: int) -> tuple[slice, slice]:
        """Rows and columns of the image that tile ``k`` covers (cropped to the image)."""
        return tile_region(self.image_size, self.tile_size, k)


def tile_region(image_size, tile_size, k: int) -> tuple[slice, slice]:
    """Rows and columns of an image of ``image_size`` that tile ``k`` (row-major) of
    ``tile_size`` covers, cropped to the image."""
    (h, w), (th, tw) = image_size, tile_size
    r, c = divmod(k, -(-w // tw))
    return slice(r * th, min((r + 1) * th, h)), slice(c * tw, min((c + 1) * tw, w))


def tile_grid(image_size, tile_size) -> tuple[int, int]:
    """(rows, cols) of tiles covering the image."""
    (h, w), (th, tw) = image_size, tile_size
    return -(-h // th), -(-w // tw)


def tile_crc(index: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(struct.pack("<I", index)))


def tile_size_for(image_size, tile: int, stride: int) -> tuple[int, int]:
    """The (tile_h, tile_w) of ``--tile N``: N (rounded up to the stride) per side, but no more
    than the padded image side."""
    if tile < MIN_TILE:
        raise ValueError(f"tile size {tile} is below the minimum of {MIN_TILE} pixels")
    t = -(-int(tile) // stride) * stride
    h, w = image_size
    return min(t, -(-h // stride) * stride), min(t, -(-w // stride) * stride)


def tiled_bytes(config, image_size, tile_size) -> int:
    """Estimated peak bytes of coding an image of ``image_size`` in tiles of ``tile_size``: one
    tile's activations (:func:`lvae_jax.limits.activation_bytes`) plus the image as float32 and
    as uint8 (input or output)."""
    h, w = image_size
    return activation_bytes(config, *tile_size) + h * w * 3 * (4 + 1)


def choose_tile(config, image_size, limit: int | None = None,
                max_side: int = MAX_UNTILED_SIDE) -> tuple[int, int] | None:
    """The tile size of ``tile="auto"`` for ``image_size`` under the memory budget ``limit``
    (default :func:`lvae_jax.limits.memory_limit`; 0 = unchecked): None when no side exceeds
    ``max_side`` and the whole image fits, else the largest square tiles of at most ``max_side``
    that fit, equalised over the rows and columns they need. Raises
    :class:`~lvae_jax.limits.ResourceLimitError` when not even :data:`MIN_TILE` tiles fit."""
    budget, total = memory_budget() if limit is None else (int(limit), int(limit))
    limit = budget
    h, w = image_size
    s = config.max_stride
    fits = limit <= 0 or activation_bytes(config, h, w) <= limit
    if fits and max(h, w) <= max_side:
        return None
    t = min(max(-(-h // s), -(-w // s)) * s, max_side // s * s)
    while (limit > 0 and t >= MIN_TILE
           and tiled_bytes(config, image_size, tile_size_for(image_size, t, s)) > limit):
        t -= s
    if t < MIN_TILE:
        raise ResourceLimitError(
            f"image {w}×{h}: even {MIN_TILE}-pixel tiles would need about "
            f"{format_gib(tiled_bytes(config, image_size, (MIN_TILE, MIN_TILE)))} with "
            f"{config.name}, more than {budget_words(budget, total)} (--max-memory)")
    rows, cols = tile_grid(image_size, (t, t))
    th = -(-(-(-h // rows)) // s) * s
    tw = -(-(-(-w // cols)) // s) * s
    return min(th, t), min(tw, t)


def check_tiled(config, image_size, tile_size, what: str = "image") -> None:
    """Raise :class:`~lvae_jax.limits.ResourceLimitError` unless coding ``image_size`` in tiles of
    ``tile_size`` is within the side, pixel and memory limits."""
    h, w = image_size
    check_dimensions(h, w, what)
    check_dimensions(*tile_size, what=f"{what} (tile)")
    budget, limit = memory_budget()
    need = tiled_bytes(config, image_size, tile_size)
    if limit > 0 and need > budget:
        th, tw = tile_size
        raise ResourceLimitError(
            f"{what}: {w}×{h} in tiles of {tw}×{th} would need about {format_gib(need)} with "
            f"{config.name} (estimate), more than {budget_words(budget, limit)}; allow more with "
            "--max-memory SIZE or LVAE_MAX_MEMORY=SIZE (0 = no check), or use smaller tiles")


# ------------------------------------------------------------------------------------------------
# The layout
# ------------------------------------------------------------------------------------------------


def write_tiled(image_size, tile_size, tiles) -> bytes:
    """The tiled file of ``image_size`` = (H, W) in ``tile_size`` tiles: ``tiles`` are the lvae
    containers of the tiles in raster order. Read back and checked before it is returned."""
    (h, w), (th, tw) = image_size, tile_size
    tiles = [bytes(t) for t in tiles]
    rows, cols = tile_grid(image_size, tile_size)
    if len(tiles) != rows * cols:
        raise ValueError(f"{len(tiles)} tiles for a {rows}×{cols} grid")
    header_size = _HEAD.size + _ENTRY.size * len(tiles) + _CRC.size
    head = _HEAD.pack(MAGIC, VERSION, 0, header_size, h, w, th, tw, len(tiles)) + b"".join(
        _ENTRY.pack(len(t), tile_crc(k, t)) for k, t in enumerate(tiles))
    data = head + _CRC.pack(zlib.crc32(head)) + b"".join(tiles)
    read_tiled(data)
    return data


def _fail(msg: str):
    raise BitstreamError(f"lvae tiled file: {msg}")


def read_tiled_header(data) -> TiledHeader:
    """Parse and validate the header alone (sizes against :mod:`lvae_jax.limits`, the tile grid
    against the tile count) — nothing is allocated in proportion to what it claims before this
    returns."""
    data = memoryview(as_bytes(data)).cast("B")
    if bytes(data[:4]) != MAGIC:
        _fail("bad magic")
    if len(data) < _HEAD.size:
        _fail(f"{len(data)} bytes, shorter than the fixed header (truncated)")
    _, version, flags, header_size, h, w, th, tw, n = _HEAD.unpack_from(data, 0)
    if version != VERSION:
        _fail(f"format version {version} is not supported (this reader knows version {VERSION})")
    if flags:
        _fail(f"unknown flags {flags:#06x} (corrupt, or a newer format)")
    if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE and h * w <= MAX_PIXELS):
        _fail(f"image size {w}×{h} is out of range (at most {MAX_SIDE} per side and "
              f"{MAX_PIXELS / 1e6:.0f} Mpx): corrupt or forged")
    if not (MIN_TILE <= th <= MAX_SIDE and MIN_TILE <= tw <= MAX_SIDE):
        _fail(f"tile size {tw}×{th} is out of range")
    rows, cols = tile_grid((h, w), (th, tw))
    if n != rows * cols or n > MAX_TILES:
        _fail(f"{n} tiles, but {w}×{h} in {tw}×{th} tiles needs {rows * cols} (corrupt)")
    if header_size != _HEAD.size + _ENTRY.size * n + _CRC.size:
        _fail(f"header size {header_size} does not match its {n} tile entries (corrupt)")
    if len(data) < header_size:
        _fail(f"{len(data)} bytes, the header alone has {header_size} (truncated)")
    head = bytes(data[: header_size - _CRC.size])
    if zlib.crc32(head) != _CRC.unpack_from(data, header_size - _CRC.size)[0]:
        _fail("header CRC mismatch (corrupt)")
    entries = [_ENTRY.unpack_from(head, _HEAD.size + k * _ENTRY.size) for k in range(n)]
    return TiledHeader((h, w), (th, tw), tuple(e[0] for e in entries), tuple(e[1] for e in entries),
                       header_size)


def iter_tiles(data, header: TiledHeader, allow_partial: bool = False):
    """Yield ``(k, bytes or None, problem or None)`` per tile: the tile's container when complete
    and intact; with ``allow_partial``, the bytes present of the first incomplete tile (its own
    chunk CRCs tell how much of it is usable) and None for the tiles after it."""
    data = memoryview(data).cast("B")
    pos, cut = header.header_size, False
    for k, (n, crc) in enumerate(zip(header.tile_lengths, header.tile_crcs)):
        if cut:
            yield k, None, "missing"
            continue
        payload = bytes(data[pos : pos + n])
        if len(payload) < n:
            if not allow_partial:
                _fail(f"tile {k} is incomplete ({len(payload)} of {n} bytes; truncated)")
            cut = True
            yield k, payload or None, f"incomplete ({len(payload)} of {n} bytes)"
            continue
        if tile_crc(k, payload) != crc:
            if not allow_partial:
                _fail(f"tile {k} CRC mismatch (corrupt)")
            cut = True
            yield k, payload, "CRC mismatch"
            continue
        yield k, payload, None
        pos += n


def read_tiled(data) -> tuple[TiledHeader, list[bytes]]:
    """Parse and validate a whole tiled file: the header and every tile's bytes (CRC-checked)."""
    header = read_tiled_header(data)
    if len(data) != header.total_size:
        how = "truncated" if len(data) < header.total_size else "extended or corrupt"
        _fail(f"{len(data)} bytes, the header announces {header.total_size} ({how})")
    return header, [t for _, t, _ in iter_tiles(data, header)]


def is_tiled(data) -> bool:
    """Whether ``data`` starts with the tiled file's magic."""
    return bytes(memoryview(as_bytes(data)).cast("B")[:4]) == MAGIC


def padded_tile(image, tile_size, k: int):
    """Tile ``k`` (row-major) of ``tile_size`` of ``image`` (H, W, C), padded by edge
    replication to the full tile size."""
    rs, cs = tile_region(image.shape[:2], tile_size, k)
    t = image[rs, cs]
    th, tw = tile_size
    if t.shape[:2] != (th, tw):
        t = np.pad(t, [(0, th - t.shape[0]), (0, tw - t.shape[1]), (0, 0)], mode="edge")
    return t


def num_tiles(image_size, tile_size) -> int:
    return math.prod(tile_grid(image_size, tile_size))
