"""Train an lvae-jax model with the official lossy-vae recipes.

examples:
  python -m train --model qres34m --lmb 64 --tfds coco/2017             # fixed rate, all local devices
  python -m train --model qarv_base --data-dir /data/coco/train2017 --tpu   # every device of every host
  python -m train --model qarv_base --data-dir DIR --eval-dir ~/kodak --out runs/qarv
  python -m train --out runs/qarv --resume                      # continue after preemption / Ctrl-C
  python -m train --model qarv_base --model-arg ch=32 embed_dim=64 --data-dir DIR   # narrower variant
  python -m train --config model_config.json --data-dir DIR     # a model configuration file
  python -m train --weights qarv_base --data-dir DIR --iterations 20000   # fine-tune the official weights
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


#: How each field of :class:`~lvae_jax.training.config.TrainConfig` appears on the command line:
#: field -> (group, other spellings, metavar, help). The flags themselves are derived from the
#: dataclass (``--field-name``, the type and choices of its default, ``--no-X`` for a field that
#: defaults to True): a new field is a new flag. Fields absent here get a generic help line.
FLAGS = {
    "model": ("model", (), "NAME", "qres34m (default), qres34m_lossless, qres17m, qarv_base or "
                                   "rd_model_base"),
    "model_args": ("model", ("--model-arg", "--config-override"), "KEY=VALUE",
                   "model builder arguments, e.g. lmb=64, lmb_range=(16,2048), ch=16, "
                   "enc_nums=(1,1,1,1,1) (see lvae_jax.models.zoo)"),
    "model_config_file": ("model", ("--config", "--model-config"), "JSON",
                          "a model configuration file instead of --model/--model-arg: "
                          "ModelConfig.to_dict() JSON, a run's model_config.json or a model "
                          "directory's lvae_model.json (e.g. a reduced-width variant)"),
    "weights": ("model", (), "DIR|NAME", "start from a model directory (python -m convert / "
                                         "save_model), or an official model's weights "
                                         "(qarv_base, qres34m-lmb64, …; downloaded and "
                                         "converted once); its config is used"),
    "data_dir": ("data", (), "DIR", "folder of training images (recursive)"),
    "tfds": ("data", (), "NAME", "TFDS dataset, e.g. coco/2017 (ArrayRecord)"),
    "tfds_split": ("data", (), "SPLIT", "default train"),
    "tfds_data_dir": ("data", (), "DIR", "TFDS data directory"),
    "crop": ("data", (), "PX", "random square crop (default 256; a multiple of 64)"),
    "hflip": ("data", (), None, "no random flips"),
    "batch_size_per_device": ("data", ("--batch-size",), "N",
                              "images per device per step (default 16, the official per-GPU "
                              "batch); the global batch is this x all devices"),
    "data_workers": ("data", (), "N", "reading threads per process"),
    "prefetch": ("data", (), "N", "batches read ahead (default 4)"),
    "check_data": ("data", (), None, "open every image header first"),
    "iterations": ("optimisation", (), "N",
                   "training steps (default 800k fixed rate, 2M variable rate)"),
    "lr": ("optimisation", (), "LR", "base learning rate (default 2e-4)"),
    "lr_schedule": ("optimisation", (), None,
                    "default constant (fixed rate), const-0.5-cos (variable rate)"),
    "lrf_min": ("optimisation", (), "F", "final LR factor of the cosine part (default 0.01)"),
    "lr_warmup": ("optimisation", (), "N", "linear warm-up steps (default 0)"),
    "lr_update_every": ("optimisation", (), "N",
                        "steps between LR updates (default 10, as the official trainer)"),
    "grad_clip": ("optimisation", (), "NORM", "global-norm clipping (default 2.0)"),
    "loss_weighting": ("optimisation", (), None,
                       "'official' (default): the batch mean of R + λD; 'per-image': each image "
                       "reweighted by the inverse of its own loss (same loss value and per-image "
                       "optimum; helps a short variable-rate run learn its λ conditioning)"),
    "precision": ("optimisation", (), None,
                  "fp32 (default) or bf16: bfloat16 convolutions, matmuls and activations, "
                  "float32 parameters, optimizer state, EMA and rate terms"),
    "adam_b1": ("optimisation", (), "B1", "Adam β1 (default 0.9)"),
    "adam_b2": ("optimisation", (), "B2", "Adam β2 (default 0.999)"),
    "adam_eps": ("optimisation", (), "EPS", "Adam ε (default 1e-8)"),
    "spike_factor": ("optimisation", (), "F", "spike guard: a step whose gradient norm exceeds F "
                                              "x the running median (default 10) ..."),
    "spike_window": ("optimisation", (), "N", "... of the last N norms (default 100) ..."),
    "spike_lr_scale": ("optimisation", (), "S", "... runs at S x the LR and skips the EMA "
                                                "(default 0.1)"),
    "ema": ("optimisation", (), None, "no EMA weights"),
    "ema_decay": ("optimisation", (), "D", "default 0.9999"),
    "ema_warmup": ("optimisation", (), "N", "decay x (1 - exp(-step/N)) (default 10000)"),
    "seed": ("optimisation", (), "N",
             "initialisation, λ sampling, noise and data order (default 0)"),
    "eval_dir": ("evaluation", (), "DIR", "image folder for periodic RD evaluation"),
    "eval_every": ("evaluation", (), "N",
                   "evaluation interval in steps (default 1000 fixed, 2000 variable rate)"),
    "eval_lambdas": ("evaluation", (), "N", "λ count for variable-rate models (default 8)"),
    "eval_weights": ("evaluation", (), None, "default ema"),
    "eval_anchor": ("evaluation", (), "JSON|NAME",
                    "anchor RD curve for BD-rate: a JSON file or a packaged name such as "
                    "kodak/vtm18.0 (default: VTM 18.0 when the folder is Kodak, Tecnick or CLIC)"),
    "eval_first": ("evaluation", (), None, "also evaluate before step 1"),
    "run_dir": ("run", ("--out",), "DIR",
                "run directory: config, checkpoints, logs, final model (default runs/<model>)"),
    "save_every": ("run", ("--ckpt-every",), "N",
                   "checkpoint interval in steps (default 1000; also on SIGTERM/SIGINT)"),
    "keep_checkpoints": ("run", ("--keep",), "K", "checkpoints kept (default 3)"),
    "log_every": ("run", (), "N", "metrics line interval in steps (default 10)"),
    "tensorboard": ("run", (), None, "no TensorBoard events (RUN/tensorboard)"),
    "wandb": ("run", (), None, "also log to Weights & Biases"),
    "wandb_project": ("run", (), "NAME", "Weights & Biases project (default lvae-jax)"),
    "progress": ("run", (), None, "no progress bar"),
    "compiler_options": ("run", ("--compiler-option",), "KEY=VALUE",
                         "XLA compiler options for the jitted step, e.g. "
                         "xla_backend_optimization_level=0 (compiles faster)"),
    "distributed": ("run", ("--tpu",), None,
                    "jax.distributed.initialize() and use every device of every host"),
    "coordinator_address": ("run", (), "HOST:PORT",
                            "jax.distributed by hand (auto-detected on TPU pods and SLURM)"),
    "num_processes": ("run", (), "N", "processes of a jax.distributed run"),
    "process_id": ("run", (), "I", "this process's index in a jax.distributed run"),
}

#: Choices of the string fields that have them.
CHOICES = {"lr_schedule": "LR_SCHEDULES", "loss_weighting": "LOSS_WEIGHTINGS",
           "precision": "PRECISIONS",
           "eval_weights": None}
GROUPS = ("model", "data", "optimisation", "evaluation", "run")


def field_args() -> list:
    """One argparse argument per TrainConfig field: (group, flags, kwargs)."""
    import dataclasses

    from lvae_jax.training import config as C
    out = []
    for f in dataclasses.fields(C.TrainConfig):
        grp, other, metavar, help_ = FLAGS.get(f.name, ("run", (), None, f"TrainConfig.{f.name}"))
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kw: dict = {"dest": f.name, "help": help_}
        if isinstance(default, bool):
            kw["action"] = "store_false" if default else "store_true"
            flags = (("--no-" + f.name.replace("_", "-")) if default else flag, *other)
        elif isinstance(default, dict):
            kw.update(nargs="+", action="extend", metavar=metavar or "KEY=VALUE")
            flags = (flag, *other)
        else:
            ann = str(f.type)
            kw["type"] = int if ann.startswith("int") else float if ann.startswith("float") else str
            if f.name in CHOICES:
                kw["choices"] = (getattr(C, CHOICES[f.name]) if CHOICES[f.name]
                                 else ("ema", "params", "both"))
            elif metavar:
                kw["metavar"] = metavar
            flags = (flag, *other)
        # the first spelling shown is the short one where there is one (--out, --tpu ...)
        if other and kw.get("action") != "store_false" and len(other[0]) < len(flag):
            flags = (*other, flag)
        out.append((grp, tuple(dict.fromkeys(flags)), kw))
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train", description=__doc__,
                                epilog=EPILOG, argument_default=argparse.SUPPRESS,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    groups = {g: p.add_argument_group(g) for g in GROUPS}
    source = groups["data"].add_mutually_exclusive_group()
    for grp, flags, kw in field_args():
        (source if kw["dest"] in ("data_dir", "tfds") else groups[grp]).add_argument(*flags, **kw)
        if kw["dest"] == "model":
            groups["model"].add_argument("--lmb", type=float, metavar="λ",
                                         help="QRes λ (same as --model-arg lmb=...)")
            groups["model"].add_argument("--lmb-range", type=float, nargs=2,
                                         metavar=("LOW", "HIGH"),
                                         help="QARV/rd λ range (same as --model-arg "
                                              "lmb_range=...)")
    r = groups["run"]
    r.add_argument("--resume", action="store_true", help="continue the run in --out from its "
                   "latest complete checkpoint (only operational options may change)")
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
    model_args = _key_values(given.pop("model_args", None))
    if "lmb" in given:
        model_args["lmb"] = given.pop("lmb")
    if "lmb_range" in given:
        model_args["lmb_range"] = tuple(given.pop("lmb_range"))
    if model_args:
        given["model_args"] = model_args
    if "compiler_options" in given:
        given["compiler_options"] = _key_values(given.pop("compiler_options"))
    given.pop("export", None)
    given.pop("export_out", None)
    if resume:
        from lvae_jax.training.trainer import resume_config
        run_dir = Path(given.pop("run_dir", f"runs/{given.get('model', 'qres34m')}"))
        if not (run_dir / TRAIN_CONFIG_FILE).is_file():
            raise SystemExit(f"error: cannot resume: {run_dir / TRAIN_CONFIG_FILE} does not exist")
        return resume_config(run_dir, given), True   # a non-resumable change: TrainingError
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
        from lvae_jax.commands import load_plugins
        from lvae_jax.training import export_run
        load_plugins()
        print(export_run(args.export, getattr(args, "export_out", None)))
        return 0
    from lvae_jax.data import DataError
    from lvae_jax.training import TrainingError, train
    from lvae_jax.training.checkpoints import CheckpointError
    from lvae_jax.commands import load_plugins
    try:
        load_plugins()          # a research fork's blocks and models (LVAE_PLUGINS)
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
