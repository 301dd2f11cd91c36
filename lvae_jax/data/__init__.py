"""Training input: image sources, the official crop/flip augmentation, deterministic epoch
sampling with a resumable position, and a prefetching batch loader.

    >>> from lvae_jax.data import ImageFolderSource, TrainLoader
    >>> src = ImageFolderSource("~/datasets/coco/train2017")
    >>> loader = TrainLoader(src, global_batch=16, crop=256, seed=0)
    >>> batch = next(loader)            # (16, 256, 256, 3) uint8, NHWC
    >>> loader.position                 # DataPosition(epoch=0, index=16): where the next batch starts

Batches are uint8 NHWC; the training step converts them to float32 in [0, 1] (``x / 255``, like
torchvision's ``to_tensor``).
"""

from lvae_jax.data.augment import random_crop_flip
from lvae_jax.data.loader import Reading, TrainLoader
from lvae_jax.data.sampler import DataPosition, EpochSampler
from lvae_jax.data.sources import (DataError, ImageFolderSource, ImageSource, TFDSImageSource,
                                   open_source)

__all__ = ["DataError", "DataPosition", "EpochSampler", "ImageFolderSource", "ImageSource",
           "Reading", "TFDSImageSource", "TrainLoader", "open_source", "random_crop_flip"]
