"""Portable table indexes: the encoder's side of every threshold a decoder's floats could cross.

A latent element's table index is a threshold test on its float32 prior scale
(:func:`lvae_jax.entropy.tables.build_indexes`). A decoder on another device or float path
computes the scale with a small relative error ``e``; if a threshold ``t`` lies between the two
values, it picks the neighbouring table and the rANS string decodes into garbage. With a bound
``|e| ≤ δ`` (the file's *hint bound*), this module makes decoding exact **by construction**:

* the encoder takes every element whose raw scale lies within ``2δ`` (relative) of a reachable
  threshold — the set ``E`` — and records, per element of ``E``, one bit: whether its scale is
  above that threshold;
* a decoder takes every element whose scale (its own) lies within ``δ`` of a threshold — the set
  ``D``. Each element that can flip is in ``D`` (the threshold lies between the two scales, so
  within ``δ`` of the decoder's), and ``D ⊆ E`` (within ``δ`` of the decoder's scale is within
  ``2δ`` of the encoder's), so the decoder asks for the bit of each element of ``D`` and sets its
  index to the encoder's side. Elements outside ``D`` cannot have flipped.

The bits are stored in a *static retrieval structure* (an XOR filter without fingerprints:
``value(key) = B[h0] ⊕ B[h1] ⊕ B[h2]``, built by hypergraph peeling), which answers correctly
for every key of ``E`` and arbitrarily for others — the decoder only asks about keys of ``E`` —
at about 1.23 bits per element of ``E`` plus a few bytes, instead of a position list (≈ 13 bits
per element). Keys are element positions in decoding order over all strings of an image: latent
0 in coder order, then latent 1, …, then the lossless pixels.

The lossless head's pixel means are covered the same way (files with ``FLAG_LEVEL_HINTS``): a
pixel is ``symbol + round(level)`` with the raw level ``pm·127.5 + 127.5`` (8-bit units), so a
decoder whose ``pm`` differs by up to ``δ`` (absolute, in the [-1, 1] units of ``pm``: its level
by up to ``127.5·δ``) can round to the other side of a half-integer and be one level off. The
encoder records, for every pixel whose level lies within ``2·127.5·δ`` of a half-integer, whether
it rounded up; the decoder asks for each pixel within ``127.5·δ`` of one and rounds to the
encoder's side — the same argument as above, with the half-integers as thresholds. Their keys
follow all the strings' elements (latents, then pixel scales, then pixel levels).
"""

from __future__ import annotations

import math

import numpy as np

from lvae_jax.entropy.tables import nearest_threshold

#: Default hint bound δ (relative): 2⁻¹⁵ ≈ 3.05·10⁻⁵, about twice the largest difference measured
#: between lvae-jax's own decoders (1.43·10⁻⁵, the depthwise kernels; docs/cross_implementation.md)
#: and the PyTorch-vs-XLA maximum (1.6·10⁻⁵).
DEFAULT_BOUND_EXP = 15
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


class HintError(ValueError):
    """Hints that cannot be built or parsed."""


def bound(exp: int) -> float:
    """δ of a hint-bound exponent: ``2**-exp``."""
    return 2.0 ** -int(exp)


def sides(scales, tables, band: float):
    """Per raw scale (flat float32): whether a reachable threshold lies within ``band``
    (relative), and whether the scale is above it (``(mask, above, flip)``; ``flip`` is the index
    change that crossing the threshold means, :func:`nearest_threshold`)."""
    rel, flip = nearest_threshold(scales, tables.scale_table, tables.bound)
    mask = rel < band
    above = flip < 0                 # above the nearest threshold: crossing it lowers the index
    return mask, above, flip


#: Pixel-level hints need ``2 · 127.5 · δ < 0.5`` (the encoder's band must not reach the next
#: half-integer): bounds from 2^-10 down.
LEVEL_MIN_EXP = 10


def level_band(exp: int) -> float:
    """The decoder's band on a pixel level (8-bit units) for bound ``2**-exp`` on ``pm``."""
    return 127.5 * bound(exp)


