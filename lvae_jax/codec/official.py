"""The official lossy-vae file layouts, read strictly and written byte for byte.

QARV (``lvae/models/qarv/model.py``: ``compress``, ``decompress``, ``compress_file``)::

    file = struct '2H' (img_h, img_w)  +  body
    body = struct 'f'  λ  +  struct '3H' (nB, H/64, W/64)  +  pack_byte_strings(strings)
    pack_byte_strings = struct 'B' count  +  struct '<count>I' lengths  +  concatenated strings

one rANS string per latent block, for one image (``nB == 1``: ``compress`` keeps
``res['strings'][0]`` only). The official ``struct`` calls use native byte order and sizes; every
platform the official code runs on is little-endian, with ``H``/``I``/``f`` of 2/4/4 bytes and no
padding between separately packed fields. lvae-jax always reads and writes these fields explicitly
little-endian (``<``), which is byte-identical there. The recordings' ``compress/bytes`` hold the
body alone.

QRes (``lvae/models/qresvae/model.py``: ``compress``, ``compress_file``): the file is
``pickle.dump`` (default protocol: 4 on Python 3.8–3.13, 5 on 3.14) of the list
``[strings_0, …, strings_{L-1}, feature_shape, (pixel_strings,) (img_h, img_w)]``: per latent block
a list of rANS strings (one per image of the batch), the encoder's smallest feature shape
``(N, C, H/64, W/64)`` as a tuple of 4 ints, for qres34m_lossless a list of pixel strings, and the
original image size. lvae-jax never unpickles: :func:`read_qres_file` is a parser of pickle
opcodes that accepts exactly this structure and nothing else (no ``GLOBAL``/``REDUCE``/``BUILD``/
``INST``/``OBJ``/… opcode can pass, so nothing can be imported or executed), and
:func:`write_qres_file` produces what the official ``pickle.dump`` writes.

Every reader raises :class:`~lvae_jax.entropy.coder.BitstreamError` (a ``ValueError``) with a
message saying what is wrong; nothing is returned from a file that fails any check.
"""

from __future__ import annotations

import math
import pickle
import struct
from dataclasses import dataclass

from lvae_jax.entropy.coder import BitstreamError, as_bytes
from lvae_jax.limits import MAX_SIDE

#: The official models' total downsampling (image size = latent grid × stride, before cropping).
OFFICIAL_STRIDE = 64


def _check_coder_string(s: bytes, what: str) -> None:
    if len(s) < 8 or len(s) % 4:
        raise BitstreamError(f"{what} has {len(s)} bytes: a rANS string is a whole number of "
                             "32-bit words, at least 2")


