"""Official QARV/QRes file layouts (read strictly, written byte for byte, never unpickled) and the
lvae-jax container (versioned, CRC-checked, partially readable)."""

from __future__ import annotations

import json
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from lvae_jax.codec import container as C, formats as L, official as F
from lvae_jax.codec.records import FileMeta
from lvae_jax.entropy.coder import BitstreamError

OFFICIAL = Path(__file__).parent / "fixtures" / "official_bitstreams.npz"
PARITY = Path(__file__).parent / "fixtures" / "parity"


@pytest.fixture(scope="module")
def official():
    with np.load(OFFICIAL) as z:
        return {k: z[k] for k in z.files}


def _strings(rng, n, lo=2, hi=40):
    return [rng.bytes(4 * int(rng.integers(lo, hi))) for _ in range(n)]


# ------------------------------------------------------------------------------------------------
# Official files written by the official code (compress_file, reference environment)
# ------------------------------------------------------------------------------------------------


def test_official_qres_files(official):
    """Files written by the official QRes compress_file (pickle protocol 4) parse strictly and
    are rewritten byte for byte."""
    meta = json.loads(str(official["meta"]))
    for name in ("qres34m", "qres34m_lossless"):
        data = official[f"{name}/file"].tobytes()
        assert len(data) == meta["models"][name]["bytes"]
        f = F.read_qres_file(data)
        assert f.protocol == 4 and f.image_size == (50, 60) and f.feature_shape[0] == 1
        assert f.latent_grid == (1, 1) and len(f.latent_strings) == 12
        assert (f.pixel_strings is not None) == name.endswith("lossless")
        assert F.qres_to_bytes(f) == data
        assert L.sniff(data) == L.QRES_OFFICIAL


def test_official_qarv_file(official):
    data = official["qarv_base/file"].tobytes()
    f = F.read_qarv_file(data)
    assert f.image_size == (50, 60) and f.body.batch == 1 and f.body.latent_grid == (1, 1)
    assert f.body.lmb == 2048.0  # the official default λ of qarv_base
    assert F.write_qarv_file(f.image_size, f.body) == data
    assert F.write_qarv_file(f.image_size, data[4:]) == data
    assert L.sniff(data) == L.QARV_OFFICIAL


def test_recorded_official_bodies():
    """The parity recordings' official bitstreams: QARV bodies parse and re-pack identically;
    QRes latent strings + feature shape make a valid file."""
    qarv = sorted(PARITY.glob("qarv_base_*.npz"))
    qres = sorted(PARITY.glob("qres*.npz"))
    assert qarv and qres
    for p in qarv:
        with np.load(p) as z:
            body = z["compress/bytes"].tobytes()
        b = F.read_qarv_body(body)
        assert b.lmb == float(p.stem.rsplit("lmb", 1)[1])
        assert F.write_qarv_body(b.lmb, b.latent_grid, b.strings) == body
    for p in qres:
        with np.load(p) as z:
            if "compress/feature_shape" not in z.files:
                continue
            lat = [[z[k].tobytes()] for k in sorted(k for k in z.files if k.startswith("compress/latent"))]
            shape = tuple(int(v) for v in z["compress/feature_shape"])
            pix = [z["compress/pixels"].tobytes()] if "compress/pixels" in z.files else None
            size = (shape[2] * 64, shape[3] * 64)
        data = F.write_qres_file(lat, shape, size, pix)
        f = F.read_qres_file(data)
        assert [list(x) for x in f.latent_strings] == lat and f.feature_shape == shape


# ------------------------------------------------------------------------------------------------
# QARV
# ------------------------------------------------------------------------------------------------


