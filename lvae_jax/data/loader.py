"""A prefetching loader of augmented training batches (host side, background threads).

A producer thread keeps up to ``prefetch`` batches ready in a queue while a thread pool decodes and
augments images (Pillow and numpy release the GIL), so the accelerator does not wait for input.
The loader is an iterator of (rows, crop, crop, 3) uint8 NHWC arrays — this process's rows of
each global batch — and ``loader.position`` is where the next batch starts: save it with a
checkpoint and pass it back as ``position=`` to resume exactly.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from lvae_jax.data.augment import random_crop_flip
from lvae_jax.data.sampler import DataPosition, EpochSampler


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
      workers: decoding threads; prefetch: batches kept ready.
    """

    def __init__(self, source, global_batch: int, crop: int = 256, hflip: bool = True,
                 seed: int = 0, position: DataPosition | None = None, rows: slice | None = None,
                 workers: int | None = None, prefetch: int = 4):
        self.source, self.crop, self.hflip = source, int(crop), bool(hflip)
        self.sampler = EpochSampler(len(source), global_batch, seed)
        self.rows = rows or slice(0, global_batch)
        self.position = self.sampler.normalise(position or DataPosition())
        self._workers = workers or min(8, os.cpu_count() or 1)
        self._prefetch = max(1, int(prefetch))
        self._queue: queue.Queue = queue.Queue(maxsize=self._prefetch)
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="lvae-data")
        self._thread = threading.Thread(target=self._produce, name="lvae-data-producer", daemon=True)
        self._thread.start()

    # -- producer --------------------------------------------------------------------------------

    def _example(self, record: int, seed) -> np.ndarray:
        im = self.source[record]
        return random_crop_flip(im, self.crop, self.hflip, np.random.default_rng(list(seed)))

    def _produce(self):
        pos = self.position
        pending = deque()
        try:
            while not self._stop.is_set():
                while len(pending) < self._prefetch:
                    records, seeds, pos = self.sampler.batch_at(pos, self.rows)
                    pending.append(([self._pool.submit(self._example, r, s)
                                     for r, s in zip(records, seeds)], self.sampler.normalise(pos)))
                futures, nxt = pending.popleft()
                batch = np.stack([f.result() for f in futures])
                self._put((batch, nxt))
        except BaseException as e:  # hand the error to the consumer
            self._put(e)

    def _put(self, item):
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    # -- consumer --------------------------------------------------------------------------------

    def __iter__(self):
        return self

    def __next__(self) -> np.ndarray:
        if self._stop.is_set():
            raise StopIteration
        item = self._queue.get()
        if isinstance(item, BaseException):
            self.close()
            raise item
        batch, self.position = item
        return batch

    def close(self):
        """Stop the background threads (pending work is dropped)."""
        self._stop.set()
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
