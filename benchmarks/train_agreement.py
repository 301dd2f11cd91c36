"""Whole training runs, official vs lvae-jax: the same small configuration, the same initial
weights (the official initialisation, converted), the same images, 3 seeds each; the loss, bpp
and PSNR curves of both and the final EMA models' RD points. Prints figures and writes a JSON and
a PNG; nothing is asserted.

    python benchmarks/train_agreement.py --official-python ~/ref/bin/python \\
        --official-src ~/src/lossy-vae --steps 2000 --out docs/img/train_agreement

The official side is the official trainer itself (``lvae.trainer.BaseTrainingWrapper`` through
``train-var-rate.py``'s / ``train-fix-rate.py``'s ``TrainWrapper``: its Adam, LR schedule,
clipping and spike guard, EMA, λ sampling and crop/flip), on the CPU, with the model built from
the official classes in the benchmark's narrower configuration (translated block by block from
the lvae-jax configuration) and its every step's statistics recorded. The lvae-jax side is
``python -m train`` from the converted initial weights. Both final EMA models are evaluated by the
same code (lvae-jax's forward-pass estimate, the official ``self_evaluate`` rule) at the same λ.

Configurations: ``qarv`` — a QARV of the demo model's width (0.4 M parameters), variable rate,
λ ∈ [4, 128], the official var-rate recipe (const-0.5-cos LR); ``qres`` — a narrow fixed-rate
QRes (λ = 64), the official fixed-rate recipe (constant LR). ``--precision bf16`` adds lvae-jax
runs in bfloat16 mixed precision beside float32.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness.py, also when imported by path
from harness import official_env  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_IMAGES = REPO.parent / "shared" / "images"

#: The benchmark's configurations: lvae-jax builder, its arguments, the official script and its
#: recipe (LR schedule), the evaluation λ.
CONFIGS = {
    "qarv": {"builder": "qarv_base_config",
             "args": {"lmb_range": (4.0, 128.0), "ch": 24, "enc_dims": (48, 72, 96, 96, 96),
                      "enc_nums": (1, 1, 1, 1, 1), "dec_nums": (1, 1, 1, 1),
                      "z_dims": (16, 16, 32, 8), "embed_dim": 64, "name": "qarv_agree"},
             "script": "train-var-rate.py", "lr_sched": "const-0.5-cos",
             "eval_lambdas": (4.0, 11.3, 32.0, 128.0)},
    "qres": {"builder": "qres34m_config",
             "args": {"lmb": 64.0, "ch": 16, "enc_nums": (1, 1, 1, 1, 1),
                      "dec_nums": (1, 1, 1, 1, 1), "name": "qres_agree"},
             "script": "train-fix-rate.py", "lr_sched": "constant", "eval_lambdas": (64.0,)},
}

# -- the official side ----------------------------------------------------------------------------

#: Official model from an lvae-jax ModelConfig (JSON), block by block with the official classes.
OFFICIAL_BUILD = textwrap.dedent("""
    import json, sys, types
    sys.modules.setdefault("wandb", types.ModuleType("wandb"))    # imported by lvae.trainer
    import torch
    import lvae.models.common as common
    import lvae.models.qarv.model as qarv
    import lvae.models.qresvae.model as qres

    def block(b):
        t = b["type"]
        if t == "patch_down":
            return common.patch_downsample(b["in_ch"], b["out_ch"], rate=b["rate"])
        if t == "patch_up":
            return common.patch_upsample(b["in_ch"], b["out_ch"], rate=b["rate"])
        if t == "adaln":
            return common.ConvNeXtBlockAdaLN(b["dim"], embed_dim=b["embed_dim"],
                                             kernel_size=b["kernel_size"], mlp_ratio=b["mlp_ratio"])
        if t == "convnext":
            return qres.MyConvNeXtBlock(b["dim"], kernel_size=b["kernel_size"],
                                        mlp_ratio=b["mlp_ratio"])
        if t == "convnext_down":
            return qres.MyConvNeXtPatchDown(b["in_ch"], b["out_ch"], down_rate=b["rate"],
                                            mlp_ratio=b["mlp_ratio"], kernel_size=b["kernel_size"])
        if t == "tap":
            return common.SetKey(b["key"])
        if t == "stop":
            return common.CompresionStopFlag()
        if t == "qarv_latent":
            return qarv.VRLVBlockBase(b["width"], b["zdim"], enc_key=b["enc_key"],
                                      enc_width=b["enc_width"], embed_dim=b["embed_dim"],
                                      kernel_size=b["kernel_size"], mlp_ratio=b["mlp_ratio"])
        if t == "qres_latent":
            return qres.QLatentBlockX(b["width"], b["zdim"], kernel_size=b["kernel_size"])
        raise ValueError(f"no official block for {t}")

    def official_model(config):
        cfg = {"im_shift": config["im_shift"], "im_scale": config["im_scale"],
               "max_stride": config["max_stride"],
               "enc_blocks": [block(b) for b in config["enc_blocks"]],
               "dec_blocks": [block(b) for b in config["dec_blocks"]]}
        if config["family"] == "qarv":
            cfg.update(lmb_range=tuple(config["lmb_range"]),
                       lmb_embed_dim=tuple(config["lmb_embed_dim"]),
                       sin_period=config["sin_period"], log_images=[])
            return qarv.VariableRateLossyVAE(cfg)
        cfg["out_net"] = qres.MSEOutputNet(mse_lmb=config["head"]["lmb"])
        return qres.HierarchicalVAE(cfg)
