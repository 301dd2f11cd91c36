"""CompressAI's rANS range coder, loaded without ``import compressai`` and made safe to call.

Why it is loaded this way
-------------------------
The official bitstreams are written by CompressAI's C++ rANS coder (``compressai/ans*.so``, the
``RansEncoder``/``RansDecoder`` of ``compressai/cpp_exts/rans/rans_interface.cpp``) with CDF tables
quantised by ``compressai/_CXX*.so`` (``pmf_to_quantized_cdf``). CompressAI 1.2.8 pins
``numpy<2`` and its ``__init__`` imports torchvision, while JAX needs numpy 2. The two compiled
modules link neither numpy nor torch, so lvae-jax installs ``compressai`` without its
dependencies (``scripts/setup.sh``) and loads only these two files with
:class:`importlib.machinery.ExtensionFileLoader`; ``compressai/__init__.py`` is never executed.
If the package was already imported (a reference environment), its modules are reused.

What the C++ coder does not check, and what this module does about it
---------------------------------------------------------------------
Its ``assert``s are compiled out, so it trusts every input. Here: CDF tables are validated once
(:class:`CdfTables`, immutable) and indexes checked; fewer than :data:`NATIVE_MIN_SYMBOLS` symbols
are encoded by :func:`reference_encode` (the native flush overruns its buffer below five);
symbols must satisfy ``|s| <= MAX_ABS_SYMBOL``; :func:`decode` requires a whole number of words
(at least two), a valid initial state, and appends :func:`decoder_padding_words` zero words,
proven sufficient except for one measured-but-unproven term; ``verify=True`` re-encodes and
requires the input bytes back. The derivations and measurements: ``docs/range_coder.md``.

Byte order: the coder writes native 32-bit words; lvae-jax runs on little-endian hosts only (every
platform the official code runs on), so all streams are little-endian.
"""

from __future__ import annotations

import bisect
import functools
import importlib.machinery
import importlib.util
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

#: Probability precision of the coder (``precision`` in rans_interface.cpp): CDFs sum to 2^16.
PRECISION = 16
#: Lower bound of the rANS state interval (``RANS64_L`` in ryg_rans' rans64.h).
RANS_L = 1 << 31
#: Bits per bypass chunk (``bypass_precision``) and the chunk value that continues a count.
BYPASS_BITS = 4
MAX_BYPASS_VALUE = (1 << BYPASS_BITS) - 1
#: Largest |symbol| accepted by the encoder and returned by the decoder (see module docstring).
MAX_ABS_SYMBOL = 1 << 24
#: Inputs shorter than this are encoded in Python: the C++ flush buffer can overflow below it.
NATIVE_MIN_SYMBOLS = 7
#: Escape symbols budgeted to be decoded from inside the zero padding (see module docstring).
ESCAPE_BUDGET_BASE = 256
#: Refuse to pad a stream by more than this many 32-bit words (1 GiB).
MAX_PADDING_WORDS = 1 << 28

_M32 = 0xFFFFFFFF
_F_WORD_MASK = 0x0FFFFFFF


class BitstreamError(ValueError):
    """A bitstream (a coder string, a file) is truncated, corrupt or not what it claims to be."""


class CoderUnavailableError(ImportError):
    """CompressAI's compiled range coder cannot be loaded."""


# ------------------------------------------------------------------------------------------------
# Loading the compiled modules
# ------------------------------------------------------------------------------------------------


class _Native(NamedTuple):
    ans: object
    cxx: object
    directory: Path


def _compressai_dirs() -> list[Path]:
    """Candidate ``compressai/`` directories. ``find_spec`` of a top-level package locates it
    without executing its ``__init__``."""
    dirs: list[Path] = []
    try:
        spec = importlib.util.find_spec("compressai")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        dirs += [Path(p) for p in spec.submodule_search_locations]
    for entry in sys.path:
        candidate = Path(entry or ".") / "compressai"
        if candidate.is_dir() and candidate not in dirs:
            dirs.append(candidate)
    return dirs


