"""Portable table indexes (container version 2): a file decodes bit-exactly on a decoder whose
prior scales differ from the encoder's by up to the file's hint bound, and fails loudly beyond it.

"Another device" is :class:`lvae_jax.codec.core.Perturbation` (``Codec.with_perturbation``): every prior
scale the decoder computes is perturbed by a deterministic relative error uniform in ±δ before
its table index is taken. A wide bound (δ = 2⁻⁷) makes a tiny model flip hundreds of indexes, so
that the hints are exercised, not just carried."""

from __future__ import annotations

import numpy as np
import pytest

from lvae_jax.codec import container
from lvae_jax.codec.core import Perturbation
from lvae_jax.entropy import hints
from lvae_jax.entropy.coder import BitstreamError
import tiny_models as T
from test_codec import load

EXP = 7                     # δ = 1/128
DELTA = hints.bound(EXP)


@pytest.fixture(scope="module")
def codecs():
    """The tiny QARV and lossless codecs of two latent blocks (tests/tiny_models.py; the programs
    of test_codec.py)."""
    return {k: T.codec(k + "2") for k in ("qarv", "lossless")}


def test_retrieval_answers_every_key_it_was_built_for():
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 100, 3000):
        keys = rng.choice(1 << 40, n, replace=False)
        bits = rng.random(n) < 0.5
        blob = hints.build(keys, bits)
        assert np.array_equal(hints.Retrieval(blob).query(keys), bits)
        if n >= 100:                                   # ~1.23 bits per key
            assert 8 * len(blob) < 1.3 * n + 40
    assert hints.build([], []) == b""


def test_the_decoder_set_is_inside_the_encoder_set():
    """Every element whose index a decoder within δ could get wrong is asked for (it is within δ
    of a threshold by the decoder's own scale), and every element asked for is recorded (within
    2δ by the encoder's)."""
    from lvae_jax.entropy.tables import get_tables
    t = get_tables("qarv_latent")
    rng = np.random.default_rng(1)
    enc = np.exp(rng.uniform(np.log(0.05), np.log(300), 200_000)).astype(np.float32)
    dec = (enc * (1 + DELTA * rng.uniform(-1, 1, enc.size))).astype(np.float32)
    flipped = t.build_indexes(enc) != t.build_indexes(dec)
    asked, _, _ = hints.sides(dec, t, DELTA)
    recorded, _, _ = hints.sides(enc, t, 2 * DELTA)
    assert flipped.sum() > 100
    assert not np.any(flipped & ~asked) and not np.any(asked & ~recorded)


def test_the_level_decoder_set_is_inside_the_encoder_set():
    """The same for the lossless head's pixel levels: every level a decoder within δ (in pm,
    127.5·δ in levels) could round to the other side is asked for, every one asked for is
    recorded, and the hinted rounding is the encoder's."""
    rng = np.random.default_rng(2)
    exp = hints.LEVEL_MIN_EXP
    d = 127.5 * hints.bound(exp)
    enc = rng.uniform(-3, 258, 400_000).astype(np.float32)
    enc[:2000] = np.floor(enc[:2000]) + 0.5                  # exact half-integers: half to even
    dec = (enc.astype(np.float64) + d * rng.uniform(-1, 1, enc.size)).astype(np.float32)
    flipped = np.round(enc) != np.round(dec)
    asked, _, _ = hints.level_sides(dec, d)
    recorded, up, _ = hints.level_sides(enc, 2 * d)
    assert flipped.sum() > 100
    assert not np.any(flipped & ~asked) and not np.any(asked & ~recorded)
    keys = np.flatnonzero(recorded)
    structure = hints.Retrieval(hints.build(keys, up[keys]))
    rounded, n = hints.apply_level_hints(structure, 0, dec, exp)
    assert n == flipped.sum() and np.array_equal(rounded, np.round(enc))