def test_qarv_round_trip_and_layout():
    rng = np.random.default_rng(0)
    strings = _strings(rng, 12)
    body = F.write_qarv_body(100.5, (2, 3), strings)
    # 'f' λ, '3H' (1, 2, 3), 'B' 12, '12I' lengths, strings — little-endian, no padding
    assert body[:4] == struct.pack("<f", 100.5) and body[4:10] == struct.pack("<3H", 1, 2, 3)
    assert body[10] == 12 and body[11:59] == struct.pack("<12I", *map(len, strings))
    assert body[59:] == b"".join(strings)
    f = F.read_qarv_file(F.write_qarv_file((100, 190), body))
    assert f.image_size == (100, 190) and list(f.body.strings) == strings
    assert F.unpack_strings(F.pack_strings(strings)) == strings


@pytest.mark.parametrize("mutate,match", [
    (lambda b: b[:10], "truncated"),
    (lambda b: b[:-1], "lengths add up"),
    (lambda b: b + b"\0", "lengths add up"),
    (lambda b: struct.pack("<f", float("nan")) + b[4:], "finite positive"),
    (lambda b: struct.pack("<f", -1.0) + b[4:], "finite positive"),
    (lambda b: b[:4] + struct.pack("<3H", 2, 2, 3) + b[10:], "exactly one image"),
    (lambda b: b[:4] + struct.pack("<3H", 1, 0, 3) + b[10:], "empty latent grid"),
    (lambda b: b[:10] + b"\0" + b[11:], "count is 0"),
])
def test_qarv_body_errors(mutate, match):
    body = F.write_qarv_body(64, (2, 3), _strings(np.random.default_rng(1), 5))
    with pytest.raises(BitstreamError, match=match):
        F.read_qarv_body(mutate(body))


def test_qarv_file_checks_image_size_against_grid():
    body = F.write_qarv_body(64, (2, 3), _strings(np.random.default_rng(1), 3))
    assert F.read_qarv_file(F.write_qarv_file((65, 129), body)).image_size == (65, 129)
    with pytest.raises(BitstreamError, match="does not match latent grid"):
        F.read_qarv_file(F.write_qarv_file((64, 129), body))
    assert F.read_qarv_file(F.write_qarv_file((64, 129), body), stride=None).image_size == (64, 129)
    with pytest.raises(BitstreamError, match="rANS string"):
        F.read_qarv_body(struct.pack("<f3H", 64, 1, 1, 1) + F.pack_strings([b"\0" * 6]))


# ------------------------------------------------------------------------------------------------
# QRes
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [3, 4, 5])
@pytest.mark.parametrize("lossless", [False, True])
def test_qres_round_trip(protocol, lossless):
    """What pickle.dump writes for the official structure (protocols 3, 4 = Python 3.8–3.13 default,
    5 = 3.14 default), including strings larger than a pickle frame, is read back exactly."""
    rng = np.random.default_rng(protocol)
    lat = [_strings(rng, 2) for _ in range(4)] + [[rng.bytes(70_000), rng.bytes(8)]]
    pix = _strings(rng, 2) if lossless else None
    obj = [list(x) for x in lat] + [(2, 384, 2, 3)] + ([list(pix)] if pix else []) + [(100, 150)]
    data = pickle.dumps(obj, protocol=protocol)
    f = F.read_qres_file(data)
    assert [list(x) for x in f.latent_strings] == lat and f.feature_shape == (2, 384, 2, 3)
    assert f.image_size == (100, 150) and f.protocol == protocol and f.batch == 2
    assert (list(f.pixel_strings) if pix else None) == pix
    assert F.write_qres_file(lat, np.array([2, 384, 2, 3]), (np.int64(100), 150), pix, protocol) == data


