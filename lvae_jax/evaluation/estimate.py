"""Estimated rate–distortion: the evaluation-mode rates of a model on images, no bitstream — the one
loop behind ``python -m eval estimate``, ``python -m lvae_jax rd-curve``, the training-time
evaluation and the R(D) curves of :mod:`lvae_jax.generative`.

Per image (NHWC uint8) and λ:

* the image is padded on the right and bottom (edge replication) to a multiple of 64 and the
  reconstruction cropped back to the original size;
* ``bpp = (Σ_blocks rate + pixel NLL) · log2(e) / pixels``: the latent rates of the eval pass
  (−log P of the quantised latents for QRes/QARV, KL(q‖p) for rd_model_base, nats;
  :func:`lvae_jax.models.inference.eval_pass`), plus the lossless head's NLL of the pixels for
  ``qres34m_lossless``; ``pixels`` is the original H·W (``bpp_pixels="original"``: QARV's
  ``self_evaluate``, the fixed-rate QRes evaluation, the real bitstreams) or the padded one
  (``"padded"``: rd_model_base's ``evaluate.py``);
* ``mse`` on [0, 1] pixels of the cropped reconstruction against the original 8-bit image
  (:func:`lvae_jax.evaluation.metrics.mse`), ``psnr = −10·log10(mse)``;

then each is averaged over images (per-image PSNR, then the mean). rd_model_base samples its
latents even in eval mode: image i, λ j and draw d use ``fold_in(fold_in(fold_in(key, i), j), d)``
and ``draws`` draws are averaged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import jax
import numpy as np

from lvae_jax import numerics
from lvae_jax.evaluation.images import EvalImage, open_images
from lvae_jax.evaluation.metrics import mse as mse_of, psnr_from_mse
from lvae_jax.evaluation.rd_json import RDCurve
from lvae_jax.image import pad_to_multiple, to_float
from lvae_jax.models import lambdas as L
from lvae_jax.models.inference import InferenceModel

BPP_PIXELS = ("original", "padded")


class EstimateError(ValueError):
    """Bad input to an estimated evaluation (no images, a missing key, bad options...)."""


@dataclass(frozen=True)
class EstimateOptions:
    """``key``: PRNG key of rd_model_base's latent draws (required for rd); ``draws``: draws per
    image and λ, averaged (rd only); ``bpp_pixels``: ``"original"`` or ``"padded"`` H·W (None:
    the protocol of the model's family); ``name``, ``test_set``, ``meta``: of the curve;
    ``per_image``: keep the per-image records in the curve; ``progress``: called with one line
    per image."""
    key: Any = None
    draws: int = 1
    bpp_pixels: str | None = None
    name: str | None = None
    test_set: str | None = None
    meta: dict | None = None
    per_image: bool = False
    progress: Callable[[str], None] | None = None


@dataclass
class PointEstimate:
    """One λ (None: a fixed-rate model): per-image records and their means."""
    lmb: float | None
    records: list

    def mean(self, key: str) -> float:
        return float(np.mean([r[key] for r in self.records]))


def estimate_points(model, images: Iterable, lambdas: Sequence[float | None],
                    **options) -> list[PointEstimate]:
    """Estimated RD points of ``model`` (a HierarchicalVAE, a
    :class:`~lvae_jax.models.inference.InferenceModel`, or anything with ``graphdef``, ``state``
    and ``config``) on ``images`` (:class:`~lvae_jax.evaluation.images.EvalImage` or (H, W, 3)
    uint8 arrays, read once) at each λ of ``lambdas`` (``[None]`` for a fixed-rate model; values
    checked by :func:`lvae_jax.models.lambdas.check_lmb`). ``options``: the fields of
    :class:`EstimateOptions` (``key``, ``draws``, ``bpp_pixels`` — default ``"original"`` —,
    ``progress``). Records per image: ``image``, ``height``, ``width``, ``bpp`` (+ ``bpsp`` for
    the lossless model), and ``mse``, ``psnr`` for the lossy ones."""
    o = EstimateOptions(**options)
    im_model = InferenceModel.of(model)
    cfg = im_model.config
    bpp_pixels = o.bpp_pixels or "original"
    _check_options(cfg, o, bpp_pixels)
    lambdas = list(lambdas)
    if not lambdas:
        raise EstimateError("no λ values")
    checked = [L.check_lmb(cfg, v) for v in lambdas]       # before any work
    points = [PointEstimate(v, []) for v in lambdas]
    count = 0
    for i, item in enumerate(images):
        if not isinstance(item, EvalImage):
            item = EvalImage(f"image{i}", np.asarray(item, np.uint8))
        for j, (lmb, point) in enumerate(zip(checked, points)):
            point.records.append(_image_point(im_model, item, lmb, (i, j), o, bpp_pixels))
        count += 1
        if o.progress is not None:
            o.progress(f"{item.name}: {item.pixels.shape[0]}x{item.pixels.shape[1]}")
    if count == 0:
        raise EstimateError("no images")
    return points


def _check_options(cfg, o: EstimateOptions, bpp_pixels: str) -> None:
    if bpp_pixels not in BPP_PIXELS:
        raise EstimateError(f"bpp_pixels must be one of {BPP_PIXELS}, got {bpp_pixels!r}")
    if o.draws < 1:
        raise EstimateError(f"draws must be >= 1, got {o.draws}")
    if cfg.family == "rd" and o.key is None:
        raise EstimateError(f"{cfg.name} samples its latents even in eval mode: pass a PRNG key")
    if cfg.family != "rd" and o.draws != 1:
        raise EstimateError(f"{cfg.name}'s eval-mode rate is deterministic: draws must be 1")


def _image_point(im_model, item: EvalImage, lmb, ij, o: EstimateOptions, bpp_pixels) -> dict:
    """The record of one image at one λ (``ij``: the image's and λ's indexes, for the keys)."""
    pixels = item.pixels
    h, w = pixels.shape[:2]
    x = pad_to_multiple(to_float(pixels), im_model.config.max_stride)[None]
    denom = x.shape[1] * x.shape[2] if bpp_pixels == "padded" else h * w
    lmb_vec = None if lmb is None else np.full((1,), lmb, np.float32)
    lossless = im_model.config.lossless
    bpp = m = p = 0.0
    for d in range(o.draws):
        k = None if o.key is None else jax.random.fold_in(
            jax.random.fold_in(jax.random.fold_in(o.key, ij[0]), ij[1]), d)
        out = im_model.evaluate(x, lmb_vec, k)
        nats = float(np.asarray(out.rates, np.float64).sum()
                     + np.asarray(out.pixel_nats, np.float64).sum())
        bpp += nats * numerics.LOG2_E / denom / o.draws
        if not lossless:
            e = mse_of(pixels, np.asarray(out.recon)[0, :h, :w])
            m += e / o.draws
            p += psnr_from_mse(e) / o.draws
    rec = {"image": item.name, "height": h, "width": w, "bpp": bpp}
    if lossless:
        rec["bpsp"] = bpp / 3.0
    else:
        rec.update(mse=m, psnr=p)
    return rec


def estimate_curve(model, images: Iterable, lambdas: Sequence[float | None], **options) -> RDCurve:
    """:func:`estimate_points` as an :class:`~lvae_jax.evaluation.rd_json.RDCurve` (official
    results schema: ``bpp``, ``psnr``, ``mse`` per λ; ``per-image`` records when asked).
    ``options``: :class:`EstimateOptions`. Lossy models only (the lossless model's PSNR is
    infinite: use :func:`estimate_points`)."""
    o = EstimateOptions(**options)
    bpp_pixels = o.bpp_pixels or "original"
    points = estimate_points(model, images, lambdas, key=o.key, draws=o.draws,
                             bpp_pixels=bpp_pixels, progress=o.progress)
    if "psnr" not in points[0].records[0]:
        raise EstimateError("a lossless model has no RD curve (its PSNR is infinite)")
    info = {"rate": "estimated (eval-mode rates, no bitstream)", "bpp_pixels": bpp_pixels,
            "draws": o.draws, "images": len(points[0].records)}
    info.update(o.meta or {})
    cfg = getattr(model, "config")
    rows = []
    for pt in points:
        row = {"bpp": pt.mean("bpp"), "psnr": pt.mean("psnr"), "mse": pt.mean("mse")}
        if o.per_image:
            row["per-image"] = pt.records
        rows.append(row)
    labels = [cfg.default_lmb if p.lmb is None else p.lmb for p in points]
    return RDCurve.from_points(o.name or cfg.name, rows, test_set=o.test_set, lambdas=labels,
                               meta=info)


def estimate_rd_curve(model, images, lambdas: Sequence[float] | None = None, **options) -> RDCurve:
    """A variable-rate model's estimated R(D) curve with the official protocol of its family
    (:data:`lvae_jax.models.lambdas.PROTOCOLS`: the λ grid — the default of ``lambdas`` — and the
    bpp denominator): rd_model_base's ``evaluate.py`` (rate = KL of its sampled latents: pass a
    ``key``, average ``draws``) or QARV's ``self_evaluate`` (−log P of the quantised latents).
    ``images``: a folder (or ``"tfds:NAME"``), or an iterable of
    :class:`~lvae_jax.evaluation.images.EvalImage` / (H, W, 3) uint8 arrays; read once.
    ``options``: :class:`EstimateOptions`."""
    o = EstimateOptions(**options)
    cfg = InferenceModel.of(model).config
    if cfg.family not in L.PROTOCOLS:
        raise EstimateError(f"{cfg.name} is a fixed-rate {cfg.family} model: its rate is one point; "
                            "estimate R(D) curves with a variable-rate model (qarv, rd)")
    protocol = L.PROTOCOLS[cfg.family]
    lambdas = list(L.official_lambdas(cfg.family) if lambdas is None else lambdas)
    if isinstance(images, (str, bytes)) or hasattr(images, "__fspath__"):
        images = open_images(images)
    info = {"rate": "estimated (theoretical, no bitstream)", **(o.meta or {})}
    return estimate_curve(model, images, lambdas, key=o.key, draws=o.draws,
                          bpp_pixels=o.bpp_pixels or protocol.bpp_pixels, name=o.name or cfg.name,
                          test_set=o.test_set, meta=info, per_image=o.per_image,
                          progress=o.progress)
