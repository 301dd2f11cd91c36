"""Tiled files: independent tiles that decode exactly like their own files, one program for every
tile, the tile choice under a memory budget, damaged and forged tiled files, the command line."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

from lvae_jax import image as imageio
from lvae_jax.codec import container, formats, tiles
from lvae_jax.entropy.coder import BitstreamError
from lvae_jax.limits import ResourceLimitError, activation_bytes, set_memory_limit
import tiny_models as T
from test_codec import IMAGES


@pytest.fixture(scope="module")
def codecs():
    """The tiny QARV and lossless codecs of two latent blocks (tests/tiny_models.py; the programs
    of test_codec.py)."""
    return {k: T.codec(k + "2") for k in ("qarv", "lossless")}


def _image(h=150, w=200):
    """A photograph-like (h, w) crop of two sample images side by side."""
    a = imageio.load_rgb8(IMAGES / "astronaut256.png")[0]
    b = imageio.load_rgb8(IMAGES / "coffee256.png")[0]
    return np.concatenate([a, b], 1)[:h, :w]


def test_each_tile_is_the_file_of_its_padded_tile(codecs):
    """Tile k of a tiled file is byte for byte the file ``compress`` writes for the tile's pixels
    padded by edge replication to the tile size; decoding the tiled file pastes those tiles."""
    c, im = codecs["qarv"], _image()
    data = c.compress(im, 300.0, tile=64)
    hdr, parts = tiles.read_tiled(data)
    assert hdr.image_size == (150, 200) and hdr.tile_size == (64, 64) and hdr.grid == (3, 4)
    want = np.zeros(im.shape, np.float32)
    for k, part in enumerate(parts):
        t = tiles.padded_tile(im, hdr.tile_size, k)
        assert hdr.region(k) == tiles.tile_region(im.shape[:2], hdr.tile_size, k)
        assert t.shape == (64, 64, 3)
        assert part == c.compress(t, 300.0)
        rs, cs = hdr.region(k)
        want[rs, cs] = c.decompress(part)[: rs.stop - rs.start, : cs.stop - cs.start]
    res = c.decompress_details(data)
    assert res.fmt == "lvae-tiled" and res.lmb == pytest.approx(300.0)
    assert np.array_equal(res.image, want)
    assert formats.sniff(data) == "lvae-tiled"


def test_lossless_tiles_are_exact(codecs):
    c, im = codecs["lossless"], _image(100, 130)
    data = c.compress(im, tile=64)
    assert tiles.is_tiled(data)
    assert np.array_equal(imageio.to_uint8(c.decompress(data)), im)


def test_rectangular_tiles_and_no_tiling_when_one_tile_is_the_image(codecs):
    c = codecs["qarv"]
    assert c.resolve_tile((60, 300), 128) == (64, 128)    # no taller than the padded image
    assert c.resolve_tile((100, 100), 128) is None        # one tile: a plain file
    assert not tiles.is_tiled(c.compress(_image(100, 100), 300.0, tile=128))
    with pytest.raises(ValueError, match="lvae format"):
        c.compress(_image(), 300.0, fmt="official", tile=64)


def test_auto_tiles_only_above_the_memory_budget(codecs):
    cfg = codecs["qarv"].config
    size = (6000, 8000)
    whole = activation_bytes(cfg, *size)
    assert tiles.choose_tile(cfg, size, limit=whole, max_side=8192) is None
    assert tiles.choose_tile(cfg, size, limit=0, max_side=8192) is None      # 0: unchecked
    assert tiles.choose_tile(cfg, (3024, 4032), limit=0) is None             # a 12-Mpx photo
    assert tiles.choose_tile(cfg, size, limit=0) == (3008, 4032)             # 48 Mpx: 2×2
    limit = size[0] * size[1] * 15 + whole // 10       # the image's buffers + a tenth
    t = tiles.choose_tile(cfg, size, limit=limit)
    assert t is not None and t[0] % 64 == 0 and t[1] % 64 == 0
    assert tiles.tiled_bytes(cfg, size, t) <= limit
    rows, cols = tiles.tile_grid(size, t)
    # equalised: the padding of the last row and column is less than one stride per tile
    assert rows * t[0] - size[0] < 64 * rows and cols * t[1] - size[1] < 64 * cols
    # as few tiles as any square tiles that fit
    for side in range(max(t) + 64, 8064, 64):
        bigger = tiles.tile_size_for(size, side, 64)
        if tiles.tiled_bytes(cfg, size, bigger) <= limit:
            assert tiles.num_tiles(size, bigger) >= tiles.num_tiles(size, t)
    with pytest.raises(ResourceLimitError, match="even 64-pixel tiles"):
        tiles.choose_tile(cfg, size, limit=size[0] * size[1] * 3)


def test_auto_tiling_through_compress(codecs, monkeypatch):
    c, im = codecs["qarv"], _image()
    # an explicit limit bounds the process, less what it holds: here nothing, so that the limit
    # is exactly what the image may add (the accounting itself: test_max_memory_bounds_...)
    monkeypatch.setattr("lvae_jax.limits.current_rss", lambda: 0)
    try:
        set_memory_limit(activation_bytes(c.config, 150, 200) - 1)
        data = c.compress(im, 300.0, tile="auto")
    finally:
        set_memory_limit(None)
    assert tiles.is_tiled(data)
    assert not tiles.is_tiled(c.compress(im, 300.0, tile="auto"))


def _resign(data: bytes, **fields) -> bytes:
    """The tiled file with header fields replaced (and its header CRC recomputed)."""
    names = ("magic", "version", "flags", "header_size", "h", "w", "th", "tw", "n")
    vals = dict(zip(names, tiles._HEAD.unpack_from(data, 0)))
    head = bytearray(data[: vals["header_size"] - 4])
    vals.update(fields)
    head[: tiles._HEAD.size] = tiles._HEAD.pack(*(vals[n] for n in names))
    return bytes(head) + struct.pack("<I", zlib.crc32(bytes(head))) + data[len(head) + 4:]


def test_damaged_and_forged_tiled_files(codecs):
    c, im = codecs["qarv"], _image()
    data = c.compress(im, 300.0, tile=64)
    hdr = tiles.read_tiled_header(data)
    for pos in (5, 20, hdr.header_size + 3, len(data) - 2):   # header, table, tile 0, last tile
        bad = bytearray(data)
        bad[pos] ^= 0x10
        with pytest.raises(BitstreamError):
            c.decompress_details(bytes(bad))
    with pytest.raises(BitstreamError, match="after the last tile"):
        c.decompress_details(data + b"\0" * 4)
    # forged sizes, re-signed: refused from the header, before anything of that size exists
    for fields, msg in (({"h": 70000}, "out of range"), ({"th": 8}, "tile size"),
                        ({"h": 300}, "needs"), ({"version": 9}, "version"),
                        ({"n": 1}, "needs 12"), ({"header_size": 50}, "header size"),
                        (None, "in tiles of")):
        # None: a consistent forgery — one 16000² tile in a 16000² image, table and CRCs right
        forged = (_resign(data, **fields) if fields else
                  _unchecked_tiled((16000, 16000), (16000, 16000), tiles.read_tiled(data)[1][:1]))
        try:
            set_memory_limit("1G")
            with pytest.raises((BitstreamError, ResourceLimitError), match=msg):
                c.decompress_details(forged)
        finally:
            set_memory_limit(None)
    # a tile whose container claims another size than the tile
    other = c.compress(_image(128, 128), 300.0)
    swapped = [other] + tiles.read_tiled(data)[1][1:]
    with pytest.raises(BitstreamError, match="not a 64x64 tile"):
        c.decompress_details(_unchecked_tiled((150, 200), (64, 64), swapped))


def _unchecked_tiled(image_size, tile_size, parts) -> bytes:
    """A tiled file assembled without :func:`tiles.write_tiled`'s read-back."""
    (h, w), (th, tw) = image_size, tile_size
    size = tiles._HEAD.size + tiles._ENTRY.size * len(parts) + 4
    head = tiles._HEAD.pack(tiles.MAGIC, tiles.VERSION, 0, size, h, w, th, tw, len(parts)) + b"".join(
        tiles._ENTRY.pack(len(p), tiles.tile_crc(k, p)) for k, p in enumerate(parts))
    return head + struct.pack("<I", zlib.crc32(head)) + b"".join(parts)