def level_sides(levels, band: float):
    """Per raw pixel level (flat float32, 8-bit units): whether it lies within ``band`` of a
    half-integer ``h = floor(level) + 0.5``, and whether it rounds up there (``round`` is the
    device's: half to even). -> (mask, up, h) with ``h`` float64."""
    lv = np.asarray(levels, np.float32).reshape(-1)
    h = np.floor(lv.astype(np.float64)) + 0.5
    mask = np.abs(lv - h) < band
    up = np.round(lv).astype(np.float64) > h
    return mask, up, h


# ------------------------------------------------------------------------------------------------
# The retrieval structure
# ------------------------------------------------------------------------------------------------


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _M64
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _M64
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _M64
        return x ^ (x >> np.uint64(31))


def _slots(keys: np.ndarray, seed: int, seg: int) -> np.ndarray:
    """(n, 3) slot of each key in each of the three segments of length ``seg``."""
    k = keys.astype(np.uint64)
    out = np.empty((k.size, 3), np.int64)
    for j in range(3):
        h = _mix(k ^ _mix(np.full(k.shape, seed * 3 + j + 1, np.uint64)))
        out[:, j] = j * seg + (h % np.uint64(seg)).astype(np.int64)
    return out


def varint(n: int) -> bytes:
    """The LEB128 varint of ``n`` (inverse of :func:`read_varint`)."""
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def read_varint(data, pos: int) -> tuple[int, int]:
    """(value, next position) of the LEB128 varint at ``pos``; raises :class:`HintError`."""
    n = shift = 0
    for i in range(pos, min(len(data), pos + 5)):
        b = data[i]
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, i + 1
        shift += 7
    raise HintError("truncated or oversized varint")


def build(keys, bits) -> bytes:
    """A retrieval structure answering ``bits[i]`` for ``keys[i]`` (distinct non-negative ints).
    Layout: seed (u8), segment length (varint), ``3·seg`` bits (LSB first). Empty for no keys."""
    keys = np.asarray(keys, np.int64)
    bits = np.asarray(bits, bool)
    n = keys.size
    if n == 0:
        return b""
    seg = max(1, math.ceil((1.23 * n + 8) / 3))
    for seed in range(256):
        slots = _slots(keys, seed, seg)
        order = _peel(slots, 3 * seg)
        if order is not None:
            break
    else:                                   # pragma: no cover - astronomically unlikely
        raise HintError(f"could not build the hint structure for {n} keys")
    table = np.zeros(3 * seg, np.uint8)
    for key_i, slot in reversed(order):     # assign in reverse peeling order
        a, b, c = slots[key_i]
        table[slot] = 0
        table[slot] = bits[key_i] ^ table[a] ^ table[b] ^ table[c]
    return bytes([seed]) + varint(seg) + np.packbits(table, bitorder="little").tobytes()


def _peel(slots: np.ndarray, m: int):
    """Peeling order [(key, its free slot)] of the 3-hypergraph, or None if it has a 2-core."""
    count = np.zeros(m, np.int64)
    xor = np.zeros(m, np.int64)             # xor of the key ids in each slot
    np.add.at(count, slots.ravel(), 1)
    ids = np.repeat(np.arange(len(slots)), 3)
    np.bitwise_xor.at(xor, slots.ravel(), ids)
    stack = list(np.flatnonzero(count == 1))
    order = []
    while stack:
        s = stack.pop()
        if count[s] != 1:
            continue
        k = int(xor[s])
        order.append((k, int(s)))
        for t in slots[k]:
            count[t] -= 1
            xor[t] ^= k
            if count[t] == 1:
                stack.append(int(t))
    return order if len(order) == len(slots) else None