def _load_extension(name: str, dirs: list[Path]):
    full = f"compressai.{name}"
    if full in sys.modules:  # compressai itself was imported (reference environment)
        return sys.modules[full], Path(sys.modules[full].__file__).parent
    for d in dirs:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = d / f"{name}{suffix}"
            if path.is_file():
                loader = importlib.machinery.ExtensionFileLoader(full, str(path))
                spec = importlib.util.spec_from_file_location(full, path, loader=loader)
                module = importlib.util.module_from_spec(spec)
                loader.exec_module(module)
                return module, d
    searched = ", ".join(str(d) for d in dirs) or "no compressai directory on sys.path"
    raise CoderUnavailableError(
        f"CompressAI's compiled module {name!r} was not found (searched: {searched}). "
        "Install it with scripts/setup.sh (compressai==1.2.8 without its dependencies).")


@functools.lru_cache(maxsize=1)
def _native() -> _Native:
    if sys.byteorder != "little":
        raise CoderUnavailableError("the range coder's streams are little-endian 32-bit words; "
                                    "this big-endian host would write incompatible bitstreams")
    dirs = _compressai_dirs()
    ans, d = _load_extension("ans", dirs)
    cxx, _ = _load_extension("_CXX", dirs)
    return _Native(ans, cxx, d)


def native_location() -> Path:
    """Directory the compiled coder was loaded from (loads it if needed)."""
    return _native().directory


def pmf_to_quantized_cdf(pmf, precision: int = PRECISION) -> np.ndarray:
    """CompressAI's own ``pmf_to_quantized_cdf`` (compiled ``_CXX``): a pmf (converted to float32
    by the C++ signature, as in CompressAI) -> int32 CDF of ``len(pmf) + 1`` entries summing to
    ``2**precision``, every symbol at least one unit wide."""
    p = np.asarray(pmf, dtype=np.float64).ravel()
    if p.size == 0 or not np.all(np.isfinite(p)) or np.any(p < 0) or not np.any(p > 0):
        raise ValueError("pmf must be a non-empty, finite, non-negative vector with positive mass")
    return np.asarray(_native().cxx.pmf_to_quantized_cdf(p.tolist(), int(precision)), dtype=np.int32)


# ------------------------------------------------------------------------------------------------
# Validated tables
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class CdfTables:
    """Coder tables in CompressAI's layout, validated and immutable.

    ``quantized_cdf``: (n, m) int32, row i holds ``cdf_length[i]`` entries (rest ignored);
    ``cdf_length``: (n,) int32 = number of direct symbols + 2 (the last direct "symbol" is the
    escape); ``offset``: (n,) int32, symbol value of row position 0.
    """

    quantized_cdf: np.ndarray
    cdf_length: np.ndarray
    offset: np.ndarray
    _rows: list = field(init=False, repr=False)
    _lengths: list = field(init=False, repr=False)
    _offsets: list = field(init=False, repr=False)

    def __post_init__(self):
        validate_tables(self.quantized_cdf, self.cdf_length, self.offset)
        cdf = np.array(self.quantized_cdf, dtype=np.int64, copy=True)
        length = np.array(self.cdf_length, dtype=np.int64, copy=True).reshape(-1)
        offset = np.array(self.offset, dtype=np.int64, copy=True).reshape(-1)
        for name, arr in (("quantized_cdf", cdf), ("cdf_length", length), ("offset", offset)):
            arr = arr.astype(np.int32)
            arr.flags.writeable = False
            object.__setattr__(self, name, arr)
        # The argument lists handed to pybind11 on every call, built once.
        object.__setattr__(self, "_rows", [row[:n].tolist() for row, n in zip(self.quantized_cdf, length)])
        object.__setattr__(self, "_lengths", self.cdf_length.tolist())
        object.__setattr__(self, "_offsets", self.offset.tolist())

    @property
    def num_tables(self) -> int:
        return int(self.cdf_length.shape[0])