""")

OFFICIAL_INIT = OFFICIAL_BUILD + textwrap.dedent("""
    config, seed, out = json.loads(open(sys.argv[1]).read()), int(sys.argv[2]), sys.argv[3]
    torch.manual_seed(seed)
    torch.save({"model": official_model(config).state_dict()}, out)
""")

OFFICIAL_TRAIN = OFFICIAL_BUILD + textwrap.dedent("""
    import importlib.util, math, time
    from pathlib import Path
    from timm.utils import random_seed
    spec_path, config_path = sys.argv[1], sys.argv[2]
    spec = json.loads(open(spec_path).read())
    config = json.loads(open(config_path).read())
    torch.set_num_threads(spec["threads"])
    script = importlib.util.spec_from_file_location("official_train", spec["script"])
    mod = importlib.util.module_from_spec(script)
    sys.argv = [spec["script"], *spec["argv"]]
    script.loader.exec_module(mod)
    cfg = mod.parse_args()

    class Run(mod.TrainWrapper):
        def set_logging(self):
            self._log_dir = Path(spec["run_dir"])
            self._log_dir.mkdir(parents=True, exist_ok=True)
        def set_device(self):
            self.device = torch.device("cpu")
        def prepare_configs(self):
            super().prepare_configs()
            random_seed(spec["seed"])            # the official seeds 2 + rank; ours per run
            self.curve, self.t0 = [], time.perf_counter()
        def set_model(self):
            model = official_model(config)
            model.load_state_dict(torch.load(spec["init"], weights_only=True)["model"])
            self.model = model.to(self.device)
        def set_wandb(self):
            self.wbrun = types.SimpleNamespace(log=lambda *a, **k: None)
        def minibatch_log(self, pbar, stats):
            row = {k: float(v) for k, v in stats.items()
                   if isinstance(v, (int, float)) or (torch.is_tensor(v) and v.numel() == 1)}
            row["step"] = self._cur_iter + 1
            row["seconds"] = time.perf_counter() - self.t0
            self.curve.append(row)
        def periodic_log(self, batch):
            pass
        def evaluate(self):
            self._results = {}
            if self._cur_iter < self.cfg.iterations:
                return
            # timm's EMA averages the buffers too, so the scale bound (a constant 0.11) comes out
            # as 0.10999999: save the model's own buffers with the averaged parameters
            ema = self.ema.module.state_dict()
            ema.update({k: v for k, v in self.model.state_dict().items()
                        if k not in dict(self.model.named_parameters())})
            torch.save({"model": ema}, self._log_dir / "ema.pt")
            Path(self._log_dir / "curve.json").write_text(json.dumps(self.curve))

    Run(cfg).main()
