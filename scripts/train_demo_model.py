"""Train the embedded demo model (``lvae_jax/assets/demo_model``) and its learning-curve figure.

A reduced-width QARV (variable rate, λ ∈ [4, 128] — the low-rate end; the same code as qarv_base,
configuration only) trained with the official variable-rate recipe — Adam, const-0.5-cos,
clipping, spike guard, EMA — on CPU, from photographs that are available offline and freely
licensed:

* the photographs of five Debian packages, fetched with ``apt-get download`` (no root needed):
  ``mate-backgrounds`` (``nature/*.jpg``, GPL-2+), ``plasma-workspace-wallpapers`` (the
  photographic ones, GPL-2+), ``lomiri-wallpapers-16.04`` (all, CC-BY-4.0 / CC-BY-SA-4.0),
  ``lomiri-wallpapers-20.04`` (the one photograph) and ``lxqt-themes`` (the photographic
  wallpapers, LGPL-2.1+), downscaled so that their short side is 384, 512 and 768 pixels;
* the sample images of ``shared/images`` (when present).

The quickstart evaluates on scikit-image's astronaut, coffee, chelsea and rocket, which are *not*
in the training set. It is a *demo*: it shows the codec and the training pipeline working offline;
it is not the official qarv_base.

    python scripts/train_demo_model.py                       # data + training (< 2 h, 2 CPU cores)
    python scripts/train_demo_model.py --iterations 200 --out /tmp/demo   # a quick look

Writes DATA_DIR (the training images), RUN_DIR (checkpoints, metrics, evaluations), the model
directory (EMA weights) and ``docs/img/demo_training.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: The demo architecture: qarv_base's layout at reduced width, one block per stage, trained for
#: λ ∈ [4, 128] rather than the official [16, 2048]: the low-rate end, where a briefly trained
#: small model can beat JPEG (whose headers and DC alone cost ≈ 0.24 bpp at 256×256) and where
#: the small-λ optimum has a much lower rate than the large-λ one from the first steps on, so the
#: λ conditioning has something to learn.
DEMO_MODEL_ARGS = {"lmb_range": (4.0, 128.0), "ch": 24, "enc_dims": (48, 72, 96, 96, 96),
                   "enc_nums": (1, 1, 1, 1, 1), "dec_nums": (1, 1, 1, 1), "z_dims": (16, 16, 32, 8),
                   "embed_dim": 64, "name": "qarv_demo"}

#: Photographs of Debian packages (the other wallpapers of these packages are renderings):
#: package -> glob patterns; a pattern ending in "/*" is a folder of sizes of one picture, of
#: which the largest is taken.
DEBIAN_PHOTOS = {
    "mate-backgrounds": ["usr/share/backgrounds/mate/nature/*.jpg"],
    "plasma-workspace-wallpapers": [
        f"usr/share/wallpapers/{name}/contents/images/*"
        for name in ("BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow",
                     "FallenLeaf", "Grey", "Kite", "OneStandsOut", "Path", "Volna", "summer_1am")],
    "lomiri-wallpapers-16.04": ["usr/share/backgrounds/*_by_*.jpg"],
    "lomiri-wallpapers-20.04": ["usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg"],
    "lxqt-themes": [f"usr/share/lxqt/wallpapers/{name}"
                    for name in ("Butterfly-Kenneth-Wimer.jpg", "after-the-rain.jpg",
                                 "appleflower.png", "butterfly.png", "cloud.png", "drop.png",
                                 "flowers.png", "fog.jpg")],
}
#: Short sides of the downscaled copies of each photograph.
SCALES = (384, 512, 768)


def prepare_data(out: Path, shared_images: Path | None) -> Path:
    """Fetch the photographs and write the training images (PNG) to ``out``; returns ``out``."""
    from PIL import Image
    out.mkdir(parents=True, exist_ok=True)
    if any(out.glob("*.png")):
        print(f"training images: {out} (already prepared)")
        return out
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for pkg, patterns in DEBIAN_PHOTOS.items():
            subprocess.run(["apt-get", "download", pkg], cwd=tmp, check=True, capture_output=True)
            deb = next(tmp.glob(f"{pkg}_*.deb"))
            subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp / pkg)], check=True)
            for pattern in patterns:
                files = sorted((tmp / pkg).glob(pattern), key=lambda f: f.stat().st_size)
                sizes = pattern.endswith("/*")          # one picture in several sizes
                if not files:
                    raise SystemExit(f"{pkg}: nothing matches {pattern}")
                for f in files[-1:] if sizes else files:
                    im = Image.open(f).convert("RGB")
                    stem = f.parts[-4] if sizes else f.stem
                    for side in SCALES:
                        scale = side / min(im.size)
                        if scale < 1:
                            small = im.resize((round(im.width * scale), round(im.height * scale)),
                                              Image.Resampling.LANCZOS)
                            small.save(out / f"{pkg.split('-')[0]}_{stem}_{side}.png")
    if shared_images is not None and shared_images.is_dir():
        for f in sorted(shared_images.glob("*.png")):
            Image.open(f).convert("RGB").save(out / f"shared_{f.stem}.png")
    print(f"training images: {out} ({len(list(out.glob('*.png')))} files)")
    return out


def plot_curves(run_dir: Path, out_png: Path, title: str) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    train, evals = [], []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        (train if r["split"] == "train" else evals).append(r)
    steps = np.array([r["step"] for r in train])

    def smooth(x, k=20):
        x = np.asarray(x, float)
        return np.convolve(x, np.ones(k) / k, mode="valid") if len(x) > k else x

    fig, ax = plt.subplots(1, 4, figsize=(17, 3.8))
    for a, key, label in ((ax[0], "loss", "training loss (R + λD)"), (ax[1], "bppix", "rate (bpp)"),
                          (ax[2], "psnr", "PSNR (dB)")):
        y = [r[key] for r in train]
        a.plot(steps, y, color="0.8", lw=0.5)
        a.plot(steps[len(steps) - len(smooth(y)):], smooth(y), color="C0")
        a.set_xlabel("step")
        a.set_title(label + ", training batches")
        if key == "loss":
            a.set_yscale("log")
    ev = sorted((json.loads(p.read_text()) for p in (run_dir / "eval").glob("step_*_ema.json")),
                key=lambda r: r["step"])
    for i, r in enumerate(ev):
        c = plt.cm.viridis(i / max(len(ev) - 1, 1))
        ax[3].plot(r["results"]["bpp"], r["results"]["psnr"], "o-", color=c, ms=3,
                   label=f"step {r['step']}")
    ax[3].set_xlabel("bpp (estimated)")
    ax[3].set_ylabel("PSNR (dB)")
    ax[3].set_title("RD on the quickstart images (EMA, held out)")
    ax[3].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    return out_png


def prepare_eval(out: Path) -> Path:
    """The quickstart's images (scikit-image's samples, centre-cropped like the quickstart) as
    PNG files in ``out``: the held-out images the run is evaluated on."""
    from lvae_jax.image import save_png
    from lvae_jax.quickstart import sample_images
    out.mkdir(parents=True, exist_ok=True)
    for name, im in sample_images(None, 256):
        save_png(out / f"{name}.png", im)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=REPO / "runs" / "demo_data",
                   help="training images (prepared here if empty)")
    p.add_argument("--shared-images", type=Path,
                   default=Path(os.environ.get("LVAE_SHARED_DIR", REPO.parent / "shared")) / "images")
    p.add_argument("--iterations", type=int, default=8500)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--loss-weighting", choices=["official", "per-image"], default="per-image",
                   help="TrainConfig.loss_weighting (default per-image: the small-λ images of a "
                        "batch are not drowned by the large-λ ones)")
    p.add_argument("--run-dir", type=Path, default=REPO / "runs" / "demo_model")
    p.add_argument("--out", type=Path, default=REPO / "lvae_jax" / "assets" / "demo_model")
    p.add_argument("--figure", type=Path, default=REPO / "docs" / "img" / "demo_training.png")
    p.add_argument("--resume", action="store_true")
    args = p.parse_args(argv)

    import logging
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("absl", "jax._src", "orbax"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    import lvae_jax
    from lvae_jax.checkpoint.model_dir import save_model
    from lvae_jax.runtime import enable_compilation_cache
    from lvae_jax.training import TrainConfig, train
    enable_compilation_cache()

    data = prepare_data(args.data_dir, args.shared_images)
    eval_dir = prepare_eval(args.run_dir.parent / "demo_eval")
    n_images = len(list(data.glob("*.png")))
    # The official recipe, except: a higher LR (a small model, a short run), an EMA horizon of
    # ~1000 steps (0.9999 would average over half of this run) and per-image loss weighting.
    cfg = TrainConfig(
        model="qarv_base", model_args=dict(DEMO_MODEL_ARGS), data_dir=str(data),
        crop=args.crop, batch_size_per_device=args.batch_size, iterations=args.iterations,
        lr=args.lr, ema_decay=0.999, ema_warmup=1000, loss_weighting=args.loss_weighting,
        eval_dir=str(eval_dir), eval_every=max(args.iterations // 8, 1), eval_lambdas=4,
        save_every=max(args.iterations // 20, 1), log_every=20, run_dir=str(args.run_dir),
        tensorboard=True, progress=False, seed=0)
    result = train(cfg, resume=args.resume)
    if result.status != "finished":
        print(f"stopped at step {result.step}; rerun with --resume", file=sys.stderr)
        return 3
    model = lvae_jax.load_model(result.model_dir)
    last = result.last_eval or {}
    lo, hi = model.config.lmb_range
    n_params = sum(v.size for v in lvae_jax.checkpoint.model_dir.flat_params(model).values())
    meta = {
        "demo": True,
        "description": "DEMO MODEL — a reduced-width QARV (the qarv_base layout, one block per "
                       f"stage, λ ∈ [{lo:g}, {hi:g}], {n_params / 1e6:.1f}M parameters) trained "
                       f"for {result.step} steps on {n_images} freely licensed photographs "
                       f"({args.crop}x{args.crop} crops) on CPU by scripts/train_demo_model.py. "
                       "For the offline quickstart only; NOT the official qarv_base weights.",
        "model_args": {k: list(v) if isinstance(v, tuple) else v for k, v in DEMO_MODEL_ARGS.items()},
        "lmb_range": [lo, hi],
        "steps": result.step,
        "weights": "ema",
        "train_config": cfg.to_dict(),
        "estimated_rd_on_quickstart_images": {"lambdas": last.get("lambdas"),
                                              **(last.get("results") or {})},
    }
    out = save_model(model, args.out, meta=meta, overwrite=True)
    for f in [out, *out.rglob("*")]:  # package data: readable by everyone (mkdtemp made it 0700)
        f.chmod(0o755 if f.is_dir() else 0o644)
    fig = plot_curves(args.run_dir, args.figure,
                      f"demo model (qarv_base layout, reduced width), {result.step} steps, "
                      f"batch {args.batch_size} of {args.crop}² crops, CPU")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"model: {out} ({size / 1e6:.2f} MB); figure: {fig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
