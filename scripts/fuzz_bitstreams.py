"""Fuzz the bitstream readers and the range decoder with mutated valid files.

    python scripts/fuzz_bitstreams.py --cases 10000 --seed 0
    python scripts/fuzz_bitstreams.py --case 1234 --seed 0          # replay one case, verbosely
    python scripts/fuzz_bitstreams.py --decoder my.module:decode    # also run a whole-file decoder
    python scripts/fuzz_bitstreams.py --corpus fuzz_models:build_corpus \
        --decoder fuzz_models:decode_file                           # files of real (tiny) models

A corpus of valid files is built from random symbols (the official tables, CompressAI's coder):
lvae containers (lossy/lossless, batch 1 and 2), official QARV files, official QRes pickles
(protocols 3/4/5, lossy and lossless) and bare coder strings (some crafted with long escape
runs). Each case mutates one of them — bit flips, byte replacements, truncation, extension,
garbage, swapped chunks/strings, wrong header fields (the lvae header CRC recomputed so the
semantic checks are reached; malicious and malformed pickles), all-ones runs, and *forged image
sizes* (``size``: the declared image size and everything that must agree with it — latent grid,
feature shape, header CRC — rewritten consistently, so that only the size limits and the memory
estimate stand between the header and an allocation) — and runs it
through :func:`~lvae_jax.codec.formats.sniff`, the format's reader, and the coder-level
decoding of every string it yields (with the valid indexes of its position; plain, verified, and
the pure-Python emulation of the C++ decoder that counts words read).

Every case must end in success or ``BitstreamError``/``ValueError``: any other exception, a crash
(signal) or a case running longer than ``--time-limit`` seconds is a failure. Further checks:
the container never returns chunk data that differs from the original (CRC), a partial read
returns a prefix of the original chunks, the C++ decoder never reads beyond the padding
:func:`~lvae_jax.entropy.coder.decoder_padding_words` gives (checked by the emulation), and the
emulation agrees with the C++ values.

Cases run in-process inside a worker subprocess; the parent enforces the time limit and a bound
on the worker's peak resident memory (``--max-rss``, VmHWM after each case), notices crashes,
reports the case and restarts the worker after it. Each case is reproducible from
(seed, case index). A whole-file decoder (``module:function`` taking the file bytes) can be
plugged in with ``--decoder``; it too must succeed or raise ``BitstreamError``/``ValueError``. A
decoder with the attribute ``wants_entry = True`` is called as
``decoder(data, entry, stats, mutation, detail)`` instead: it learns which valid file was mutated
and how (to check what it decoded; ``AssertionError`` for a violated invariant) and may count
outcomes in ``stats``. ``--corpus module:function`` replaces the corpus with the entries that
``function(seed)`` returns: ``scripts/fuzz_models.py`` builds one from files written by real
(tiny) models, with a decoder that checks the decoded images (``--corpus
fuzz_models:build_corpus --decoder fuzz_models:decode_file``).
"""

from __future__ import annotations

import argparse
import collections
import importlib
import json
import os
import pickle
import select
import struct
import subprocess
import sys
import time
import traceback
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MUTATIONS = ("bitflip", "byte", "truncate", "extend", "garbage", "swap", "header", "ones", "none",
             "size")
#: Image sizes (H, W) a ``size`` mutation forges: degenerate, odd, large, the formats' maxima.
FORGED_SIZES = ((1, 1), (1, 65535), (65535, 1), (65, 129), (4096, 4096), (12000, 12000),
                (16000, 16000), (16384, 16384), (65535, 65535))
FORMATS = ("lvae", "qarv", "qres", "coder", "image")


# ------------------------------------------------------------------------------------------------
# Corpus
# ------------------------------------------------------------------------------------------------


@dataclass
class Entry:
    """One valid file: its format, bytes, and per string position the indexes to decode with and
    the expected symbols. ``positions``: ("latent", i, b) or ("pixel", b) -> (table, idx, syms)."""

    name: str
    fmt: str
    data: bytes
    strings: dict = field(default_factory=dict)  # position -> bytes
    positions: dict = field(default_factory=dict)  # position -> (table name, indexes, symbols)
    meta: dict = field(default_factory=dict)


def _random_stream(rng, tables, n, escapes=2):
    scales = np.exp(rng.uniform(np.log(0.05), np.log(30.0), n)).astype(np.float32)
    sym = np.round(rng.normal(0, 1, n) * scales).astype(np.int64)
    if escapes:
        pos = rng.choice(n, min(escapes, n), replace=False)
        sym[pos] += rng.choice([-1, 1], pos.size) * rng.integers(200, 70000, pos.size)
    idx = tables.build_indexes(scales)
    return sym.astype(np.int32), idx


