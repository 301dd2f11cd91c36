"""Training checkpoints with Orbax's ``CheckpointManager``: asynchronous saves, the last ``k`` kept.

A checkpoint ``RUN/checkpoints/<step>/`` holds two items:

- ``state``: the whole :class:`~lvae_jax.training.state.TrainState` (parameters, optimizer state,
  EMA, step, run key, gradient-norm history, spike-guard LR multiplier);
- ``data``: JSON ``{"epoch", "index", "global_batch", "seed"}`` — where the next batch starts.

Orbax writes each checkpoint to a temporary directory and renames it when complete, so a process
killed mid-save (even by SIGKILL) leaves the previous checkpoints intact and the next run resumes
from the last complete one.

**Integrity.** Once a checkpoint is complete on disk (at the next save, or when the run waits or
stops), the sha256 of each of its files is recorded in ``RUN/checkpoints/checksums/<step>.json``.
Restoring the latest checkpoint verifies it first; a checkpoint whose files do not match (bit rot,
a partial copy) or that fails to restore (truncated) gives one warning and the newest earlier
checkpoint that verifies is used instead. A checkpoint without a record yet (the run was killed
before sealing it) is restored unverified, with a note. Restoring needs an abstract target (shapes, dtypes, shardings): the
state is restored straight into its replicated sharding on the current mesh.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import jax

from lvae_jax.data.sampler import DataPosition
from lvae_jax.training.state import TrainState

log = logging.getLogger(__name__)


from lvae_jax.checkpoint.errors import CheckpointError  # noqa: F401  (the package's one)


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

    # -- integrity ------------------------------------------------------------------------------

    def _record(self, step: int) -> Path:
        return self.directory / "checksums" / f"{int(step)}.json"

    def _digests(self, step: int) -> dict[str, str]:
        root = self.directory / str(int(step))
        out = {}
        for f in sorted(p for p in root.rglob("*") if p.is_file()):
            h = hashlib.sha256()
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 22), b""):
                    h.update(chunk)
            out[f.relative_to(root).as_posix()] = h.hexdigest()
        return out

    def _seal_complete(self) -> None:
        """Record the checksums of every complete checkpoint that has none (process 0)."""
        if jax.process_index() != 0:
            return
        for step in self.all_steps():
            rec = self._record(step)
            if rec.exists():
                continue
            rec.parent.mkdir(parents=True, exist_ok=True)
            tmp = rec.with_suffix(".tmp")
            tmp.write_text(json.dumps({"step": int(step), "sha256": self._digests(step)}))
            os.replace(tmp, rec)
        live = {str(s) for s in self.all_steps()}
        for rec in (self.directory / "checksums").glob("*.json"):
            if rec.stem not in live:           # its checkpoint was rotated out
                rec.unlink(missing_ok=True)

    def verify(self, step: int) -> bool | None:
        """True: the files match their record; False: they do not (or some are missing);
        None: no record yet."""
        rec = self._record(step)
        if not rec.is_file():
            return None
        try:
            want = json.loads(rec.read_text())["sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            return False
        return self._digests(step) == want

    def newest_good_step(self) -> int | None:
        """The newest checkpoint whose files match their checksum record (hashes them)."""
        return next((s for s in sorted(self.all_steps(), reverse=True) if self.verify(s)), None)

    def last_verified_step(self) -> int | None:
        """The newest checkpoint with a checksum record (verified when it was sealed)."""
        sealed = [s for s in self.all_steps() if self._record(s).is_file()]
        return max(sealed) if sealed else None

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: TrainState, position: DataPosition, extra: dict | None = None,
             wait: bool = False) -> None:
        """Start saving (returns once the arrays are copied off the device; writing continues in
        the background). ``wait=True`` blocks until the checkpoint is complete on disk."""
        args = self._ocp.args
        data = {**position.to_dict(), **(extra or {})}
        self.manager.wait_until_finished()     # Orbax would wait for the previous save anyway
        self._seal_complete()
        self.manager.save(int(step), args=args.Composite(
            state=args.StandardSave(state.to_dict()), data=args.JsonSave(data)), force=True)
        if wait:
            self.wait()

    def wait(self) -> None:
        self.manager.wait_until_finished()
        self._seal_complete()

    def restore(self, abstract_state: TrainState, step: int | None = None):
        """-> (state, data dict) of ``step``; by default the latest checkpoint that verifies and
        restores (falling back, with a warning, past corrupt or truncated ones). An explicit
        ``step`` must verify."""
        if step is not None:
            if self.verify(step) is False:
                raise CheckpointError(f"checkpoint {self.directory / str(step)} is corrupt: its files "
                                      "do not match their recorded sha256")
            return self._restore(abstract_state, step)
        steps = sorted(self.all_steps(), reverse=True)
        if not steps:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        problems = []
        for s in steps:
            ok = self.verify(s)
            if ok is False:
                problems.append(f"step {s}: files do not match their recorded sha256")
                log.warning("checkpoint %s is corrupt (checksum mismatch); trying an earlier one",
                            self.directory / str(s))
                continue
            try:
                out = self._restore(abstract_state, s)
            except CheckpointError:
                raise                          # does not fit the run: not a damaged file
            except Exception as e:             # truncated or damaged: Orbax raises many kinds
                problems.append(f"step {s}: {type(e).__name__}: {str(e)[:200]}")
                log.warning("checkpoint %s cannot be restored (%s); trying an earlier one",
                            self.directory / str(s), type(e).__name__)
                continue
            if ok is None:
                log.info("checkpoint step %d has no checksum record yet (the run stopped before "
                         "sealing it): restored unverified", s)
            if problems:
                log.warning("resumed from step %d; skipped: %s", s, "; ".join(problems))
            self.restored_step = s
            return out
        raise CheckpointError(f"no checkpoint in {self.directory} verifies and restores: "
                              + "; ".join(problems))

    def _restore(self, abstract_state, step: int):
        args = self._ocp.args
        try:
            restored = self.manager.restore(step, args=args.Composite(
                state=args.StandardRestore(abstract_state.to_dict()), data=args.JsonRestore()))
        except (ValueError, KeyError, TypeError) as e:
            if "shape" in str(e).lower() or "structure" in str(e).lower() or isinstance(e, KeyError):
                raise CheckpointError(f"checkpoint {self.directory / str(step)} does not fit this "
                                      f"run (model or optimizer changed?): {e}") from e
            raise
        return TrainState.from_dict(dict(restored["state"])), dict(restored["data"])

    def close(self) -> None:
        self.manager.wait_until_finished()
        self._seal_complete()
        self.manager.close()


def abstract_like(state: TrainState, sharding) -> TrainState:
    """Shapes, dtypes and ``sharding`` of every leaf (the restore target)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)
