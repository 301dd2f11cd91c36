"""The training input pipeline on Grain: augmented batches, deterministic and resumable.

A ``grain.MapDataset`` over this process's example slots — slot ``j`` is row ``rows[j % R]`` of
global batch ``b0 + j // R`` (``R`` rows per process) — maps each slot to its record and its
augmentation seed (:class:`~lvae_jax.data.sampler.EpochSampler`), then loads and augments it;
``to_iter_dataset`` reads ahead on ``workers`` threads (Pillow and numpy release the GIL) and the
examples are stacked into (R, crop, crop, 3) uint8 NHWC batches. Random access is what makes the
position exact: a resumed loader is the same dataset started at the saved batch, so it yields the
batches the uninterrupted run would have read, however the global batch is split over processes.
``loader.position`` is where the next batch starts: save it with a checkpoint and pass it back as
``position=``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import grain
import numpy as np

from lvae_jax.data.augment import random_crop_flip
from lvae_jax.data.sampler import DataPosition, EpochSampler

#: Slots of the (lazy, random-access) dataset: ~4.6e18 examples, far beyond any run.
_SLOTS = 2 ** 62


@dataclass(frozen=True)
class Reading:
    """How a loader reads: ``workers`` reading threads (None: up to 8, one per core) and
    ``prefetch`` batches read ahead."""
    workers: int | None = None
    prefetch: int = 4


class TrainLoader:
    """Infinite iterator of augmented batches.

    Args:
      source: an image source (``len``, ``source[i] -> (H, W, 3) uint8``).
      global_batch: images per step over all processes.
      crop: output side (random crop, reflect-padded if the image is smaller).
      hflip: random horizontal flips.
      seed: data seed (shuffling and augmentation).
      position: where to start (default: the beginning of epoch 0).
      rows: this process's rows of every global batch (default: all).
      reading: :class:`Reading` (threads, batches read ahead).
    """

    def __init__(self, source, global_batch: int, crop: int = 256, hflip: bool = True,
                 seed: int = 0, position: DataPosition | None = None, rows: slice | None = None,
                 reading: Reading = Reading()):
        self.source, self.crop, self.hflip = source, int(crop), bool(hflip)
        self.sampler = EpochSampler(len(source), global_batch, seed)
        self.rows = range(global_batch)[rows or slice(0, global_batch)]
        if len(self.rows) == 0:
            raise ValueError(f"no rows of the global batch ({global_batch}) for this process")
        self._first = self.sampler.batch_number(position or DataPosition())
        self._taken = 0
        workers = reading.workers or min(8, os.cpu_count() or 1)
        prefetch = reading.prefetch
        n_rows = len(self.rows)
        dataset = (grain.MapDataset.range(0, _SLOTS)
                   .map(self._example)
                   .to_iter_dataset(grain.ReadOptions(
                       num_threads=workers, prefetch_buffer_size=max(1, int(prefetch)) * n_rows))
                   .batch(n_rows, drop_remainder=True))
        self._iter = iter(dataset)

    @property
    def position(self) -> DataPosition:
        """Where the next batch starts (the position after the last batch returned)."""
        return self.sampler.position_of(self._first + self._taken)

    def _example(self, slot: int) -> np.ndarray:
        n_rows = len(self.rows)
        record, seed = self.sampler.example(self._first + slot // n_rows, self.rows[slot % n_rows])
        return random_crop_flip(self.source[record], self.crop, self.hflip,
                                np.random.default_rng(list(seed)))

    def __iter__(self):
        return self

    def __next__(self) -> np.ndarray:
        if self._iter is None:
            raise StopIteration
        batch = next(self._iter)
        self._taken += 1
        return batch

    def close(self):
        """Stop the reading threads (work read ahead is dropped)."""
        if self._iter is not None:
            it, self._iter = self._iter, None
            close = getattr(it, "close", None)
            if close is not None:
                close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