def build_corpus(seed: int = 0) -> list[Entry]:
    from lvae_jax.codec import container, official
    from lvae_jax.codec.records import FileMeta
    from lvae_jax.entropy import coder, tables as T

    rng = np.random.default_rng([seed, 0xC0])
    tabs = {name: T.get_tables(name) for name in ("qres_latent", "qarv_latent", "lossless_pixel")}
    latent_sizes = (32, 128, 256)  # symbols per latent block per image
    mid = container.model_id("fuzz-config", b"fuzz-weights")

    def make(table, n_images, with_pixels):
        strings, positions = {}, {}
        for i, n in enumerate(latent_sizes):
            for b in range(n_images):
                sym, idx = _random_stream(rng, tabs[table], n)
                strings[("latent", i, b)] = coder.encode(sym, idx, tabs[table])
                positions[("latent", i, b)] = (table, idx, sym)
        if with_pixels:
            for b in range(n_images):
                sym, idx = _random_stream(rng, tabs["lossless_pixel"], 192, escapes=1)
                strings[("pixel", b)] = coder.encode(sym, idx, tabs["lossless_pixel"])
                positions[("pixel", b)] = ("lossless_pixel", idx, sym)
        return strings, positions

    def latents(strings, n_images):
        return [[strings[("latent", i, b)] for b in range(n_images)] for i in range(len(latent_sizes))]

    def pixels(strings, n_images):
        return [strings[("pixel", b)] for b in range(n_images)]

    corpus = []
    s, p = make("qarv_latent", 1, False)
    corpus.append(Entry("lvae-qarv-b1", "lvae", container.write_container(
        FileMeta("qarv_base", mid, 256.0, (50, 70), 64), latents(s, 1)), s, p))
    s, p = make("qres_latent", 2, True)
    corpus.append(Entry("lvae-lossless-b2", "lvae", container.write_container(
        FileMeta("qres34m_lossless", mid, None, (64, 128), 64), latents(s, 2), pixels(s, 2)), s, p))
    s, p = make("qarv_latent", 1, False)
    body = official.write_qarv_body(64.0, (1, 2), [s[("latent", i, 0)] for i in range(len(latent_sizes))])
    corpus.append(Entry("qarv", "qarv", official.write_qarv_file((60, 100), body), s, p))
    for proto, n_img, lossless in ((4, 2, False), (5, 1, True), (3, 1, False)):
        s, p = make("qres_latent", n_img, lossless)
        data = official.write_qres_file(latents(s, n_img), (n_img, 32, 1, 2), (64, 100),
                                       pixels(s, n_img) if lossless else None, protocol=proto)
        corpus.append(Entry(f"qres-p{proto}-b{n_img}{'-lossless' if lossless else ''}", "qres", data, s, p,
                            {"protocol": proto, "batch": n_img, "lossless": lossless}))
    # Bare coder strings, including crafted long escapes (F-words) and an escape at the very end.
    t = tabs["qarv_latent"]
    for k in range(3):
        sym, idx = _random_stream(rng, t, int(rng.integers(16, 400)), escapes=int(rng.integers(0, 6)))
        data = coder.encode(sym, idx, t)
        corpus.append(Entry(f"coder-{k}", "coder", data, {("raw",): data},
                            {("raw",): ("qarv_latent", idx, sym)}))
    for k, count in enumerate((40, 300)):
        data, idx = crafted_escape_stream(t, rng, count)
        corpus.append(Entry(f"coder-escape{count}", "coder", data, {("raw",): data},
                            {("raw",): ("qarv_latent", idx, None)}))
    return corpus


def crafted_escape_stream(t, rng, count):
    """A stream whose escape announces ``count`` 4-bit chunks (runs of 15s: F-words), which no
    encoder writes; decoding it reads far, which exercises the padding bound."""
    from lvae_jax.entropy import coder
    c = t.cdf
    ci = int(rng.integers(0, c.num_tables))
    row, maxv = c._rows[ci], c._lengths[ci] - 2
    units = []
    for _ in range(8):
        v = int(rng.integers(0, maxv))
        units.append((row[v], row[v + 1] - row[v], False))
    units.append((row[maxv], row[maxv + 1] - row[maxv], False))
    rest = count
    while rest >= 15:
        units.append((15, 16, True))
        rest -= 15
    units.append((rest, rest + 1, True))
    units += [(15, 16, True)] * min(count, 64)  # only part of the announced chunks are present
    data = coder.encode_units(units)
    return data, np.full(20, ci, dtype=np.int32)


