"""Deterministic epoch sampling with a resumable position.

Epoch ``e`` visits the records in the order ``permutation_e = default_rng([seed, e]).permutation(n)``
(a fresh shuffle per epoch, like ``DataLoader(shuffle=True)``). A *global* batch is ``B``
consecutive entries of that order; an epoch ends when fewer than ``B`` remain (``drop_last=True``,
as in the official loader). The position of the next batch is ``(epoch, index)``; it is saved with
every checkpoint so that a resumed run reads exactly the batches an uninterrupted run would.

Every example's augmentation seed is ``[seed, epoch, index + k]`` (``k`` its row in the global
batch), so the global batch is the same however it is split over processes and devices.

Global batches are also numbered, ``b = epoch · batches_per_epoch + index / B``: the loader is a
random-access dataset over ``b`` (:meth:`EpochSampler.example`), and the position is its number.
"""

from __future__ import annotations

import functools
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

    @property
    def batches_per_epoch(self) -> int:
        return self.n // self.batch

    def permutation(self, epoch: int) -> np.ndarray:
        return _permutation(self.n, self.seed, int(epoch))

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

    # -- random access by global batch number (the loader) ---------------------------------------
    def batch_number(self, pos: DataPosition) -> int:
        """The number of the global batch at ``pos`` (normalised)."""
        pos = self.normalise(pos)
        if pos.index % self.batch:
            raise ValueError(f"data position {pos} is not at a batch boundary of {self.batch}")
        return pos.epoch * self.batches_per_epoch + pos.index // self.batch

    def position_of(self, number: int) -> DataPosition:
        """The position of global batch ``number`` (inverse of :meth:`batch_number`)."""
        epoch, b = divmod(int(number), self.batches_per_epoch)
        return DataPosition(epoch, b * self.batch)

    def example(self, number: int, row: int) -> tuple[int, tuple[int, int, int]]:
        """-> (record, augmentation seed) of row ``row`` of global batch ``number``."""
        pos = self.position_of(number)
        return int(self.permutation(pos.epoch)[pos.index + row]), (self.seed, pos.epoch,
                                                                   pos.index + row)


@functools.lru_cache(maxsize=4)
def _permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """Epoch ``epoch``'s order (cached: the loader's threads ask for it once per example)."""
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    perm.setflags(write=False)
    return perm
