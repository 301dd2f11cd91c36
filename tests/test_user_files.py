"""What a user's own files, devices and habits meet: special files as outputs (written into, never
replaced) and inputs (refused, or standard input), ``-``, the wrapper from another folder, EXIF
orientation, truncated or forged images, absurd options and the wording of the refusals.
The command lines run the embedded demo model (λ ∈ [4, 128])."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from parity_support import REPO

@pytest.fixture(scope="module")
def run(cli_processes):
    """``run(*args, cwd=, stdin=, timeout=)``: ``python -m lvae_jax ARGS`` as a process of its own
    (forked from the session's CLI fork server, conftest.py), -> returncode, stdout, stderr."""
    return cli_processes.cli


def _photo(h=96, w=128) -> np.ndarray:
    from skimage import data
    return np.ascontiguousarray(data.astronaut()[100:100 + h, 150:150 + w])


@pytest.fixture(scope="module")
def png(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("img") / "a.png"
    Image.fromarray(_photo()).save(p)
    return p


@pytest.fixture(scope="module")
def reference(run, png, tmp_path_factory) -> bytes:
    """The bitstream ``compress`` writes to a regular file."""
    out = tmp_path_factory.mktemp("ref") / "a.lvae"
    r = run("compress", png, out, "--lmb", "64")
    assert r.returncode == 0, r.stderr.decode()
    return out.read_bytes()


def test_a_fifo_output_is_written_into_and_stays_a_fifo(run, png, reference, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    r = run("compress", png, fifo, "--lmb", "64", "--overwrite")
    reader.join(60)
    assert r.returncode == 0, r.stderr.decode()
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and got == [reference]


def test_a_character_device_output_is_written_into_never_replaced(run, png, tmp_path):
    dev = tmp_path / "null"
    try:
        os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(1, 3))      # a /dev/null of our own
    except PermissionError:
        dev = Path("/dev/null")          # not root: the system's (only read, never replaced)
    before = os.stat(dev)
    for cmd in (["compress", png, dev, "--lmb", "64", "--overwrite"],
                ["compress", png, dev, "--lmb", "64"]):            # nothing lost: no --overwrite
        r = run(*cmd)
        assert r.returncode == 0, r.stderr.decode()
        after = os.stat(dev)
        assert stat.S_ISCHR(after.st_mode) and after.st_ino == before.st_ino, cmd


def test_dash_is_standard_output_and_standard_input(run, png, reference, tmp_path):
    r = run("compress", png, "-", "--lmb", "64")
    assert r.returncode == 0 and r.stdout == reference, r.stderr.decode()
    assert b"bpp" in r.stderr                         # the report goes to standard error
    r = run("compress", "-", "-", "--lmb", "64", stdin=png.read_bytes())
    assert r.returncode == 0 and r.stdout == reference, r.stderr.decode()
    r = run("decompress", "-", "-", stdin=reference)
    assert r.returncode == 0 and r.stdout[:8] == b"\x89PNG\r\n\x1a\n", r.stderr.decode()


def test_an_endless_standard_input_is_bounded(run, tmp_path):
    r = run("decompress", "-", tmp_path / "x.png", stdin=Path("/dev/zero"))
    assert r.returncode == 2 and b"standard input is larger than" in r.stderr, r.stderr


def test_a_fifo_input_is_refused_at_once(run, tmp_path):
    fifo = tmp_path / "in.png"
    os.mkfifo(fifo)                                   # no writer: opening it would wait forever
    t0 = time.monotonic()
    r = run("compress", fifo, tmp_path / "x.lvae", "--lmb", "64", timeout=120)
    assert r.returncode == 2 and b"is a FIFO" in r.stderr and b"standard input with -" in r.stderr
    assert time.monotonic() - t0 < 100
    r = run("decompress", fifo, tmp_path / "x.png", timeout=120)
    assert r.returncode == 2 and b"is a FIFO" in r.stderr


def _wrapper_is_set_up() -> bool:
    files = ["pyproject.toml", "setup.py", "scripts/setup.sh",
             *sorted(str(p.relative_to(REPO)) for p in (REPO / "lvae_jax/native").glob("*.cc")),
             *sorted(str(p.relative_to(REPO)) for p in (REPO / "lvae_jax/native").glob("*.inc"))]
    want = hashlib.sha256(b"".join((REPO / f).read_bytes() for f in files)).hexdigest()
    stamp = REPO / ".venv" / ".lvae-setup"
    return stamp.is_file() and stamp.read_text().strip() == want


def test_the_wrapper_keeps_the_callers_working_directory(png, tmp_path):
    if not _wrapper_is_set_up():
        pytest.skip("./lvae would set itself up first (run the suite with ./lvae test)")
    (tmp_path / "a.png").write_bytes(png.read_bytes())
    r = subprocess.run(["bash", str(REPO / "lvae"), "compress", "a.png", "a.lvae", "--lmb", "64"],
                       cwd=tmp_path, capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr.decode()
    assert (tmp_path / "a.lvae").is_file() and not (REPO / "a.lvae").exists()


def _with_orientation(im: np.ndarray, code: int) -> bytes:
    pil = Image.fromarray(im)
    exif = pil.getexif()
    exif[0x0112] = code
    buf = io.BytesIO()
    pil.save(buf, "PNG", exif=exif)
    return buf.getvalue()


@pytest.mark.parametrize("code", range(1, 9))
def test_exif_orientation_is_applied_as_a_viewer_shows_it(code):
    from lvae_jax.image import image_size, load_rgb8
    data = _with_orientation(_photo(40, 60), code)
    rgb, notes = load_rgb8(data)
    viewer = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    assert np.array_equal(rgb, viewer) and image_size(data) == rgb.shape[:2]
    assert (code != 1) == any("EXIF orientation" in n for n in notes)
    kept, _ = load_rgb8(data, orientation="keep")
    assert np.array_equal(kept, _photo(40, 60))


def test_the_command_line_codes_a_phone_photo_upright(run, tmp_path):
    (tmp_path / "phone.png").write_bytes(_with_orientation(_photo(), 6))   # stored sideways
    for flag, shape in (([], (128, 96)), (["--keep-orientation"], (96, 128))):
        r = run("compress", tmp_path / "phone.png", tmp_path / "p.lvae", "--lmb", "64",
                "--overwrite", *flag)
        assert r.returncode == 0, r.stderr.decode()
        r = run("decompress", tmp_path / "p.lvae", tmp_path / "p.png", "--overwrite")
        assert r.returncode == 0, r.stderr.decode()
        assert np.asarray(Image.open(tmp_path / "p.png")).shape[:2] == shape, flag


def test_a_jpeg_too_short_for_the_size_it_claims_is_refused_before_decoding():
    from lvae_jax.image import ImageError, load_rgb8
    buf = io.BytesIO()
    Image.fromarray(_photo(40, 60)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = (8000).to_bytes(2, "big") + (8000).to_bytes(2, "big")
    t0 = time.monotonic()
    with pytest.raises(ImageError, match="truncated or damaged"):
        load_rgb8(bytes(data))
    assert time.monotonic() - t0 < 5                   # refused, not decoded (libjpeg fills in)
    buf = io.BytesIO()                                  # the smallest honest JPEG of that size
    Image.new("RGB", (8000, 8000), (128, 128, 128)).save(buf, "JPEG", optimize=True,
                                                         progressive=True)
    assert load_rgb8(buf.getvalue())[0].shape == (8000, 8000, 3)
    full = io.BytesIO()
    Image.fromarray(_photo(40, 60)).save(full, "JPEG")
    with pytest.raises(ImageError, match="(?i)truncated"):
        load_rgb8(full.getvalue()[:len(full.getvalue()) // 2])


@pytest.mark.parametrize("argv, expect", [
    (["decompress", "{bits}", "{tmp}/t.png", "--temperature", "1e30"], "--temperature must be in [0, 10]"),
    (["sample", "--num", "1", "-t", "1e30", "--out", "{tmp}/s.png"], "temperature must be in [0, 10]"),
    (["compress", "{png}", "{tmp}/x.lvae", "--target-bpp", "0"], "--target-bpp must be in (0, 48]"),
    (["compress", "{png}", "{tmp}/x.lvae", "--target-bytes", "0"], "--target-bytes must be a positive"),
    (["compress", "{png}", "{tmp}/x.lvae", "--lmb", "128.0001"], "λ = 128.0001 is outside"),
    (["compress", "{png}", "{tmp}/x.lvae", "--lmb", "64", "--target-bytes", "900"],
     "--lmb and --target-bpp/--target-bytes both choose the rate"),
    (["compress", "{text}", "{tmp}/x.lvae", "--lmb", "64"], "not a readable image (no format Pillow reads"),
    (["compress", "{png}", "{tmp}/x.lvae", "--lmb", "64", "--max-memory", "1K"], "KiB allowed"),
    (["compress", "{png}", "{tmp}/no/such/dir/x.lvae", "--lmb", "64"], "does not exist (create it first)"),
])
def test_refusals_name_the_option_and_the_value_the_user_gave(run, png, reference, tmp_path, argv,
                                                             expect):
    (tmp_path / "bits.lvae").write_bytes(reference)
    (tmp_path / "text.png").write_text("not an image\n")
    fill = {"png": png, "tmp": tmp_path, "bits": tmp_path / "bits.lvae",
            "text": tmp_path / "text.png"}
    r = run(*[a.format(**fill) for a in argv])
    err = r.stderr.decode()
    assert r.returncode == 2 and expect in err, err
    assert "BytesIO" not in err and "Traceback" not in err
    assert not (tmp_path / "x.lvae").exists() and not (tmp_path / "t.png").exists()


def test_decompress_reports_the_psnr_of_the_png_it_wrote(run, png, reference, tmp_path):
    from lvae_jax.evaluation.metrics import psnr
    from lvae_jax.image import load_rgb8, to_float
    (tmp_path / "a.lvae").write_bytes(reference)
    r = run("decompress", tmp_path / "a.lvae", tmp_path / "a.png", "--original", png)
    assert r.returncode == 0, r.stderr.decode()
    printed = float(r.stdout.decode().split("PSNR ")[1].split()[0])
    written = psnr(to_float(load_rgb8(png)[0]), to_float(load_rgb8(tmp_path / "a.png")[0]))
    assert abs(printed - written) < 5e-4, (printed, written)