# ------------------------------------------------------------------------------------------------
# Mutations
# ------------------------------------------------------------------------------------------------


def _rebuild_lvae(data: bytes, edit) -> bytes:
    """Apply ``edit(header_bytes_without_crc) -> bytes`` and recompute the header CRC."""
    (size,) = struct.unpack_from("<I", data, 8)
    size = min(size, len(data))
    head = bytearray(data[: max(size - 4, 0)])
    head = bytes(edit(head))
    return head + struct.pack("<I", zlib.crc32(head)) + data[size:]


def _mutate_lvae_header(rng, data: bytes) -> tuple[bytes, str]:
    name_len = data[28]
    post = 29 + name_len
    fields = {  # name -> (offset, struct format)
        "version": (4, "<H"), "flags": (6, "<H"), "header_size": (8, "<I"), "name_len": (28, "<B"),
        "lmb": (post, "<f"), "height": (post + 4, "<I"), "width": (post + 8, "<I"),
        "batch": (post + 12, "<H"), "stride": (post + 14, "<H"), "grid_h": (post + 16, "<H"),
        "grid_w": (post + 18, "<H"), "num_latents": (post + 20, "<H"),
        "chunk_length": (post + 22 + 8 * int(rng.integers(0, 3)), "<I"),
        "chunk_crc": (post + 26, "<I"), "name": (29, "<B"),
    }
    name = list(fields)[int(rng.integers(0, len(fields)))]
    off, fmt = fields[name]
    size = struct.calcsize(fmt)
    if fmt == "<f":
        value = float(rng.choice([0.0, -1.0, np.nan, np.inf, 1e-30, 3e38, float(rng.uniform(1, 4096))]))
    else:
        top = (1 << (8 * size)) - 1
        value = int(rng.choice([0, 1, 2, 3, 63, 64, 65, top, int(rng.integers(0, top + 1))]))

    def edit(head):
        if off + size <= len(head):
            head[off : off + size] = struct.pack(fmt, value)
        return head

    recrc = bool(rng.random() < 0.8)
    out = _rebuild_lvae(data, edit) if recrc else bytes(edit(bytearray(data)))
    return out, f"{name}={value}{' (CRC recomputed)' if recrc else ''}"


def _swap_lvae(rng, data: bytes) -> tuple[bytes, str]:
    from lvae_jax.codec import container
    h = container.read_header(data)
    i, j = (int(v) for v in rng.choice(h.num_chunks, 2, replace=False))
    offs = np.cumsum((h.header_size,) + h.chunk_lengths)
    chunks = [data[offs[k] : offs[k + 1]] for k in range(h.num_chunks)]
    chunks[i], chunks[j] = chunks[j], chunks[i]
    body = b"".join(chunks)
    if rng.random() < 0.5:
        return data[: h.header_size] + body, f"payloads {i}<->{j}"
    post = 29 + data[28] + 22

    def edit(head):  # swap the table entries too: only the position-bound CRC can notice
        a, b = head[post + 8 * i : post + 8 * i + 8], head[post + 8 * j : post + 8 * j + 8]
        head[post + 8 * i : post + 8 * i + 8], head[post + 8 * j : post + 8 * j + 8] = b, a
        return head

    return _rebuild_lvae(data[: h.header_size], edit) + body, f"chunks+entries {i}<->{j} (CRC recomputed)"


def _qarv_parts(data: bytes):
    h, w = struct.unpack("<2H", data[:4])
    lmb, nb, gh, gw = struct.unpack("<f3H", data[4:14])
    count = data[14]
    lengths = struct.unpack(f"<{count}I", data[15 : 15 + 4 * count])
    pos, strings = 15 + 4 * count, []
    for n in lengths:
        strings.append(data[pos : pos + n])
        pos += n
    return [h, w, lmb, nb, gh, gw], strings


def _qarv_build(fields, strings) -> bytes:
    h, w, lmb, nb, gh, gw = fields
    return (struct.pack("<2H", h, w) + struct.pack("<f3H", lmb, nb, gh, gw) + struct.pack("<B", len(strings))
            + struct.pack(f"<{len(strings)}I", *map(len, strings)) + b"".join(strings))


