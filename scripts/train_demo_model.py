"""Train the embedded demo model (``lvae_jax/assets/demo_model``) and its learning-curve figure.

A reduced-width QARV (variable rate, λ ∈ [16, 2048]; same code as qarv_base, configuration only)
trained with the official variable-rate recipe — Adam 2e-4, const-0.5-cos, clipping, spike guard,
EMA — on the sample images of ``shared/images`` with 64×64 crops, on CPU. It is a *demo*: it
shows the codec and the training pipeline working offline; it is not the official qarv_base.

    python scripts/train_demo_model.py                        # ~40 min on 2 shared CPU cores
    python scripts/train_demo_model.py --iterations 200 --out /tmp/demo   # a quick look

Writes RUN_DIR (checkpoints, metrics, evaluations), the model directory (EMA weights) and
``docs/img/demo_training.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: The demo architecture: qarv_base's layout at 1/8 of its width, one block per stage.
DEMO_MODEL_ARGS = {"ch": 16, "enc_dims": (32, 48, 64, 64, 64), "enc_nums": (1, 1, 1, 1, 1),
                   "dec_nums": (1, 1, 1, 1), "z_dims": (8, 8, 16, 4), "embed_dim": 32,
                   "name": "qarv_demo"}


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
    ax[3].set_title("RD on the sample images (EMA)")
    ax[3].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    return out_png


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=Path,
                   default=Path(os.environ.get("LVAE_SHARED_DIR", REPO.parent / "shared")) / "images")
    p.add_argument("--iterations", type=int, default=8000)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--run-dir", type=Path, default=REPO / "runs" / "demo_model")
    p.add_argument("--out", type=Path, default=REPO / "lvae_jax" / "assets" / "demo_model")
    p.add_argument("--figure", type=Path, default=REPO / "docs" / "img" / "demo_training.png")
    p.add_argument("--resume", action="store_true")
    args = p.parse_args(argv)
    # On CPU the grouped depthwise kernel trains this narrow model faster than the shift-sum and
    # compiles in half the time (the two agree to float rounding).
    os.environ.setdefault("LVAE_DEPTHWISE", "grouped")

    import logging
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("absl", "jax._src", "orbax"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    import lvae_jax
    from lvae_jax.checkpoint.orbax_io import save_model
    from lvae_jax.training import TrainConfig, train

    cfg = TrainConfig(
        model="qarv_base", model_args=dict(DEMO_MODEL_ARGS), data_dir=str(args.images),
        crop=args.crop, batch_size_per_device=args.batch_size, iterations=args.iterations,
        eval_dir=str(args.images), eval_every=max(args.iterations // 8, 1), eval_lambdas=4,
        save_every=max(args.iterations // 10, 1), log_every=10, run_dir=str(args.run_dir),
        tensorboard=True, progress=False, seed=0)
    result = train(cfg, resume=args.resume)
    if result.status != "finished":
        print(f"stopped at step {result.step}; rerun with --resume", file=sys.stderr)
        return 3
    model = lvae_jax.load_model(result.model_dir)
    last = result.last_eval or {}
    meta = {
        "demo": True,
        "description": "DEMO MODEL — a reduced-width QARV (qarv_base layout, 1/8 width) trained "
                       f"for {result.step} steps on {len(list(args.images.glob('*')))} sample images "
                       f"({args.crop}x{args.crop} crops) on CPU by scripts/train_demo_model.py. "
                       "For the offline quickstart only; NOT the official qarv_base weights and "
                       "not a useful codec. Trained this briefly, it has barely learned its λ "
                       "conditioning: its rate changes little with λ.",
        "model_args": {k: list(v) if isinstance(v, tuple) else v for k, v in DEMO_MODEL_ARGS.items()},
        "lmb_range": list(model.config.lmb_range),
        "steps": result.step,
        "weights": "ema",
        "train_config": cfg.to_dict(),
        "estimated_rd_on_sample_images": {"lambdas": last.get("lambdas"),
                                          **(last.get("results") or {})},
    }
    out = save_model(model, args.out, meta=meta, overwrite=True)
    for f in [out, *out.rglob("*")]:  # package data: readable by everyone (mkdtemp made it 0700)
        f.chmod(0o755 if f.is_dir() else 0o644)
    fig = plot_curves(args.run_dir, args.figure,
                      f"demo model (qarv_base layout at 1/8 width), {result.step} steps, "
                      f"batch {args.batch_size} of {args.crop}² crops, CPU")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"model: {out} ({size / 1e6:.2f} MB); figure: {fig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