@pytest.mark.parametrize("obj,match", [
    ([[b"\0" * 8], (1, 8, 1, 1)], "at least 3 items"),
    ([[b"\0" * 8], [b"\0" * 8], (1, 8, 1, 1)], "image size"),
    ([[b"\0" * 8], (1, 8, 1), (64, 64)], "feature shape"),
    ([[b"\0" * 8], (1, 8, 1, 1), (64, 64.0)], "BINFLOAT is not allowed"),
    ([[b"\0" * 8], (1, 8, 1, 1), (64, 64, 1)], "image size"),
    ([[b"\0" * 8, b"\0" * 8], (1, 8, 1, 1), (64, 64)], "2 strings for a batch of 1"),
    ([["x" * 8], (1, 8, 1, 1), (64, 64)], None),  # str is refused at the opcode level
    ([[b"\0" * 8], (1, 8, 1, 1), [b"\0" * 8, b"\0" * 8], (64, 64)], "2 pixel strings"),
    ([(1, 8, 1, 1), (64, 64)], "at least 3 items"),
    ([[[b"\0" * 8]], (1, 8, 1, 1), (64, 64)], "latent block 0"),
    ([[b"\0" * 6], (1, 8, 1, 1), (64, 64)], "rANS string"),
    ([[], (1, 8, 1, 1), (64, 64)], "non-empty list"),
    ([[b"\0" * 8], (0, 8, 1, 1), (64, 64)], "empty dimension"),
    ([[b"\0" * 8], (1, 8, 1, 1), (0, 64)], "empty"),
    ([[b"\0" * 8], (1, 8, 1, 1), (65, 64)], "does not match feature grid"),
    ({"a": 1}, None),
    ([[b"\0" * 8], (1, 8, 1, 1), (True, 64)], None),
])
def test_qres_structure_is_enforced(obj, match):
    with pytest.raises(BitstreamError, match=match):
        F.read_qres_file(pickle.dumps(obj, protocol=4))


class _Exploit:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.path}",))


def test_malicious_pickles_are_refused_without_executing(tmp_path):
    """Pickles that would run code, build objects, or exhaust memory are refused by the opcode
    parser; nothing is executed (the exploit would create a file)."""
    marker = tmp_path / "pwned"
    lat = [[b"\0" * 8]]
    attacks = {
        "reduce in the structure": pickle.dumps(lat + [(1, 8, 1, 1), _Exploit(marker), (64, 64)], protocol=4),
        "reduce at top": pickle.dumps(_Exploit(marker), protocol=4),
        "reduce protocol 3": pickle.dumps([_Exploit(marker)], protocol=3),
        "GLOBAL+REDUCE": b"\x80\x04cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.",
        "STACK_GLOBAL": (b"\x80\x04\x8c\x02os\x94\x8c\x06system\x94\x93\x94\x8c\x05touch\x94\x85\x94R\x94."),
        "BUILD": b"\x80\x04]\x94(]\x94C\x08aaaaaaaa\x94a}b.",
        "INST": b"\x80\x04(cos\nsystem\nS'x'\ni.",
        "OBJ": b"\x80\x04(cos\nsystem\no.",
        "NEWOBJ": b"\x80\x04cbuiltins\nobject\n)\x81.",
        "PERSID": b"\x80\x04P0\n.",
        "EXT1": b"\x80\x04\x82\x01.",
        "unicode": pickle.dumps(["text"], protocol=4),
        "float": pickle.dumps([1.5], protocol=4),
        "dict": pickle.dumps([{}], protocol=4),
        "set": pickle.dumps([set()], protocol=4),
        "huge BINBYTES8": b"\x80\x04\x8e" + (1 << 62).to_bytes(8, "little") + b"x",
        "huge BINBYTES": b"\x80\x04B\xff\xff\xff\x7f" + b"x" * 10,
        "huge frame": b"\x80\x04\x95" + (1 << 60).to_bytes(8, "little") + b"].",
        "huge LONG1": b"\x80\x04\x8a\xff" + b"\x01" * 255 + b".",
        "recursive list": b"\x80\x04]\x94h\x00a.",
        "deep nesting": b"\x80\x04" + b"]" * 100_000 + b"a" * 99_999 + b".",
        "APPEND to tuple": b"\x80\x04)K\x01a.",
        "MARK never closed": b"\x80\x04(K\x01.",
        "empty stack STOP": b"\x80\x04.",
        "PROTO twice": b"\x80\x04\x80\x04].",
        "protocol 2": pickle.dumps(lat + [(1, 8, 1, 1), (64, 64)], protocol=2),
        "protocol 0": pickle.dumps(lat + [(1, 8, 1, 1), (64, 64)], protocol=0),
        "not a pickle": b"\x00\x01\x02",
        "empty": b"",
    }
    for what, data in attacks.items():
        with pytest.raises(BitstreamError) as e:
            F.read_qres_file(data)
        assert "QRes file" in str(e.value), what
    assert not marker.exists()