def validate_tables(quantized_cdf, cdf_length, offset) -> None:
    """Raise ``ValueError`` unless the arrays are tables the C++ coder can use safely."""
    cdf = np.asarray(quantized_cdf)
    length = np.asarray(cdf_length).reshape(-1)
    off = np.asarray(offset).reshape(-1)
    if cdf.ndim != 2 or cdf.shape[0] == 0:
        raise ValueError(f"quantized_cdf must be a non-empty 2-D table, got shape {cdf.shape}")
    n, m = cdf.shape
    if length.shape != (n,) or off.shape != (n,):
        raise ValueError(f"cdf_length {length.shape} and offset {off.shape} must have one entry "
                         f"per table ({n})")
    for name, a in (("quantized_cdf", cdf), ("cdf_length", length), ("offset", off)):
        if not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{name} must be integer, got {a.dtype}")
    if np.any(length < 3) or np.any(length > m):
        raise ValueError(f"cdf_length must lie in [3, {m}] (two symbols at least, within the row)")
    if np.any(np.abs(off.astype(np.int64)) > MAX_ABS_SYMBOL):
        raise ValueError(f"offsets must satisfy |offset| <= {MAX_ABS_SYMBOL}")
    for i in range(n):
        row = cdf[i, : int(length[i])].astype(np.int64)
        if row[0] != 0 or row[-1] != (1 << PRECISION):
            raise ValueError(f"table {i}: CDF must start at 0 and end at {1 << PRECISION}")
        if np.any(np.diff(row) <= 0):
            raise ValueError(f"table {i}: CDF is not strictly increasing (a zero-width symbol "
                             "would crash the coder)")


def _cdf_tables(tables) -> CdfTables:
    t = getattr(tables, "cdf", tables)
    if not isinstance(t, CdfTables):
        raise TypeError(f"expected CoderTables or CdfTables, got {type(tables).__name__}")
    return t


