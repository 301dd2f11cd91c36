"""The lvae-jax container: a versioned, self-checking bitstream file (layout in docs/bitstream.md).

One file holds the rANS strings of one batch of images: one chunk per (latent block, image), in
decoding order (latent-major), then, for the lossless model, one pixel chunk per image. A header
names the model (name + a 16-byte id of its config and weights), λ, the original image size, the
batch size, the stride and latent grid, and every chunk's length and CRC32. All integers are
little-endian. The header carries its own CRC32; each chunk's CRC32 also covers its position, so a
reordered, truncated, extended or corrupted file is refused (or, for progressive decoding, cut at
the first bad chunk) before any data is returned.

The checks a file carries besides its strings (symbol CRCs, portable-index hints, the lossless
image CRC) are one :class:`~lvae_jax.codec.records.Checks`, written from and read back into that
record. All readers raise :class:`~lvae_jax.entropy.coder.BitstreamError` (a ``ValueError``) with
a clear message; telling this layout from the others is :mod:`lvae_jax.codec.formats`'s job.
"""

from __future__ import annotations

import hashlib
import math
import re
import struct
import zlib
from dataclasses import dataclass

from lvae_jax.codec.records import Checks, FileMeta
from lvae_jax.entropy.coder import BitstreamError, as_bytes
from lvae_jax.entropy.hints import LEVEL_MIN_EXP, HintError, Retrieval, read_varint, varint
from lvae_jax.limits import MAX_SIDE

MAGIC = b"LVAE"
#: Version 2 adds portable-index hints (FLAG_HINTS); version-1 files are read as before.
VERSION = 2
VERSIONS = (1, 2)
#: Flag bits of the header's ``flags`` field.
FLAG_LAMBDA = 1  # variable-rate model: λ is stored
FLAG_LOSSLESS = 2  # lossless model: one pixel chunk per image follows the latent chunks
FLAG_SYMBOL_CRC = 4  # each chunk entry also holds the CRC32 of the chunk's decoded symbols
FLAG_HINTS = 8  # version 2: portable-index hints follow the chunk table (lvae_jax.entropy.hints)
FLAG_LEVEL_HINTS = 16  # version 2, lossless: the hints also hold the pixel levels' rounding sides
_KNOWN_FLAGS = {1: FLAG_LAMBDA | FLAG_LOSSLESS | FLAG_SYMBOL_CRC,
                2: FLAG_LAMBDA | FLAG_LOSSLESS | FLAG_SYMBOL_CRC | FLAG_HINTS | FLAG_LEVEL_HINTS}
MAX_NAME_LENGTH = 64
_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
#: Fixed-size fields before the name, and after it (up to the chunk table).
_PRE = struct.Struct("<4sHHI16sB")  # magic, version, flags, header_size, model_id, name_len
_POST = struct.Struct("<fIIHHHHH")  # λ, H, W, batch, stride, grid_h, grid_w, num_latents
_CHUNK = struct.Struct("<II")  # length, crc32
_CHUNK_SYM = struct.Struct("<III")  # length, crc32, crc32 of the decoded symbols
_CRC = struct.Struct("<I")
MIN_HEADER_SIZE = _PRE.size + 1 + _POST.size + _CHUNK.size + _CRC.size


def model_id(config_fingerprint: str | bytes, weights_digest: str | bytes) -> bytes:
    """16-byte id of a model: the first 16 bytes of SHA-256 over a domain tag, the config
    fingerprint and the weights digest (``str`` inputs are UTF-8 encoded)."""
    enc = [v.encode("utf-8") if isinstance(v, str) else bytes(v)
           for v in (config_fingerprint, weights_digest)]
    h = hashlib.sha256(b"lvae-jax model id v1\0")
    for part in enc:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.digest()[:16]


def chunk_crc(index: int, payload: bytes) -> int:
    """CRC32 of one chunk: over its table position (u32 LE) followed by its bytes."""
    return zlib.crc32(payload, zlib.crc32(struct.pack("<I", index)))


