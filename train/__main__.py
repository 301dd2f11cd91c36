"""Train an lvae-jax model with the official lossy-vae recipes.

examples:
  python -m train --model qres34m --lmb 64 --tfds coco/2017             # fixed rate, all local devices
  python -m train --model qarv_base --data-dir /data/coco/train2017 --tpu   # every device of every host
  python -m train --model qarv_base --data-dir DIR --eval-dir ~/kodak --out runs/qarv
  python -m train --out runs/qarv --resume                      # continue after preemption / Ctrl-C
  python -m train --model qarv_base --model-arg ch=32 embed_dim=64 --data-dir DIR   # narrower variant
  python -m train --config model_config.json --data-dir DIR     # a model configuration file
  python -m train --weights qarv_base_jax --data-dir DIR --iterations 20000        # fine-tune
  python -m train --export runs/qarv                            # checkpoint -> model directory
"""

from __future__ import annotations

import argparse
import ast
import logging
import sys

EPILOG = """\
defaults follow the official recipes: Adam lr 2e-4 (no weight decay), gradient clipping at 2.0,
spike guard (norm > 10x the median of the last 100: LR x0.1, no EMA update), EMA 0.9999 warmed up
over 10k steps, batch 16 per device, random 256x256 crops and horizontal flips; fixed rate:
constant LR, 800k iterations, evaluation every 1000; variable rate: 'const-0.5-cos' LR
(lrf_min 0.01), 2M iterations, evaluation every 2000 at 8 λ. See docs/training.md.
"""


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _key_values(items) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"error: expected KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = _literal(v.strip())
    return out


