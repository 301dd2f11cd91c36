"""Latent interpolation between two images (official ``scripts/qresvae/latent-interpolation.ipynb``).

The notebook infers the latents of both images with ``forward_get_latents`` (eval mode: the
quantised posterior ``round(qm − pm) + pm`` of every latent block), mixes *every* latent linearly,
``z(a) = (1 − a)·z₁ + a·z₂`` for ``a = linspace(0, 1, steps)``, decodes each mixture with
``cond_sample`` and shows ``[image 1, decodings..., image 2]`` in one row. The end frames
(a = 0, 1) are the eval reconstructions of the two images.

Images are NHWC float32 in [0, 1], both the same size, H and W multiples of 64.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

from lvae_jax import numerics
from lvae_jax.generative.sampling import GenerativeError, as_generative


class InterpolationResult(NamedTuple):
    """``frames``: (steps, H, W, 3) decodings of the mixed latents; ``alphas``: the mixing weight
    of image 2 per frame; ``recon``: (2, H, W, 3) the eval reconstructions of both images."""
    frames: np.ndarray
    alphas: tuple
    recon: np.ndarray

    def strip(self, im1, im2) -> list:
        """The notebook's row: ``[image 1, frames..., image 2]`` as (H, W, 3) arrays."""
        return [np.asarray(im1).reshape(self.frames.shape[1:]), *self.frames,
                np.asarray(im2).reshape(self.frames.shape[1:])]


def interpolation_weights(steps: int) -> tuple[float, ...]:
    """``torch.linspace(0, 1, steps).tolist()`` (float32 values, as the notebook)."""
    if steps < 2:
        raise GenerativeError(f"interpolation needs steps >= 2, got {steps}")
    return tuple(float(a) for a in numerics.torch_linspace_f32(0.0, 1.0, steps))


def interpolate(model, im1, im2, *, steps: int = 8, lmb=None, key=None,
                temperature: float = 0.0) -> InterpolationResult:
    """Decode linear mixtures of the latents of two images.

    ``im1``, ``im2``: (H, W, 3) or (1, H, W, 3) in [0, 1], same size. ``steps``: number of
    mixtures, end points included (notebook: 8). ``lmb``: λ of variable-rate models.
    ``key``: needed for rd_model_base (its latents are posterior draws) and when
    ``temperature > 0``. ``temperature``: pixel-sampling temperature of the lossless QRes head
    (every latent is given, so it matters for no other model); the notebook calls ``cond_sample``
    with its default t = 1, which would add pixel noise to lossless frames — the default 0 here
    gives the pixel mean.
    """
    gm = as_generative(model)
    a = gm.check_images(im1)
    b = gm.check_images(im2)
    if a.shape[0] != 1 or b.shape[0] != 1:
        raise GenerativeError("interpolate takes one image per end point")
    if a.shape != b.shape:
        raise GenerativeError(f"the two images differ in size: {a.shape[1:3]} vs {b.shape[1:3]} "
                              "(crop or resize them to one size)")
    alphas = interpolation_weights(steps)
    k_post = k_dec = None
    if key is not None:
        k_post, k_dec = jax.random.split(key)
    # One image at a time: the same compiled pass as the other single-image functions.
    inf1 = gm.infer(a, lmb, None if k_post is None else jax.random.fold_in(k_post, 0))
    inf2 = gm.infer(b, lmb, None if k_post is None else jax.random.fold_in(k_post, 1))
    n, h, w = gm.grid_of(a)
    frames = []
    for j, alpha in enumerate(alphas):
        mixed = [(1.0 - alpha) * z1 + alpha * z2 for z1, z2 in zip(inf1.latents, inf2.latents)]
        frames.append(np.asarray(gm.decode(
            n, h, w, latents=mixed, temperature=temperature, lmb=lmb,
            key=None if k_dec is None else jax.random.fold_in(k_dec, j)))[0])
    recon = np.concatenate([np.asarray(inf1.recon), np.asarray(inf2.recon)])
    return InterpolationResult(np.stack(frames), alphas, recon)