@dataclass(frozen=True)
class ContainerHeader:
    """A parsed, validated header. ``meta``: the model and image it names (λ None for fixed-rate
    models); ``latent_grid``: (h, w) of the first latent (image size / stride, rounded up); chunks
    are ordered latent-major: latent i, image b at ``i * batch + b``, then pixel chunks;
    ``checks``: what the writer stored besides the strings (symbol CRCs in chunk order, hints)."""

    version: int
    meta: FileMeta
    batch: int
    latent_grid: tuple[int, int]
    num_latents: int
    lossless: bool
    chunk_lengths: tuple[int, ...]
    chunk_crcs: tuple[int, ...]
    header_size: int
    checks: Checks = Checks()

    @property
    def num_chunks(self) -> int:
        return len(self.chunk_lengths)

    @property
    def total_size(self) -> int:
        return self.header_size + sum(self.chunk_lengths)

    def chunk_index(self, latent: int, image: int) -> int:
        return latent * self.batch + image

    def pixel_chunk_index(self, image: int) -> int:
        return self.num_latents * self.batch + image


@dataclass(frozen=True)
class LvaeFile:
    """A whole container: ``latent_strings[i][b]`` (latent block i, image b) and, for the lossless
    model, ``pixel_strings[b]``."""

    header: ContainerHeader
    latent_strings: tuple[tuple[bytes, ...], ...]
    pixel_strings: tuple[bytes, ...] | None


