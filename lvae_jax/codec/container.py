"""The lvae-jax container: a versioned, self-checking bitstream file (layout in docs/bitstream.md).

One file holds the rANS strings of one batch of images: one chunk per (latent block, image), in
decoding order (latent-major), then, for the lossless model, one pixel chunk per image. A header
names the model (name + a 16-byte id of its config and weights), λ, the original image size, the
batch size, the stride and latent grid, and every chunk's length and CRC32. All integers are
little-endian. The header carries its own CRC32; each chunk's CRC32 also covers its position, so a
reordered, truncated, extended or corrupted file is refused (or, for progressive decoding, cut at
the first bad chunk) before any data is returned.

:func:`sniff` tells the three formats apart: this container by its magic ``b"LVAE"`` (and a valid
header), official QRes files by a parse of their pickle (first byte 0x80), official QARV files by
a parse of their struct layout (everything else). All readers raise
:class:`~lvae_jax.entropy.coder.BitstreamError` (a ``ValueError``) with a clear message.
"""

from __future__ import annotations

import hashlib
import math
import re
import struct
import zlib
from dataclasses import dataclass

from lvae_jax.codec import formats
from lvae_jax.entropy.coder import BitstreamError, symbols_crc  # noqa: F401 (the chunk table's CRC)

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
    """A parsed, validated header. ``lmb`` is None for fixed-rate models; ``latent_grid`` is
    (h, w) of the first latent (image size / stride, rounded up); chunks are ordered
    latent-major: latent i, image b at ``i * batch + b``, then pixel chunks."""

    version: int
    model_name: str
    model_id: bytes
    lmb: float | None
    image_size: tuple[int, int]
    batch: int
    stride: int
    latent_grid: tuple[int, int]
    num_latents: int
    lossless: bool
    chunk_lengths: tuple[int, ...]
    chunk_crcs: tuple[int, ...]
    header_size: int
    #: CRC32 of each chunk's decoded symbols (:func:`symbols_crc`), when the writer stored them.
    symbol_crcs: tuple[int, ...] | None = None
    #: portable-index hints (version 2): the bound exponent (δ = 2^-exp) and the structure
    hint_bound_exp: int | None = None
    hints: bytes | None = None
    #: lossless files with hints: CRC32 of the decoded 8-bit (padded) image
    image_crc: int | None = None
    #: the hints also cover the lossless head's pixel-level rounding (FLAG_LEVEL_HINTS)
    level_hints: bool = False

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


