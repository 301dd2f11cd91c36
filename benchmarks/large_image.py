"""A large photograph end to end in bounded memory: ``compress`` and ``decompress`` of an
8000×6000 PNG (48 Mpx) from the command line, each a fresh process; prints wall time, peak
resident memory (the child's ``ru_maxrss``), the tiles chosen and the file size. Nothing is
asserted.

The image is a mosaic of four scikit-image photographs, each upscaled (Lanczos) to a quarter of
the frame. ``--tile auto`` (the default of ``compress``) codes a 48-Mpx image as 2×2 tiles of at
most 4096 px per side, fewer or smaller when ``--max-memory`` requires; ``--tile`` here passes
another choice on.

    python benchmarks/large_image.py                                 # the embedded demo model
    python benchmarks/large_image.py --ckpt qarv_base_jax --max-memory 8G
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_image(path: Path, width: int, height: int) -> Path:
    import numpy as np
    from PIL import Image
    from skimage import data
    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    w2, h2 = width // 2, height - height // 2
    canvas = np.zeros((height, width, 3), np.uint8)
    for k, im in enumerate(photos):
        r, c = divmod(k, 2)
        hh = height // 2 if r == 0 else h2
        ww = w2 if c == 0 else width - w2
        canvas[r * (height // 2): r * (height // 2) + hh, c * w2: c * w2 + ww] = np.asarray(
            Image.fromarray(im).resize((ww, hh), Image.Resampling.LANCZOS))
    Image.fromarray(canvas).save(path)
    return path


#: Runs ``python -m lvae_jax ARGV`` and reports its own peak RSS (VmHWM) on stderr's last line:
#: the ``ru_maxrss`` of a forked child includes the parent's memory at the fork.
_WRAP = (
    "import sys\n"
    "from lvae_jax.__main__ import main\n"
    "try:\n"
    "    code = main(sys.argv[1:])\n"
    "except SystemExit as e:\n"
    "    code = e.code if isinstance(e.code, int) else 1\n"
    "sys.stdout.flush()\n"
    "from lvae_jax.limits import peak_rss\n"
    "print('VmHWM', peak_rss(), file=sys.stderr)\n"
    "sys.exit(code)\n")


def run(argv: list[str], env: dict | None = None) -> tuple[float, int, str, int]:
    """(seconds, peak RSS bytes, output, exit status) of ``python -m lvae_jax ARGV`` in a fresh
    process (its own VmHWM)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _WRAP, *map(str, argv)], cwd=REPO, env=env,
                          capture_output=True, text=True)
    sec = time.perf_counter() - t0
    lines = proc.stderr.rstrip().splitlines()
    rss = int(lines[-1].split()[1]) if lines and lines[-1].startswith("VmHWM") else 0
    out = proc.stdout + "\n".join(lines[:-1] if rss else lines)
    return sec, rss, out, proc.returncode


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", help="model directory (default: the embedded demo model)")
    p.add_argument("--lmb", type=float, default=64.0,
                   help="λ (default 64: within the demo model's range [4, 128])")
    p.add_argument("--size", default="8000x6000", help="WxH")
    p.add_argument("--tile", default="auto")
    p.add_argument("--max-memory", help="passed to both commands")
    args = p.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    env = dict(os.environ)
    common = (["--ckpt", args.ckpt] if args.ckpt else []) + (
        ["--max-memory", args.max_memory] if args.max_memory else [])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = make_image(tmp / "big.png", width, height)
        rows = []
        for what, cmd in (
                ("compress", ["compress", src, tmp / "big.lvae", "--lmb", str(args.lmb),
                              "--tile", args.tile, *common]),
                ("decompress", ["decompress", tmp / "big.lvae", tmp / "out.png",
                                "--original", src, *common])):
            sec, rss, out, code = run([str(a) for a in cmd], env)
            print(out.rstrip())
            if code != 0:
                print(f"{what} failed with exit status {code}", file=sys.stderr)
                return 1
            rows.append((what, sec, rss))
        size = (tmp / "big.lvae").stat().st_size
    print(f"\n{width}x{height}, λ = {args.lmb:g}, model {args.ckpt or 'demo'}, "
          f"--tile {args.tile}{', --max-memory ' + args.max_memory if args.max_memory else ''}: "
          f"{size} bytes ({8 * size / (width * height):.4f} bpp)")
    print(f"{'command':<12} {'wall s':>8} {'peak RSS GiB':>13}")
    for what, sec, rss in rows:
        print(f"{what:<12} {sec:8.1f} {rss / 2**30:13.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
