"""What a person sees of a run: a progress bar, metrics as JSON lines, TensorBoard, optionally W&B.

``RUN/metrics.jsonl`` gets one line per logging interval: ``{"step", "split": "train", ...means
over the interval}`` and one per evaluation (``"split": "eval"``). TensorBoard event files go to
``RUN/tensorboard`` (tensorboardX). Weights & Biases is imported only when asked for.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

log = logging.getLogger(__name__)


class MetricsLogger:
    """JSON lines + TensorBoard (+ W&B) for the main process; a no-op elsewhere."""

    def __init__(self, run_dir, enabled: bool = True, tensorboard: bool = True,
                 wandb: bool = False, wandb_project: str = "lvae-jax", config: dict | None = None):
        self.enabled = enabled
        self._tb = self._wb = self._jsonl = None
        if not enabled:
            return
        run_dir = Path(run_dir)
        self._jsonl = open(run_dir / "metrics.jsonl", "a", buffering=1)
        if tensorboard:
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(str(run_dir / "tensorboard"))
        if wandb:
            try:
                import wandb as wb
            except ImportError:
                raise RuntimeError("--wandb needs the wandb package (pip install wandb)") from None
            self._wb = wb.init(project=wandb_project, name=run_dir.name, dir=str(run_dir),
                               config=config, resume="allow")

    def log(self, step: int, split: str, metrics: dict) -> None:
        if not self.enabled:
            return
        clean = {k: _jsonable(v) for k, v in metrics.items()}
        self._jsonl.write(json.dumps({"step": int(step), "split": split, **clean}) + "\n")
        scalars = {f"{split}/{k}": v for k, v in clean.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, step)
        if self._wb is not None:
            self._wb.log(scalars, step=int(step))

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
        if self._wb is not None:
            self._wb.finish()


def read_metrics(run_dir, split: str = "train", key: str = "loss") -> dict[int, float]:
    """``step -> value`` of ``key`` from ``RUN/metrics.jsonl`` for one split. A resumed run
    re-logs the steps it repeats; the last line of a step wins."""
    out = {}
    for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("split") == split and key in rec:
            out[int(rec["step"])] = rec[key]
    return out


def _jsonable(v):
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class IntervalMeans:
    """Running sums of per-step metrics between two log lines."""

    def __init__(self):
        self.sums, self.count, self.t0 = {}, 0, time.perf_counter()

    def add(self, metrics: dict) -> None:
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.count += 1

    def pop(self) -> dict:
        """Means since the last pop, plus ``steps_per_s`` (wall clock)."""
        now = time.perf_counter()
        out = {k: v / max(self.count, 1) for k, v in self.sums.items()}
        out["steps_per_s"] = self.count / max(now - self.t0, 1e-9)
        self.sums, self.count, self.t0 = {}, 0, now
        return out


class ProgressBar:
    """tqdm bar over the iterations with steps/s, loss, bpp, PSNR, LR and gradient norm."""

    def __init__(self, start: int, total: int, enabled: bool = True):
        self._bar = None
        if enabled:
            from tqdm import tqdm
            self._bar = tqdm(total=total, initial=start, dynamic_ncols=True, unit="step")

    def update_to(self, step: int, means: dict | None = None) -> None:
        """Move the bar to ``step`` completed steps, showing interval means."""
        if self._bar is None:
            return
        self._bar.update(step - self._bar.n)
        if means:
            m = means
            self._bar.set_postfix_str(
                f"{m.get('steps_per_s', 0):.2f} step/s loss {m.get('loss', float('nan')):.4g} "
                f"bpp {m.get('bppix', float('nan')):.4f} psnr {m.get('psnr', float('nan')):.2f} "
                f"lr {m.get('lr', float('nan')):.3g} grad {m.get('grad_norm', float('nan')):.3g}",
                refresh=False)

    def write(self, msg: str) -> None:
        if self._bar is not None:
            self._bar.write(msg)
        else:
            log.info(msg)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