@pytest.mark.parametrize("kind", ["qarv", "lossless"])
def test_exact_at_the_bound_and_an_error_beyond(codecs, kind):
    c = codecs[kind]
    im = load("astronaut256.png")
    lmb = 300.0 if kind == "qarv" else None
    data = c.compress(im, lmb, hint_bound_exp=EXP)
    h = container.read_header(data)
    assert h.version == 2 and h.checks.hint_bound_exp == EXP and h.checks.hints
    clean = c.decompress_details(data)
    assert not any("hints" in n for n in clean.notes)        # same floats: nothing to correct
    moved = c.with_perturbation(Perturbation(scale=DELTA)).decompress_details(data)
    assert sum(n for _, n in moved.report.hinted) > 20, moved.report.hinted
    assert np.array_equal(moved.image, clean.image)          # every symbol exact
    if kind == "lossless":
        from lvae_jax import image as imageio
        assert np.array_equal(imageio.to_uint8(moved.image), im)
    with pytest.raises(BitstreamError, match="portable-index hints"):
        c.with_perturbation(Perturbation(scale=8 * DELTA)).decompress_details(data)


def test_version_1_files_still_decode(codecs):
    c = codecs["qarv"]
    im = load("astronaut256.png")
    v1 = c.compress(im, 300.0, hint_bound_exp=None)
    v2 = c.compress(im, 300.0)
    assert container.read_header(v1).version == 1 and container.read_header(v2).version == 2
    assert np.array_equal(c.decompress(v1), c.decompress(v2))
    assert len(v2) > len(v1)


def test_corrupt_hints_are_refused(codecs):
    c = codecs["qarv"]
    data = bytearray(c.compress(load("astronaut256.png"), 300.0, hint_bound_exp=EXP))
    h = container.read_header(bytes(data))
    at = h.header_size - 4 - len(h.checks.hints)             # the hint bytes, before the CRC
    data[at + 3] ^= 0x01
    with pytest.raises(BitstreamError, match="CRC"):
        c.decompress_details(bytes(data))


def test_lossless_is_exact_when_the_pixel_means_move(codecs):
    """Lossless files carry the encoder's rounding of every pixel level near a half-integer: a
    decoder whose scales and pixel means both differ by up to the bound reproduces the input
    exactly (hundreds of levels corrected); beyond the bound it is an error, never a lossy
    image. Without the level hints (a bound too wide for them) the moved means are caught by
    the image checksum."""
    c = codecs["lossless"]
    im = load("astronaut256.png")
    exp = hints.LEVEL_MIN_EXP
    data = c.compress(im, hint_bound_exp=exp)
    assert container.read_header(data).checks.level_hints
    res = c.with_perturbation(Perturbation(hints.bound(exp), hints.bound(exp))).decompress_details(data)
    from lvae_jax import image as imageio
    assert np.array_equal(imageio.to_uint8(res.image), im)
    corrected = dict(res.report.hinted).get("pixel levels", 0)
    assert corrected > 100, res.report.hinted
    with pytest.raises(BitstreamError, match="not lossless"):
        c.with_perturbation(Perturbation(hints.bound(exp), 8 * hints.bound(exp))).decompress_details(data)
    wide = c.compress(im, hint_bound_exp=EXP)            # 2^-7: no level hints
    assert not container.read_header(wide).checks.level_hints
    with pytest.raises(BitstreamError, match="not lossless"):
        c.with_perturbation(Perturbation(0.0, hints.bound(exp))).decompress_details(wide)


def test_lossless_files_check_the_decoded_image(codecs):
    """A lossless file with hints carries the CRC of the 8-bit image; a decode that differs (a
    decoder rounding a pixel mean to the other level) is an error, not a silently lossy image.
    Here the stored CRC is altered (and the header re-signed) to stand for such a decoder."""
    import struct
    import zlib
    c = codecs["lossless"]
    im = load("astronaut256.png")
    data = c.compress(im)
    h = container.read_header(data)
    checks = h.checks
    assert checks.image_crc is not None
    # before the header CRC: image CRC, bound exponent, varint length, hints
    at = h.header_size - 4 - len(checks.hints) - len(hints.varint(len(checks.hints))) - 1 - 4
    assert struct.unpack_from("<I", data, at)[0] == checks.image_crc
    head = bytearray(data[: h.header_size - 4])
    struct.pack_into("<I", head, at, checks.image_crc ^ 1)
    forged = bytes(head) + struct.pack("<I", zlib.crc32(bytes(head))) + data[h.header_size:]
    with pytest.raises(BitstreamError, match="not lossless"):
        c.decompress_details(forged)