_MALICIOUS_PICKLES = (
    b"\x80\x04cos\nsystem\n(S'echo fuzz'\ntR.",  # GLOBAL + REDUCE
    # STACK_GLOBAL
    b"\x80\x04\x95\x1e\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x8c\x06system\x93\x8c\x04true\x85R.",
    b"\x80\x04]\x94(cbuiltins\neval\n\x94e.",
    b"\x80\x04]\x94(]\x94C\x08aaaaaaaa\x94ab.",  # BUILD
    b"\x80\x04(i__main__\nX\n.",  # INST
    b"\x80\x04\x8e" + (1 << 62).to_bytes(8, "little") + b"x",  # huge BINBYTES8 length
    b"\x80\x04B\xff\xff\xff\x7f",  # BINBYTES length beyond the data
    b"\x80\x04]\x94h\x00a.",  # a list referenced into itself
    b"\x80\x04" + b"]" * 5000 + b"a" * 4999 + b".",  # deep nesting
    b"\x80\x05\x95\x05\x00\x00\x00\x00\x00\x00\x00]\x94.",  # frame shorter than announced
)


def _mutate_qres(rng, entry: Entry) -> tuple[bytes, str]:
    from lvae_jax.codec import official
    f = official.read_qres_file(entry.data)
    lat = [list(x) for x in f.latent_strings]
    shape, size, pix, proto = list(f.feature_shape), list(f.image_size), f.pixel_strings, f.protocol
    choice = int(rng.integers(0, 8))
    if choice == 0:
        return _MALICIOUS_PICKLES[int(rng.integers(0, len(_MALICIOUS_PICKLES)))], "malicious pickle"
    if choice == 1:
        shape[int(rng.integers(0, 4))] = int(rng.choice([0, -1, 2, 3, 1 << 40]))
        what = f"feature shape {shape}"
    elif choice == 2:
        size[int(rng.integers(0, 2))] = int(rng.choice([0, -5, 1, 65, 129, 1 << 33]))
        what = f"image size {size}"
    elif choice == 3:
        lat[int(rng.integers(0, len(lat)))].append(b"\0" * 8)
        what = "batch mismatch"
    elif choice == 4:
        obj = [[s.decode("latin-1") for s in x] for x in lat] + [tuple(shape), tuple(size)]
        return pickle.dumps(obj, protocol=proto), "str instead of bytes"
    elif choice == 5:
        obj = [lat, tuple(shape), tuple(size)]
        return pickle.dumps(obj, protocol=proto), "nested one level deeper"
    elif choice == 6:
        obj = [x for x in lat] + [tuple(shape)] + ([list(pix)] if pix else []) + [tuple(size)]
        return pickle.dumps(obj, protocol=int(rng.choice([0, 1, 2]))), "old pickle protocol"
    else:
        obj = [x for x in lat] + [tuple(shape), tuple(size), tuple(size)]
        return pickle.dumps(obj, protocol=proto), "extra item"
    obj = [x for x in lat] + [tuple(shape)] + ([list(pix)] if pix else []) + [tuple(size)]
    return pickle.dumps(obj, protocol=proto), what


