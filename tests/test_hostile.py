"""A hostile corpus, built here by code: every case must end with one ``error:`` line and exit
status 2 — no traceback, no allocation beyond a bound, no partial or overwritten file.

Each command runs in a fresh interpreter (:func:`run_cli`) that reports its own peak resident
memory, which must stay under :data:`PEAK_RSS_BOUND`; each is bounded in time by ``timeout``.
"""

from __future__ import annotations

import io
import os
import pickle
import signal
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

from lvae_jax.codec import container, formats
from parity_support import REPO

#: Peak RSS any refused input may cost a command (imports, JAX and the demo model included).
PEAK_RSS_BOUND = 3 << 30

_WRAPPER = textwrap.dedent("""
    import resource, runpy, sys
    mod, sys.argv = sys.argv[1], [sys.argv[1]] + sys.argv[2:]
    code = 0
    try:
        runpy.run_module(mod, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    print(f"@@maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}", file=sys.stderr)
    sys.exit(code)
""")


def run_cli(module, *args, timeout=180):
    """-> (exit status, stdout, stderr without the memory line, peak RSS in bytes)."""
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", _WRAPPER, module, *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    lines = proc.stderr.splitlines()
    rss = [int(x.split()[1]) for x in lines if x.startswith("@@maxrss")]
    err = "\n".join(x for x in lines if not x.startswith("@@maxrss"))
    return proc.returncode, proc.stdout, err, (rss[0] if rss else 0), time.monotonic() - t0


def refused(result, *needles):
    code, out, err, rss, _ = result
    assert code == 2, (code, out, err)
    assert err.startswith("error:") and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)
    print(f"peak RSS {rss / 2**30:.2f} GiB: {err[:80]}")
    assert rss < PEAK_RSS_BOUND, f"peak RSS {rss / 2**30:.2f} GiB"


@pytest.fixture(scope="module")
def demo():
    from lvae_jax.assets import demo_model_dir
    from lvae_jax.checkpoint.orbax_io import read_info
    from lvae_jax.models.specs import ModelConfig
    info = read_info(demo_model_dir())
    config = ModelConfig.from_dict(info["config"])
    return config, container.model_id(config.fingerprint(), info["weights_sha256"])


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


# ------------------------------------------------------------------- forged sizes, three formats
def test_forged_container_size_is_refused_before_allocating(tmp_path, demo):
    config, mid = demo
    f = tmp_path / "big.lvae"
    f.write_bytes(container.write_container(
        model_name=config.name, model_id=mid, lmb=64.0, image_size=(16000, 16000),
        stride=config.max_stride, latent_strings=[[b"\0" * 8]] * config.num_latents))
    assert len(f.read_bytes()) < 400                   # a few hundred bytes ...
    refused(run_cli("lvae_jax", "decompress", f, tmp_path / "x.png"),     # ... claiming 16000²
            "16000×16000", "GiB", "--max-memory")
    assert not (tmp_path / "x.png").exists()


def test_forged_official_qarv_size_is_refused(tmp_path):
    body = formats.write_qarv_body(43.880043, (250, 250), [b"\0" * 8] * 4)
    f = tmp_path / "big.bits"
    f.write_bytes(formats.write_qarv_file((16000, 16000), body))
    refused(run_cli("lvae_jax", "decompress", f, tmp_path / "x.png"), "16000×16000", "--max-memory")
    body = formats.write_qarv_body(43.880043, (1024, 1024), [b"\0" * 8] * 4)
    f.write_bytes(formats.write_qarv_file((65535, 65535), body))
    refused(run_cli("lvae_jax", "decompress", f, tmp_path / "x.png"), "65535×65535", "larger than")