def test_truncated_tiled_file_decodes_what_it_holds_with_partial(codecs):
    c, im = codecs["qarv"], _image()
    data = c.compress(im, 300.0, tile=64)
    hdr = tiles.read_tiled_header(data)
    cut = hdr.header_size + sum(hdr.tile_lengths[:5]) + 40        # inside tile 5
    with pytest.raises(BitstreamError, match="truncated"):
        c.decompress_details(data[:cut])
    full = c.decompress(data)
    part = c.decompress_details(data[:cut], allow_partial=True)
    for k in range(5):                                            # complete tiles: exact
        rs, cs = hdr.region(k)
        assert np.array_equal(part.image[rs, cs], full[rs, cs])
    assert any("tile 5: incomplete" in n for n in part.notes)
    assert any("tile 6: missing; decoded from the prior alone" in n for n in part.notes)
    assert part.blocks_decoded == 0 and np.isfinite(part.image).all()


def test_cli_tiles(cli, codecs, tmp_path):
    from lvae_jax.checkpoint.model_dir import save_model
    from PIL import Image
    save_model(codecs["qarv"].model, tmp_path / "m")
    src = tmp_path / "a.png"
    Image.fromarray(_image()).save(src)
    r = cli("compress", src, tmp_path / "a.lvae", "--ckpt", tmp_path / "m", "--lmb", "300",
            "--tile", "64")
    assert r.returncode == 0, r.stderr
    assert "3×4 independent tiles of 64x64" in r.stdout
    r = cli("decompress", tmp_path / "a.lvae", tmp_path / "a_out.png", "--ckpt", tmp_path / "m",
            "--original", src)
    assert r.returncode == 0, r.stderr
    assert "lvae-tiled" in r.stdout and "PSNR" in r.stdout
    want = codecs["qarv"].decompress((tmp_path / "a.lvae").read_bytes())
    assert np.array_equal(imageio.load_rgb8(tmp_path / "a_out.png")[0], imageio.to_uint8(want))
    r = cli("compress", src, tmp_path / "b.bits", "--ckpt", tmp_path / "m", "--lmb", "300",
            "--tile", "64", "--format", "official")
    assert r.returncode == 2 and "lvae format" in r.stderr
    r = cli("compress", src, tmp_path / "c.lvae", "--ckpt", tmp_path / "m", "--lmb", "300",
            "--tile", "8")
    assert r.returncode == 2 and "at least 64" in r.stderr