def test_every_truncation_and_extension_of_an_official_file_is_refused(official):
    data = official["qres34m/file"].tobytes()
    for cut in range(len(data)):
        with pytest.raises(BitstreamError):
            F.read_qres_file(data[:cut])
    for tail in (b".", b"\0", data):
        with pytest.raises(BitstreamError, match="after STOP"):
            F.read_qres_file(data + tail)


# ------------------------------------------------------------------------------------------------
# lvae-jax container
# ------------------------------------------------------------------------------------------------

MID = C.model_id("config-fingerprint", b"weights-digest")


def _container(batch=1, lossless=False, lmb=256.0, n_latents=4, seed=0):
    rng = np.random.default_rng(seed)
    lat = [_strings(rng, batch) for _ in range(n_latents)]
    pix = _strings(rng, batch) if lossless else None
    data = C.write_container(FileMeta("qarv_base", MID, lmb, (100, 130), 64), lat, pix)
    return data, lat, pix


def test_model_id():
    assert len(MID) == 16 and MID == C.model_id("config-fingerprint", "weights-digest")
    assert MID != C.model_id("config-fingerprint", b"weights-digest2")
    assert C.model_id("ab", "c") != C.model_id("a", "bc")


@pytest.mark.parametrize("batch,lossless,lmb", [(1, False, 256.0), (3, True, None), (2, False, 0.5)])
def test_container_round_trip(batch, lossless, lmb):
    data, lat, pix = _container(batch, lossless, lmb)
    f = C.read_container(data)
    h = f.header
    m = h.meta
    assert (m.model_name, m.model_id, m.lmb, m.image_size, h.batch, m.stride) == \
        ("qarv_base", MID, lmb, (100, 130), batch, 64)
    assert h.latent_grid == (2, 3) and h.num_latents == 4 and h.lossless == lossless
    assert [list(x) for x in f.latent_strings] == lat
    assert (list(f.pixel_strings) if lossless else None) == pix
    assert h.total_size == len(data) and h.num_chunks == batch * (4 + lossless)
    assert L.sniff(data) == L.LVAE
    p = C.read_partial(data)
    assert p.complete and p.missing == 0 and p.stop_reason is None and p.complete_latents == 4


def test_container_layout_matches_docs():
    """Byte offsets as documented in docs/bitstream.md."""
    data, lat, _ = _container(batch=1, n_latents=2)
    assert data[:4] == b"LVAE"
    assert struct.unpack_from("<HHI", data, 4) == (1, C.FLAG_LAMBDA, 29 + 9 + 22 + 16 + 4)
    assert data[12:28] == MID and data[28] == 9 and data[29:38] == b"qarv_base"
    lmb, h, w, b, stride, gh, gw, nl = struct.unpack_from("<fIIHHHHH", data, 38)
    assert (lmb, h, w, b, stride, gh, gw, nl) == (256.0, 100, 130, 1, 64, 2, 3, 2)
    n0, crc0 = struct.unpack_from("<II", data, 60)
    assert n0 == len(lat[0][0]) and crc0 == zlib.crc32(lat[0][0], zlib.crc32(b"\0\0\0\0"))
    (hcrc,) = struct.unpack_from("<I", data, 76)
    assert hcrc == zlib.crc32(data[:76])
    assert data[80:] == lat[0][0] + lat[1][0]