def test_forged_official_qres_integers_are_refused(tmp_path):
    big = 1 << 40
    obj = [[b"\0" * 8] for _ in range(12)] + [(1, 384, big // 64, big // 64), (big, big)]
    f = tmp_path / "big.qres"
    f.write_bytes(pickle.dumps(obj, protocol=4))      # what the official pickle.dump would write
    refused(run_cli("lvae_jax", "decompress", f, tmp_path / "x.png"), "out of range")


def test_flip_search_bomb_is_an_error_not_an_allocation():
    """Every scale of a large block exactly at a table threshold (what a forged size with a tuned
    λ produces): the search refuses at once instead of building candidate pairs."""
    import resource
    from lvae_jax.codec.core import BitstreamError, DecodeReport, decode_latent_robust
    from lvae_jax.entropy.tables import get_tables
    t = get_tables("qres_latent")
    n = 2_000_000
    scales = np.full(n, t.scale_table[20], np.float32)
    idx = t.build_indexes(scales)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.monotonic()
    with pytest.raises(BitstreamError, match="not a cross-implementation index flip"):
        decode_latent_robust(b"\0" * 64, idx, scales, t, DecodeReport(), "latent block 0")
    assert time.monotonic() - t0 < 30
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    assert grown < 1 << 30, f"{grown / 2**30:.2f} GiB"


# ------------------------------------------------------------------- unbounded reads, huge images
def test_endless_inputs_are_bounded(tmp_path):
    refused(run_cli("lvae_jax", "decompress", "/dev/zero", tmp_path / "x.png"), "larger than")
    refused(run_cli("lvae_jax", "compress", "/dev/zero", tmp_path / "x.lvae", "--lmb", "64"))
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "x.lvae").exists()


def test_huge_and_bomb_images_are_refused_from_their_header(tmp_path):
    refused(run_cli("lvae_jax", "compress", _png_claiming(tmp_path / "wide.png", 70000, 8),
                    tmp_path / "a.lvae", "--lmb", "64"), "70000×8", "larger than")
    refused(run_cli("lvae_jax", "compress", _png_claiming(tmp_path / "bomb.png", 20000, 20000),
                    tmp_path / "b.lvae", "--lmb", "64"), "decompression bomb")
    # within the pixel limit but not the memory budget: the estimate and the way out
    refused(run_cli("lvae_jax", "compress", _png_claiming(tmp_path / "big.png", 12000, 12000),
                    tmp_path / "c.lvae", "--lmb", "64", "--max-memory", "1G"),
            "12000×12000", "GiB", "--max-memory")
    refused(run_cli("lvae_jax", "compress", tmp_path / "wide.png", tmp_path / "d.lvae", "--lmb",
                    "64", "--max-memory", "lots"), "not a size")
    assert not list(tmp_path.glob("*.lvae"))


# ------------------------------------------------------------------- overwrites and outputs
def test_outputs_never_replace_inputs_and_are_checked_first(tmp_path):
    src = tmp_path / "a.png"
    Image.fromarray(np.full((64, 64, 3), 100, np.uint8)).save(src)
    before = src.read_bytes()
    refused(run_cli("lvae_jax", "compress", src, tmp_path / "." / "a.png", "--lmb", "64",
                    "--overwrite"), "is the input")
    assert src.read_bytes() == before
    bits = tmp_path / "a.lvae"
    code, _, err, _, _ = run_cli("lvae_jax", "compress", src, bits, "--lmb", "64")
    assert code == 0, err
    refused(run_cli("lvae_jax", "decompress", bits, tmp_path / "out.jpg"), "PNG")
    refused(run_cli("lvae_jax", "decompress", bits, tmp_path / "t.png", "--blocks", "1",
                    "--temperature", "nan"), "finite")
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(small)
    refused(run_cli("lvae_jax", "decompress", bits, tmp_path / "o.png", "--original", small),
            "--original", "nothing written")
    assert not (tmp_path / "o.png").exists() and not (tmp_path / "t.png").exists()
    refused(run_cli("lvae_jax", "compress", src, bits, "--lmb", "nan", "--overwrite"), "finite")


def test_convert_never_deletes_what_it_did_not_write(tmp_path):
    d = tmp_path / "D"
    d.mkdir()
    pt = d / "x.pt"
    pt.write_bytes(b"not really a checkpoint")
    (d / "notes.txt").write_text("mine")
    refused(run_cli("convert", "--torch-ckpt", pt, "--out", d, "--overwrite"), "holds the input")
    assert pt.is_file() and (d / "notes.txt").read_text() == "mine"
    from lvae_jax.checkpoint.orbax_io import CheckpointError, save_params
    from lvae_jax.models import get_config
    cfg = get_config("qres34m", lmb=64, ch=8, enc_nums=(0, 0, 0, 0, 0), dec_nums=(1, 0, 0, 0, 1))
    with pytest.raises(CheckpointError, match="not an lvae-jax model directory .*notes.txt"):
        save_params(d, cfg, {}, overwrite=True)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(CheckpointError, match="not a directory"):
        save_params(f, cfg, {}, overwrite=True)
    assert (d / "notes.txt").read_text() == "mine" and f.read_text() == "x"


def test_model_directory_without_config_is_one_line(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / "lvae_model.json").write_text('{"format": "lvae-jax-model", "version": 1}')
    src = tmp_path / "a.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(src)
    refused(run_cli("lvae_jax", "compress", src, tmp_path / "a.lvae", "--ckpt", d, "--lmb", "64"),
            "no model configuration")


# ------------------------------------------------------------------- atomic writes
def test_atomic_file_keeps_the_old_content_on_failure(tmp_path):
    from lvae_jax.files import atomic_file, atomic_write_bytes
    p = atomic_write_bytes(tmp_path / "f.bin", b"old")
    with pytest.raises(OSError):
        with atomic_file(p) as tmp:
            tmp.write_bytes(b"half of the ne")
            raise OSError(28, "No space left on device")
    assert p.read_bytes() == b"old" and sorted(x.name for x in tmp_path.iterdir()) == ["f.bin"]


_KILLER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from lvae_jax.files import atomic_file
    from lvae_jax.image import save_png
    import numpy as np
    which, path = sys.argv[1], Path(sys.argv[2])
    if which == "bytes":
        with atomic_file(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"new" * 1000)
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
    else:                                   # a PNG writer killed from inside PIL's encoder
        import PIL.PngImagePlugin as P
        real = P._save
        def dying(im, fp, filename, *a, **k):
            fp.write(b"\\x89PNG partial")
            fp.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        P._save = dying
        from PIL import Image
        Image.SAVE["PNG"] = dying
        save_png(path, np.zeros((16, 16, 3), np.uint8))
""")


@pytest.mark.parametrize("which", ["bytes", "png"])
def test_a_kill_during_a_write_leaves_the_old_file(tmp_path, which):
    dst = tmp_path / ("out.bin" if which == "bytes" else "out.png")
    dst.write_bytes(b"old complete file")
    proc = subprocess.run([sys.executable, "-c", _KILLER, which, str(dst)], cwd=REPO,
                          capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert dst.read_bytes() == b"old complete file"