def _grid_matches(size: int, grid: int, stride: int) -> bool:
    return grid == -(-size // stride)


# ------------------------------------------------------------------------------------------------
# QARV
# ------------------------------------------------------------------------------------------------


def pack_strings(strings) -> bytes:
    """``lvae.utils.coding.pack_byte_strings``: 'B' count + count × 'I' lengths + the strings."""
    strings = [bytes(s) for s in strings]
    if not 1 <= len(strings) <= 255:
        raise ValueError(f"between 1 and 255 strings can be packed, got {len(strings)}")
    if any(len(s) >= 1 << 32 for s in strings):
        raise ValueError("a string longer than 4 GiB cannot be packed")
    return (struct.pack("<B", len(strings)) + struct.pack(f"<{len(strings)}I", *map(len, strings))
            + b"".join(strings))


def unpack_strings(data: bytes) -> list[bytes]:
    """Inverse of :func:`pack_strings`; the lengths must account for every byte."""
    data = as_bytes(data)
    if len(data) < 1:
        raise BitstreamError("packed strings: empty (truncated)")
    count = data[0]
    if count == 0:
        raise BitstreamError("packed strings: count is 0")
    head = 1 + 4 * count
    if len(data) < head:
        raise BitstreamError(f"packed strings: {count} lengths announced, only {len(data) - 1} "
                             "bytes follow (truncated)")
    lengths = struct.unpack(f"<{count}I", data[1:head])
    if sum(lengths) != len(data) - head:
        raise BitstreamError(f"packed strings: lengths add up to {sum(lengths)} bytes but "
                             f"{len(data) - head} follow (truncated, extended or corrupt)")
    out, pos = [], head
    for n in lengths:
        out.append(data[pos : pos + n])
        pos += n
    return out


@dataclass(frozen=True)
class QarvBody:
    """What the official ``QARV.compress`` returns. ``lmb``: λ as float32 (a Python float);
    ``batch``: nB (always 1); ``latent_grid``: (H/64, W/64); ``strings``: one per latent block."""

    lmb: float
    batch: int
    latent_grid: tuple[int, int]
    strings: tuple[bytes, ...]


@dataclass(frozen=True)
class QarvFile:
    """What the official ``compress_file`` writes: original ``image_size`` (H, W) + body."""

    image_size: tuple[int, int]
    body: QarvBody


def write_qarv_body(lmb: float, latent_grid, strings) -> bytes:
    """The official ``QARV.compress`` bytes for one image."""
    lmb32 = struct.unpack("<f", struct.pack("<f", float(lmb)))[0]
    if not math.isfinite(lmb32) or lmb32 <= 0:
        raise ValueError(f"λ must be finite and positive as float32, got {lmb}")
    gh, gw = (int(v) for v in latent_grid)
    if not (1 <= gh <= 0xFFFF and 1 <= gw <= 0xFFFF):
        raise ValueError(f"latent grid {latent_grid} does not fit the format (1..65535)")
    strings = [bytes(s) for s in strings]
    for i, s in enumerate(strings):
        _check_coder_string(s, f"latent string {i}")
    return struct.pack("<f", lmb32) + struct.pack("<3H", 1, gh, gw) + pack_strings(strings)


def read_qarv_body(data) -> QarvBody:
    """Parse and validate an official QARV body (``compress`` output)."""
    data = as_bytes(data)
    if len(data) < 11:
        raise BitstreamError(f"QARV body of {len(data)} bytes is shorter than its 11-byte header "
                             "(truncated)")
    (lmb,) = struct.unpack("<f", data[:4])
    nb, gh, gw = struct.unpack("<3H", data[4:10])
    if not math.isfinite(lmb) or lmb <= 0:
        raise BitstreamError(f"QARV body: λ = {lmb} is not a finite positive number (corrupt)")
    if nb != 1:
        raise BitstreamError(f"QARV body: batch size {nb}; the official format holds exactly one "
                             "image (corrupt)")
    if gh == 0 or gw == 0:
        raise BitstreamError(f"QARV body: empty latent grid {gh}×{gw} (corrupt)")
    strings = unpack_strings(data[10:])
    for i, s in enumerate(strings):
        _check_coder_string(s, f"QARV body: latent string {i}")
    return QarvBody(float(lmb), nb, (gh, gw), tuple(strings))


def write_qarv_file(image_size, body: bytes | QarvBody) -> bytes:
    """The official ``compress_file`` bytes: '2H' original (H, W) + the body."""
    h, w = (int(v) for v in image_size)
    if not (1 <= h <= 0xFFFF and 1 <= w <= 0xFFFF):
        raise ValueError(f"image size {image_size} does not fit the format (1..65535)")
    if isinstance(body, QarvBody):
        body = write_qarv_body(body.lmb, body.latent_grid, body.strings)
    return struct.pack("<2H", h, w) + bytes(body)


def read_qarv_file(data, stride: int | None = OFFICIAL_STRIDE) -> QarvFile:
    """Parse and validate an official QARV file. With ``stride``, the latent grid must be the
    image size rounded up to a multiple of ``stride`` (the official padding)."""
    data = as_bytes(data)
    if len(data) < 4:
        raise BitstreamError(f"QARV file of {len(data)} bytes (truncated)")
    h, w = struct.unpack("<2H", data[:4])
    body = read_qarv_body(data[4:])
    if h == 0 or w == 0:
        raise BitstreamError(f"QARV file: image size {h}×{w} is empty (corrupt)")
    if stride and not (_grid_matches(h, body.latent_grid[0], stride)
                       and _grid_matches(w, body.latent_grid[1], stride)):
        raise BitstreamError(f"QARV file: image {h}×{w} does not match latent grid "
                             f"{body.latent_grid[0]}×{body.latent_grid[1]} at stride {stride} (corrupt)")
    return QarvFile((h, w), body)


# ------------------------------------------------------------------------------------------------
# QRes: strict pickle subset
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QresFile:
    """The official QRes file. ``latent_strings[i][b]``: latent block i, image b;
    ``feature_shape``: (N, C, H/64, W/64); ``pixel_strings``: per image (lossless model) or None;
    ``image_size``: original (H, W); ``protocol``: the pickle protocol read (or to write)."""

    latent_strings: tuple[tuple[bytes, ...], ...]
    feature_shape: tuple[int, int, int, int]
    pixel_strings: tuple[bytes, ...] | None
    image_size: tuple[int, int]
    protocol: int = 4

    @property
    def batch(self) -> int:
        return self.feature_shape[0]

    @property
    def latent_grid(self) -> tuple[int, int]:
        return self.feature_shape[2], self.feature_shape[3]


#: Pickle protocols whose opcodes can express the official structure without globals.
QRES_PROTOCOLS = (3, 4, 5)
_MAX_ITEMS = 1 << 20  # items on the stack / in one list: far beyond any official file

_MARK = object()

# opcode byte -> name, for the accepted subset (pickletools names).
_OPS = {
    0x80: "PROTO", 0x95: "FRAME", 0x2E: "STOP", 0x28: "MARK",
    0x5D: "EMPTY_LIST", 0x6C: "LIST", 0x61: "APPEND", 0x65: "APPENDS",
    0x29: "EMPTY_TUPLE", 0x74: "TUPLE", 0x85: "TUPLE1", 0x86: "TUPLE2", 0x87: "TUPLE3",
    0x43: "SHORT_BINBYTES", 0x42: "BINBYTES", 0x8E: "BINBYTES8",
    0x4B: "BININT1", 0x4D: "BININT2", 0x4A: "BININT", 0x8A: "LONG1",
    0x94: "MEMOIZE", 0x71: "BINPUT", 0x72: "LONG_BINPUT", 0x68: "BINGET", 0x6A: "LONG_BINGET",
}


#: Opcodes that push one bytes or int object.
_SCALARS = ("SHORT_BINBYTES", "BINBYTES", "BINBYTES8", "BININT1", "BININT2", "BININT", "LONG1")


def _opcode_name(code: int) -> str:
    import pickletools
    for op in pickletools.opcodes:
        if op.code.encode("latin-1") == bytes([code]):
            return op.name
    return f"0x{code:02x}"


class _PickleReader:
    """Walks pickle opcodes of the accepted subset, building only lists, tuples, bytes, ints."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0
        self.frame_end: int | None = None

    def fail(self, msg: str):
        raise BitstreamError(f"QRes file (pickle) at byte {self.pos}: {msg}")

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.data):
            self.fail(f"needs {n} more bytes, {len(self.data) - self.pos} left (truncated)")
        if self.frame_end is not None and end > self.frame_end:
            self.fail("an opcode crosses the end of its frame (corrupt)")
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "little")

    def run(self):
        """-> (the object, the protocol): every opcode read, the structure checked."""
        if len(self.data) < 2 or self.data[0] != 0x80:
            self.fail("does not start with a pickle protocol header (PROTO)")
        self.stack: list = []
        self.marks: list[int] = []
        self.memo: dict[int, object] = {}
        self.protocol = None
        while True:
            if self.frame_end is not None and self.pos == self.frame_end:
                self.frame_end = None
            if self.pos >= len(self.data):
                self.fail("ends before STOP (truncated)")
            start = self.pos
            code = self.take(1)[0]
            name = _OPS.get(code)
            if name is None:
                self.pos = start
                self.fail(f"opcode {_opcode_name(code)} is not allowed in a QRes file (only lists, "
                          "tuples, bytes and ints can appear; nothing is imported or executed)")
            if name == "STOP":
                return self._stop()
            if name in ("PROTO", "FRAME"):
                self._framing(name, start)
                continue
            if len(self.stack) >= _MAX_ITEMS:
                self.fail("too many objects (not an official file)")
            if name in ("MEMOIZE", "BINPUT", "LONG_BINPUT", "BINGET", "LONG_BINGET"):
                self._memoize(name)
            elif name in _SCALARS:
                self.stack.append(self._scalar(name))
            else:
                self._collection(name)

    def _framing(self, name: str, start: int) -> None:
        if name == "PROTO":
            if start != 0:
                self.fail("PROTO is allowed only as the first opcode")
            self.protocol = self.take(1)[0]
            if self.protocol not in QRES_PROTOCOLS:
                self.fail(f"pickle protocol {self.protocol}; official QRes files use "
                          f"{'/'.join(map(str, QRES_PROTOCOLS))}")
            return
        if self.protocol < 4:
            self.fail("FRAME in a protocol < 4 pickle")
        if self.frame_end is not None:
            self.fail("FRAME inside an unfinished frame (corrupt)")
        n = self.uint(8)
        if n > len(self.data) - self.pos:
            self.fail(f"frame of {n} bytes, only {len(self.data) - self.pos} left (truncated)")
        self.frame_end = self.pos + n

    def _stop(self):
        if self.marks or len(self.stack) != 1:
            self.fail("STOP with an unbalanced stack (corrupt)")
        if self.frame_end is not None and self.pos != self.frame_end:
            self.fail("STOP before the end of its frame (corrupt)")
        if self.pos != len(self.data):
            self.fail(f"{len(self.data) - self.pos} bytes after STOP (extended or corrupt)")
        return self.stack[0], self.protocol

    def _scalar(self, name: str):
        """The bytes or int that opcode ``name`` pushes."""
        if name in ("SHORT_BINBYTES", "BINBYTES", "BINBYTES8"):
            return self.take(self.uint({"SHORT_BINBYTES": 1, "BINBYTES": 4, "BINBYTES8": 8}[name]))
        if name in ("BININT1", "BININT2"):
            return self.uint(1 if name == "BININT1" else 2)
        if name == "BININT":
            return int.from_bytes(self.take(4), "little", signed=True)
        n = self.uint(1)                                   # LONG1
        if n > 8:
            self.fail(f"integer of {n} bytes (not an official file)")
        return int.from_bytes(self.take(n), "little", signed=True)

    def _collection(self, name: str) -> None:
        """MARK, lists and tuples."""
        stack = self.stack
        if name == "MARK":
            self.marks.append(len(stack))
            stack.append(_MARK)
        elif name in ("EMPTY_LIST", "EMPTY_TUPLE"):
            stack.append([] if name == "EMPTY_LIST" else ())
        elif name in ("LIST", "TUPLE", "APPENDS"):
            if not self.marks:
                self.fail(f"{name} without MARK (corrupt)")
            m = self.marks.pop()
            items = stack[m + 1 :]
            del stack[m:]
            self._check_items(items, name)
            if name == "APPENDS":
                target = self._top_list(stack, name)
                if len(target) + len(items) > _MAX_ITEMS:
                    self.fail("list too long (not an official file)")
                target.extend(items)
            else:
                stack.append(items if name == "LIST" else tuple(items))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            stack.append(tuple(self._pop(stack, int(name[-1]), name)))
        else:                                              # APPEND
            (item,) = self._pop(stack, 1, name)
            self._top_list(stack, name).append(item)

    def _memoize(self, name: str) -> None:
        if name in ("MEMOIZE", "BINPUT", "LONG_BINPUT"):
            if not self.stack or self.stack[-1] is _MARK:
                self.fail(f"{name} with nothing to store (corrupt)")
            key = len(self.memo) if name == "MEMOIZE" else self.uint(1 if name == "BINPUT" else 4)
            self.memo[key] = self.stack[-1]
            return
        key = self.uint(1 if name == "BINGET" else 4)
        if key not in self.memo:
            self.fail(f"{name} of an unknown memo entry {key} (corrupt)")
        value = self.memo[key]
        if isinstance(value, list):
            self.fail("a list referenced twice (shared or recursive lists are not part "
                      "of the format)")
        self.stack.append(value)

    def _pop(self, stack, k, name):
        if len(stack) < k or any(x is _MARK for x in stack[len(stack) - k :]):
            self.fail(f"{name} needs {k} items (corrupt)")
        items = stack[len(stack) - k :]
        del stack[len(stack) - k :]
        self._check_items(items, name)
        return items

    def _top_list(self, stack, name):
        if not stack or not isinstance(stack[-1], list):
            self.fail(f"{name} into something that is not a list (corrupt)")
        return stack[-1]

    def _check_items(self, items, name):
        if any(x is _MARK for x in items):
            self.fail(f"{name} over a MARK (corrupt)")


def _int_tuple(v, n: int, what: str) -> tuple[int, ...]:
    if not (isinstance(v, tuple) and len(v) == n and all(type(x) is int for x in v)):
        raise BitstreamError(f"QRes file: {what} must be a tuple of {n} ints, got {_describe(v)}")
    return v


def _bytes_list(v, what: str) -> tuple[bytes, ...]:
    if not (isinstance(v, list) and v and all(isinstance(x, bytes) for x in v)):
        raise BitstreamError(f"QRes file: {what} must be a non-empty list of byte strings, got "
                             f"{_describe(v)}")
    return tuple(v)


def _describe(v) -> str:
    if isinstance(v, (list, tuple)):
        inner = ", ".join(type(x).__name__ for x in v[:4]) + (", …" if len(v) > 4 else "")
        return f"{type(v).__name__} of {len(v)} [{inner}]"
    return type(v).__name__


def read_qres_file(data, stride: int | None = OFFICIAL_STRIDE) -> QresFile:
    """Parse and validate an official QRes file without unpickling. With ``stride``, the feature
    shape must be the image size rounded up to a multiple of ``stride``."""
    data = as_bytes(data)
    obj, protocol = _PickleReader(data).run()
    if not isinstance(obj, list) or len(obj) < 3:
        raise BitstreamError(f"QRes file: top level must be a list of at least 3 items, got "
                             f"{_describe(obj)}")
    image_size = _int_tuple(obj[-1], 2, "the last item (image size)")
    if isinstance(obj[-2], tuple):
        shape_item, pixels, latents = obj[-2], None, obj[:-2]
    elif isinstance(obj[-2], list) and len(obj) >= 4 and isinstance(obj[-3], tuple):
        shape_item, pixels, latents = obj[-3], _bytes_list(obj[-2], "the pixel strings"), obj[:-3]
    else:
        raise BitstreamError("QRes file: expected [latent strings…, feature shape, (pixel strings,) "
                             f"image size], got {_describe(obj)}")
    shape = _int_tuple(shape_item, 4, "the feature shape")
    if min(shape) < 1:
        raise BitstreamError(f"QRes file: feature shape {shape} has an empty dimension")
    # sane ranges before any arithmetic on them: the official code writes one image (N = 1) and
    # sides up to MAX_SIDE; larger integers are forged (and overflow C++ shape products)
    if shape[0] > 255 or shape[1] > 1 << 16 or max(shape[2:]) > MAX_SIDE:
        raise BitstreamError(f"QRes file: feature shape {shape} is out of range (corrupt or forged)")
    if any(v > MAX_SIDE for v in image_size):
        raise BitstreamError(f"QRes file: image size {image_size[0]}×{image_size[1]} is out of range "
                             f"(1..{MAX_SIDE} per side; corrupt or forged)")
    if not latents:
        raise BitstreamError("QRes file: no latent strings")
    latent_strings = tuple(_bytes_list(x, f"latent block {i}") for i, x in enumerate(latents))
    n = shape[0]
    for i, strs in enumerate(latent_strings):
        if len(strs) != n:
            raise BitstreamError(f"QRes file: latent block {i} has {len(strs)} strings for a batch of {n}")
        for b, s in enumerate(strs):
            _check_coder_string(s, f"QRes file: latent block {i}, image {b}")
    if pixels is not None:
        if len(pixels) != n:
            raise BitstreamError(f"QRes file: {len(pixels)} pixel strings for a batch of {n}")
        for b, s in enumerate(pixels):
            _check_coder_string(s, f"QRes file: pixel string of image {b}")
    h, w = image_size
    if h < 1 or w < 1:
        raise BitstreamError(f"QRes file: image size {h}×{w} is empty")
    if stride and not (_grid_matches(h, shape[2], stride) and _grid_matches(w, shape[3], stride)):
        raise BitstreamError(f"QRes file: image {h}×{w} does not match feature grid "
                             f"{shape[2]}×{shape[3]} at stride {stride} (corrupt)")
    return QresFile(latent_strings, shape, pixels, image_size, protocol)


def write_qres_file(latent_strings, feature_shape, image_size, pixel_strings=None,
                    protocol: int = 4) -> bytes:
    """What the official ``compress_file`` writes (``pickle.dump`` of plain lists, bytes and
    ints, default protocol 4 as on Python 3.8–3.13; 5 as on 3.14). Validated by
    :func:`read_qres_file` before it is returned."""
    if protocol not in QRES_PROTOCOLS:
        raise ValueError(f"protocol must be one of {QRES_PROTOCOLS}")
    obj: list = [[bytes(s) for s in strs] for strs in latent_strings]
    obj.append(tuple(int(v) for v in feature_shape))
    if pixel_strings is not None:
        obj.append([bytes(s) for s in pixel_strings])
    obj.append(tuple(int(v) for v in image_size))
    data = pickle.dumps(obj, protocol=protocol)
    try:
        read_qres_file(data, stride=None)
    except BitstreamError as e:
        raise ValueError(f"not a valid QRes file: {e}") from None
    return data


def qres_to_bytes(f: QresFile) -> bytes:
    """:func:`write_qres_file` of a :class:`QresFile`."""
    return write_qres_file(f.latent_strings, f.feature_shape, f.image_size, f.pixel_strings, f.protocol)