def _int_vector(a, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a flat (1-D) array, got shape {arr.shape}")
    if arr.size and (not np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        raise ValueError(f"{name} must be integers, got {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _check_indexes(indexes, t: CdfTables, size: int | None = None) -> np.ndarray:
    idx = _int_vector(indexes, "indexes")
    if size is not None and idx.size != size:
        raise ValueError(f"{size} symbols but {idx.size} indexes")
    if idx.size and (idx.min() < 0 or idx.max() >= t.num_tables):
        raise ValueError(f"indexes must lie in [0, {t.num_tables}), got [{idx.min()}, {idx.max()}]")
    return idx


def _check_symbols(symbols) -> np.ndarray:
    sym = _int_vector(symbols, "symbols")
    if sym.size and np.abs(sym).max() > MAX_ABS_SYMBOL:
        bad = int(sym[np.argmax(np.abs(sym))])
        raise ValueError(f"symbol {bad} is out of the coder's safe range |s| <= {MAX_ABS_SYMBOL} "
                         "(a model output that is not finite or far off scale?)")
    return sym


# ------------------------------------------------------------------------------------------------
# Encoding and decoding
# ------------------------------------------------------------------------------------------------


def encode(symbols, indexes, tables) -> bytes:
    """Encode flat integer ``symbols`` (1-D, each coded with CDF row ``indexes[i]``) into one
    rANS string, byte-identical to CompressAI's ``EntropyModel.compress`` for one tensor.

    ``tables``: a :class:`~lvae_jax.entropy.tables.CoderTables` or :class:`CdfTables`.
    Raises ``ValueError`` for inputs the coder cannot take safely.
    """
    t = _cdf_tables(tables)
    sym = _check_symbols(symbols)
    idx = _check_indexes(indexes, t, sym.size)
    if sym.size < NATIVE_MIN_SYMBOLS:
        return reference_encode(sym, idx, t)
    enc = _native().ans.RansEncoder()
    return bytes(enc.encode_with_indexes(sym.tolist(), idx.tolist(), t._rows, t._lengths, t._offsets))


def symbols_crc(symbols) -> int:
    """CRC32 of a chunk's symbols: int32 little-endian, in coder order. Lets a decoder confirm it
    used the encoder's table indexes: a string decoded with an index on the other side of a table
    boundary (prior scales computed on another device or by another implementation) can still
    re-encode to itself, but not give the same symbols."""
    return zlib.crc32(np.ascontiguousarray(symbols, dtype="<i4").tobytes())


def as_bytes(data) -> bytes:
    """``bytes`` of a bytes-like object (bytes, bytearray, memoryview, uint8 array); anything
    else (notably an int, which ``bytes()`` would turn into zeros) is a :class:`BitstreamError`."""
    if isinstance(data, bytes):
        return data
    try:
        return memoryview(data).cast("B").tobytes()
    except TypeError:
        raise BitstreamError(f"expected bytes, got {type(data).__name__}") from None


def check_stream(data) -> bytes:
    """Structural checks of one coder string before it reaches the C++ decoder; returns bytes."""
    try:
        data = memoryview(data).cast("B").tobytes()
    except TypeError:
        raise BitstreamError(f"a coder string must be bytes, got {type(data).__name__}") from None
    if len(data) < 8 or len(data) % 4:
        raise BitstreamError(f"coder string of {len(data)} bytes: a rANS stream is a whole number "
                             "of 32-bit words, at least 2 (truncated or corrupt)")
    x = int.from_bytes(data[:8], "little")
    if not RANS_L <= x < (1 << 63):
        raise BitstreamError(f"coder string starts with an invalid coder state {x:#x} (corrupt)")
    return data


def count_f_words(data: bytes) -> int:
    """Number of 32-bit words whose low 28 bits are all ones (see the module docstring)."""
    words = np.frombuffer(data, dtype="<u4", count=len(data) // 4)
    return int(np.count_nonzero((words & _F_WORD_MASK) == _F_WORD_MASK))


def decoder_padding_words(num_symbols: int, data: bytes) -> int:
    """Zero words appended to ``data`` before the C++ decoder sees it (derivation in the module
    docstring)."""
    n = int(num_symbols)
    escape_budget = ESCAPE_BUDGET_BASE + -(-n // 64)
    return 64 + n // 2 + n // 8192 + 17 * count_f_words(data) + 32 * escape_budget


def decode(data, indexes, tables, *, verify: bool = False) -> np.ndarray:
    """Decode one rANS string into ``len(indexes)`` int32 symbols (CompressAI's
    ``EntropyModel.decompress`` for one tensor, before dequantisation).

    ``verify=True`` re-encodes the result and requires the input bytes back.
    Raises :class:`BitstreamError` for a truncated or corrupt string.
    """
    t = _cdf_tables(tables)
    idx = _check_indexes(indexes, t)
    data = check_stream(data)
    pad = decoder_padding_words(idx.size, data)
    if pad > MAX_PADDING_WORDS:
        raise BitstreamError(f"coder string of {len(data)} bytes for {idx.size} symbols needs "
                             f"{pad} words of read-ahead padding; refused as implausible")
    out = _native().ans.RansDecoder().decode_with_indexes(
        data + bytes(4 * pad), idx.tolist(), t._rows, t._lengths, t._offsets)
    values = np.asarray(out, dtype=np.int64)
    if values.size != idx.size:  # cannot happen with the compiled coder; guards a changed build
        raise BitstreamError(f"decoder returned {values.size} symbols for {idx.size} indexes")
    if values.size and np.abs(values).max() > MAX_ABS_SYMBOL:
        raise BitstreamError("decoded a symbol beyond the coder's range: the string is corrupt, "
                             "truncated, or belongs to other indexes")
    values = values.astype(np.int32)
    if verify and encode(values, idx, t) != data:
        raise BitstreamError("integrity check failed: the string does not re-encode from its "
                             "decoded symbols (corrupt, truncated, or decoded with other indexes)")
    return values


# ------------------------------------------------------------------------------------------------
# Pure-Python reference coder (same algorithm as rans_interface.cpp + rans64.h)
# ------------------------------------------------------------------------------------------------


def _buffered_symbols(sym: np.ndarray, idx: np.ndarray, t: CdfTables) -> list[tuple[int, int, bool]]:
    """``BufferedRansEncoder::encode_with_indexes``: (start, range, bypass) per coded unit."""
    out: list[tuple[int, int, bool]] = []
    rows, lengths, offsets = t._rows, t._lengths, t._offsets
    for s, ci in zip(sym.tolist(), idx.tolist()):
        row = rows[ci]
        max_value = lengths[ci] - 2
        value = s - offsets[ci]
        raw = 0
        if value < 0:
            raw, value = -2 * value - 1, max_value
        elif value >= max_value:
            raw, value = 2 * (value - max_value), max_value
        out.append((row[value], row[value + 1] - row[value], False))
        if value == max_value:
            n_bypass = 0
            while raw >> (n_bypass * BYPASS_BITS):
                n_bypass += 1
            val = n_bypass
            while val >= MAX_BYPASS_VALUE:
                out.append((MAX_BYPASS_VALUE, MAX_BYPASS_VALUE + 1, True))
                val -= MAX_BYPASS_VALUE
            out.append((val, val + 1, True))
            for j in range(n_bypass):
                chunk = (raw >> (j * BYPASS_BITS)) & MAX_BYPASS_VALUE
                out.append((chunk, chunk + 1, True))
    return out


def encode_units(units: list[tuple[int, int, bool]]) -> bytes:
    """``BufferedRansEncoder::flush``: encode (start, range, bypass) units, last first, into
    32-bit little-endian words. Exposed for tests that craft unusual (e.g. adversarial) streams:
    bypass units carry any 4-bit value, coded units any ``0 <= start < start + range <= 2^16``."""
    x = RANS_L
    emitted: list[int] = []
    x_max_bits = ((RANS_L >> PRECISION) << 32) << (PRECISION - BYPASS_BITS)
    for start, freq, bypass in reversed(units):
        if bypass:
            if x >= x_max_bits:
                emitted.append(x & _M32)
                x >>= 32
            x = (x << BYPASS_BITS) | start
        else:
            if x >= ((RANS_L >> PRECISION) << 32) * freq:
                emitted.append(x & _M32)
                x >>= 32
            x = ((x // freq) << PRECISION) + (x % freq) + start
    words = [x & _M32, x >> 32] + emitted[::-1]
    return np.asarray(words, dtype="<u4").tobytes()


def reference_encode(symbols, indexes, tables) -> bytes:
    """Pure-Python encoder producing exactly the C++ coder's bytes (any number of symbols)."""
    t = _cdf_tables(tables)
    sym = _check_symbols(symbols)
    idx = _check_indexes(indexes, t, sym.size)
    return encode_units(_buffered_symbols(sym, idx, t))


def _to_int32(v: int) -> int:
    v &= _M32
    return v - (1 << 32) if v & 0x80000000 else v


class _Emulation(NamedTuple):
    values: np.ndarray
    words_read: int
    long_escapes: int
    final_state: int
    escapes_in_padding: int


def _decode_core(data: bytes, idx: np.ndarray, t: CdfTables, strict: bool) -> _Emulation:
    """``RansDecoder::decode_with_indexes`` in Python. ``strict``: refuse to read past the end
    and refuse escapes longer than 32 bits (no encoder writes them). Otherwise emulate the C++
    reading zero words past the end (values of >32-bit escapes follow x86 shift semantics and
    are not guaranteed to match the compiled code)."""
    words = np.frombuffer(data, dtype="<u4").tolist()
    nwords = len(words)
    rows, lengths, offsets = t._rows, t._lengths, t._offsets
    mask, rans_l, m4 = (1 << PRECISION) - 1, RANS_L, MAX_BYPASS_VALUE
    x = words[0] | (words[1] << 32)
    pos = 2
    long_escapes = 0
    padding_escapes = 0
    out = []
    append = out.append

    def overrun():
        raise BitstreamError("coder string ends before all symbols are decoded (truncated)")

    for ci in idx.tolist():
        row = rows[ci]
        length = lengths[ci]
        max_value = length - 2
        cum = x & mask
        s = bisect.bisect_right(row, cum, 0, length) - 1
        start = row[s]
        x = (row[s + 1] - start) * (x >> PRECISION) + cum - start
        if x < rans_l:
            if pos < nwords:
                x = (x << 32) | words[pos]
            elif strict:
                overrun()
            else:
                x <<= 32
            pos += 1
        value = s
        if s == max_value:
            padding_escapes += pos > nwords
            chunks = []
            counting = True
            n_bypass = 0
            while True:  # Rans64DecGetBits, first the count, then the raw chunks
                val = x & m4
                x >>= BYPASS_BITS
                if x < rans_l:
                    if pos < nwords:
                        x = (x << 32) | words[pos]
                    elif strict:
                        overrun()
                    else:
                        x <<= 32
                    pos += 1
                if counting:
                    n_bypass += val
                    if val != m4:
                        counting = False
                        if n_bypass > 8:
                            long_escapes += 1
                            if strict:
                                raise BitstreamError("escape longer than 32 bits (corrupt string)")
                        if n_bypass == 0:
                            break
                else:
                    chunks.append(val)
                    if len(chunks) == n_bypass:
                        break
            raw = 0
            for j, val in enumerate(chunks):
                raw |= val << ((j * BYPASS_BITS) & 31)
            raw = _to_int32(raw)
            value = raw >> 1
            value = _to_int32(-value - 1) if raw & 1 else _to_int32(value + max_value)
        append(_to_int32(value + offsets[ci]))
    return _Emulation(np.asarray(out, dtype=np.int64).astype(np.int32), pos, long_escapes, x,
                      padding_escapes)


def reference_decode(data, indexes, tables) -> np.ndarray:
    """Strictly bounded pure-Python decoder of the same streams: never reads past the end, and
    requires the whole string to be consumed and the coder to end in its initial state (as every
    encoder output does). Raises :class:`BitstreamError` otherwise. Roughly 0.3 µs per symbol
    (15× the compiled decoder)."""
    t = _cdf_tables(tables)
    idx = _check_indexes(indexes, t)
    data = check_stream(data)
    res = _decode_core(data, idx, t, strict=True)
    if res.words_read != len(data) // 4 or res.final_state != RANS_L:
        raise BitstreamError("coder string does not end where its symbols end (corrupt, or "
                             "decoded with other indexes)")
    if res.values.size and np.abs(res.values.astype(np.int64)).max() > MAX_ABS_SYMBOL:
        raise BitstreamError("decoded a symbol beyond the coder's range (corrupt string)")
    return res.values


def emulate_native_decode(data: bytes, indexes, tables) -> _Emulation:
    """Emulate the C++ decoder on ``data`` followed by endless zero words: (values, words_read,
    long_escapes, final_state, escapes_in_padding — escapes decoded after the first padding
    word was read). For checking :func:`decoder_padding_words` (fuzzing)."""
    t = _cdf_tables(tables)
    return _decode_core(bytes(data), _check_indexes(indexes, t), t, strict=False)


def self_test() -> str:
    """Round-trip a small stream through the compiled coder; returns a one-line description."""
    pmf = np.array([0.05, 0.2, 0.5, 0.2, 0.05, 1e-9])
    cdf = pmf_to_quantized_cdf(pmf)
    t = CdfTables(cdf[None, :], np.array([cdf.size]), np.array([-2]))
    rng = np.random.default_rng(0)
    sym = np.concatenate([rng.integers(-2, 3, 200), [-40, 1000, 3]])
    idx = np.zeros(sym.size, dtype=np.int32)
    data = encode(sym, idx, t)
    if data != reference_encode(sym, idx, t):
        raise RuntimeError("compiled coder and reference coder disagree")
    if not np.array_equal(decode(data, idx, t, verify=True), sym):
        raise RuntimeError("round trip through the compiled coder failed")
    return f"loaded from {native_location()}, round trip ok"
