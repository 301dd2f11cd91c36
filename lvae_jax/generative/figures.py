"""Image grids and strips as PNG, laid out like ``torchvision.utils.make_grid`` (which the official
notebooks use): ``nrow`` images per row, ``padding`` pixels of ``pad_value`` around and between
the images, rows filled left to right.

Images are (H, W, 3) float in [0, 1] (or uint8), all the same size; a batch (N, H, W, 3) counts
as N images.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from lvae_jax.image import save_png, to_float


def _as_list(images) -> list[np.ndarray]:
    if isinstance(images, np.ndarray) or hasattr(images, "shape"):
        arr = np.asarray(images)
        items = list(arr) if arr.ndim == 4 else [arr]
    else:
        items = []
        for im in images:
            a = np.asarray(im)
            items.extend(list(a) if a.ndim == 4 else [a])
    out = []
    for a in items:
        if a.ndim != 3 or a.shape[-1] != 3:
            raise ValueError(f"expected (H, W, 3) RGB images, got shape {a.shape}")
        out.append(to_float(a) if a.dtype == np.uint8 else np.clip(a.astype(np.float32), 0.0, 1.0))
    if not out:
        raise ValueError("no images to lay out")
    shapes = {a.shape for a in out}
    if len(shapes) != 1:
        raise ValueError(f"all images of a grid must have one size, got {sorted(shapes)}")
    return out


def make_grid(images, nrow: int = 8, padding: int = 2, pad_value: float = 0.0) -> np.ndarray:
    """Lay images out in rows of ``nrow``: -> (rows·(H + p) + p, cols·(W + p) + p, 3) float32."""
    ims = _as_list(images)
    if nrow < 1 or padding < 0:
        raise ValueError(f"nrow must be >= 1 and padding >= 0, got {nrow}, {padding}")
    h, w, _ = ims[0].shape
    cols = min(nrow, len(ims))
    rows = math.ceil(len(ims) / cols)
    ch, cw = h + padding, w + padding
    grid = np.full((rows * ch + padding, cols * cw + padding, 3), pad_value, np.float32)
    for k, im in enumerate(ims):
        y, x = divmod(k, cols)
        grid[y * ch + padding: y * ch + padding + h, x * cw + padding: x * cw + padding + w] = im
    return grid


def save_grid(path, images, nrow: int = 8, padding: int = 2, pad_value: float = 0.0) -> Path:
    """Write :func:`make_grid` as an 8-bit PNG (``floor(255·x + 0.5)``, like ``save_image``)."""
    return save_png(path, make_grid(images, nrow, padding, pad_value))


def save_strip(path, images: Sequence, padding: int = 2, pad_value: float = 0.0) -> Path:
    """Write all images in one row as a PNG."""
    ims = _as_list(images)
    return save_png(path, make_grid(ims, len(ims), padding, pad_value))
