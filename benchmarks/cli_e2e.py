"""End to end, as a user runs it: one fresh process that loads a converted model and compresses one
PNG to a file (and one that decompresses it), lvae-jax's command line vs the official code's
``compress_file`` / ``decompress_file``, same weights, same machine, same run. Prints figures;
nothing is asserted.

Set-up (not timed): the official model with its own initialisation (``torch.manual_seed(0)``) is
saved as ``{"model": state_dict}`` and converted with ``python -m convert`` as a user would; the
image is a scikit-image photograph resized to ``--size`` and saved as PNG.

Timed, each a fresh interpreter, wall clock of the whole process (start-up and imports included):

* model load alone, timed inside the process after the imports: ``lvae_jax.load_model(DIR)`` —
  first in an empty cache (the weights' checksum verified), then the min of ``--repeats`` —
  beside the official ``get_model(NAME)`` + ``load_state_dict(torch.load(PT, weights_only=True))``;

* lvae-jax ``python -m lvae_jax compress IMG OUT --ckpt DIR`` and ``decompress OUT PNG --ckpt DIR``:
  *cold* = empty compilation cache and no record of verified weights (``LVAE_CACHE_DIR`` a new
  folder: the first run anywhere), *warm* = the same command again, ``--repeats`` times, each
  listed and the min reported;
  *new size* = warm cache for ``--size`` but a first run at ``--size2``.
* official: ``python -c 'import lvae...; model = get_model(NAME); model.load_state_dict(torch.load(
  PT, weights_only=True)["model"]); model.compress_mode(True); model.compress_file(IMG, OUT)'``
  (and ``decompress_file`` + saving the PNG), min of ``--repeats``.

    python benchmarks/cli_e2e.py --official-python ~/ref/bin/python --official-src ~/src/lossy-vae
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

sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness.py, also when imported by path
from harness import parse_size  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BENCH_LMB = 256.0

OFFICIAL_SAVE = textwrap.dedent("""
    import sys, torch
    import lvae.models.qarv.zoo, lvae.models.qresvae.zoo
    from lvae.models.registry import get_model
    torch.manual_seed(0)
    model = get_model(sys.argv[1])
    torch.save({"model": model.state_dict()}, sys.argv[2])
""")

OFFICIAL_RUN = textwrap.dedent("""
    import sys, torch
    import lvae.models.qarv.zoo, lvae.models.qresvae.zoo
    from lvae.models.registry import get_model
    import torchvision.transforms.functional as tvf
    what, name, pt, src, dst, lmb = sys.argv[1:7]
    model = get_model(name)
    model.load_state_dict(torch.load(pt, weights_only=True)["model"])
    model.eval()
    if torch.cuda.is_available():  # as a GPU user runs it
        model = model.cuda()
    model.compress_mode(True)
    if what == "compress":
        if hasattr(model, "lmb_range"):
            model.compress_file(src, dst, lmb=float(lmb))
        else:
            model.compress_file(src, dst)
    else:
        im = model.decompress_file(src)
        tvf.to_pil_image(im.squeeze(0).clamp(0, 1).cpu()).save(dst)
""")


#: Model load alone, in a fresh interpreter after the imports (the framework and the model
#: modules, as the official side imports torch and its zoo before its clock starts): lvae-jax's
#: ``load_model`` of the converted directory (the first time in a cache also verifies the
#: weights' checksum once).
LVAE_LOAD = textwrap.dedent("""
    import sys, time
    import jax, flax.nnx
    import lvae_jax, lvae_jax.models
    t0 = time.perf_counter()
    lvae_jax.load_model(sys.argv[1])
    print(f"LOAD {time.perf_counter() - t0:.6f}")
""")

#: The official load: build the model and load the ``.pt`` (``weights_only=True``).
OFFICIAL_LOAD = textwrap.dedent("""
    import sys, time, torch
    import lvae.models.qarv.zoo, lvae.models.qresvae.zoo
    from lvae.models.registry import get_model
    t0 = time.perf_counter()
    model = get_model(sys.argv[1])
    model.load_state_dict(torch.load(sys.argv[2], weights_only=True)["model"])
    model.eval()
    print(f"LOAD {time.perf_counter() - t0:.6f}")