def write_container(*, model_name: str, model_id: bytes, lmb: float | None, image_size,
                    stride: int, latent_strings, pixel_strings=None, symbol_crcs=None,
                    hints: bytes | None = None, hint_bound_exp: int | None = None,
                    image_crc: int | None = None, level_hints: bool = False) -> bytes:
    """Build a container. ``latent_strings[i][b]``: rANS string of latent block i, image b (in
    decoding order); ``pixel_strings[b]`` for the lossless model; ``lmb`` None for fixed-rate
    models; ``symbol_crcs``: optional CRC32 of each chunk's symbols, in chunk order
    (:func:`symbols_crc`); ``hints``/``hint_bound_exp``: portable-index hints of a one-image file
    (version 2, :mod:`lvae_jax.entropy.hints`; needs the symbol CRCs); ``image_crc``: with hints,
    the lossless model's CRC32 of the decoded 8-bit (padded) image; ``level_hints``: the hints
    also cover the pixel levels' rounding (lossless, FLAG_LEVEL_HINTS). The latent grid is
    ``ceil(image_size / stride)``. The result is read back and checked before it is returned."""
    if not (isinstance(model_name, str) and _NAME_RE.fullmatch(model_name)):
        raise ValueError(f"model name must be 1-{MAX_NAME_LENGTH} characters of [A-Za-z0-9._-], "
                         f"got {model_name!r}")
    model_id = bytes(model_id)
    if len(model_id) != 16:
        raise ValueError(f"model id must be 16 bytes, got {len(model_id)}")
    flags = 0
    if lmb is None:
        lmb32 = math.nan
    else:
        lmb32 = struct.unpack("<f", struct.pack("<f", float(lmb)))[0]
        if not math.isfinite(lmb32) or lmb32 <= 0:
            raise ValueError(f"λ must be finite and positive as float32, got {lmb}")
        flags |= FLAG_LAMBDA
    h, w = (int(v) for v in image_size)
    stride = int(stride)
    if not (1 <= h < 1 << 32 and 1 <= w < 1 << 32 and 1 <= stride <= 0xFFFF):
        raise ValueError(f"invalid image size {image_size} or stride {stride}")
    gh, gw = -(-h // stride), -(-w // stride)
    if gh > 0xFFFF or gw > 0xFFFF:
        raise ValueError(f"latent grid {gh}×{gw} does not fit the format")
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
        flags |= FLAG_LOSSLESS
    for i, c in enumerate(chunks):
        if len(c) < 8 or len(c) % 4 or len(c) >= 1 << 32:
            raise ValueError(f"chunk {i} ({len(c)} bytes) is not a rANS string (whole 32-bit words, >= 2)")
    if symbol_crcs is not None:
        symbol_crcs = [int(v) for v in symbol_crcs]
        if len(symbol_crcs) != len(chunks) or any(not 0 <= v < 1 << 32 for v in symbol_crcs):
            raise ValueError(f"need one 32-bit symbol CRC per chunk ({len(chunks)})")
        flags |= FLAG_SYMBOL_CRC
        table = b"".join(_CHUNK_SYM.pack(len(c), chunk_crc(i, c), symbol_crcs[i]) for i, c in enumerate(chunks))
    else:
        table = b"".join(_CHUNK.pack(len(c), chunk_crc(i, c)) for i, c in enumerate(chunks))
    version = 1
    if hints is not None:
        if symbol_crcs is None or batch != 1:
            raise ValueError("portable-index hints need symbol CRCs and a one-image file")
        if not (isinstance(hint_bound_exp, int) and 1 <= hint_bound_exp <= 60):
            raise ValueError(f"hint bound exponent must be in 1..60, got {hint_bound_exp!r}")
        from lvae_jax.entropy.hints import _varint
        if (image_crc is None) == (pixel_strings is not None):
            raise ValueError("a lossless file with hints needs its image CRC (and only it)")
        if image_crc is not None:
            table += _CRC.pack(int(image_crc))
        table += bytes([hint_bound_exp]) + _varint(len(hints)) + bytes(hints)
        flags |= FLAG_HINTS
        if level_hints:
            from lvae_jax.entropy.hints import LEVEL_MIN_EXP
            if pixel_strings is None or hint_bound_exp < LEVEL_MIN_EXP:
                raise ValueError("pixel-level hints are for lossless files, with a bound "
                                 f"exponent >= {LEVEL_MIN_EXP}")
            flags |= FLAG_LEVEL_HINTS
        version = 2
    elif level_hints:
        raise ValueError("pixel-level hints need the portable-index hints")
    name = model_name.encode("ascii")
    header_size = _PRE.size + len(name) + _POST.size + len(table) + _CRC.size
    head = (_PRE.pack(MAGIC, version, flags, header_size, model_id, len(name)) + name
            + _POST.pack(lmb32, h, w, batch, stride, gh, gw, len(latents)) + table)
    data = head + _CRC.pack(zlib.crc32(head)) + b"".join(chunks)
    read_container(data)  # the writer's output must satisfy the reader
    return data


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
    data = _view(data)
    if len(data) < 4 or bytes(data[:4]) != MAGIC:
        _fail("bad magic: not an lvae-jax file")
    if len(data) < _PRE.size:
        _fail(f"{len(data)} bytes, shorter than the fixed header (truncated)")
    magic, version, flags, header_size, mid, name_len = _PRE.unpack_from(data, 0)
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
    pos = _PRE.size
    name_bytes = head[pos : pos + name_len]
    pos += name_len
    try:
        name = name_bytes.decode("ascii")
    except UnicodeDecodeError:
        name = ""
    if not _NAME_RE.fullmatch(name):
        _fail(f"invalid model name {name_bytes!r}")
    if len(head) < pos + _POST.size:
        _fail("header too short for its fields (corrupt)")
    lmb, h, w, batch, stride, gh, gw, num_latents = _POST.unpack_from(head, pos)
    pos += _POST.size
    if flags & FLAG_LAMBDA:
        if not math.isfinite(lmb) or lmb <= 0:
            _fail(f"λ = {lmb} is not a finite positive number")
    elif not math.isnan(lmb):
        _fail("λ is set but the variable-rate flag is not (corrupt)")
    if h < 1 or w < 1:
        _fail(f"image size {h}×{w} is empty")
    from lvae_jax.limits import MAX_SIDE
    if max(h, w) > MAX_SIDE or batch > 255:
        _fail(f"image size {h}×{w} (batch {batch}) is out of range (at most {MAX_SIDE} per side, "
              "255 images): corrupt or forged")
    if batch < 1 or num_latents < 1 or stride < 1:
        _fail(f"batch {batch}, latent blocks {num_latents} and stride {stride} must be positive")
    if (gh, gw) != (-(-h // stride), -(-w // stride)):
        _fail(f"latent grid {gh}×{gw} does not match image {h}×{w} at stride {stride}")
    lossless = bool(flags & FLAG_LOSSLESS)
    entry = _CHUNK_SYM if flags & FLAG_SYMBOL_CRC else _CHUNK
    n_chunks = batch * (num_latents + lossless)
    hint_exp = hint_blob = image_crc = None
    if flags & FLAG_HINTS:
        from lvae_jax.entropy.hints import LEVEL_MIN_EXP, HintError, read_varint
        at = pos + entry.size * n_chunks
        if lossless and at + 4 <= len(head):
            (image_crc,) = _CRC.unpack_from(head, at)
            at += 4
        if not flags & FLAG_SYMBOL_CRC or batch != 1 or at + 2 > len(head):
            _fail("portable-index hints without symbol CRCs, in a batch, or truncated (corrupt)")
        if flags & FLAG_LEVEL_HINTS and not lossless:
            _fail("pixel-level hints in a lossy file (corrupt)")
        hint_exp = head[at]
        try:
            n_hint, at = read_varint(head, at + 1)
        except HintError:
            _fail("hint length is corrupt")
        if flags & FLAG_LEVEL_HINTS and hint_exp < LEVEL_MIN_EXP:
            _fail(f"pixel-level hints with a bound exponent {hint_exp} < {LEVEL_MIN_EXP} (corrupt)")
        if not 1 <= hint_exp <= 60 or at + n_hint != len(head):
            _fail(f"header size {header_size} does not match its chunk entries and hints (corrupt)")
        hint_blob = bytes(head[at:])
        try:
            from lvae_jax.entropy.hints import Retrieval
            Retrieval(hint_blob)
        except HintError as e:
            _fail(f"portable-index hints are corrupt ({e})")
    elif flags & FLAG_LEVEL_HINTS:
        _fail("pixel-level hints without portable-index hints (corrupt)")
    elif pos + entry.size * n_chunks != len(head):
        _fail(f"header size {header_size} does not match its {n_chunks} chunk entries (corrupt)")
    lengths, crcs, sym_crcs = [], [], []
    for i in range(n_chunks):
        n, c, *sc = entry.unpack_from(head, pos + i * entry.size)
        if n < 8 or n % 4:
            _fail(f"chunk {i} length {n} is not a rANS string length (whole 32-bit words, >= 2)")
        lengths.append(n)
        crcs.append(c)
        sym_crcs.extend(sc)
    return ContainerHeader(version, name, bytes(mid), None if math.isnan(lmb) else float(lmb), (h, w),
                           batch, stride, (gh, gw), num_latents, lossless, tuple(lengths),
                           tuple(crcs), header_size, tuple(sym_crcs) if flags & FLAG_SYMBOL_CRC else None,
                           hint_exp, hint_blob, image_crc, bool(flags & FLAG_LEVEL_HINTS))


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
    data = formats.as_bytes(data)
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
    data = formats.as_bytes(data)
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


# ------------------------------------------------------------------------------------------------
# Format detection
# ------------------------------------------------------------------------------------------------

LVAE = "lvae"
LVAE_TILED = "lvae-tiled"
QRES_OFFICIAL = "qres-official"
QARV_OFFICIAL = "qarv-official"


def detect(data) -> tuple[str, object | None]:
    """Which format ``data`` is, and the parse that told (the official formats' parsed file,
    None for the lvae layouts, whose body is read by the caller): ``"lvae"`` (magic + valid header; chunks may be missing),
    ``"lvae-tiled"`` (a tiled file, :mod:`lvae_jax.codec.tiles`: magic + valid header),
    ``"qres-official"`` (a pickle of the official structure) or ``"qarv-official"`` (the official
    struct layout, complete). The official formats are recognised by a full structural parse, so
    a QARV file whose first bytes look like a pickle header or like the magic (possible image
    heights) is still told apart; if both official parses succeed the data is refused as
    ambiguous. Raises :class:`BitstreamError` naming why each format was rejected."""
    data = formats.as_bytes(data)
    reasons = []
    from lvae_jax.codec import tiles       # (tiles imports this module)
    if tiles.is_tiled(data):
        try:
            tiles.read_tiled_header(data)
            return LVAE_TILED, None
        except BitstreamError as e:
            reasons.append(str(e))
    if data[:4] == MAGIC:
        try:
            read_header(data)
            return LVAE, None
        except BitstreamError as e:
            reasons.append(str(e))
    qres = qarv = None
    if data[:1] == b"\x80":
        try:
            qres = formats.read_qres_file(data)
        except BitstreamError as e:
            reasons.append(str(e))
    try:
        qarv = formats.read_qarv_file(data)
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
    """The format name of :func:`detect`."""
    return detect(data)[0]
