"""Deterministic epoch sampling with a resumable position.

Epoch ``e`` visits the records in the order ``permutation_e = default_rng([seed, e]).permutation(n)``
(a fresh shuffle per epoch, like ``DataLoader(shuffle=True)``). A *global* batch is ``B``
consecutive entries of that order; an epoch ends when fewer than ``B`` remain (``drop_last=True``,
as in the official loader). The position of the next batch is ``(epoch, index)``; it is saved with
every checkpoint so that a resumed run reads exactly the batches an uninterrupted run would.

Every example's augmentation seed is ``[seed, epoch, index + k]`` (``k`` its row in the global
batch), so the global batch is the same however it is split over processes and devices.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class DataPosition:
    """Where the next global batch starts: ``index`` into epoch ``epoch``'s permutation."""
    epoch: int = 0
    index: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DataPosition":
        return cls(int(d["epoch"]), int(d["index"]))


class EpochSampler:
    """Global batches of record indices over ``num_records`` records."""

    def __init__(self, num_records: int, global_batch: int, seed: int):
        if num_records < global_batch:
            raise ValueError(f"the dataset has {num_records} images, fewer than one global batch "
                             f"({global_batch}); use a smaller batch or more images")
        self.n, self.batch, self.seed = int(num_records), int(global_batch), int(seed)
        self._cache: tuple[int, np.ndarray] | None = None

    @property
    def batches_per_epoch(self) -> int:
        return self.n // self.batch

    def permutation(self, epoch: int) -> np.ndarray:
        if self._cache is None or self._cache[0] != epoch:
            self._cache = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n))
        return self._cache[1]

    def normalise(self, pos: DataPosition) -> DataPosition:
        """Move to the next epoch when fewer than a batch of records remain."""
        if pos.index + self.batch > self.n:
            return DataPosition(pos.epoch + 1, 0)
        return pos

    def batch_at(self, pos: DataPosition, rows: slice | None = None):
        """-> (records, augmentation seeds, next position) of the global batch at ``pos``
        (normalised); ``rows`` selects this process's rows of it."""
        pos = self.normalise(pos)
        rows = rows or slice(0, self.batch)
        ks = range(self.batch)[rows]
        perm = self.permutation(pos.epoch)
        records = [int(perm[pos.index + k]) for k in ks]
        seeds = [(self.seed, pos.epoch, pos.index + k) for k in ks]
        return records, seeds, DataPosition(pos.epoch, pos.index + self.batch)
