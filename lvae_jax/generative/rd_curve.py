"""Estimated rate–distortion curves of the variable-rate models, from their theoretical rates.

rd_model_base (official ``lvae/models/rd/evaluate.py``) has no entropy coder: its rate is the KL
divergence of its Gaussian posterior from the prior, and it *samples* its latents even in eval
mode, so its curve is stochastic — pass a PRNG key, and average over several draws if wanted.
Per image and λ:

* the image is padded on the right and bottom (edge replication) to a multiple of 64;
* ``bpp = Σ_blocks Σ KL · log2(e) / (H_pad · W_pad)`` — the *padded* size (evaluate.py);
* ``psnr = −10·log10(MSE)`` of the output cropped to the original size against the original
  8-bit image, on [0, 1] pixels;

then bpp and PSNR are averaged over images (per-image PSNR, then the mean). λ runs over
``exp(linspace(log 4, log 2048, 16))`` (evaluate.py's defaults), computed like the official float32
``torch.linspace(...).exp()``.

QARV's theoretical curve (``scripts/qarv/eval-theoretical.py`` -> ``self_evaluate``) is the same
computation with the eval-mode rate −log P of the quantised latents (deterministic), bpp divided
by the *original* H·W, and λ = ``exp(linspace(log 16, log 2048, 8))``. rd_model_base's own
``self_evaluate`` uses ``linspace(∛4, ∛2048, n)³`` instead (``spacing="cube-root"``).

Results are written in the official results schema (``name``, ``test-set``, ``lambdas``,
``results: {bpp, psnr}``) with :func:`lvae_jax.evaluation.save_rd`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from lvae_jax import numerics
from lvae_jax.generative.sampling import GenerativeError, as_generative

SPACINGS = ("log", "cube-root")
BPP_PIXELS = ("padded", "original")


@dataclass(frozen=True)
class Protocol:
    """The official estimation settings of one model family."""
    lmb_range: tuple[float, float]
    steps: int
    spacing: str
    bpp_pixels: str
    source: str


#: Per family: the official script's λ grid and bpp denominator.
PROTOCOLS = {
    "rd": Protocol((4.0, 2048.0), 16, "log", "padded", "lvae/models/rd/evaluate.py"),
    "qarv": Protocol((16.0, 2048.0), 8, "log", "original",
                     "scripts/qarv/eval-theoretical.py (VariableRateLossyVAE.self_evaluate)"),
}


def lambda_grid(start: float, end: float, steps: int, spacing: str = "log") -> list[float]:
    """λ values of the official evaluation scripts, as the float32 numbers they use.

    ``"log"``: ``torch.linspace(log(start), log(end), steps).exp()`` (rd evaluate.py,
    QARV self_evaluate); ``"cube-root"``: ``torch.linspace(start^⅓, end^⅓, steps).pow(3)``
    (rd_model_base self_evaluate). The linspace is PyTorch's float32 kernel
    (:func:`lvae_jax.numerics.torch_linspace_f32`); exp is correctly rounded to float32, which
    equals torch's value for the official grids (torch's vectorised exp is off by one float32
    step for under 1 % of arbitrary inputs); ``pow(3)`` is torch's ``x·x·x`` in float32.
    """
    if steps < 1:
        raise GenerativeError(f"steps must be >= 1, got {steps}")
    if not (math.isfinite(start) and math.isfinite(end) and 0 < start <= end):
        raise GenerativeError(f"λ range must satisfy 0 < start <= end, got ({start}, {end})")
    if spacing == "log":
        lin = numerics.torch_linspace_f32(math.log(start), math.log(end), steps)
        values = np.exp(lin.astype(np.float64)).astype(np.float32)
    elif spacing == "cube-root":
        lin = numerics.torch_linspace_f32(math.pow(start, 1 / 3), math.pow(end, 1 / 3), steps)
        values = lin * lin * lin
    else:
        raise GenerativeError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
    return [float(v) for v in values]


def official_lambdas(family: str, steps: int | None = None,
                     lmb_range: tuple[float, float] | None = None) -> list[float]:
    """The official λ grid of a family (``"rd"``, ``"qarv"``), optionally with another count or
    range."""
    if family not in PROTOCOLS:
        raise GenerativeError(f"no R(D) estimation protocol for {family!r} models "
                              f"(variable-rate families: {', '.join(PROTOCOLS)})")
    p = PROTOCOLS[family]
    lo, hi = lmb_range or p.lmb_range
    return lambda_grid(lo, hi, steps or p.steps, p.spacing)


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
    """Estimate a model's R(D) curve on a set of images; returns an
    :class:`~lvae_jax.evaluation.RDCurve` (``bpp``, ``psnr``, ``mse`` per λ).

    ``images``: a folder (or ``"tfds:NAME"``), or an iterable of
    :class:`~lvae_jax.evaluation.EvalImage` / (H, W, 3) uint8 arrays; read once.
    ``lambdas``: default the family's official grid (:data:`PROTOCOLS`). ``key``: PRNG key of
    rd_model_base's latent draws (required for rd; image i, λ j, draw d use
    ``fold_in(fold_in(fold_in(key, i), j), d)``). ``draws``: draws per image and λ, averaged
    (rd only: QARV's eval rate is deterministic). ``bpp_pixels``: ``"padded"`` (rd evaluate.py)
    or ``"original"`` (QARV self_evaluate); default per family. ``progress``: called with one
    line per image.
    """
    import jax
    from lvae_jax.evaluation.metrics import mse as mse_of, psnr
    from lvae_jax.evaluation.rd_json import RDCurve
    from lvae_jax.image import pad_to_multiple, to_float

    gm = as_generative(model)
    fam = gm.family
    if fam not in PROTOCOLS:
        raise GenerativeError(f"{gm.name} is a fixed-rate {fam} model: its rate is one point; "
                              "estimate R(D) curves with a variable-rate model (qarv, rd)")
    protocol = PROTOCOLS[fam]
    lambdas = list(official_lambdas(fam) if lambdas is None else lambdas)
    if not lambdas:
        raise GenerativeError("no λ values")
    gm.lmb_array(lambdas, len(lambdas))          # range check, before any work
    bpp_pixels = bpp_pixels or protocol.bpp_pixels
    if bpp_pixels not in BPP_PIXELS:
        raise GenerativeError(f"bpp_pixels must be one of {BPP_PIXELS}, got {bpp_pixels!r}")
    if draws < 1:
        raise GenerativeError(f"draws must be >= 1, got {draws}")
    if fam == "rd" and key is None:
        raise GenerativeError("rd_model_base samples its latents even in eval mode: pass a PRNG key")
    if fam != "rd" and draws != 1:
        raise GenerativeError(f"{gm.name}'s eval-mode rate is deterministic: draws must be 1")

    sums = np.zeros((len(lambdas), 3), np.float64)     # bpp, psnr, mse per λ
    count = 0
    for i, item in enumerate(_images(images)):
        pixels = item.pixels
        h, w = pixels.shape[:2]
        x = pad_to_multiple(to_float(pixels), gm.stride)[None]
        denom = x.shape[1] * x.shape[2] if bpp_pixels == "padded" else h * w
        for j, lmb in enumerate(lambdas):
            for d in range(draws):
                k = None if key is None else jax.random.fold_in(
                    jax.random.fold_in(jax.random.fold_in(key, i), j), d)
                inf = gm.infer(x, lmb, k)
                bpp = float(np.asarray(inf.rates, np.float64).sum()) * numerics.LOG2_E / denom
                fake = np.asarray(inf.recon)[0, :h, :w]
                sums[j] += (bpp / draws, psnr(pixels, fake) / draws, mse_of(pixels, fake) / draws)
        count += 1
        if progress is not None:
            progress(f"{item.name}: {h}x{w}")
    if count == 0:
        raise GenerativeError("no images")
    mean = sums / count
    info = {"rate": "estimated (theoretical, no bitstream)", "bpp_pixels": bpp_pixels,
            "draws": draws, "images": count}
    info.update(meta or {})
    return RDCurve(name=name or gm.name, bpp=mean[:, 0].tolist(), psnr=mean[:, 1].tolist(),
                   mse=mean[:, 2].tolist(), test_set=test_set, lambdas=lambdas, meta=info)


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
