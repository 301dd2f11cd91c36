"""Training: the official lossy-vae recipes in JAX, from one device to a pod.

    >>> from lvae_jax.training import TrainConfig, train
    >>> train(TrainConfig(model="qarv_base", data_dir="coco/train2017", eval_dir="kodak"))

Command line: ``python -m train --model qres34m --data-dir DIR`` (see ``docs/training.md``).
Modules: :mod:`~lvae_jax.training.config` (the recipe), :mod:`~lvae_jax.training.schedule`
(LR and EMA schedules), :mod:`~lvae_jax.training.state`
and :mod:`~lvae_jax.training.step` (the jitted step), :mod:`~lvae_jax.training.parallel` (mesh,
shardings, multi-host), :mod:`~lvae_jax.training.checkpoints` (Orbax),
:mod:`~lvae_jax.training.evaluation` (RD points, BD-rate), :mod:`~lvae_jax.training.metrics_log`,
:mod:`~lvae_jax.training.trainer` (the loop).
"""

from lvae_jax.training.config import TrainConfig
from lvae_jax.training.state import TrainState, init_train_state, make_optimizer
from lvae_jax.training.step import StepHyper, make_train_step, step_hyper, step_key
from lvae_jax.training.errors import TrainingError
from lvae_jax.training.trainer import TrainResult, export_run, train

__all__ = ["StepHyper", "TrainConfig", "TrainResult", "TrainState", "TrainingError", "export_run",
           "init_train_state", "make_optimizer", "make_train_step", "step_hyper", "step_key",
           "train"]
