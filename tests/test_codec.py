"""The codec end to end on tiny random models: round trips, formats, odd images, progressive and
partial decoding, wrong models, rate control and the command line."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

import lvae_jax
from lvae_jax import image as imageio
from lvae_jax.checkpoint.model_dir import save_model
from lvae_jax.codec import container, formats, rate_control
from lvae_jax.codec.api import Codec
from lvae_jax.codec.core import DecodeReport, decode_latent_robust
from lvae_jax.entropy import coder
from lvae_jax.entropy.coder import BitstreamError
from lvae_jax.models.inference import InferenceModel
import tiny_models as T
from sample_images import images_dir

IMAGES = images_dir()


@pytest.fixture(scope="module")
def codecs():
    """The tiny QRes, QARV and lossless codecs of two latent blocks (tests/tiny_models.py)."""
    return {k: T.codec(k + "2") for k in ("qres", "qarv", "lossless")}


def _lmb(kind):
    return 300.0 if kind == "qarv" else None


def load(name):
    return imageio.load_rgb8(IMAGES / name)[0]


def test_round_trip_equals_eval_reconstruction(codecs):
    """decompress(compress(x)) is the eval-mode reconstruction, for an image not a multiple of 64."""
    im = load("cat128.png")[:100, :90]
    for kind in ("qres", "qarv"):
        c = codecs[kind]
        data = c.compress(im, _lmb(kind))
        res = c.decompress_details(data)
        assert res.image.shape == im.shape and res.fmt == "lvae"
        assert not res.report.flips and not res.report.at_risk, res.notes
        x = imageio.pad_to_multiple(imageio.to_float(im))[None]
        lmb = None if _lmb(kind) is None else [_lmb(kind)]
        ref = np.asarray(InferenceModel.of(c.model).evaluate(x, lmb).recon)[0, :100, :90]
        assert np.abs(res.image - ref).max() < 1e-5


def test_lossless_is_exact(codecs):
    c = codecs["lossless"]
    for name in ("rocket128.png", "face64-1.png"):
        im = load(name)[:70, :67]
        res = c.decompress_details(c.compress(im))
        assert np.array_equal(imageio.to_uint8(res.image), im)


def test_batch_encoding_gives_the_same_files(codecs):
    c = codecs["qarv"]
    ims = [load("coffee64.png"), load("face64-2.png"), load("rocket128.png")]
    batch = c.compress_batch(ims, 300.0)
    assert batch == [c.compress(im, 300.0) for im in ims]


def test_official_layouts_round_trip(codecs):
    im = load("coffee64.png")
    for kind in ("qres", "qarv", "lossless"):
        c = codecs[kind]
        data = c.compress(im, _lmb(kind), fmt="official")
        assert formats.sniff(data) == ("qarv-official" if kind == "qarv" else "qres-official")
        res = c.decompress_details(data)
        ours = c.decompress_details(c.compress(im, _lmb(kind)))
        assert np.array_equal(res.image, ours.image)


# (padded sizes 64², 64×128, 64², 128²: sizes the other tests compile anyway)
@pytest.mark.parametrize("size", [(1, 1), (3, 100), (64, 64), (65, 127)])
def test_odd_sizes(codecs, size):
    rng = np.random.default_rng(0)
    im = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    c = codecs["qres"]
    assert c.decompress(c.compress(im)).shape == im.shape


def test_wrong_model_and_wrong_family_are_refused(codecs):
    im = load("coffee64.png")
    data = codecs["qres"].compress(im)
    other = T.codec("qres2", seed=7)
    with pytest.raises(BitstreamError, match="other weights or config"):
        other.decompress_details(data)
    with pytest.raises(BitstreamError):
        codecs["qarv"].decompress_details(data)
    with pytest.raises(BitstreamError, match="QARV"):
        codecs["qres"].decompress_details(codecs["qarv"].compress(im, 300.0, fmt="official"))


def test_lambda_is_explicit_and_checked(codecs):
    im = load("coffee64.png")
    with pytest.raises(ValueError, match="variable-rate"):
        codecs["qarv"].compress(im)
    with pytest.raises(ValueError, match="outside the range"):
        codecs["qarv"].compress(im, 5000.0)
    with pytest.raises(ValueError, match="fixed-rate"):
        codecs["qres"].compress(im, 64.0)


def test_progressive_and_truncated_files(codecs):
    c = codecs["qarv"]
    im = load("rocket128.png")
    data = c.compress(im, 300.0)
    L = c.num_latents
    full = c.decompress(data)
    assert np.array_equal(c.decompress(data, num_blocks=L), full)
    zero = c.decompress(data, num_blocks=0)
    from lvae_jax import generative as G   # the generative decoder: another path to the prior mean
    prior = np.asarray(G.sample(c.model, None, 1, 2, 2, lmb=300.0, temperature=0.0))[0]
    assert np.abs(zero - prior).max() < 1e-5
    hot = c.decompress(data, num_blocks=1, temperature=1.0, key=jax.random.key(3))
    assert not np.array_equal(hot, c.decompress(data, num_blocks=1))
    # A container cut inside the last latent block decodes the ones before it with --partial, and
    # is refused without.
    h = container.read_header(data)
    cut = h.header_size + sum(h.chunk_lengths[:L - 1]) + 3
    with pytest.raises(BitstreamError, match="truncated"):
        c.decompress_details(data[:cut])
    part = c.decompress_details(data[:cut], allow_partial=True)
    assert part.blocks_decoded == L - 1 and np.array_equal(part.image,
                                                         c.decompress(data, num_blocks=L - 1))


def test_corrupt_files_raise_clear_errors(codecs):
    c = codecs["qres"]
    data = bytearray(c.compress(load("coffee64.png")))
    for pos in (0, 10, len(data) // 2, len(data) - 1):
        bad = bytearray(data)
        bad[pos] ^= 0x40
        with pytest.raises(BitstreamError):
            c.decompress_details(bytes(bad))
    with pytest.raises(BitstreamError):
        c.decompress_details(b"garbage" * 10)


def test_index_flip_recovered_by_symbol_checksum():
    """A string written with one index on the other side of a table boundary than the decoder
    computes is recovered exactly thanks to the symbol CRC; the report says so."""
    from lvae_jax.entropy.tables import get_tables
    t = get_tables("qres_latent")
    rng = np.random.default_rng(0)
    n = 2000
    mids = np.sqrt(t.scale_table[:-1].astype(np.float64) * t.scale_table[1:])   # far from thresholds
    scales = mids[rng.integers(5, 50, n)].astype(np.float32)
    j = 777
    thr = t.scale_table[30]
    scales[j] = np.nextafter(thr, np.float32(100))          # just above a threshold (decoder side)
    idx_dec = t.build_indexes(scales)
    idx_enc = idx_dec.copy()
    idx_enc[j] -= 1                                          # the encoder's scale was just below it
    sym = np.round(rng.normal(0, scales)).astype(np.int32)
    string = coder.encode(sym, idx_enc, t)
    rep = DecodeReport()
    out = decode_latent_robust(string, idx_dec, scales, t, rep, "test", expected_crc=coder.symbols_crc(sym))
    assert np.array_equal(out, sym) and rep.flips and rep.flips[0][1] == 1
    with pytest.raises(BitstreamError, match="not a cross-implementation"):
        far = scales.copy()
        far[j] = thr * 1.5
        decode_latent_robust(string, t.build_indexes(far), far, t, DecodeReport(), "test",
                             expected_crc=coder.symbols_crc(sym) ^ 1)


def test_rate_control(codecs):
    c = codecs["qarv"]
    im = load("astronaut256.png")
    lo = len(c.compress(im, c.config.lmb_range[0]))
    target = len(c.compress(im, 200.0))       # a size this model does make
    res = c.compress_to_target(im, target_bytes=target)
    assert res.within_tolerance, res.message
    assert 0.98 * target <= len(res.data) <= target and "% of the target" in res.message
    assert len(c.compress(im, res.lmb)) == len(res.data)      # the λ it reports made it
    out = c.compress_to_target(im, target_bytes=min(lo, target) // 2)
    assert not out.within_tolerance and "below the smallest" in out.message
    assert len(out.data) == min(n for _, n in out.trials)
    with pytest.raises(ValueError, match="fixed-rate"):
        codecs["qres"].compress_to_target(im, target_bytes=1000)


def test_rate_control_when_size_is_not_monotone_in_lambda():
    """File size that first falls then rises with λ (as a real model can do at the low end):
    the search must still find the file under the target that a bisection from the ends misses."""
    lo, hi = math.log(16), math.log(2048)

    def size(lmb):                               # 4708 B at λ = 16, a dip to ~4550 B near λ = 30
        t = (math.log(lmb) - lo) / (hi - lo)
        return int(4708 - 2400 * t + 9000 * t * t)

    calls = []

    def compress(lmb):
        calls.append(lmb)
        return b"x" * size(lmb), []

    res = rate_control.search(compress, (16.0, 2048.0), 4700)
    assert res.within_tolerance and 4606 <= len(res.data) <= 4700, res.message
    assert size(res.lmb) == len(res.data) and res.lmb > 16
    assert len(calls) <= 24
    res = rate_control.search(compress, (16.0, 2048.0), 4000)     # below every file there is
    assert not res.within_tolerance and "below the smallest file found" in res.message
    assert len(res.data) == min(size(l) for l in calls)
    res = rate_control.search(compress, (16.0, 2048.0), 10 ** 6)
    assert not res.within_tolerance and "above the largest file found" in res.message


def test_cli_compress_decompress(cli, codecs, tmp_path):
    save_model(codecs["qarv"].model, tmp_path / "m")
    src = IMAGES / "cat128.png"
    r = cli("compress", src, tmp_path / "x.lvae", "--ckpt", tmp_path / "m", "--lmb", "300")
    assert r.returncode == 0, r.stderr
    assert "bpp" in r.stdout and "λ = 300" in r.stdout
    r = cli("decompress", tmp_path / "x.lvae", tmp_path / "x.png", "--ckpt", tmp_path / "m",
            "--original", src, "--strip", tmp_path / "strip.png")
    assert r.returncode == 0, r.stderr
    assert "PSNR" in r.stdout and (tmp_path / "x.png").is_file() and (tmp_path / "strip.png").is_file()
    bad = tmp_path / "bad.lvae"
    bad.write_bytes((tmp_path / "x.lvae").read_bytes()[:-5])
    r = cli("decompress", bad, tmp_path / "y.png", "--ckpt", tmp_path / "m")
    assert r.returncode == 2 and r.stderr.startswith("error:") and "Traceback" not in r.stderr
    r = cli("compress", src, tmp_path / "z.lvae", "--ckpt", tmp_path / "m")
    assert r.returncode == 2 and "variable-rate" in r.stderr


def test_official_files_warn_about_elements_at_risk():
    """``compress(fmt="official")`` counts, in the encoder pass, the latent elements whose prior
    scale lies within the near-boundary band of a table threshold, and warns with the count; the
    decoder's own count (from its scales, in float64) agrees. The band is widened here (2 %) so
    that a tiny model has hundreds of such elements."""
    c = Codec(T.model("qarv2"), near_boundary=0.02)
    im = load("astronaut256.png")
    notes: list = []
    data = c.compress(im, 300.0, fmt="official", notes=notes)
    assert len(notes) == 1 and "silently wrong" in notes[0]
    n_enc = int(notes[0].split()[0])
    res = c.decompress_details(data)
    n_dec = sum(res.report.at_risk.values())
    assert n_enc > 50 and abs(n_enc - n_dec) <= max(2, n_dec // 50), (n_enc, n_dec)
    lvae_notes: list = []
    c.compress(im, 300.0, notes=lvae_notes)
    assert lvae_notes == []          # the container checks every symbol: nothing to warn about