def build_parser() -> argparse.ArgumentParser:
    S = argparse.SUPPRESS
    p = argparse.ArgumentParser(prog="python -m train", description=__doc__,
                                epilog=EPILOG, argument_default=S,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    m = p.add_argument_group("model")
    m.add_argument("--model", metavar="NAME", help="qres34m (default), qres34m_lossless, qres17m, "
                                                   "qarv_base or rd_model_base")
    m.add_argument("--model-arg", "--config-override", dest="model_arg", nargs="+", action="extend",
                   metavar="KEY=VALUE",
                   help="model builder arguments, e.g. lmb=64, lmb_range=(16,2048), ch=16, "
                        "enc_nums=(1,1,1,1,1) (see lvae_jax.models.zoo)")
    m.add_argument("--lmb", type=float, metavar="λ", help="QRes λ (same as --model-arg lmb=...)")
    m.add_argument("--lmb-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="QARV/rd λ range (same as --model-arg lmb_range=...)")
    m.add_argument("--config", "--model-config", dest="model_config_file", metavar="JSON",
                   help="a model configuration file instead of --model/--model-arg: "
                        "ModelConfig.to_dict() JSON, a run's model_config.json or a model "
                        "directory's lvae_model.json (e.g. a reduced-width variant)")
    m.add_argument("--weights", metavar="DIR",
                   help="start from a model directory (python -m convert / save_model); "
                        "its config is used")
    d = p.add_argument_group("data")
    src = d.add_mutually_exclusive_group()
    src.add_argument("--data-dir", metavar="DIR", help="folder of training images (recursive)")
    src.add_argument("--tfds", metavar="NAME", help="TFDS dataset, e.g. coco/2017 (ArrayRecord)")
    d.add_argument("--tfds-split", metavar="SPLIT", help="default train")
    d.add_argument("--tfds-data-dir", metavar="DIR", help="TFDS data directory")
    d.add_argument("--crop", type=int, metavar="PX", help="random square crop (default 256; a "
                   "multiple of 64)")
    d.add_argument("--no-hflip", dest="hflip", action="store_false", help="no random flips")
    d.add_argument("--batch-size", "--batch-size-per-device", dest="batch_size_per_device",
                   type=int, metavar="N", help="images per device per step (default 16, the official "
                                  "per-GPU batch); the global batch is this x all devices")
    d.add_argument("--data-workers", type=int, metavar="N", help="decoding threads per process")
    d.add_argument("--prefetch", type=int, metavar="N", help="batches kept ready (default 4)")
    d.add_argument("--check-data", action="store_true", help="open every image header first")
    o = p.add_argument_group("optimisation")
    o.add_argument("--iterations", type=int, metavar="N",
                   help="training steps (default 800k fixed rate, 2M variable rate)")
    o.add_argument("--lr", type=float, help="base learning rate (default 2e-4)")
    o.add_argument("--lr-schedule", choices=["constant", "cosine", "const-0.5-cos"],
                   help="default constant (fixed rate), const-0.5-cos (variable rate)")
    o.add_argument("--lrf-min", type=float, metavar="F",
                   help="final LR factor of the cosine part (default 0.01)")
    o.add_argument("--lr-warmup", type=int, metavar="N", help="linear warm-up steps (default 0)")
    o.add_argument("--grad-clip", type=float, metavar="NORM", help="global-norm clipping (default 2.0)")
    o.add_argument("--no-ema", dest="ema", action="store_false", help="no EMA weights")
    o.add_argument("--ema-decay", type=float, metavar="D", help="default 0.9999")
    o.add_argument("--ema-warmup", type=int, metavar="N",
                   help="decay x (1 - exp(-step/N)) (default 10000)")
    o.add_argument("--seed", type=int, metavar="N", help="initialisation, λ sampling, noise and data order "
                                             "(default 0)")
    e = p.add_argument_group("evaluation")
    e.add_argument("--eval-dir", metavar="DIR", help="image folder for periodic RD evaluation")
    e.add_argument("--eval-every", type=int, metavar="N",
                   help="evaluation interval in steps (default 1000 fixed, 2000 variable rate)")
    e.add_argument("--eval-lambdas", type=int, metavar="N", help="λ count for variable-rate models (default 8)")
    e.add_argument("--eval-weights", choices=["ema", "params", "both"], help="default ema")
    e.add_argument("--eval-anchor", metavar="JSON", help="anchor RD curve for BD-rate (default: VTM 18.0 when "
                                                          "the folder is Kodak, Tecnick or CLIC)")
    e.add_argument("--eval-first", action="store_true", help="also evaluate before step 1")
    r = p.add_argument_group("run")
    r.add_argument("--out", "--run-dir", dest="run_dir", metavar="DIR",
                   help="run directory: config, checkpoints, logs, final model "
                        "(default runs/<model>)")
    r.add_argument("--resume", action="store_true", help="continue the run in --out from its latest "
                   "complete checkpoint (only operational options may change)")
    r.add_argument("--ckpt-every", "--save-every", dest="save_every", type=int, metavar="N",
                   help="checkpoint interval in steps (default 1000; also on SIGTERM/SIGINT)")
    r.add_argument("--keep", "--keep-checkpoints", dest="keep_checkpoints", type=int, metavar="K",
                   help="checkpoints kept (default 3)")
    r.add_argument("--log-every", type=int, metavar="N",
                   help="metrics line interval in steps (default 10)")
    r.add_argument("--no-tensorboard", dest="tensorboard", action="store_false",
                   help="no TensorBoard events (RUN/tensorboard)")
    r.add_argument("--wandb", action="store_true", help="also log to Weights & Biases")
    r.add_argument("--wandb-project", metavar="NAME")
    r.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar")
    r.add_argument("--tpu", "--distributed", dest="distributed", action="store_true",
                   help="jax.distributed.initialize() and use every device of every host")
    r.add_argument("--coordinator-address", metavar="HOST:PORT",
                   help="jax.distributed by hand (auto-detected on TPU pods and SLURM)")
    r.add_argument("--num-processes", type=int, metavar="N")
    r.add_argument("--process-id", type=int, metavar="I")
    r.add_argument("--compiler-option", dest="compiler_option", nargs="+", action="extend",
                   metavar="KEY=VALUE", help="XLA compiler options for the jitted step, e.g. "
                                             "xla_backend_optimization_level=0 (compiles faster)")
    r.add_argument("--export", metavar="RUN_DIR",
                   help="write the EMA weights of RUN_DIR's latest checkpoint as a model directory")
    r.add_argument("--export-out", metavar="DIR", help="default RUN_DIR/model")
    return p


def config_from_args(args: argparse.Namespace):
    """-> (TrainConfig, resume). With --resume the saved configuration is the base and only the
    options given on the command line change it."""
    from pathlib import Path

    from lvae_jax.training.config import TrainConfig
    from lvae_jax.training.trainer import TRAIN_CONFIG_FILE
    given = dict(vars(args))
    resume = given.pop("resume", False)
    model_args = _key_values(given.pop("model_arg", None))
    if "lmb" in given:
        model_args["lmb"] = given.pop("lmb")
    if "lmb_range" in given:
        model_args["lmb_range"] = tuple(given.pop("lmb_range"))
    if model_args:
        given["model_args"] = model_args
    if "compiler_option" in given:
        given["compiler_options"] = _key_values(given.pop("compiler_option"))
    given.pop("export", None)
    given.pop("export_out", None)
    if resume:
        run_dir = Path(given.get("run_dir", f"runs/{given.get('model', 'qres34m')}"))
        saved = run_dir / TRAIN_CONFIG_FILE
        if not saved.is_file():
            raise SystemExit(f"error: cannot resume: {saved} does not exist")
        base = TrainConfig.load(saved).to_dict()
        base.update(given, run_dir=str(run_dir))
        return TrainConfig.from_dict(base), True
    given.setdefault("run_dir", f"runs/{given.get('model', 'qres34m')}")
    return TrainConfig.from_dict(given), False


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    for noisy in ("absl", "jax._src", "orbax", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    import os
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):  # else JAX's own setting stands
        from lvae_jax.runtime import enable_compilation_cache
        enable_compilation_cache()  # a resumed run skips recompiling its step
    if getattr(args, "export", None):
        from lvae_jax.training import export_run
        print(export_run(args.export, getattr(args, "export_out", None)))
        return 0
    from lvae_jax.data import DataError
    from lvae_jax.training import TrainingError, train
    from lvae_jax.training.checkpoints import CheckpointError
    try:
        cfg, resume = config_from_args(args)
        result = train(cfg, resume=resume)
    except (DataError, TrainingError, CheckpointError, ValueError, KeyError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C: no checkpoint of the current step
        print("aborted; the last complete checkpoint is kept (continue with --resume)",
              file=sys.stderr)
        return 130
    print(f"{result.status} at step {result.step}; run: {result.run_dir}"
          + (f"; model: {result.model_dir}" if result.model_dir else ""))
    return 0 if result.status == "finished" else 3


if __name__ == "__main__":
    sys.exit(main())