@dataclass(frozen=True)
class PartialFile:
    """The valid prefix of a (possibly truncated or damaged) container: ``chunks`` are the first
    chunks in table order that are complete with a matching CRC; ``missing`` the number after
    them; ``stop_reason`` None when complete, else why reading stopped."""

    header: ContainerHeader
    chunks: tuple[bytes, ...]
    missing: int
    stop_reason: str | None

    @property
    def complete(self) -> bool:
        return self.missing == 0

    @property
    def complete_latents(self) -> int:
        """Latent blocks whose chunks are present for every image of the batch."""
        return min(len(self.chunks) // self.header.batch, self.header.num_latents)

    @property
    def latent_strings(self) -> tuple[tuple[bytes, ...], ...]:
        """Strings of the complete latent blocks, ``[i][b]``."""
        b = self.header.batch
        return tuple(tuple(self.chunks[i * b : (i + 1) * b]) for i in range(self.complete_latents))


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------


def write_container(meta: FileMeta, latent_strings, pixel_strings=None,
                    checks: Checks = Checks()) -> bytes:
    """Build a container. ``latent_strings[i][b]``: rANS string of latent block i, image b (in
    decoding order); ``pixel_strings[b]`` for the lossless model; ``meta``: the model and image
    (λ None for fixed-rate models; the latent grid is ``ceil(image_size / stride)``);
    ``checks``: symbol CRCs (one per chunk, chunk order), and for a one-image file the
    portable-index hints, the lossless image CRC and the level-hint flag (version 2). The
    result is read back and checked before it is returned."""
    name, mid = _check_model(meta.model_name, meta.model_id)
    flags, lmb32 = _lambda_field(meta.lmb)
    h, w = (int(v) for v in meta.image_size)
    stride = int(meta.stride)
    if not (1 <= h < 1 << 32 and 1 <= w < 1 << 32 and 1 <= stride <= 0xFFFF):
        raise ValueError(f"invalid image size {meta.image_size} or stride {stride}")
    gh, gw = -(-h // stride), -(-w // stride)
    if gh > 0xFFFF or gw > 0xFFFF:
        raise ValueError(f"latent grid {gh}×{gw} does not fit the format")
    chunks, batch, lossless = _chunks(latent_strings, pixel_strings)
    flags |= FLAG_LOSSLESS if lossless else 0
    table, check_flags = _chunk_table(chunks, checks.symbol_crcs)
    extra, hint_flags = _hint_fields(checks, batch, lossless, check_flags)
    flags |= check_flags | hint_flags
    version = 2 if hint_flags else 1
    header_size = _PRE.size + len(name) + _POST.size + len(table) + len(extra) + _CRC.size
    head = (_PRE.pack(MAGIC, version, flags, header_size, mid, len(name)) + name
            + _POST.pack(lmb32, h, w, batch, stride, gh, gw, len(latent_strings)) + table + extra)
    data = head + _CRC.pack(zlib.crc32(head)) + b"".join(chunks)
    read_container(data)  # the writer's output must satisfy the reader
    return data


def _check_model(model_name, mid) -> tuple[bytes, bytes]:
    if not (isinstance(model_name, str) and _NAME_RE.fullmatch(model_name)):
        raise ValueError(f"model name must be 1-{MAX_NAME_LENGTH} characters of [A-Za-z0-9._-], "
                         f"got {model_name!r}")
    mid = bytes(mid or b"")
    if len(mid) != 16:
        raise ValueError(f"model id must be 16 bytes, got {len(mid)}")
    return model_name.encode("ascii"), mid


def _lambda_field(lmb) -> tuple[int, float]:
    """(flags, the stored float32 λ; NaN for fixed-rate models)."""
    if lmb is None:
        return 0, math.nan
    lmb32 = struct.unpack("<f", struct.pack("<f", float(lmb)))[0]
    if not math.isfinite(lmb32) or lmb32 <= 0:
        raise ValueError(f"λ must be finite and positive as float32, got {lmb}")
    return FLAG_LAMBDA, lmb32


def _chunks(latent_strings, pixel_strings) -> tuple[list[bytes], int, bool]:
    """(every chunk in table order, batch size, lossless)."""
    latents = [[bytes(s) for s in strs] for strs in latent_strings]
    if not latents or not latents[0] or len(latents) > 0xFFFF:
        raise ValueError("need 1..65535 latent blocks with at least one image")
    batch = len(latents[0])
    if batch > 0xFFFF or any(len(strs) != batch for strs in latents):
        raise ValueError("every latent block needs one string per image (batch <= 65535)")
    chunks = [s for strs in latents for s in strs]
    if pixel_strings is not None:
        pixels = [bytes(s) for s in pixel_strings]
        if len(pixels) != batch:
            raise ValueError(f"{len(pixels)} pixel strings for a batch of {batch}")
        chunks += pixels
    for i, c in enumerate(chunks):
        if len(c) < 8 or len(c) % 4 or len(c) >= 1 << 32:
            raise ValueError(f"chunk {i} ({len(c)} bytes) is not a rANS string (whole 32-bit words, >= 2)")
    return chunks, batch, pixel_strings is not None


def _chunk_table(chunks, symbol_crcs) -> tuple[bytes, int]:
    """(the chunk entries, FLAG_SYMBOL_CRC or 0)."""
    if symbol_crcs is None:
        return b"".join(_CHUNK.pack(len(c), chunk_crc(i, c)) for i, c in enumerate(chunks)), 0
    crcs = [int(v) for v in symbol_crcs]
    if len(crcs) != len(chunks) or any(not 0 <= v < 1 << 32 for v in crcs):
        raise ValueError(f"need one 32-bit symbol CRC per chunk ({len(chunks)})")
    return (b"".join(_CHUNK_SYM.pack(len(c), chunk_crc(i, c), crcs[i]) for i, c in enumerate(chunks)),
            FLAG_SYMBOL_CRC)


def _hint_fields(checks: Checks, batch: int, lossless: bool, check_flags: int) -> tuple[bytes, int]:
    """(the bytes after the chunk table, their flags): version 2's image CRC, bound exponent and
    hints, or nothing."""
    if checks.hints is None:
        if checks.level_hints:
            raise ValueError("pixel-level hints need the portable-index hints")
        return b"", 0
    if not check_flags or batch != 1:
        raise ValueError("portable-index hints need symbol CRCs and a one-image file")
    exp = checks.hint_bound_exp
    if not (isinstance(exp, int) and 1 <= exp <= 60):
        raise ValueError(f"hint bound exponent must be in 1..60, got {exp!r}")
    if (checks.image_crc is None) == lossless:
        raise ValueError("a lossless file with hints needs its image CRC (and only it)")
    out = b"" if checks.image_crc is None else _CRC.pack(int(checks.image_crc))
    out += bytes([exp]) + varint(len(checks.hints)) + bytes(checks.hints)
    flags = FLAG_HINTS
    if checks.level_hints:
        if not lossless or exp < LEVEL_MIN_EXP:
            raise ValueError("pixel-level hints are for lossless files, with a bound "
                             f"exponent >= {LEVEL_MIN_EXP}")
        flags |= FLAG_LEVEL_HINTS
    return out, flags


# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------


def _view(data) -> memoryview:
    try:
        return memoryview(data).cast("B")
    except TypeError:
        raise BitstreamError(f"expected bytes, got {type(data).__name__}") from None


def _fail(msg: str):
    raise BitstreamError(f"lvae container: {msg}")


def read_header(data) -> ContainerHeader:
    """Parse and validate the header (the chunks need not be present)."""
    head, version, flags, header_size, mid, name = _read_fixed(_view(data))
    pos = _PRE.size + len(name)
    lmb, h, w, batch, stride, gh, gw, num_latents = _POST.unpack_from(head, pos)
    pos += _POST.size
    _check_fields(flags, lmb, (h, w), (batch, num_latents, stride), (gh, gw))
    lossless = bool(flags & FLAG_LOSSLESS)
    entry = _CHUNK_SYM if flags & FLAG_SYMBOL_CRC else _CHUNK
    n_chunks = batch * (num_latents + lossless)
    end = pos + entry.size * n_chunks
    if flags & FLAG_HINTS:
        hint_fields = _read_hint_fields(head, end, flags, lossless, batch)
    elif flags & FLAG_LEVEL_HINTS:
        _fail("pixel-level hints without portable-index hints (corrupt)")
    elif end != len(head):
        _fail(f"header size {header_size} does not match its {n_chunks} chunk entries (corrupt)")
    else:
        hint_fields = {}
    lengths, crcs, sym_crcs = _read_chunk_table(head, pos, entry, n_chunks)
    checks = Checks(tuple(sym_crcs) if flags & FLAG_SYMBOL_CRC else None,
                    level_hints=bool(flags & FLAG_LEVEL_HINTS), **hint_fields)
    meta = FileMeta(name, mid, None if math.isnan(lmb) else float(lmb), (h, w), stride)
    return ContainerHeader(version, meta, batch, (gh, gw), num_latents, lossless, tuple(lengths),
                           tuple(crcs), header_size, checks)


def _read_fixed(data: memoryview) -> tuple:
    """(the header bytes before its CRC, version, flags, header size, model id, model name):
    the magic, version, flags, sizes and the header CRC checked."""
    if len(data) < 4 or bytes(data[:4]) != MAGIC:
        _fail("bad magic: not an lvae-jax file")
    if len(data) < _PRE.size:
        _fail(f"{len(data)} bytes, shorter than the fixed header (truncated)")
    _, version, flags, header_size, mid, name_len = _PRE.unpack_from(data, 0)
    if version not in VERSIONS:
        _fail(f"format version {version} is not supported (this reader knows versions "
              f"{', '.join(map(str, VERSIONS))})")
    if flags & ~_KNOWN_FLAGS[version]:
        _fail(f"unknown flags {flags:#06x} (corrupt, or a newer format)")
    if not 1 <= name_len <= MAX_NAME_LENGTH:
        _fail(f"model name length {name_len} outside 1..{MAX_NAME_LENGTH} (corrupt)")
    if header_size < MIN_HEADER_SIZE:
        _fail(f"header size {header_size} is impossible (corrupt)")
    if len(data) < header_size:
        _fail(f"{len(data)} bytes, the header alone has {header_size} (truncated)")
    head = bytes(data[: header_size - _CRC.size])
    (crc,) = _CRC.unpack_from(data, header_size - _CRC.size)
    if zlib.crc32(head) != crc:
        _fail("header CRC mismatch (corrupt)")
    name_bytes = head[_PRE.size : _PRE.size + name_len]
    try:
        name = name_bytes.decode("ascii")
    except UnicodeDecodeError:
        name = ""
    if not _NAME_RE.fullmatch(name):
        _fail(f"invalid model name {name_bytes!r}")
    if len(head) < _PRE.size + name_len + _POST.size:
        _fail("header too short for its fields (corrupt)")
    return head, version, flags, header_size, bytes(mid), name


def _check_fields(flags: int, lmb: float, size, counts, grid) -> None:
    """λ against its flag; the image size, batch, latent count and stride in range; the grid."""
    (h, w), (batch, num_latents, stride) = size, counts
    if flags & FLAG_LAMBDA:
        if not math.isfinite(lmb) or lmb <= 0:
            _fail(f"λ = {lmb} is not a finite positive number")
    elif not math.isnan(lmb):
        _fail("λ is set but the variable-rate flag is not (corrupt)")
    if h < 1 or w < 1:
        _fail(f"image size {h}×{w} is empty")
    if max(h, w) > MAX_SIDE or batch > 255:
        _fail(f"image size {h}×{w} (batch {batch}) is out of range (at most {MAX_SIDE} per side, "
              "255 images): corrupt or forged")
    if batch < 1 or num_latents < 1 or stride < 1:
        _fail(f"batch {batch}, latent blocks {num_latents} and stride {stride} must be positive")
    if tuple(grid) != (-(-h // stride), -(-w // stride)):
        _fail(f"latent grid {grid[0]}×{grid[1]} does not match image {h}×{w} at stride {stride}")


def _read_hint_fields(head: bytes, at: int, flags: int, lossless: bool, batch: int) -> dict:
    """The version-2 fields after the chunk table: {image_crc, hint_bound_exp, hints}."""
    image_crc = None
    if lossless and at + 4 <= len(head):
        (image_crc,) = _CRC.unpack_from(head, at)
        at += 4
    if not flags & FLAG_SYMBOL_CRC or batch != 1 or at + 2 > len(head):
        _fail("portable-index hints without symbol CRCs, in a batch, or truncated (corrupt)")
    if flags & FLAG_LEVEL_HINTS and not lossless:
        _fail("pixel-level hints in a lossy file (corrupt)")
    exp = head[at]
    try:
        n_hint, at = read_varint(head, at + 1)
    except HintError:
        _fail("hint length is corrupt")
    if flags & FLAG_LEVEL_HINTS and exp < LEVEL_MIN_EXP:
        _fail(f"pixel-level hints with a bound exponent {exp} < {LEVEL_MIN_EXP} (corrupt)")
    if not 1 <= exp <= 60 or at + n_hint != len(head):
        _fail(f"header size {len(head) + _CRC.size} does not match its chunk entries and hints "
              "(corrupt)")
    blob = bytes(head[at:])
    try:
        Retrieval(blob)
    except HintError as e:
        _fail(f"portable-index hints are corrupt ({e})")
    return {"image_crc": image_crc, "hint_bound_exp": exp, "hints": blob}


def _read_chunk_table(head: bytes, pos: int, entry, n_chunks: int):
    lengths, crcs, sym_crcs = [], [], []
    for i in range(n_chunks):
        n, c, *sc = entry.unpack_from(head, pos + i * entry.size)
        if n < 8 or n % 4:
            _fail(f"chunk {i} length {n} is not a rANS string length (whole 32-bit words, >= 2)")
        lengths.append(n)
        crcs.append(c)
        sym_crcs.extend(sc)
    return lengths, crcs, sym_crcs


def _walk_chunks(data, header: ContainerHeader):
    """Yield (index, payload or None, reason) for each chunk in order until one is missing or bad."""
    pos = header.header_size
    for i, (n, crc) in enumerate(zip(header.chunk_lengths, header.chunk_crcs)):
        if pos + n > len(data):
            yield i, None, f"chunk {i} is incomplete ({max(0, len(data) - pos)} of {n} bytes; truncated)"
            return
        payload = bytes(data[pos : pos + n])
        if chunk_crc(i, payload) != crc:
            yield i, None, f"chunk {i} CRC mismatch (corrupt)"
            return
        yield i, payload, None
        pos += n


def read_partial(data) -> PartialFile:
    """The header and the longest valid prefix of chunks (for progressive decoding of a truncated
    or damaged file). Raises if the header itself is bad or the file is longer than announced."""
    data = as_bytes(data)
    header = read_header(data)
    if len(data) > header.total_size:
        _fail(f"{len(data) - header.total_size} bytes after the last chunk (extended or corrupt)")
    chunks, reason = [], None
    for _, payload, why in _walk_chunks(data, header):
        if payload is None:
            reason = why
            break
        chunks.append(payload)
    return PartialFile(header, tuple(chunks), header.num_chunks - len(chunks), reason)


def read_container(data) -> LvaeFile:
    """Parse and validate a whole container; every chunk must be present and intact."""
    data = as_bytes(data)
    header = read_header(data)
    if len(data) != header.total_size:
        how = "truncated" if len(data) < header.total_size else "extended or corrupt"
        _fail(f"{len(data)} bytes, the header announces {header.total_size} ({how})")
    chunks = []
    for _, payload, why in _walk_chunks(data, header):
        if payload is None:
            _fail(why)
        chunks.append(payload)
    b, n_lat = header.batch, header.num_latents
    latents = tuple(tuple(chunks[i * b : (i + 1) * b]) for i in range(n_lat))
    pixels = tuple(chunks[n_lat * b :]) if header.lossless else None
    return LvaeFile(header, latents, pixels)