""")


def _load_time(cmd, env) -> float:
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    lines = [l for l in r.stdout.splitlines() if l.startswith("LOAD ")]
    if r.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{r.stderr[-2000:]}")
    return float(lines[-1].split()[1])


def _timed(cmd, env=None) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{r.stderr[-2000:]}")
    return dt


def _env(extra: dict | None = None, src: str | None = None) -> dict:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


def _image(path: Path, size) -> Path:
    import numpy as np
    from PIL import Image
    from skimage import data
    h, w = size
    img = Image.fromarray(data.astronaut()).resize((w, h), Image.Resampling.BICUBIC)
    Image.fromarray(np.asarray(img, np.uint8)).save(path)
    return path


def prepare_model(name: str, args, work: Path) -> tuple[Path, Path]:
    """The official model with its own initialisation saved as ``.pt`` and converted with
    ``python -m convert`` (not timed). -> (.pt path, model directory)."""
    pt = work / f"{name}.pt"
    _timed([args.official_python, "-c", OFFICIAL_SAVE, name, pt], env=_env(src=args.official_src))
    mdir = work / f"{name}_jax"
    conv = [sys.executable, "-m", "convert", "--torch-ckpt", pt, "--out", mdir, "--model", name]
    if name.startswith("qres") and "lossless" not in name:
        conv += ["--lmb", "64"]
    _timed(conv)
    return pt, mdir


def bench_model(name: str, args, work: Path) -> dict:
    py, opy, src = sys.executable, args.official_python, args.official_src
    pt, mdir = prepare_model(name, args, work)
    img, img2 = _image(work / "a.png", args.size), _image(work / "b.png", args.size2)
    lmb = ["--lmb", str(BENCH_LMB)] if name.startswith(("qarv", "rd")) else []
    cache = work / f"cache-{name}" / "xla"
    jenv = _env({"LVAE_CACHE_DIR": str(cache)})
    out = {"model": name, "size": "x".join(map(str, args.size))}

    def comp(image, dst):
        return [py, "-m", "lvae_jax", "compress", image, dst, "--ckpt", mdir, *lmb, "--overwrite"]

    def decomp(bits, dst):
        return [py, "-m", "lvae_jax", "decompress", bits, dst, "--ckpt", mdir, "--overwrite"]

    # model load alone (goal: <= 0.3 s for qarv_base): first in a fresh cache (the Orbax
    # checkpoint restored, the memory-mapped copy written and verified), then warm (mapped)
    lenv = _env({"LVAE_CACHE_DIR": str(work / f"cache-load-{name}")})
    loads = [_load_time([py, "-c", LVAE_LOAD, mdir], lenv) for _ in range(args.repeats + 1)]
    out["lvae_load_first_s"], out["lvae_load_s"] = loads[0], min(loads[1:])
    if args.official_python:
        out["official_load_s"] = min(_load_time([opy, "-c", OFFICIAL_LOAD, name, pt], _env(src=src))
                                     for _ in range(args.repeats))
    if args.only_load:
        return out
    out["lvae_compress_cold_s"] = _timed(comp(img, work / "a.lvae"), jenv)
    out["lvae_decompress_cold_s"] = _timed(decomp(work / "a.lvae", work / "a_out.png"), jenv)
    # warm runs one by one, each listed
    out["lvae_compress_runs_s"] = [_timed(comp(img, work / "a.lvae"), jenv)
                                   for _ in range(args.repeats)]
    out["lvae_decompress_runs_s"] = [_timed(decomp(work / "a.lvae", work / "a_out.png"), jenv)
                                     for _ in range(args.repeats)]
    out["lvae_compress_warm_s"] = min(out["lvae_compress_runs_s"])
    out["lvae_decompress_warm_s"] = min(out["lvae_decompress_runs_s"])
    out["lvae_compress_new_size_s"] = _timed(comp(img2, work / "b.lvae"), jenv)
    out["lvae_decompress_new_size_s"] = _timed(decomp(work / "b.lvae", work / "b_out.png"), jenv)
    if args.official_python:
        oenv = _env(src=src)
        out["official_compress_s"] = min(
            _timed([opy, "-c", OFFICIAL_RUN, "compress", name, pt, img, work / "a.bits",
                    str(BENCH_LMB)], oenv) for _ in range(args.repeats))
        out["official_decompress_s"] = min(
            _timed([opy, "-c", OFFICIAL_RUN, "decompress", name, pt, work / "a.bits",
                    work / "a_off.png", str(BENCH_LMB)], oenv) for _ in range(args.repeats))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["qarv_base", "qres34m"])
    p.add_argument("--size", type=parse_size, default=(512, 768))
    p.add_argument("--size2", type=parse_size, default=(448, 640), help="the 'new size'")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--official-python", help="interpreter with torch + the official code")
    p.add_argument("--official-src", default=os.environ.get("LVAE_OFFICIAL_SRC"),
                   help="a lossy-vae checkout (put on PYTHONPATH)")
    p.add_argument("--json", help="also write the figures to this file")
    p.add_argument("--only-load", action="store_true", help="time the model load alone")
    args = p.parse_args(argv)
    print(f"# end-to-end CLI, {args.size[0]}x{args.size[1]} PNG, fresh process per command, "
          f"min of {args.repeats}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="lvae_e2e_") as d:
        for name in args.models:
            r = bench_model(name, args, Path(d))
            rows.append(r)
            for k in () if args.only_load else ("compress", "decompress"):
                o = r.get(f"official_{k}_s")
                ratio = lambda v: f" ({v / o:.2f}x)" if o else ""  # noqa: E731
                runs = ", ".join(f"{v:.2f}" for v in r[f"lvae_{k}_runs_s"])
                print(f"{name} {k}: lvae-jax warm {r[f'lvae_{k}_warm_s']:.2f} s [{runs}]"
                      f"{ratio(r[f'lvae_{k}_warm_s'])}, cold {r[f'lvae_{k}_cold_s']:.2f} s"
                      f"{ratio(r[f'lvae_{k}_cold_s'])}, new size {r[f'lvae_{k}_new_size_s']:.2f} s"
                      f" (+{r[f'lvae_{k}_new_size_s'] - r[f'lvae_{k}_warm_s']:.2f} s)"
                      + (f"; official {o:.2f} s" if o else ""), flush=True)
            o = r.get("official_load_s")
            print(f"{name} model load: lvae-jax warm {r['lvae_load_s']:.3f} s (first, Orbax "
                  f"restore + verified copy: {r['lvae_load_first_s']:.3f} s)"
                  + (f"; official get_model + load_state_dict {o:.3f} s "
                     f"({r['lvae_load_s'] / o:.2f}x)" if o else ""), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
