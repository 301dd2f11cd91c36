"""A hostile corpus, built here by code: every case must end with one ``error:`` line and exit
status 2 — no traceback, no allocation beyond a bound, no partial or overwritten file.

The command-line cases run one after another in **one** fresh interpreter (:data:`_DRIVER`: the
interpreter starts and imports JAX once, not once per case), which reports after each case its
peak resident memory so far; every case must stay under :data:`PEAK_RSS_BOUND` (the peak only
grows, so later cases are held to the worst so far) and the whole batch under a time bound.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lvae_jax.codec import container, official
from lvae_jax.codec.records import FileMeta
from parity_support import REPO

#: Peak RSS any refused input may cost a command (imports, JAX and the demo model included).
PEAK_RSS_BOUND = 3 << 30

_DRIVER = textwrap.dedent("""
    import contextlib, importlib, io, json, sys, time
    from lvae_jax import limits

    peak_rss = limits.peak_rss   # VmHWM: this process's own (not the forking pytest worker's)
    out = []
    for name, module, argv in json.load(open(sys.argv[1])):
        limits.set_memory_limit(None)              # a --max-memory of one case ends with it
        so, se = io.StringIO(), io.StringIO()
        t0 = time.monotonic()
        with contextlib.redirect_stdout(so), contextlib.redirect_stderr(se):
            try:
                code = importlib.import_module(module + ".__main__").main(argv)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except BaseException as e:
                import traceback
                traceback.print_exc()
                code = -1
        rss = peak_rss()
        out.append({"name": name, "code": code, "out": so.getvalue(), "err": se.getvalue(),
                    "rss": rss, "seconds": time.monotonic() - t0})
    json.dump(out, open(sys.argv[2], "w"))
