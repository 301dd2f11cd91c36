"""The official training augmentation: random crop (reflect-padded when the image is smaller) and a
random horizontal flip, on (H, W, 3) uint8 arrays.

Mirrors torchvision ``RandomCrop(crop, pad_if_needed=True, padding_mode="reflect")`` followed by
``RandomHorizontalFlip(p=0.5)`` on PIL images (``lvae/datasets/image.py``): a side shorter than the
crop is padded by the *full deficit on both sides* (torchvision pads ``crop - size`` left and right,
then top and bottom), reflecting without repeating the edge pixel (``numpy.pad(mode="reflect")``,
which is what torchvision uses for PIL images); the crop corner is uniform over all valid
positions. The random numbers come from the given ``numpy.random.Generator`` so every example's
augmentation is a pure function of its seed.
"""

from __future__ import annotations

import numpy as np


def reflect_pad_to(im: np.ndarray, crop: int) -> np.ndarray:
    """Pad (H, W, C) by ``crop - W`` on the left and right if ``W < crop``, then by ``crop - H`` on
    top and bottom if ``H < crop`` (torchvision's ``pad_if_needed`` rule), reflect mode."""
    h, w = im.shape[:2]
    if w < crop:
        d = crop - w
        im = np.pad(im, ((0, 0), (d, d), (0, 0)), mode="reflect")
    if h < crop:
        d = crop - h
        im = np.pad(im, ((d, d), (0, 0), (0, 0)), mode="reflect")
    return im


def random_crop_flip(im: np.ndarray, crop: int | None, hflip: bool,
                     rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) -> (crop, crop, 3), same dtype. ``crop=None`` keeps the whole image."""
    if crop is not None:
        if min(im.shape[:2]) == 1 and crop > 1:
            # numpy cannot reflect a length-1 axis; torchvision fails the same way.
            raise ValueError(f"cannot reflect-pad a {im.shape[0]}x{im.shape[1]} image to {crop}")
        im = reflect_pad_to(im, crop)
        h, w = im.shape[:2]
        i = int(rng.integers(0, h - crop + 1))
        j = int(rng.integers(0, w - crop + 1))
        im = im[i:i + crop, j:j + crop]
    if hflip and rng.random() < 0.5:
        im = im[:, ::-1]
    return np.ascontiguousarray(im)
