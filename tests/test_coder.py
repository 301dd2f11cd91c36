"""CompressAI's range coder behind lvae_jax.entropy.coder: same bytes as CompressAI, validated
inputs, bounded reads, and a pure-Python reference that agrees with it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lvae_jax.entropy import coder, tables as T
from lvae_jax.entropy.coder import BitstreamError

FIXTURE = Path(__file__).parent / "fixtures" / "compressai_tables.npz"
NAMES = list(T.SPECS)


@pytest.fixture(scope="module")
def recorded():
    with np.load(FIXTURE) as z:
        return {k: z[k] for k in z.files}


def _random_symbols(rng, t, n, escapes=0, big=False):
    scales = np.exp(rng.uniform(np.log(0.05), np.log(30), n)).astype(np.float32)
    sym = np.round(rng.normal(0, 1, n) * scales).astype(np.int64)
    if escapes:
        pos = rng.choice(n, min(escapes, n), replace=False)
        mag = rng.integers(100, coder.MAX_ABS_SYMBOL if big else 5000, pos.size)
        sym[pos] = rng.choice([-1, 1], pos.size) * mag
    return sym.astype(np.int32), t.build_indexes(scales)


@pytest.mark.parametrize("name", NAMES)
def test_bytes_equal_compressai_compress(name, recorded):
    """CompressAI's compress() output (recorded, escapes included) is reproduced by the compiled
    coder and by the Python reference; both decoders return the symbols."""
    t = T.get_tables(name)
    for b in range(2):
        sym = recorded[f"{name}/sample_symbols"][b]
        idx = recorded[f"{name}/sample_indexes"][b].astype(np.int32)
        ref = recorded[f"{name}/sample_string{b}"].tobytes()
        assert coder.encode(sym, idx, t) == ref
        assert coder.reference_encode(sym, idx, t) == ref
        assert np.array_equal(coder.decode(ref, idx, t, verify=True), sym)
        assert np.array_equal(coder.reference_decode(ref, idx, t), sym)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 6, 7, 8, 31, 1000])
def test_round_trip_all_sizes(n):
    """Every size round-trips; below NATIVE_MIN_SYMBOLS the encoder avoids the C++ flush
    buffer overflow (one symbol corrupts the heap, zero segfault) and still writes the same
    bytes the algorithm defines."""
    rng = np.random.default_rng(n)
    t = T.get_tables("qarv_latent")
    sym, idx = _random_symbols(rng, t, n, escapes=n // 10 + (n > 0))
    data = coder.encode(sym, idx, t)
    assert data == coder.reference_encode(sym, idx, t)
    assert len(data) % 4 == 0 and len(data) >= 8
    out = coder.decode(data, idx, t, verify=True)
    assert out.dtype == np.int32 and np.array_equal(out, sym)
    assert np.array_equal(coder.reference_decode(data, idx, t), sym)


def test_compiled_and_reference_coders_agree_on_many_streams():
    rng = np.random.default_rng(11)
    for k in range(30):
        name = NAMES[k % 3]
        t = T.get_tables(name)
        sym, idx = _random_symbols(rng, t, int(rng.integers(7, 3000)), escapes=int(rng.integers(0, 20)),
                                   big=k % 2 == 0)
        data = coder.encode(sym, idx, t)
        assert data == coder.reference_encode(sym, idx, t), f"stream {k}"
        assert np.array_equal(coder.decode(data, idx, t), sym)
        em = coder.emulate_native_decode(data, idx, t)
        assert em.words_read == len(data) // 4 and em.final_state == coder.RANS_L
        assert np.array_equal(em.values, sym)


def test_extreme_symbols():
    t = T.get_tables("qres_latent")
    m = coder.MAX_ABS_SYMBOL
    sym = np.array([m, -m, 0, 1, -1, 2**20, -(2**20) + 3, 7] * 2, np.int32)
    idx = np.arange(sym.size, dtype=np.int32) % t.num_tables
    data = coder.encode(sym, idx, t)
    assert np.array_equal(coder.decode(data, idx, t, verify=True), sym)
    with pytest.raises(ValueError, match="out of the coder's safe range"):
        coder.encode(np.array([coder.MAX_ABS_SYMBOL + 1] * 8), np.zeros(8, np.int32), t)
    with pytest.raises(ValueError, match="out of the coder's safe range"):
        coder.encode(np.array([np.iinfo(np.int32).min] * 8), np.zeros(8, np.int32), t)


@pytest.mark.parametrize("symbols,indexes,match", [
    (np.zeros(8, np.int32), np.full(8, 64, np.int32), r"indexes must lie in \[0, 64\)"),
    (np.zeros(8, np.int32), np.full(8, -1, np.int32), r"indexes must lie in \[0, 64\)"),
    (np.zeros(8, np.int32), np.zeros(7, np.int32), "8 symbols but 7 indexes"),
    (np.zeros((2, 4), np.int32), np.zeros(8, np.int32), "flat"),
    (np.zeros(8, np.float32), np.zeros(8, np.int32), "must be integers"),
    (np.zeros(8, np.int32), np.zeros(8, np.float64), "must be integers"),
])
def test_encoder_input_validation(symbols, indexes, match):
    with pytest.raises(ValueError, match=match):
        coder.encode(symbols, indexes, T.get_tables("qarv_latent"))


def test_decoder_refuses_malformed_strings():
    t = T.get_tables("qarv_latent")
    idx = np.zeros(10, np.int32)
    good = coder.encode(np.zeros(10, np.int32), idx, t)
    for bad, match in ((good[:-1], "whole number"), (good[:4], "whole number"), (b"", "whole number"),
                       (bytes(8), "invalid coder state"), (b"\xff" * 8, "invalid coder state")):
        with pytest.raises(BitstreamError, match=match):
            coder.decode(bad, idx, t)
        with pytest.raises(BitstreamError):
            coder.reference_decode(bad, idx, t)
    with pytest.raises(BitstreamError, match="must be bytes"):
        coder.decode(12345, idx, t)
    with pytest.raises(ValueError):
        coder.decode(good, np.full(10, 99), t)


def test_truncated_and_corrupt_streams_never_crash():
    """Every truncation (to whole words) and many corruptions of a stream with escapes decode
    without crashing; verification and the reference decoder refuse all of them except those
    that are themselves valid encodings."""
    rng = np.random.default_rng(5)
    t = T.get_tables("qarv_latent")
    sym, idx = _random_symbols(rng, t, 400, escapes=6)
    data = coder.encode(sym, idx, t)
    for cut in range(8, len(data), 4):
        s = data[:cut]
        try:
            coder.decode(s, idx, t)
        except BitstreamError:
            pass
        with pytest.raises(BitstreamError):
            coder.decode(s, idx, t, verify=True)
        with pytest.raises(BitstreamError):
            coder.reference_decode(s, idx, t)
        em = coder.emulate_native_decode(s, idx, t)
        assert em.words_read <= len(s) // 4 + coder.decoder_padding_words(idx.size, s)
    caught = 0
    for k in range(300):
        s = bytearray(data)
        p = int(rng.integers(8, len(s)))
        s[p] ^= 1 << int(rng.integers(0, 8))
        s = bytes(s)
        try:
            out = coder.decode(s, idx, t, verify=True)
        except BitstreamError:
            caught += 1
            continue
        assert not np.array_equal(out, sym)  # a different, valid encoding (a flipped raw escape bit)
    assert caught >= 250, f"verification caught only {caught}/300 single-bit corruptions"


def test_padding_bound_holds_for_crafted_escape_runs():
    """Streams no encoder writes — an escape announcing up to 3000 4-bit chunks made of
    all-ones words, then cut short — read far past their end; the padding covers it
    (checked by the emulation of the C++ decoder), and the compiled decoder agrees."""
    t = T.get_tables("qarv_latent")
    c = t.cdf
    ci = 40
    row, maxv = c._rows[ci], c._lengths[ci] - 2
    for count, present in ((30, 30), (200, 20), (3000, 64), (3000, 3000)):
        units = [(row[5], row[6] - row[5], False)] * 4 + [(row[maxv], row[maxv + 1] - row[maxv], False)]
        rest = count
        while rest >= 15:
            units.append((15, 16, True))
            rest -= 15
        units.append((rest, rest + 1, True))
        units += [(15, 16, True)] * present
        data = coder.encode_units(units)
        idx = np.full(50, ci, np.int32)
        em = coder.emulate_native_decode(data, idx, t)
        pad = coder.decoder_padding_words(idx.size, data)
        assert em.words_read <= len(data) // 4 + pad
        assert em.long_escapes >= 1
        out = coder.decode(data, idx, t)  # no crash; values as the emulation (x86 shift semantics)
        assert np.array_equal(out[5:], em.values[5:])
        with pytest.raises(BitstreamError):
            coder.reference_decode(data, idx, t)
    assert coder.count_f_words(b"\xff\xff\xff\x0f" + b"\xff\xff\xff\xf0" + b"\x00" * 4) == 1


def test_decode_with_other_indexes_is_caught_by_verify():
    t = T.get_tables("qres_latent")
    rng = np.random.default_rng(8)
    sym, idx = _random_symbols(rng, t, 500)
    data = coder.encode(sym, idx, t)
    other = (idx + 7) % t.num_tables
    with pytest.raises(BitstreamError):
        coder.decode(data, other, t, verify=True)


def test_cdf_tables_are_immutable_and_shared_lists_are_private():
    t = T.get_tables("lossless_pixel")
    with pytest.raises(Exception):
        t.cdf.offset = np.zeros(3)
    assert not t.cdf.quantized_cdf.flags.writeable
    assert len(t.cdf._rows) == t.num_tables


def test_pmf_to_quantized_cdf_validates():
    cdf = coder.pmf_to_quantized_cdf([0.5, 0.5, 1e-12])
    assert cdf[0] == 0 and cdf[-1] == 1 << 16 and np.all(np.diff(cdf) > 0)
    for bad in ([], [np.nan, 1.0], [-0.1, 1.0], [0.0, 0.0]):
        with pytest.raises(ValueError):
            coder.pmf_to_quantized_cdf(bad)


def test_coder_loads_without_importing_compressai_or_torch():
    """The compiled modules are loaded directly: compressai/__init__ (which imports torchvision
    and needs numpy<2) never runs, and torch is not imported."""
    code = ("import sys; from lvae_jax.entropy import coder; print(coder.self_test()); "
            "bad = [m for m in ('compressai', 'torch', 'torchvision') if m in sys.modules]; "
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).parents[1])
    assert proc.returncode == 0, proc.stderr
    assert "round trip ok" in proc.stdout


def test_missing_coder_says_how_to_install(tmp_path):
    with pytest.raises(coder.CoderUnavailableError, match="scripts/setup.sh"):
        coder._load_extension("no_such_module", [tmp_path])
