"""Estimated rate–distortion curves of the variable-rate models (the papers' R(D) figures).

rd_model_base (official ``lvae/models/rd/evaluate.py``) has no entropy coder: its rate is the KL
divergence of its Gaussian posterior from the prior, and it *samples* its latents even in eval
mode, so its curve is stochastic — pass a PRNG key, and average over several draws if wanted.
QARV's theoretical curve (``scripts/qarv/eval-theoretical.py`` -> ``self_evaluate``) uses the
eval-mode rate −log P of the quantised latents (deterministic).

The protocols (λ grid, bpp denominator) are :data:`lvae_jax.models.lambdas.PROTOCOLS`; the loop
over images and λ is :mod:`lvae_jax.evaluation.estimate`. Results are written in the official
results schema (``name``, ``test-set``, ``lambdas``, ``results: {bpp, psnr}``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from lvae_jax.generative.sampling import GenerativeError, as_generative
from lvae_jax.models.lambdas import (PROTOCOLS, LambdaError, lambda_grid,  # noqa: F401 (API)
                                     official_lambdas)


def _images(source):
    from lvae_jax.evaluation.images import EvalImage, open_images
    if isinstance(source, (str, Path)):
        return open_images(source)
    return (im if isinstance(im, EvalImage) else EvalImage(f"image{i}", np.asarray(im, np.uint8))
            for i, im in enumerate(source))


def estimate_rd_curve(model, images, lambdas: Sequence[float] | None = None, *, key=None,
                      draws: int = 1, bpp_pixels: str | None = None, name: str | None = None,
                      test_set: str | None = None, meta: dict | None = None,
                      progress: Callable[[str], None] | None = None):
    """Estimate a variable-rate model's R(D) curve on a set of images with the official protocol
    of its family (:data:`lvae_jax.models.lambdas.PROTOCOLS`); returns an
    :class:`~lvae_jax.evaluation.RDCurve` (``bpp``, ``psnr``, ``mse`` per λ). The loop is
    :func:`lvae_jax.evaluation.estimate.estimate_curve`.

    ``images``: a folder (or ``"tfds:NAME"``), or an iterable of
    :class:`~lvae_jax.evaluation.EvalImage` / (H, W, 3) uint8 arrays; read once.
    ``lambdas``: default the family's official grid. ``key``: PRNG key of rd_model_base's latent
    draws (required for rd). ``draws``: draws per image and λ, averaged (rd only).
    ``bpp_pixels``: ``"padded"`` (rd evaluate.py) or ``"original"`` (QARV self_evaluate);
    default per family. ``progress``: called with one line per image.
    """
    from lvae_jax.evaluation.estimate import EstimateError, estimate_curve
    gm = as_generative(model)
    fam = gm.family
    if fam not in PROTOCOLS:
        raise GenerativeError(f"{gm.name} is a fixed-rate {fam} model: its rate is one point; "
                              "estimate R(D) curves with a variable-rate model (qarv, rd)")
    protocol = PROTOCOLS[fam]
    lambdas = list(official_lambdas(fam) if lambdas is None else lambdas)
    info = {"rate": "estimated (theoretical, no bitstream)", **(meta or {})}
    try:
        return estimate_curve(gm, _images(images), lambdas, key=key, draws=draws,
                              bpp_pixels=bpp_pixels or protocol.bpp_pixels, name=name or gm.name,
                              test_set=test_set, meta=info, progress=progress)
    except (EstimateError, LambdaError) as e:
        raise GenerativeError(str(e)) from None


def write_rd_curve(curve, json_path, plot_path=None, anchors: Iterable = ()) -> list[Path]:
    """Save the curve as official-schema JSON and, optionally, its RD plot (PNG) with anchor
    curves (RDCurve objects or result files) drawn in grey."""
    from lvae_jax.evaluation.plot import plot_rd
    from lvae_jax.evaluation.rd_json import save_rd
    written = [save_rd(curve, json_path)]
    if plot_path is not None:
        anchors = list(anchors)
        written.append(plot_rd(plot_path, [curve], anchors, bd_anchor=0 if anchors else None))
    return written