""")


def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A valid 8×8 PNG whose IHDR is rewritten (CRC fixed) to claim width × height."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4: ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17: ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr: ihdr + 17])))
    path.write_bytes(bytes(data))
    return path


def _tiled(image_size, tile_size, parts) -> bytes:
    """A tiled file (lvae_jax.codec.tiles) with a correct header CRC, whatever it claims."""
    from lvae_jax.codec import tiles
    (h, w), (th, tw) = image_size, tile_size
    rows, cols = tiles.tile_grid(image_size, tile_size)
    n = rows * cols
    head = tiles._HEAD.pack(tiles.MAGIC, tiles.VERSION, 0, tiles._HEAD.size + 8 * n + 4, h, w, th, tw, n)
    head += b"".join(struct.pack("<II", len(p), tiles.tile_crc(k, p)) for k, p in enumerate(parts))
    head += b"".join(struct.pack("<II", 8, 0) for _ in range(n - len(parts)))
    return head + struct.pack("<I", zlib.crc32(head)) + b"".join(parts)


@pytest.fixture(scope="module")
def demo():
    from lvae_jax.assets import demo_model_dir
    from lvae_jax.checkpoint.model_dir import read_info
    from lvae_jax.models.specs import ModelConfig
    info = read_info(demo_model_dir())
    config = ModelConfig.from_dict(info["config"])
    return config, container.model_id(config.fingerprint(), info["weights_sha256"])


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, demo):
    """Build every input, run every command-line case in one interpreter: {case: result}."""
    config, mid = demo
    d = tmp_path_factory.mktemp("hostile")
    (d / "big.lvae").write_bytes(container.write_container(        # a few hundred bytes ...
        FileMeta(config.name, mid, 64.0, (16000, 16000), config.max_stride),
        [[b"\0" * 8]] * config.num_latents))
    (d / "big16k.bits").write_bytes(official.write_qarv_file(
        (16000, 16000), official.write_qarv_body(43.880043, (250, 250), [b"\0" * 8] * 4)))
    (d / "big64k.bits").write_bytes(official.write_qarv_file(
        (65535, 65535), official.write_qarv_body(43.880043, (1024, 1024), [b"\0" * 8] * 4)))
    tile = container.write_container(
        FileMeta(config.name, mid, 64.0, (64, 64), config.max_stride),
        [[b"\0" * 8]] * config.num_latents)
    (d / "big.lvat").write_bytes(_tiled((16000, 16000), (16000, 16000), [tile]))   # one huge tile
    (d / "many.lvat").write_bytes(_tiled((65535, 65535), (256, 256), [tile] * 4))   # 2^16 claimed
    big = 1 << 40                                # what the official pickle.dump would write
    (d / "big.qres").write_bytes(pickle.dumps(
        [[b"\0" * 8] for _ in range(12)] + [(1, 384, big // 64, big // 64), (big, big)], protocol=4))
    _png_claiming(d / "wide.png", 70000, 8)
    _png_claiming(d / "bomb.png", 20000, 20000)
    _png_claiming(d / "big.png", 12000, 12000)
    Image.fromarray(np.full((64, 64, 3), 100, np.uint8)).save(d / "a.png")
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(d / "small.png")
    (d / "D").mkdir()
    (d / "D" / "x.pt").write_bytes(b"not really a checkpoint")
    (d / "D" / "notes.txt").write_text("mine")
    (d / "m").mkdir()
    (d / "m" / "lvae_model.json").write_text('{"format": "lvae-jax-model", "version": 2}')
    L = "lvae_jax"
    cases = [
        ("container16k", L, ["decompress", d / "big.lvae", d / "x.png"]),
        ("qarv16k", L, ["decompress", d / "big16k.bits", d / "x.png"]),
        ("qarv64k", L, ["decompress", d / "big64k.bits", d / "x.png"]),
        ("qres2^40", L, ["decompress", d / "big.qres", d / "x.png"]),
        ("tiled16k", L, ["decompress", d / "big.lvat", d / "x.png"]),
        ("tiled-many", L, ["decompress", d / "many.lvat", d / "x.png"]),
        ("zero-bits", L, ["decompress", "/dev/zero", d / "x.png"]),
        ("zero-image", L, ["compress", "/dev/zero", d / "x.lvae", "--lmb", "64"]),
        ("wide", L, ["compress", d / "wide.png", d / "a1.lvae", "--lmb", "64"]),
        ("bomb", L, ["compress", d / "bomb.png", d / "a2.lvae", "--lmb", "64"]),
        ("12k", L, ["compress", d / "big.png", d / "a3.lvae", "--lmb", "64", "--max-memory", "1G"]),
        ("bad-max-memory", L, ["compress", d / "wide.png", d / "a4.lvae", "--lmb", "64",
                               "--max-memory", "lots"]),
        ("onto-input", L, ["compress", d / "a.png", d / "." / "a.png", "--lmb", "64", "--overwrite"]),
        ("good", L, ["compress", d / "a.png", d / "a.lvae", "--lmb", "64"]),
        ("jpeg-out", L, ["decompress", d / "a.lvae", d / "out.jpg"]),
        ("nan-temperature", L, ["decompress", d / "a.lvae", d / "t.png", "--blocks", "1",
                                "--temperature", "nan"]),
        ("wrong-original", L, ["decompress", d / "a.lvae", d / "o.png", "--original", d / "small.png"]),
        ("nan-lmb", L, ["compress", d / "a.png", d / "a.lvae", "--lmb", "nan", "--overwrite"]),
        ("no-config", L, ["compress", d / "a.png", d / "n.lvae", "--ckpt", d / "m", "--lmb", "64"]),
        ("convert-onto-input", "convert", ["--torch-ckpt", d / "D" / "x.pt", "--out", d / "D",
                                           "--overwrite"]),
    ]
    before = (d / "a.png").read_bytes()
    spec = d / "cases.json"
    spec.write_text(json.dumps([[n, m, [str(a) for a in argv]] for n, m, argv in cases]))
    proc = subprocess.run([sys.executable, "-c", _DRIVER, str(spec), str(d / "results.json")],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {r["name"]: r for r in json.loads((d / "results.json").read_text())}
    return {"dir": d, "results": results, "a.png": before}


def refused(hostile, name, *needles):
    r = hostile["results"][name]
    err = r["err"]
    print(f"{name}: exit {r['code']}, peak RSS so far {r['rss'] / 2**30:.2f} GiB: {err[:100]}")
    assert r["code"] == 2, (name, r)
    assert err.startswith("error:") and "Traceback" not in err and err.count("\n") <= 1, (name, err)
    for n in needles:
        assert n in err, (name, n, err)
    assert r["rss"] < PEAK_RSS_BOUND, f"{name}: peak RSS {r['rss'] / 2**30:.2f} GiB"


# ------------------------------------------------------------------- forged sizes, three formats
def test_forged_sizes_are_refused_before_allocating(hostile):
    assert (hostile["dir"] / "big.lvae").stat().st_size < 400      # ... claiming 16000²
    refused(hostile, "container16k", "16000×16000", "GiB", "--max-memory")
    refused(hostile, "qarv16k", "16000×16000", "--max-memory")
    refused(hostile, "qarv64k", "65535×65535", "larger than")
    refused(hostile, "qres2^40", "out of range")
    refused(hostile, "tiled16k", "16000×16000", "in tiles of", "--max-memory")
    refused(hostile, "tiled-many", "65535×65535", "out of range")
    assert not (hostile["dir"] / "x.png").exists()


def test_flip_search_bomb_is_an_error_not_an_allocation():
    """Every scale of a large block exactly at a table threshold (what a forged size with a tuned
    λ produces): the search refuses at once instead of building candidate pairs."""
    import tracemalloc
    from lvae_jax.codec.core import BitstreamError, DecodeReport, decode_latent_robust
    from lvae_jax.entropy.tables import get_tables
    t = get_tables("qres_latent")
    n = 2_000_000
    scales = np.full(n, t.scale_table[20], np.float32)
    idx = t.build_indexes(scales)
    tracemalloc.start()                 # numpy reports its buffers to tracemalloc
    t0 = time.monotonic()
    try:
        with pytest.raises(BitstreamError, match="not a cross-implementation index flip"):
            decode_latent_robust(b"\0" * 64, idx, scales, t, DecodeReport(), "latent block 0")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - t0 < 30
    # a few arrays of the block's size (8 MB each), not the ~2·10¹² candidate pairs
    assert peak < 200 << 20, f"{peak / 2**20:.0f} MiB"


# ------------------------------------------------------------------- unbounded reads, huge images
def test_endless_inputs_are_bounded(hostile):
    refused(hostile, "zero-bits", "is a device")          # refused before a byte is read
    refused(hostile, "zero-image", "is a device")
    assert not (hostile["dir"] / "x.lvae").exists()


def test_huge_and_bomb_images_are_refused_from_their_header(hostile):
    refused(hostile, "wide", "70000×8", "larger than")
    refused(hostile, "bomb", "decompression bomb")
    # within the pixel limit but not the memory budget: the estimate and the way out
    refused(hostile, "12k", "12000×12000", "GiB", "--max-memory")
    refused(hostile, "bad-max-memory", "not a size")
    assert not list(hostile["dir"].glob("a[0-9].lvae"))


# ------------------------------------------------------------------- overwrites and outputs
def test_outputs_never_replace_inputs_and_are_checked_first(hostile):
    d = hostile["dir"]
    refused(hostile, "onto-input", "is the input")
    assert (d / "a.png").read_bytes() == hostile["a.png"]
    assert hostile["results"]["good"]["code"] == 0, hostile["results"]["good"]
    refused(hostile, "jpeg-out", "PNG")
    refused(hostile, "nan-temperature", "--temperature must be in [0, 10]")
    refused(hostile, "wrong-original", "--original", "nothing written")
    refused(hostile, "nan-lmb", "finite")
    assert not (d / "o.png").exists() and not (d / "t.png").exists() and not (d / "out.jpg").exists()


def test_model_directory_without_config_is_one_line(hostile):
    refused(hostile, "no-config", "no model configuration")


#: A refused input is refused from what its header claims, before the work it would cause
#: (minutes of decoding for the forged sizes): each case ends well within this.
REFUSAL_SECONDS = 60


def test_every_refusal_comes_before_the_work(hostile):
    slow = {n: round(r["seconds"], 1) for n, r in hostile["results"].items()
            if r["code"] == 2 and r["seconds"] > REFUSAL_SECONDS}
    assert not slow, slow


def test_convert_never_deletes_what_it_did_not_write(hostile, tmp_path):
    d = hostile["dir"] / "D"
    refused(hostile, "convert-onto-input", "holds the input")
    assert (d / "x.pt").is_file() and (d / "notes.txt").read_text() == "mine"
    from lvae_jax.checkpoint.model_dir import CheckpointError, save_params
    import tiny_models
    cfg = tiny_models.config("qres2")
    with pytest.raises(CheckpointError, match="not an lvae-jax model directory .*notes.txt"):
        save_params(d, cfg, {}, overwrite=True)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(CheckpointError, match="not a directory"):
        save_params(f, cfg, {}, overwrite=True)
    assert (d / "notes.txt").read_text() == "mine" and f.read_text() == "x"


# ------------------------------------------------------------------- atomic writes
def test_atomic_file_keeps_the_old_content_on_failure(tmp_path):
    from lvae_jax.files import atomic_file, atomic_write_bytes
    p = atomic_write_bytes(tmp_path / "f.bin", b"old")
    with pytest.raises(OSError):
        with atomic_file(p) as tmp:
            tmp.write_bytes(b"half of the ne")
            raise OSError(28, "No space left on device")
    assert p.read_bytes() == b"old" and sorted(x.name for x in tmp_path.iterdir()) == ["f.bin"]


# A kill during each writer: tests/test_kill_writes.py