class Retrieval:
    """A parsed structure: ``query(keys) -> bits`` (correct for the keys it was built for)."""

    def __init__(self, blob: bytes):
        if not blob:
            self.seed, self.seg, self.table = 0, 0, np.zeros(0, np.uint8)
            return
        self.seed = blob[0]
        self.seg, pos = read_varint(blob, 1)
        if self.seg < 1:
            raise HintError("hint structure with an empty table")
        need = -(-3 * self.seg // 8)
        if len(blob) - pos != need:
            raise HintError(f"hint structure of {len(blob) - pos} bytes, its header announces {need}")
        self.table = np.unpackbits(np.frombuffer(blob, np.uint8, offset=pos), bitorder="little")

    def query(self, keys) -> np.ndarray:
        keys = np.asarray(keys, np.int64)
        if keys.size == 0:
            return np.zeros(0, bool)
        if self.seg == 0:
            raise HintError("asked for hints that the file does not have")
        s = _slots(keys, self.seed, self.seg)
        t = self.table
        return (t[s[:, 0]] ^ t[s[:, 1]] ^ t[s[:, 2]]).astype(bool)


# ------------------------------------------------------------------------------------------------
# Encoder and decoder sides
# ------------------------------------------------------------------------------------------------


def encode_hints(strings, bound_exp: int = DEFAULT_BOUND_EXP,
                 levels=None) -> tuple[bytes, int]:
    """``strings``: per string of an image in decoding order, ``(raw scales flat float32,
    tables)``; ``levels``: the lossless head's raw pixel levels (flat, coder order), or None.
    -> (structure bytes, number of elements recorded)."""
    band = 2.0 * bound(bound_exp)
    keys, bits, offset = [], [], 0
    for scales, tables in strings:
        scales = np.asarray(scales, np.float32).reshape(-1)
        mask, above, _ = sides(scales, tables, band)
        pos = np.flatnonzero(mask)
        keys.append(pos + offset)
        bits.append(above[pos])
        offset += scales.size
    if levels is not None:
        mask, up, _ = level_sides(levels, 2.0 * level_band(bound_exp))
        pos = np.flatnonzero(mask)
        keys.append(pos + offset)
        bits.append(up[pos])
    keys = np.concatenate(keys) if keys else np.zeros(0, np.int64)
    bits = np.concatenate(bits) if bits else np.zeros(0, bool)
    return build(keys, bits), int(keys.size)


def apply_hints(structure: Retrieval, offset: int, scales, indexes, tables,
                bound_exp: int) -> tuple[np.ndarray, int]:
    """The encoder's indexes for one string: ``indexes`` (this decoder's, flat int32, coder
    order) corrected at every element whose scale lies within δ of a threshold. ``offset``: key
    of the string's first element. -> (indexes, number corrected)."""
    scales = np.asarray(scales, np.float32).reshape(-1)
    mask, above, flip = sides(scales, tables, bound(bound_exp))
    pos = np.flatnonzero(mask)
    if pos.size == 0:
        return indexes, 0
    want_above = structure.query(pos + offset)
    wrong = pos[want_above != above[pos]]
    if wrong.size == 0:
        return indexes, 0
    out = np.array(indexes, np.int32, copy=True)
    out[wrong] = np.clip(out[wrong] + flip[wrong], 0, len(np.asarray(tables.scale_table)) - 1)
    return out, int(wrong.size)


def apply_level_hints(structure: Retrieval, offset: int, levels,
                      bound_exp: int) -> tuple[np.ndarray, int]:
    """The encoder's rounding of this decoder's raw pixel levels (flat, coder order): ``round``
    everywhere, corrected to the encoder's side within ``127.5·δ`` of a half-integer. ``offset``:
    key of the first level. -> (rounded levels float64, number corrected)."""
    lv = np.asarray(levels, np.float32).reshape(-1)
    rounded = np.round(lv).astype(np.float64)
    mask, up, h = level_sides(lv, level_band(bound_exp))
    pos = np.flatnonzero(mask)
    if pos.size == 0:
        return rounded, 0
    want_up = structure.query(pos + offset)
    differ = want_up != up[pos]
    wrong = pos[differ]
    rounded[wrong] = h[wrong] + np.where(want_up[differ], 0.5, -0.5)
    return rounded, int(wrong.size)
