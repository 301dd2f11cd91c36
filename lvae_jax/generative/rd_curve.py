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
from typing import Iterable, Sequence

from lvae_jax.evaluation import estimate as E
from lvae_jax.evaluation.plot import plot_rd
from lvae_jax.evaluation.rd_json import save_rd
from lvae_jax.generative.sampling import GenerativeError, as_generative
from lvae_jax.models.lambdas import (PROTOCOLS, LambdaError, lambda_grid,  # noqa: F401 (API)
                                     official_lambdas)


def estimate_rd_curve(model, images, lambdas: Sequence[float] | None = None, **options):
    """A variable-rate model's R(D) curve on a set of images with the official protocol of its
    family (:func:`lvae_jax.evaluation.estimate.estimate_rd_curve`; ``options``: its
    :class:`~lvae_jax.evaluation.estimate.EstimateOptions`) -> an
    :class:`~lvae_jax.evaluation.RDCurve` (``bpp``, ``psnr``, ``mse`` per λ); bad input is a
    :class:`~lvae_jax.generative.sampling.GenerativeError`."""
    try:
        return E.estimate_rd_curve(as_generative(model), images, lambdas, **options)
    except (E.EstimateError, LambdaError) as e:
        raise GenerativeError(str(e)) from None


def write_rd_curve(curve, json_path, plot_path=None, anchors: Iterable = ()) -> list[Path]:
    """Save the curve as official-schema JSON and, optionally, its RD plot (PNG) with anchor
    curves (RDCurve objects or result files) drawn in grey."""
    written = [save_rd(curve, json_path)]
    if plot_path is not None:
        anchors = list(anchors)
        written.append(plot_rd(plot_path, [curve], anchors, bd_anchor=0 if anchors else None))
    return written