@pytest.fixture
def xla_as_users_run(monkeypatch):
    """Subprocesses compiled at XLA's default optimisation, as users run them (not the session's
    level 0, tests/conftest.py): these tests run seconds of computation on large images, which
    unoptimised code would double."""
    monkeypatch.setenv("XLA_FLAGS", os.environ["LVAE_TESTS_CALLER_XLA_FLAGS"])


def _peak_rss_of(argv) -> int:
    """Peak RSS (VmHWM) of ``python -m lvae_jax ARGV`` in a fresh process
    (``benchmarks/large_image.py``'s runner)."""
    import importlib.util
    from parity_support import REPO
    spec = importlib.util.spec_from_file_location("large_image", REPO / "benchmarks" / "large_image.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    _, rss, out, code = mod.run([str(a) for a in argv])
    assert code == 0 and rss > 0, out
    return rss


@pytest.mark.slow
def test_tiles_bound_the_memory_of_a_large_image(tmp_path, xla_as_users_run):
    """The demo model on a 2048×1536 photo: coded in 256-pixel tiles, compress peaks well below
    the same command on the whole image (whose activations are most of its memory), decompress
    (whose fused decoder holds less) not above it. (Larger images: benchmarks/large_image.py.)"""
    from PIL import Image
    big = np.asarray(Image.fromarray(_image(256, 256)).resize((2048, 1536), Image.Resampling.BICUBIC))
    src = tmp_path / "big.png"
    Image.fromarray(big).save(src)
    peaks = {}
    for tile in ("none", "256"):
        out = tmp_path / f"{tile}.lvae"
        c = _peak_rss_of(["compress", src, out, "--lmb", "64", "--tile", tile])
        d = _peak_rss_of(["decompress", out, tmp_path / f"{tile}.png"])
        peaks[tile] = (c, d)
    whole, tiled = peaks["none"], peaks["256"]
    print({k: [f"{v / 2**30:.2f} GiB" for v in p] for k, p in peaks.items()})
    # tiled: the process's fixed cost plus the image; whole: plus every activation of a 3-Mpx pass
    assert tiled[0] < whole[0] - (300 << 20), peaks
    assert tiled[1] <= whole[1] * 1.05, peaks


@pytest.mark.slow
def test_max_memory_bounds_the_peak_of_a_large_tiled_decode(tmp_path, xla_as_users_run):
    """A 67-Mpx tiled file (256 tiles of 512², the tiny QARV) decodes under --max-memory 1600M
    with the process's peak (VmHWM) below the limit — the image is assembled in uint8 and the
    limit counts what the process already holds; with too little memory for the whole image's
    buffers it is refused before the first tile."""
    from lvae_jax.checkpoint.model_dir import save_model
    from lvae_jax.codec import Codec
    model = T.model("qarv2")
    save_model(model, tmp_path / "m")
    tile = Codec(model).compress(np.random.default_rng(0).integers(0, 256, (512, 512, 3),
                                                                    dtype=np.uint8), 300.0)
    n = 16
    (tmp_path / "big.lvae").write_bytes(tiles.write_tiled((512 * n, 512 * n), (512, 512),
                                                          [tile] * (n * n)))
    limit = 1600 << 20
    rss = _peak_rss_of(["decompress", tmp_path / "big.lvae", tmp_path / "big.png",
                        "--ckpt", tmp_path / "m", "--max-memory", str(limit)])
    assert 0 < rss <= limit, f"peak {rss / 2**20:.0f} MiB above --max-memory {limit >> 20} MiB"
    assert imageio.image_size(tmp_path / "big.png") == (512 * n, 512 * n)
    r = subprocess.run([sys.executable, "-m", "lvae_jax", "decompress", tmp_path / "big.lvae",
                        tmp_path / "small.png", "--ckpt", tmp_path / "m", "--max-memory", "900M"],
                       capture_output=True, text=True, timeout=600)     # a fresh process's holdings
    assert r.returncode == 2 and "this process already holds" in r.stderr, r.stderr
    assert not (tmp_path / "small.png").exists()
