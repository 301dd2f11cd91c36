"""Inpainting with QRes-VAE (official ``HierarchicalVAE.inpaint`` and the ``paint_box`` branch of
``QLatentBlockX.forward_uncond``; notebook ``scripts/qresvae/inpainting.ipynb``).

A box ``(x1, y1, x2, y2)`` in [0, 1] (fractions of width and height) is repainted by iterating
``steps`` times:

1. infer the latents of the current image (eval mode: ``round(qm − pm) + pm``);
2. decode top-down, keeping every latent *outside* the box and drawing the latents inside it
   from the prior at temperature t (``pm + t·pv·ε + t·u``). At latent block i of size
   (h_i, w_i) the box covers rows ``round(y1·h_i):round(y2·h_i)`` and columns
   ``round(x1·w_i):round(x2·w_i)`` (Python ``round``, as the official code); a block with
   ``min(h_i, w_i) == 1`` is kept whole. The lossless head samples its pixels at t too;
3. paste the decoded box (image rows ``round(y1·H):round(y2·H)`` etc.) into the original image.

The result is the last decoding — the whole image, as the official method returns it (outside
the box it is the reconstruction of the image, not the image itself). The notebook first fills
the box with grey 0.5 (``mask_input=True`` here) and uses steps = 20, t = 0.8.

Images are NHWC float32 in [0, 1], H and W multiples of 64.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lvae_jax.generative.sampling import GenerativeError, as_generative

#: The notebook fills the box with this grey before inpainting.
MASK_VALUE = 0.5


def check_box(box: Sequence[float]) -> tuple[float, float, float, float]:
    """Validate ``(x1, y1, x2, y2)``: finite, in [0, 1], ``x1 < x2`` and ``y1 < y2``."""
    try:
        x1, y1, x2, y2 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise GenerativeError(f"a box is four numbers x1 y1 x2 y2 in [0, 1], got {box!r}") from None
    vals = (x1, y1, x2, y2)
    if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in vals):
        raise GenerativeError(f"box coordinates must lie in [0, 1], got {vals}")
    if not (x1 < x2 and y1 < y2):
        raise GenerativeError(f"box must have x1 < x2 and y1 < y2, got {vals}")
    return vals


def box_slices(box, height: int, width: int) -> tuple[slice, slice]:
    """(rows, columns) a box covers on a ``height × width`` grid: ``round(y1·H):round(y2·H)``,
    ``round(x1·W):round(x2·W)`` with Python's ``round`` (half to even), as the official code."""
    x1, y1, x2, y2 = check_box(box)
    return slice(round(y1 * height), round(y2 * height)), slice(round(x1 * width), round(x2 * width))


def latent_keep_masks(shapes: Sequence[tuple], box) -> list[np.ndarray]:
    """Per latent block, a boolean (1, h_i, w_i, 1) mask: True where the image's latent is kept
    (outside the box, or everywhere when ``min(h_i, w_i) == 1``)."""
    masks = []
    for shape in shapes:
        h, w = shape[1], shape[2]
        keep = np.ones((1, h, w, 1), bool)
        if min(h, w) > 1:
            rows, cols = box_slices(box, h, w)
            keep[:, rows, cols] = False
        masks.append(keep)
    return masks


def mask_box(im, box, value: float = MASK_VALUE) -> np.ndarray:
    """A copy of images (N, H, W, 3) with the box filled with ``value`` (the notebook's input)."""
    out = np.array(im, np.float32, copy=True)
    rows, cols = box_slices(box, out.shape[-3], out.shape[-2])
    out[..., rows, cols, :] = value
    return out


class InpaintResult(NamedTuple):
    """``masked``: (N, H, W, 3) the input the model saw (box greyed if ``mask_input``);
    ``samples``: (N, H, W, 3) inpainted images, one independent draw per row."""
    masked: np.ndarray
    samples: np.ndarray


def inpaint(model, im, box, *, key=None, steps: int = 20, temperature: float = 0.8,
            num_samples: int = 1, mask_input: bool = True) -> InpaintResult:
    """Repaint ``box`` of one image (QRes models only; see the module docstring).

    ``im``: (H, W, 3) or (1, H, W, 3) in [0, 1]. ``box``: (x1, y1, x2, y2) in [0, 1].
    ``steps``: iterations (notebook 20; the official method's default is 1). ``temperature``:
    prior temperature inside the box (notebook 0.8). ``num_samples``: independent draws (the
    notebook draws 6), decoded as one batch. ``mask_input``: fill the box with grey first.
    ``key``: PRNG key of the draws (needed unless ``temperature == 0``).
    """
    gm = as_generative(model)
    if gm.family != "qres":
        raise GenerativeError(f"inpainting is defined for QRes models (the official "
                              f"HierarchicalVAE.inpaint); {gm.name} is a {gm.family} model")
    if steps < 1 or num_samples < 1:
        raise GenerativeError(f"steps and num_samples must be >= 1, got {steps}, {num_samples}")
    x = np.asarray(gm.check_images(im))
    if x.shape[0] != 1:
        raise GenerativeError("inpaint takes one image (use num_samples for several draws)")
    n, H, W = num_samples, x.shape[1], x.shape[2]
    rows, cols = box_slices(box, H, W)
    if rows.stop <= rows.start or cols.stop <= cols.start:
        raise GenerativeError(f"box {tuple(box)} covers no pixel of a {H}x{W} image")
    if mask_input:
        x = mask_box(x, box)
    base = jnp.asarray(np.repeat(x, n, axis=0))
    grid = (n, H // gm.stride, W // gm.stride)
    keep = latent_keep_masks(gm.latent_shapes(*grid), box)
    current, out = base, None
    for s in range(steps):
        inf = gm.infer(current)
        out = gm.decode(*grid, latents=inf.latents, keep=keep, temperature=temperature,
                        key=None if key is None else jax.random.fold_in(key, s))
        current = base.at[:, rows, cols, :].set(out[:, rows, cols, :])
    return InpaintResult(x, np.asarray(out))