def test_every_truncation_is_refused_or_read_partially():
    data, lat, pix = _container(batch=2, lossless=True)
    chunks = [s for x in lat for s in x] + pix
    header = C.read_header(data)
    for cut in range(len(data)):
        with pytest.raises(BitstreamError, match="truncated|bad magic"):
            C.read_container(data[:cut])
        if cut < header.header_size:
            with pytest.raises(BitstreamError):
                C.read_partial(data[:cut])
            continue
        p = C.read_partial(data[:cut])
        k = len(p.chunks)
        assert list(p.chunks) == chunks[:k] and p.missing == len(chunks) - k
        assert header.header_size + sum(map(len, chunks[:k])) <= cut
        assert p.complete_latents == min(k // 2, 4)
        assert [list(x) for x in p.latent_strings] == lat[: p.complete_latents]
        if k < len(chunks):
            assert "truncated" in p.stop_reason


def test_corruption_is_detected_everywhere():
    """A flipped bit anywhere is refused; in chunk k the error names chunk k and a partial read
    returns the k chunks before it."""
    data, lat, _ = _container(batch=1, n_latents=5)
    h = C.read_header(data)
    offsets = np.cumsum((h.header_size,) + h.chunk_lengths)
    for pos in range(len(data)):
        bad = bytearray(data)
        bad[pos] ^= 0x10
        with pytest.raises(BitstreamError):
            C.read_container(bytes(bad))
        if pos >= h.header_size:
            k = int(np.searchsorted(offsets, pos, side="right")) - 1
            with pytest.raises(BitstreamError, match=f"chunk {k} CRC mismatch"):
                C.read_container(bytes(bad))
            p = C.read_partial(bytes(bad))
            assert len(p.chunks) == k and p.missing == 5 - k and "CRC" in p.stop_reason


def _recrc(data: bytes, edit) -> bytes:
    (size,) = struct.unpack_from("<I", data, 8)
    head = bytearray(data[: size - 4])
    edit(head)
    return bytes(head) + struct.pack("<I", zlib.crc32(bytes(head))) + data[size:]


@pytest.mark.parametrize("edit,match", [
    (lambda h: struct.pack_into("<H", h, 4, 3), "version 3 is not supported"),
    (lambda h: struct.pack_into("<H", h, 6, 8), "unknown flags"),   # hints are version 2 only
    (lambda h: struct.pack_into("<H", h, 6, 0x80 | C.FLAG_LAMBDA), "unknown flags"),
    (lambda h: struct.pack_into("<H", h, 6, 0), "λ is set but"),
    (lambda h: struct.pack_into("<f", h, 38, float("nan")), "finite positive"),
    (lambda h: struct.pack_into("<f", h, 38, -2.0), "finite positive"),
    (lambda h: struct.pack_into("<I", h, 42, 0), "empty"),
    (lambda h: struct.pack_into("<I", h, 42, 300), "latent grid 2×3 does not match image 300×130"),
    (lambda h: struct.pack_into("<H", h, 52, 32), "does not match image"),
    (lambda h: struct.pack_into("<H", h, 50, 2), "does not match its"),
    (lambda h: struct.pack_into("<H", h, 58, 3), "does not match its"),
    (lambda h: struct.pack_into("<H", h, 58, 0), "must be positive"),
    (lambda h: struct.pack_into("<I", h, 60, 13), "not a rANS string length"),
    (lambda h: struct.pack_into("<I", h, 60, 1 << 31), "truncated"),
    (lambda h: struct.pack_into("<B", h, 29, 0x20), "invalid model name"),
    (lambda h: struct.pack_into("<B", h, 28, 0), "model name length"),
])
def test_header_fields_are_validated(edit, match):
    """Wrong header fields are refused even when the header CRC is recomputed to match."""
    data, _, _ = _container(batch=1, n_latents=4)
    with pytest.raises(BitstreamError, match=match):
        C.read_container(_recrc(data, edit))


def test_reordered_chunks_are_detected_even_with_a_recomputed_header():
    data, lat, _ = _container(batch=1, n_latents=3)
    h = C.read_header(data)
    a, b = lat[0][0], lat[1][0]
    swapped_body = b + a + lat[2][0]

    def swap_entries(head):
        e0, e1 = bytes(head[60:68]), bytes(head[68:76])
        head[60:68], head[68:76] = e1, e0

    with pytest.raises(BitstreamError, match="chunk 0 CRC mismatch"):
        C.read_container(_recrc(data[: h.header_size], swap_entries) + swapped_body)


def test_container_refuses_other_damage():
    data, _, _ = _container()
    for bad, match in ((data + b"\0", "after the last chunk|extended"), (b"LVAX" + data[4:], "bad magic"),
                       (data[:20], "truncated"), (b"", "bad magic")):
        with pytest.raises(BitstreamError, match=match):
            C.read_container(bad)
    with pytest.raises(BitstreamError, match="after the last chunk"):
        C.read_partial(data + b"\0")
    with pytest.raises(BitstreamError, match="expected bytes"):
        C.read_container(1234)


@pytest.mark.parametrize("kwargs,match", [
    (dict(model_name="bad name"), "model name"),
    (dict(model_name="x" * 65), "model name"),
    (dict(model_id=b"short"), "16 bytes"),
    (dict(lmb=float("inf")), "λ"),
    (dict(lmb=0.0), "λ"),
    (dict(image_size=(0, 5)), "image size"),
    (dict(latent_strings=[[b"\0" * 8], [b"\0" * 8, b"\0" * 8]]), "one string per image"),
    (dict(latent_strings=[[b"\0" * 9]]), "rANS string"),
    (dict(latent_strings=[]), "latent blocks"),
    (dict(pixel_strings=[b"\0" * 8] * 2), "pixel strings"),
])
def test_writer_validates(kwargs, match):
    args = dict(model_name="qres34m", model_id=MID, lmb=None, image_size=(64, 64), stride=64,
                latent_strings=[[b"\0" * 8]], pixel_strings=None)
    args.update(kwargs)
    meta = FileMeta(*(args[k] for k in ("model_name", "model_id", "lmb", "image_size", "stride")))
    with pytest.raises(ValueError, match=match):
        C.write_container(meta, args["latent_strings"], args["pixel_strings"])


def test_sniff_tells_formats_apart():
    rng = np.random.default_rng(2)
    strings = _strings(rng, 3)
    body = F.write_qarv_body(64, (18, 3), strings)
    # A QARV file of height 1152 starts with 0x80 0x04 like a protocol-4 pickle, and one of
    # 22092×17729 pixels starts with b"LVAE": the full parse still tells them apart.
    assert F.write_qarv_file((1152, 150), body)[:2] == b"\x80\x04"
    assert L.sniff(F.write_qarv_file((1152, 150), body)) == L.QARV_OFFICIAL
    huge = F.write_qarv_body(64, (346, 278), strings)
    looks_like_magic = F.write_qarv_file((0x564C, 0x4541), huge)
    assert looks_like_magic[:4] == b"LVAE" and L.sniff(looks_like_magic) == L.QARV_OFFICIAL
    qres = F.write_qres_file([strings[:1]], (1, 8, 1, 1), (64, 64))
    assert L.sniff(qres) == L.QRES_OFFICIAL
    data, _, _ = _container()
    assert L.sniff(data) == L.LVAE and L.sniff(data[: C.read_header(data).header_size]) == L.LVAE
    for junk in (b"", b"\x80\x04junk", b"LVAE" + bytes(100), rng.bytes(300)):
        with pytest.raises(BitstreamError, match="not a recognised bitstream"):
            L.sniff(junk)
