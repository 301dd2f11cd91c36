"""The training configuration: one dataclass, saved as JSON with every run.

Defaults are the official recipes (``train-fix-rate.py`` / ``train-var-rate.py`` of lossy-vae);
the fields left ``None`` take the official value for the model's family when the run starts
(:meth:`TrainConfig.resolved`):

============================  =======================  =======================
field                         fixed rate (QRes)         variable rate (QARV, rd)
============================  =======================  =======================
``lr_schedule``               ``constant``              ``const-0.5-cos``
``iterations``                800 000                   2 000 000
``eval_every``                1 000                     2 000
``eval_lambdas``              1 (the model's λ)         8 (official ``val_steps``)
============================  =======================  =======================
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from lvae_jax.files import atomic_write_text

LR_SCHEDULES = ("constant", "cosine", "const-0.5-cos")
LOSS_WEIGHTINGS = ("official", "per-image")
PRECISIONS = ("fp32", "bf16")


@dataclass
class TrainConfig:
    # -- model --------------------------------------------------------------------------------
    model: str = "qres34m"
    #: keyword arguments of the model's config builder (``lmb=64``, ``lmb_range=(16, 2048)``,
    #: ``ch=16`` ...; see :mod:`lvae_jax.models.zoo`).
    model_args: dict = field(default_factory=dict)
    #: a JSON file of ``ModelConfig.to_dict()`` form (instead of ``model`` + ``model_args``).
    model_config_file: str | None = None
    #: a model directory (``python -m convert`` / ``save_model``) to start from; its config is used.
    weights: str | None = None

    # -- data ---------------------------------------------------------------------------------
    data_dir: str | None = None
    tfds: str | None = None
    tfds_split: str = "train"
    tfds_data_dir: str | None = None
    crop: int = 256
    hflip: bool = True
    batch_size_per_device: int = 16
    data_workers: int | None = None
    prefetch: int = 4
    check_data: bool = False

    # -- optimisation (official: Adam, lr 2e-4, no weight decay, clip 2.0) ----------------------
    iterations: int | None = None
    lr: float = 2e-4
    lr_schedule: str | None = None
    lrf_min: float = 0.01
    lr_warmup: int = 0
    #: the official trainer sets the LR only every 10 steps (``if step % 10 == 0: adjust_lr``).
    lr_update_every: int = 10
    grad_clip: float = 2.0
    #: how the images of a batch weigh in the gradient. "official": the batch mean of
    #: ``R_n + λ_n·D_n`` (the official trainers). "per-image": each image's term divided by its
    #: own (stop-gradient) value, times the batch mean — the same loss value and, per image, the
    #: same optimum, but every image pulls with comparable strength, where the official mean lets
    #: the large-λ images of a variable-rate batch (λ·D up to ~100× the rate) drown the small-λ
    #: ones; a short variable-rate run then learns its λ conditioning (docs/training.md).
    loss_weighting: str = "official"
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    adam_eps: float = 1e-8
    #: spike guard: a step whose gradient norm exceeds ``spike_factor`` × the median of the last
    #: ``spike_window`` norms (itself included) runs at ``spike_lr_scale`` × LR and skips the EMA.
    spike_factor: float = 10.0
    spike_window: int = 100
    spike_lr_scale: float = 0.1
    #: "fp32" (default, the official arithmetic) or "bf16" mixed precision: parameters, optimizer
    #: state and EMA stay float32; the forward and backward passes (convolutions, matmuls,
    #: activations) run in bfloat16; what lvae_jax.numerics pins (rates, likelihood bounds, the
    #: distortion) is computed in float32 (lvae_jax.training.precision).
    precision: str = "fp32"
    ema: bool = True
    ema_decay: float = 0.9999
    ema_warmup: int = 10_000
    seed: int = 0

    # -- evaluation ---------------------------------------------------------------------------
    eval_dir: str | None = None
    eval_every: int | None = None
    eval_lambdas: int | None = None
    #: which weights to evaluate: "ema", "params" or "both".
    eval_weights: str = "ema"
    #: anchor RD curve (JSON) for BD-rate; default: the VTM 18.0 curve of a known test set.
    eval_anchor: str | None = None
    eval_first: bool = False

    # -- run ----------------------------------------------------------------------------------
    run_dir: str = "runs/default"
    save_every: int = 1000
    keep_checkpoints: int = 3
    log_every: int = 10
    tensorboard: bool = True
    wandb: bool = False
    wandb_project: str = "lvae-jax"
    progress: bool = True
    #: XLA compiler options for the jitted step and evaluation (``jax.jit(compiler_options=)``),
    #: e.g. ``{"xla_backend_optimization_level": 0}`` to compile faster for quick experiments.
    compiler_options: dict = field(default_factory=dict)
    distributed: bool = False
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None

    # -------------------------------------------------------------------------------------------

    #: fields a resumed run may change (everything else must match the saved run).
    RESUMABLE_CHANGES = frozenset({
        "iterations", "eval_dir", "eval_every", "eval_lambdas", "eval_weights", "eval_anchor",
        "save_every", "keep_checkpoints", "log_every", "tensorboard", "wandb", "wandb_project",
        "progress", "data_workers", "prefetch", "check_data", "distributed",
        "coordinator_address", "num_processes", "process_id", "tfds_data_dir", "data_dir",
        "run_dir", "eval_first", "compiler_options"})

    def validate(self) -> "TrainConfig":
        if (self.data_dir is None) == (self.tfds is None):
            raise ValueError("give exactly one of --data-dir DIR or --tfds NAME (e.g. coco/2017)")
        if self.lr_schedule is not None and self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"loss_weighting must be one of {LOSS_WEIGHTINGS}, "
                             f"got {self.loss_weighting!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.eval_weights not in ("ema", "params", "both"):
            raise ValueError("eval_weights must be ema, params or both")
        if self.eval_weights != "params" and not self.ema:
            self.eval_weights = "params"
        for name in ("batch_size_per_device", "crop", "save_every", "keep_checkpoints",
                     "log_every", "lr_update_every", "spike_window"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.crop % 64:
            raise ValueError(f"crop must be a multiple of 64 (the models' stride), got {self.crop}")
        if self.model_config_file and self.weights:
            raise ValueError("--model-config and --weights both define the model; give one")
        return self

    def resolved(self, variable_rate: bool) -> "TrainConfig":
        """Fill the family-dependent defaults (see the module docstring)."""
        c = dataclasses.replace(self)
        if c.lr_schedule is None:
            c.lr_schedule = "const-0.5-cos" if variable_rate else "constant"
        if c.iterations is None:
            c.iterations = 2_000_000 if variable_rate else 800_000
        if c.eval_every is None:
            c.eval_every = 2000 if variable_rate else 1000
        if c.eval_lambdas is None:
            c.eval_lambdas = 8 if variable_rate else 1
        return c.validate()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown training config fields: {unknown}")
        return cls(**d)

    def save(self, path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1, default=list))

    @classmethod
    def load(cls, path) -> "TrainConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))
