"""Training checkpoints with Orbax's ``CheckpointManager``: asynchronous saves, the last ``k`` kept.

A checkpoint ``RUN/checkpoints/<step>/`` holds two items:

- ``state``: the whole :class:`~lvae_jax.training.state.TrainState` (parameters, optimizer state,
  EMA, step, run key, gradient-norm history, spike-guard LR multiplier);
- ``data``: JSON ``{"epoch", "index", "global_batch", "seed"}`` — where the next batch starts.

Orbax writes each checkpoint to a temporary directory and renames it when complete, so a process
killed mid-save (even by SIGKILL) leaves the previous checkpoints intact and the next run resumes
from the last complete one. Restoring needs an abstract target (shapes, dtypes, shardings): the
state is restored straight into its replicated sharding on the current mesh.
"""

from __future__ import annotations

import logging
from pathlib import Path

import jax

from lvae_jax.data.sampler import DataPosition
from lvae_jax.training.state import TrainState

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A training checkpoint is missing or does not fit the run."""


class TrainCheckpointer:
    """Save and restore (state, data position) under ``directory``."""

    def __init__(self, directory, keep: int = 3, async_save: bool = True):
        import orbax.checkpoint as ocp
        self._ocp = ocp
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "data"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: TrainState, position: DataPosition, extra: dict | None = None,
             wait: bool = False) -> None:
        """Start saving (returns once the arrays are copied off the device; writing continues in
        the background). ``wait=True`` blocks until the checkpoint is complete on disk."""
        args = self._ocp.args
        data = {**position.to_dict(), **(extra or {})}
        self.manager.save(int(step), args=args.Composite(
            state=args.StandardSave(state.to_dict()), data=args.JsonSave(data)), force=True)
        if wait:
            self.wait()

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def restore(self, abstract_state: TrainState, step: int | None = None):
        """-> (state, data dict) of ``step`` (default: the latest complete checkpoint)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        args = self._ocp.args
        try:
            restored = self.manager.restore(step, args=args.Composite(
                state=args.StandardRestore(abstract_state.to_dict()), data=args.JsonRestore()))
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"checkpoint {self.directory / str(step)} does not fit this "
                                  f"run (model or optimizer changed?): {e}") from e
        return TrainState.from_dict(dict(restored["state"])), dict(restored["data"])

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_like(state: TrainState, sharding) -> TrainState:
    """Shapes, dtypes and ``sharding`` of every leaf (the restore target)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)