""")


def _run(cmd, env=None, cwd=REPO) -> str:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, cwd=cwd)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{r.stderr[-3000:]}")
    return r.stdout


def make_images(work: Path) -> tuple[Path, Path]:
    """The training folder (scikit-image photographs and the shared sample images, at least 128
    px) and a held-out evaluation folder (four 128×192 crops of other photographs)."""
    from PIL import Image
    from skimage import data
    train, test = work / "train", work / "test"
    train.mkdir(parents=True, exist_ok=True)
    test.mkdir(parents=True, exist_ok=True)
    photos = {n: getattr(data, n)() for n in ("astronaut", "coffee", "rocket",
                                              "immunohistochemistry")}
    photos["motorcycle_left"] = data.stereo_motorcycle()[0]
    for name, a in photos.items():
        Image.fromarray(np.asarray(a)[..., :3]).save(train / f"{name}.png")
    for p in sorted(SHARED_IMAGES.glob("*.png")):
        im = Image.open(p).convert("RGB")
        if min(im.size) >= 128:
            im.save(train / p.name)
    held_out = {n: getattr(data, n)() for n in ("hubble_deep_field", "retina", "chelsea")}
    held_out["motorcycle_right"] = data.stereo_motorcycle()[1]
    for name, a in held_out.items():
        a = np.asarray(a)[..., :3]
        h, w = a.shape[:2]
        t, l = (h - 128) // 2, (w - 192) // 2
        Image.fromarray(np.ascontiguousarray(a[t:t + 128, l:l + 192])).save(test / f"{name}.png")
    return train, test


def model_config(kind: str):
    from lvae_jax.models import zoo
    c = CONFIGS[kind]
    return getattr(zoo, c["builder"])(**c["args"])


def initial_weights(kind: str, seed: int, args, work: Path) -> tuple[Path, Path]:
    """The official initialisation (torch.manual_seed(seed)) saved as .pt and converted."""
    from lvae_jax.checkpoint.torch_io import convert_torch_to_model
    cfg = model_config(kind)
    cfg_json = work / f"{kind}.config.json"
    cfg_json.write_text(json.dumps(cfg.to_dict()))
    pt = work / f"{kind}-init{seed}.pt"
    _run([args.official_python, "-c", OFFICIAL_INIT, cfg_json, seed, pt], official_env(args.official_src))
    mdir = work / f"{kind}-init{seed}"
    if not mdir.exists():
        convert_torch_to_model(pt, mdir, model=cfg)
    return pt, mdir


def official_run(kind: str, seed: int, args, work: Path, images: Path, pt: Path) -> dict:
    c = CONFIGS[kind]
    run_dir = work / f"official-{kind}-{seed}"
    argv = ["--trainset", str(images), "--transform", f"crop={args.crop},hflip=True",
            "--batch_size", str(args.batch), "--iterations", str(args.steps),
            "--lr", str(args.lr), "--lr_sched", c["lr_sched"], "--workers", "0",
            "--model", "unused", "--ema_warmup", str(args.ema_warmup)]
    spec = {"script": str(Path(args.official_src) / c["script"]), "argv": argv, "seed": seed,
            "run_dir": str(run_dir), "init": str(pt), "threads": args.threads}
    if (run_dir / "curve.json").is_file() and (run_dir / "ema.pt").is_file():   # done before
        return {"curve": json.loads((run_dir / "curve.json").read_text()),
                "ema": str(run_dir / "ema.pt"), "wall_s": float("nan")}
    (work / "spec.json").write_text(json.dumps(spec))
    t0 = time.perf_counter()
    _run([args.official_python, "-c", OFFICIAL_TRAIN, work / "spec.json", work / f"{kind}.config.json"],
         official_env(args.official_src), cwd=work)
    curve = json.loads((run_dir / "curve.json").read_text())
    return {"curve": curve, "ema": str(run_dir / "ema.pt"), "wall_s": time.perf_counter() - t0}


def lvae_run(kind: str, seed: int, args, work: Path, images: Path, mdir: Path,
             precision: str) -> dict:
    c = CONFIGS[kind]
    run_dir = work / f"lvae-{precision}-{kind}-{seed}"
    cmd = [sys.executable, "-m", "train", "--weights", mdir, "--data-dir", images,
           "--crop", args.crop, "--batch-size", args.batch, "--iterations", args.steps,
           "--lr", args.lr, "--lr-schedule", c["lr_sched"], "--seed", seed, "--log-every", 1,
           "--ema-warmup", args.ema_warmup, "--out", run_dir, "--no-tensorboard",
           "--no-progress", "--save-every", args.steps, "--precision", precision]
    env = dict(os.environ, XLA_FLAGS=os.environ.get("XLA_FLAGS", ""))
    t0 = time.perf_counter()
    _run(cmd, env)
    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    curve = [r for r in rows if r.get("split") == "train"]
    return {"curve": curve, "model": str(run_dir / "model"), "wall_s": time.perf_counter() - t0}


def final_points(kind: str, model_dir: Path, test: Path) -> list[dict]:
    """RD points of a model at the configuration's evaluation λ: lvae-jax's forward-pass
    estimate (bpp from the rates, PSNR of the reconstruction), the same code for both sides."""
    from lvae_jax.checkpoint.model_dir import load_model
    from lvae_jax.evaluation.estimate import estimate_points
    from lvae_jax.evaluation.images import open_images
    model = load_model(model_dir)
    images = list(open_images(test))
    lambdas = list(CONFIGS[kind]["eval_lambdas"]) if model.config.variable_rate else [None]
    return [{"lmb": p.lmb, "bpp": p.mean("bpp"), "psnr": p.mean("psnr")}
            for p in estimate_points(model, images, lambdas)]


# -- summaries ------------------------------------------------------------------------------------

KEYS = {"loss": "loss", "bpp": "bppix", "psnr": "psnr"}


def smooth(curve: list[dict], key: str, steps: int, window: int) -> np.ndarray:
    """Per-step values of ``key`` averaged over windows of ``window`` steps -> (steps // window,)."""
    v = np.full(steps, np.nan)
    for r in curve:
        if key in r and 1 <= r["step"] <= steps:
            v[r["step"] - 1] = r[key]
    return np.nanmean(v[: steps // window * window].reshape(-1, window), axis=1)


def band_share(ours: np.ndarray, runs: np.ndarray, start: int) -> float:
    """Share of ``ours`` (after index ``start``) inside the min–max band of ``runs`` (S, T)."""
    lo, hi = runs.min(0)[start:], runs.max(0)[start:]
    o = ours[start:]
    return float(np.mean((o >= lo) & (o <= hi)))


def summarise(kind: str, results: dict, args) -> dict:
    window = max(1, args.steps // 40)
    start = int(math.ceil(0.1 * (args.steps // window)))
    out = {"window_steps": window, "from_step": start * window}
    off = results["official"]
    for key, name in KEYS.items():
        o = np.stack([smooth(r["curve"], name, args.steps, window) for r in off])
        out[key] = {"official": {"mean": o.mean(0).tolist(), "min": o.min(0).tolist(),
                                 "max": o.max(0).tolist()}}
        for side, runs in results.items():
            if side == "official":
                continue
            x = np.stack([smooth(r["curve"], name, args.steps, window) for r in runs])
            out[key][side] = {"mean": x.mean(0).tolist(), "min": x.min(0).tolist(),
                              "max": x.max(0).tolist(),
                              "share_of_seeds_in_official_band": [
                                  band_share(s, o, start) for s in x],
                              "mean_in_official_band": band_share(x.mean(0), o, start)}
    return out


def plot(summaries: dict, args, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    kinds = list(summaries)
    fig, axes = plt.subplots(len(kinds), 3, figsize=(13, 3.6 * len(kinds)), squeeze=False)
    colours = {"official": "tab:blue", "lvae-fp32": "tab:orange", "lvae-bf16": "tab:green"}
    for i, kind in enumerate(kinds):
        s = summaries[kind]
        for j, key in enumerate(KEYS):
            ax = axes[i][j]
            for side, c in s[key].items():
                x = (np.arange(len(c["mean"])) + 1) * s["window_steps"]
                ax.plot(x, c["mean"], color=colours.get(side), label=side)
                ax.fill_between(x, c["min"], c["max"], color=colours.get(side), alpha=0.25)
            ax.axvline(s["from_step"], color="grey", lw=0.5, ls=":")
            ax.set_title(f"{kind}: {key}")
            ax.set_xlabel("step")
            if key != "psnr":
                ax.set_yscale("log")
            ax.legend(fontsize=7)
    fig.suptitle(f"official vs lvae-jax training, {len(args.seeds)} seeds each (mean, min–max), "
                 f"{args.crop}² crops, batch {args.batch}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--official-python", required=True)
    p.add_argument("--official-src", required=True)
    p.add_argument("--models", nargs="+", choices=sorted(CONFIGS), default=["qarv", "qres"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--ema-warmup", type=int, default=10_000, help="official default 10000")
    p.add_argument("--threads", type=int, default=2, help="torch threads on the official side")
    p.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"],
                   help="lvae-jax precisions to run")
    p.add_argument("--work", help="keep the runs here (default: a temporary folder)")
    p.add_argument("--out", default="train_agreement", help="OUT.json and OUT.png")
    args = p.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="lvae_agree_"))
    train, test = make_images(work)
    report = {"args": vars(args), "models": {}}
    summaries = {}
    for kind in args.models:
        results = {"official": []} | {f"lvae-{pr}": [] for pr in args.precision}
        points = {side: [] for side in results}
        for seed in args.seeds:
            pt, mdir = initial_weights(kind, seed, args, work)
            r = official_run(kind, seed, args, work, train, pt)
            results["official"].append(r)
            ema_dir = work / f"official-{kind}-{seed}-ema"
            if not ema_dir.exists():
                from lvae_jax.checkpoint.torch_io import convert_torch_to_model
                convert_torch_to_model(r["ema"], ema_dir, model=model_config(kind))
            points["official"].append(final_points(kind, ema_dir, test))
            print(f"{kind} seed {seed} official: {r['wall_s']:.0f} s, final "
                  f"{points['official'][-1]}", flush=True)
            for pr in args.precision:
                r = lvae_run(kind, seed, args, work, train, mdir, pr)
                results[f"lvae-{pr}"].append(r)
                points[f"lvae-{pr}"].append(final_points(kind, Path(r["model"]), test))
                print(f"{kind} seed {seed} lvae-{pr}: {r['wall_s']:.0f} s, final "
                      f"{points[f'lvae-{pr}'][-1]}", flush=True)
        summaries[kind] = summarise(kind, results, args)
        report["models"][kind] = {"curves": summaries[kind], "final_points": points,
                                  "wall_s": {s: [r["wall_s"] for r in rs] for s, rs in results.items()}}
        for key in KEYS:
            for side, c in summaries[kind][key].items():
                if side != "official":
                    print(f"{kind} {key}: {side} mean curve inside the official seed band on "
                          f"{100 * c['mean_in_official_band']:.0f} % of the points after "
                          f"step {summaries[kind]['from_step']}; seeds "
                          f"{[round(100 * v) for v in c['share_of_seeds_in_official_band']]} %")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1, default=float))
    plot(summaries, args, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