def _forge_size(rng, entry: Entry) -> tuple[bytes, str]:
    """The file claiming another image size, consistently (grid, shapes and CRCs follow)."""
    from lvae_jax.codec import official
    if rng.random() < 0.7:
        h, w = FORGED_SIZES[int(rng.integers(0, len(FORGED_SIZES)))]
    else:
        h, w = (int(v) for v in rng.integers(1, 65536, 2))
    grid = (-(-h // 64), -(-w // 64))
    data = entry.data
    if entry.fmt == "lvae":
        post = 29 + data[28]

        def edit(head):
            struct.pack_into("<II", head, post + 4, h, w)
            struct.pack_into("<HH", head, post + 16, *grid)
            return head
        return _rebuild_lvae(data, edit), f"{h}x{w}, grid {grid[0]}x{grid[1]} (CRC recomputed)"
    if entry.fmt == "qarv":
        fields, strings = _qarv_parts(data)
        fields[0], fields[1], fields[4], fields[5] = h, w, *grid
        return _qarv_build(fields, strings), f"{h}x{w}, grid {grid[0]}x{grid[1]}"
    if entry.fmt == "qres":
        f = official.read_qres_file(data)
        if rng.random() < 0.2:          # beyond what the official writer could store
            h, w = (int(rng.choice([1 << 20, 1 << 40])),) * 2
            grid = (h // 64, w // 64)
        shape = (f.feature_shape[0], f.feature_shape[1], *grid)
        pix = f.pixel_strings   # the official structure, pickled directly (the writer checks sizes)
        obj = [list(x) for x in f.latent_strings] + [shape] + ([list(pix)] if pix else []) + [(h, w)]
        return pickle.dumps(obj, protocol=f.protocol), f"{h}x{w}, feature shape {shape}"
    if entry.fmt == "image":                 # scripts/fuzz_images.py: the image header's size
        from fuzz_images import forge_size
        return forge_size(entry, h, w), f"{h}x{w} in the {entry.meta['format']} header"
    return mutate(rng, entry, "header")


def mutate(rng, entry: Entry, kind: str) -> tuple[bytes, str]:
    data = entry.data
    n = len(data)
    if kind == "none":
        return data, "unchanged"
    if kind == "size":
        return _forge_size(rng, entry)
    if kind == "bitflip":
        out = bytearray(data)
        k = int(rng.integers(1, 9))
        for p in rng.integers(0, 8 * n, k):
            out[p // 8] ^= 1 << (p % 8)
        return bytes(out), f"{k} bit(s)"
    if kind == "byte":
        out = bytearray(data)
        k = int(rng.integers(1, 5))
        for p in rng.integers(0, n, k):
            out[p] = int(rng.integers(0, 256))
        return bytes(out), f"{k} byte(s)"
    if kind == "truncate":
        cut = int(rng.integers(0, n))
        return data[:cut], f"cut at {cut}/{n}"
    if kind == "extend":
        k = int(rng.integers(1, 65))
        tail = bytes(k) if rng.random() < 0.3 else rng.bytes(k)
        return data + tail, f"+{k} bytes"
    if kind == "garbage":
        k = int(rng.integers(0, 2 * n + 1))
        keep = int(rng.choice([0, 1, 2, 4, 8, 16, 64])) if rng.random() < 0.5 else 0
        return data[:keep] + rng.bytes(max(k - keep, 0)), f"{k} random bytes (prefix {keep})"
    if kind == "ones":
        if n < 8:
            return data, "too short"
        a = int(rng.integers(0, n // 4)) * 4
        b = min(n, a + 4 * int(rng.integers(1, 17)))
        return data[:a] + b"\xff" * (b - a) + data[b:], f"0xff over [{a}, {b})"
    if kind == "swap":
        if entry.fmt == "lvae":
            return _swap_lvae(rng, data)
        if entry.fmt == "qarv":
            fields, strings = _qarv_parts(data)
            i, j = rng.choice(len(strings), 2, replace=False)
            strings[i], strings[j] = strings[j], strings[i]
            return _qarv_build(fields, strings), f"strings {i}<->{j}"
        if entry.fmt == "qres":
            from lvae_jax.codec import official
            f = official.read_qres_file(data)
            lat = list(f.latent_strings)
            i, j = rng.choice(len(lat), 2, replace=False)
            lat[i], lat[j] = lat[j], lat[i]
            return official.write_qres_file(lat, f.feature_shape, f.image_size, f.pixel_strings,
                                           f.protocol), f"latent blocks {i}<->{j}"
        words = bytearray(data)
        if n >= 16:
            i, j = (int(v) * 4 for v in rng.choice(n // 4, 2, replace=False))
            words[i : i + 4], words[j : j + 4] = data[j : j + 4], data[i : i + 4]
        return bytes(words), "two words swapped"
    if kind == "header":
        if entry.fmt == "lvae":
            return _mutate_lvae_header(rng, data)
        if entry.fmt == "qarv":
            fields, strings = _qarv_parts(data)
            k = int(rng.integers(0, 6))
            if k == 2:
                fields[2] = float(rng.choice([0.0, -3.0, np.nan, np.inf, 1e-40, float(rng.uniform(1, 5000))]))
            else:
                fields[k] = int(rng.choice([0, 1, 2, 63, 64, 65, 129, 0xFFFF, int(rng.integers(0, 0x10000))]))
            return _qarv_build(fields, strings), f"field {k} = {fields[k]}"
        if entry.fmt == "qres":
            return _mutate_qres(rng, entry)
        out = bytearray(data)  # coder: corrupt the initial state
        out[int(rng.integers(0, 8))] = int(rng.integers(0, 256))
        return bytes(out), "initial state byte"
    raise ValueError(kind)


# ------------------------------------------------------------------------------------------------
# Running one case
# ------------------------------------------------------------------------------------------------


class CaseFailure(AssertionError):
    """A fuzz invariant was violated."""


def _expected(exc) -> bool:
    from lvae_jax.entropy.coder import BitstreamError
    return isinstance(exc, (BitstreamError, ValueError))


def _check_coder(entry: Entry, position, s: bytes, stats: collections.Counter) -> None:
    from lvae_jax.entropy import coder, tables as T
    if position not in entry.positions:
        return
    table, idx, sym = entry.positions[position]
    t = T.get_tables(table)
    try:
        values = coder.decode(s, idx, t)
    except Exception as e:  # noqa: BLE001 - classify below
        if not _expected(e):
            raise CaseFailure(f"coder.decode raised {type(e).__name__}: {e}") from e
        stats["coder-refused"] += 1
        values = None
    if values is not None:
        try:
            coder.check_stream(s)
        except Exception as e:  # noqa: BLE001
            raise CaseFailure("decode accepted a string that check_stream refuses") from e
        pad = coder.decoder_padding_words(len(idx), s)
        em = coder.emulate_native_decode(s, idx, t)
        if em.words_read > len(s) // 4 + pad:
            raise CaseFailure(f"C++ decoder would read {em.words_read} words, buffer has "
                              f"{len(s) // 4} + {pad} padding")
        if em.escapes_in_padding > coder.ESCAPE_BUDGET_BASE + -(-len(idx) // 64):
            raise CaseFailure(f"{em.escapes_in_padding} escapes decoded inside the padding: "
                              "beyond the budget the padding assumes")
        stats["escapes-in-padding"] += em.escapes_in_padding
        stats["max-escapes-in-padding"] = max(stats["max-escapes-in-padding"], em.escapes_in_padding)
        if em.long_escapes == 0 and not np.array_equal(em.values, values):
            raise CaseFailure("emulated decoder and C++ decoder disagree")
        stats["max-overread-words"] = max(stats["max-overread-words"], em.words_read - len(s) // 4)
        try:
            coder.decode(s, idx, t, verify=True)
            verified = True
        except Exception as e:  # noqa: BLE001
            if not _expected(e):
                raise CaseFailure(f"verified decode raised {type(e).__name__}: {e}") from e
            verified = False
        try:
            ref = coder.reference_decode(s, idx, t)
        except Exception as e:  # noqa: BLE001
            if not _expected(e):
                raise CaseFailure(f"reference_decode raised {type(e).__name__}: {e}") from e
            ref = None
        if verified and ref is None:
            raise CaseFailure("reference_decode refused a string that re-encodes exactly")
        if ref is not None and not verified:
            stats["reference-accepted-noncanonical"] += 1  # e.g. an escape with leading zero chunks
        if ref is not None and not np.array_equal(ref, values):
            raise CaseFailure("reference_decode and decode disagree on a valid string")
        if sym is not None and s == entry.strings.get(position) and not (
                verified and np.array_equal(values, sym)):
            raise CaseFailure("the original string did not decode to its symbols")
        stats["coder-verified" if verified else "coder-decoded-unverified"] += 1
        if verified and s != entry.strings.get(position):
            stats["coder-verified-modified"] += 1


def run_case(corpus: list[Entry], seed: int, index: int, decode_file=None) -> dict:
    """Run case ``index``; returns {"outcome", "entry", "mutation", "detail", "stats"}; raises
    :class:`CaseFailure` (or anything unexpected) on a violated invariant."""
    from lvae_jax.codec import container, formats, official

    rng = np.random.default_rng([seed, index])
    entry = corpus[int(rng.integers(0, len(corpus)))]
    kind = MUTATIONS[int(rng.integers(0, len(MUTATIONS)))]
    data, detail = mutate(rng, entry, kind)
    stats: collections.Counter = collections.Counter()
    result = {"entry": entry.name, "mutation": kind, "detail": detail, "stats": stats}

    def attempt(fn, *args):
        try:
            return fn(*args), None
        except Exception as e:  # noqa: BLE001 - classified
            if not _expected(e):
                raise CaseFailure(f"{getattr(fn, '__name__', fn)} raised {type(e).__name__}: {e}\n"
                                  + traceback.format_exc()) from e
            return None, e

    if entry.fmt == "coder":
        _check_coder(entry, ("raw",), data, stats)
        result["outcome"] = "coder"
        return result

    fmt, err = attempt(formats.sniff, data)
    strings = {}
    if fmt == formats.LVAE:
        f, err = attempt(container.read_container, data)
        part, perr = attempt(container.read_partial, data)
        orig = [entry.strings[k] for k in sorted(entry.strings, key=_position_order)]
        if f is not None:
            strings = {("latent", i, b): s for i, x in enumerate(f.latent_strings) for b, s in enumerate(x)}
            if f.pixel_strings:
                strings.update({("pixel", b): s for b, s in enumerate(f.pixel_strings)})
            chunks = [s for x in f.latent_strings for s in x] + list(f.pixel_strings or ())
            if chunks != orig:
                raise CaseFailure("container returned chunk data that differs from the original")
        if part is not None:
            if list(part.chunks) != orig[: len(part.chunks)]:
                raise CaseFailure("partial read returned chunks that differ from the original prefix")
            if f is not None and not part.complete:
                raise CaseFailure("full read succeeded but partial read reports missing chunks")
            stats[f"partial-{'complete' if part.complete else 'prefix'}"] += 1
    elif fmt == formats.QARV_OFFICIAL:
        f, err = attempt(official.read_qarv_file, data)
        if f is not None:
            strings = {("latent", i, 0): s for i, s in enumerate(f.body.strings)}
    elif fmt == formats.QRES_OFFICIAL:
        f, err = attempt(official.read_qres_file, data)
        if f is not None:
            strings = {("latent", i, b): s for i, x in enumerate(f.latent_strings) for b, s in enumerate(x)}
            if f.pixel_strings:
                strings.update({("pixel", b): s for b, s in enumerate(f.pixel_strings)})
    else:
        f = None
    for pos, s in strings.items():
        _check_coder(entry, pos, s, stats)
    if decode_file is not None:
        args = ((data, entry, stats, kind, detail) if getattr(decode_file, "wants_entry", False)
                else (data,))
        _, derr = attempt(decode_file, *args)
        stats["decoder-refused" if derr is not None else "decoder-ok"] += 1
    if f is None:
        result["outcome"] = "refused"
    elif data == entry.data:
        result["outcome"] = "ok"
    else:
        result["outcome"] = "accepted-modified"
        result["format"] = fmt
    return result


def _position_order(pos):
    return (0, pos[1], pos[2]) if pos[0] == "latent" else (1, pos[1], 0)


# ------------------------------------------------------------------------------------------------
# Worker / watchdog
# ------------------------------------------------------------------------------------------------


def _load_decoder(spec: str | None):
    if not spec:
        return None
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def worker(seed: int, start: int, stop: int, decoder: str | None, corpus: str | None = None) -> int:
    """Run cases [start, stop); one JSON line per event on stdout."""
    from lvae_jax import limits
    out = sys.stdout
    corpus = (_load_decoder(corpus) or build_corpus)(seed)
    decode_file = _load_decoder(decoder)
    print(json.dumps({"ready": True}), file=out, flush=True)
    for i in range(start, stop):
        print(json.dumps({"start": i}), file=out, flush=True)
        t0 = time.perf_counter()
        try:
            r = run_case(corpus, seed, i, decode_file)
            msg = {"done": i, "outcome": r["outcome"], "entry": r["entry"], "mutation": r["mutation"],
                   "stats": dict(r["stats"])}
        except Exception as e:  # noqa: BLE001 - reported as a failure
            msg = {"done": i, "outcome": "FAIL", "error": f"{type(e).__name__}: {e}"}
        msg["seconds"] = time.perf_counter() - t0
        msg["rss"] = limits.peak_rss()
        print(json.dumps(msg), file=out, flush=True)
    return 0


@dataclass
class Summary:
    cases: int = 0
    outcomes: collections.Counter = field(default_factory=collections.Counter)
    by_mutation: dict = field(default_factory=lambda: collections.defaultdict(collections.Counter))
    stats: collections.Counter = field(default_factory=collections.Counter)
    failures: list = field(default_factory=list)
    max_case_seconds: float = 0.0
    seconds: float = 0.0
    max_rss: int = 0

    def report(self) -> str:
        lines = [f"{self.cases} cases in {self.seconds:.1f} s (slowest case {self.max_case_seconds:.3f} s, "
                 f"peak worker RSS {self.max_rss / 2**30:.2f} GiB)",
                 "outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items()))]
        for m in MUTATIONS:
            if m in self.by_mutation:
                counts = sorted(self.by_mutation[m].items())
                lines.append(f"  {m:9s} " + ", ".join(f"{k} {v}" for k, v in counts))
        lines.append("coder/partial: " + ", ".join(f"{k} {v}" for k, v in sorted(self.stats.items())))
        lines.append(f"FAILURES: {len(self.failures)}")
        lines += [f"  case {f['case']}: {f['error']}" for f in self.failures[:20]]
        return "\n".join(lines)


def run_fuzz(cases: int = 10_000, seed: int = 0, time_limit: float = 10.0, decoder: str | None = None,
             start: int = 0, progress: bool = False, corpus: str | None = None,
             max_rss: int = 4 << 30) -> Summary:
    """Run cases [start, start + cases) in a worker subprocess with a per-case time limit and a
    bound on the worker's peak resident memory (a case that raises it above ``max_rss`` bytes
    fails; the worker is restarted after it)."""
    summary = Summary()
    t_start = time.perf_counter()
    i = start
    stop = start + cases
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    while i < stop:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--seed", str(seed),
               "--start", str(i), "--cases", str(stop - i)]
        if decoder:
            cmd += ["--decoder", decoder]
        if corpus:
            cmd += ["--corpus", corpus]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        current, deadline = None, time.monotonic() + 300  # corpus building may take a while
        buf = b""
        failed, restart = None, False
        while True:
            r, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not r:
                proc.kill()
                proc.wait()
                failed = (current if current is not None else i,
                          f"time limit {time_limit} s exceeded (hang)" if current is not None
                          else "worker stalled between cases")
                break
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                rc = proc.wait()
                err = proc.stderr.read().decode(errors="replace")[-2000:].strip()
                if current is not None:
                    sig = f", signal {-rc}" if rc < 0 else ""
                    failed = (current, f"worker died (exit status {rc}{sig}) {err}")
                elif i < stop:
                    failed = (i, f"worker exited early (exit status {rc}): {err}")
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                msg = json.loads(line)
                if "start" in msg:
                    current, deadline = msg["start"], time.monotonic() + time_limit
                elif "done" in msg:
                    summary.cases += 1
                    summary.max_case_seconds = max(summary.max_case_seconds, msg["seconds"])
                    summary.max_rss = max(summary.max_rss, msg.get("rss", 0))
                    if msg["outcome"] != "FAIL" and msg.get("rss", 0) > max_rss:
                        msg = dict(msg, outcome="FAIL", error=(
                            f"peak RSS {msg['rss'] / 2**30:.2f} GiB above the bound of "
                            f"{max_rss / 2**30:.2f} GiB ({msg['mutation']} of {msg['entry']})"))
                        restart = True            # a fresh worker: its high-water mark is reset
                    summary.outcomes[msg["outcome"]] += 1
                    if msg["outcome"] == "FAIL":
                        summary.failures.append({"case": msg["done"], "error": msg["error"]})
                    else:
                        summary.by_mutation[msg["mutation"]][msg["outcome"]] += 1
                        for k, v in msg["stats"].items():
                            if k.startswith("max-"):
                                summary.stats[k] = max(summary.stats[k], v)
                            else:
                                summary.stats[k] += v
                    current, i = None, msg["done"] + 1
                    deadline = time.monotonic() + time_limit
                    if progress and summary.cases % 1000 == 0:
                        print(f"  {summary.cases} cases, {len(summary.failures)} failures", flush=True)
                elif "ready" in msg:
                    deadline = time.monotonic() + time_limit
                if restart:
                    break
            if restart:
                proc.kill()
                proc.wait()
                break
        proc.stdout.close()
        proc.stderr.close()
        if failed is not None:
            case, error = failed
            summary.cases += 1
            summary.outcomes["FAIL"] += 1
            summary.failures.append({"case": case, "error": error})
            i = case + 1
    summary.seconds = time.perf_counter() - t_start
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", type=int, default=0, help="first case index")
    ap.add_argument("--time-limit", type=float, default=10.0, help="seconds per case")
    ap.add_argument("--max-rss", default="4G",
                    help="bound on the worker's peak resident memory (e.g. 4G; default 4G)")
    ap.add_argument("--decoder", help="whole-file decoder to fuzz too, as module:function")
    ap.add_argument("--corpus", help="corpus builder function(seed) -> entries, as module:function")
    ap.add_argument("--case", type=int, help="run one case in this process and print it")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.seed, args.start, args.start + args.cases, args.decoder, args.corpus)
    if args.case is not None:
        corpus = (_load_decoder(args.corpus) or build_corpus)(args.seed)
        r = run_case(corpus, args.seed, args.case, _load_decoder(args.decoder))
        r["stats"] = dict(r["stats"])
        print(json.dumps(r, indent=1))
        return 0
    from lvae_jax.limits import parse_bytes
    summary = run_fuzz(args.cases, args.seed, args.time_limit, args.decoder, args.start, progress=True,
                       corpus=args.corpus, max_rss=parse_bytes(args.max_rss))
    print(summary.report())
    return 1 if summary.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
