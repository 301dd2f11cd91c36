"""Throughput of a real-bitstream RD evaluation, as a user runs it: ``python -m eval rd`` over a
folder of images at one λ vs the official loop (``compress_file`` + ``decompress_file`` + PSNR per
image), same weights, same machine, same run; whole process each (start-up, imports, model load
and compilation included). Prints images per second and the ratio; nothing is asserted.

Set-up (not timed), like ``benchmarks/cli_e2e.py``: the official model with its own
initialisation (``torch.manual_seed(0)``) saved and converted with ``python -m convert``; the test
set is ``--num-images`` crops of ``--size`` from four scikit-image photographs (each resized to
twice the crop size, then cropped at six positions and mirrored), saved as PNG.

Timed:

* lvae-jax ``python -m eval rd DIR --ckpt MODEL --lambdas λ --quiet``: *cold* (empty compilation
  cache: a first evaluation) and *warm* (the same command again, min of ``--repeats``);
* official: one interpreter that imports lvae, loads the ``.pt``, ``compress_mode(True)``, then for
  every image ``compress_file`` → ``decompress_file`` and the PSNR (the loop of the official
  ``eval-var-rate.py`` / ``eval-fix-rate.py``), min of ``--repeats``.

    python benchmarks/eval_rd.py --official-python ~/ref/bin/python --official-src ~/src/lossy-vae
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cli_e2e import BENCH_LMB, REPO, _env, _timed, prepare_model  # noqa: E402
from harness import parse_size  # noqa: E402

OFFICIAL_LOOP = textwrap.dedent("""
    import math, sys, tempfile
    from pathlib import Path
    import torch
    import torchvision.transforms.functional as tvf
    from PIL import Image
    import lvae.models.qarv.zoo, lvae.models.qresvae.zoo
    from lvae.models.registry import get_model
    name, pt, folder, lmb = sys.argv[1:5]
    model = get_model(name)
    model.load_state_dict(torch.load(pt, weights_only=True)["model"])
    model.eval()
    if torch.cuda.is_available():  # as a GPU user runs it (TF32 as torch defaults)
        model = model.cuda()
    model.compress_mode(True)
    tmp = Path(tempfile.mkdtemp())
    psnrs = []
    for img in sorted(Path(folder).glob("*.png")):
        bits = tmp / (img.stem + ".bits")
        if hasattr(model, "lmb_range"):
            model.compress_file(str(img), str(bits), lmb=float(lmb))
        else:
            model.compress_file(str(img), str(bits))
        fake = model.decompress_file(str(bits)).squeeze(0).clamp(0, 1).cpu()
        real = tvf.to_tensor(Image.open(img).convert("RGB"))
        mse = torch.mean((fake - real) ** 2).item()
        psnrs.append(-10 * math.log10(mse))
    print(sum(psnrs) / len(psnrs))
""")


def make_images(folder: Path, n: int, size) -> Path:
    import numpy as np
    from PIL import Image
    from skimage import data
    folder.mkdir(parents=True, exist_ok=True)
    h, w = size
    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    k = 0
    while k < n:
        for p_i, ph in enumerate(photos):
            big = np.asarray(Image.fromarray(ph).resize((2 * w, 2 * h), Image.Resampling.BICUBIC))
            for pos in range(6):
                if k >= n:
                    break
                y, x = (pos // 3) * (h // 2), (pos % 3) * (w // 2)
                crop = big[y : y + h, x : x + w]
                if (k // len(photos)) % 2:
                    crop = crop[:, ::-1]
                Image.fromarray(np.ascontiguousarray(crop)).save(folder / f"img{k:03d}_{p_i}{pos}.png")
                k += 1
    return folder


def bench(name: str, args, work: Path) -> dict:
    py, opy, src = sys.executable, args.official_python, args.official_src
    pt, mdir = prepare_model(name, args, work)
    images = make_images(work / "images", args.num_images, args.size)
    lmb = ["--lambdas", str(BENCH_LMB)] if name.startswith(("qarv", "rd")) else []
    jenv = _env({"LVAE_CACHE_DIR": str(work / f"cache-{name}" / "xla")})
    cmd = [py, "-m", "eval", "rd", images, "--ckpt", mdir, *lmb, "--quiet",
           "--out", work / f"{name}.json"]
    out = {"model": name, "images": args.num_images, "size": "x".join(map(str, args.size))}
    out["lvae_cold_s"] = _timed(cmd, jenv)
    out["lvae_runs_s"] = [_timed(cmd, jenv) for _ in range(args.repeats)]
    out["lvae_warm_s"] = min(out["lvae_runs_s"])
    res = json.loads((work / f"{name}.json").read_text())
    out["lvae_psnr"] = res["results"]["psnr"][0]
    if opy:
        oenv = _env(src=src)
        runs = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            r = subprocess.run([opy, "-c", OFFICIAL_LOOP, name, pt, images, str(BENCH_LMB)],
                               capture_output=True, text=True, env=oenv, cwd=REPO)
            runs.append(time.perf_counter() - t0)
            if r.returncode != 0:
                raise RuntimeError(r.stderr[-2000:])
            out["official_psnr"] = float(r.stdout.split()[-1])
        out["official_runs_s"] = runs
        out["official_s"] = min(runs)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["qarv_base"])
    p.add_argument("--size", type=parse_size, default=(512, 768))
    p.add_argument("--num-images", type=int, default=24)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--official-python", help="interpreter with torch + the official code")
    p.add_argument("--official-src", default=os.environ.get("LVAE_OFFICIAL_SRC"))
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args(argv)
    print(f"# eval rd throughput, {args.num_images} images of {args.size[0]}x{args.size[1]}, "
          f"λ = {BENCH_LMB:g}, whole process, min of {args.repeats}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="lvae_evalrd_") as d:
        for name in args.models:
            r = bench(name, args, Path(d))
            rows.append(r)
            n = r["images"]
            line = (f"{name}: lvae-jax warm {r['lvae_warm_s']:.1f} s ({n / r['lvae_warm_s']:.3f} img/s), "
                    f"cold {r['lvae_cold_s']:.1f} s ({n / r['lvae_cold_s']:.3f} img/s), "
                    f"PSNR {r['lvae_psnr']:.3f}")
            if "official_s" in r:
                o = r["official_s"]
                line += (f"; official {o:.1f} s ({n / o:.3f} img/s), PSNR {r['official_psnr']:.3f}; "
                         f"throughput ratio warm {o / r['lvae_warm_s']:.2f}x, "
                         f"cold {o / r['lvae_cold_s']:.2f}x")
            print(line, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
