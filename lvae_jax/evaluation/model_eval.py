"""Evaluate lvae-jax models on test images: RD curves from real bitstreams, and estimated RD.

**Real bitstreams** (:func:`evaluate_bitstreams`, ``python -m eval rd``) follow the official
``imcoding_evaluate`` (``lvae/evaluation.py``, run by ``eval-var-rate.py`` / ``eval-fix-rate.py``):
every image is compressed into a file at every λ, the file is decompressed, and per image

    bpp  = 8 · len(file) / (H · W)        the whole file, headers included; H, W the original size
    mse  = mean((x − x̂)²) over H, W, RGB  x = uint8 / 255, x̂ = the decoder's float output in [0, 1]
    psnr = −10 · log10(mse)

then each statistic is averaged over images (the dataset PSNR is the mean of per-image PSNRs).
The file layout is a choice (``fmt``):

* ``"official"`` (default): what the official ``compress_file`` writes — QARV's struct layout
  with its 4-byte image-size header, QRes's pickle — so the bpp is comparable with the official
  result files;
* ``"lvae"``: the lvae-jax container, with a checked header (model id, λ, sizes, a CRC per
  chunk and per chunk's symbols) of 55 + n + 12·C bytes (n: model-name length, C: strings), e.g.
  172 bytes for qarv_base against the 51 of the official QARV layout.

Each per-image record also gives ``header_bytes`` = file size − coded strings (``hint_bytes`` of it:
the portable-index hints of a version-2 container).

λ (``lambdas_for``): a variable-rate model (QARV) takes the given list, or ``num`` values
``exp(linspace(log lo, log hi, num))`` over its range (``eval-var-rate.py``: 16 values over
[16, 2048]; the float32 numbers of ``torch.linspace(...).exp()``, see
:func:`lvae_jax.models.lambdas.lambda_grid`). A fixed-rate model (QRes) gives one point at the
λ it was trained for; several model directories (one per λ, as ``eval-fix-rate.py`` loads one
checkpoint per λ) give one point each. The lossless QRes model has no RD curve (its PSNR is
infinite): :class:`LosslessResult` holds the bpp and whether every image came back exactly.

**Estimated rates** (:func:`estimate`, ``python -m eval estimate``): no coder, the eval-mode
forward pass. Variable-rate models (QARV, rd_model_base) go through
:func:`lvae_jax.evaluation.estimate.estimate_rd_curve` (the official ``self_evaluate`` /
``rd/evaluate.py`` protocols; rd_model_base samples its latents, so it needs a PRNG key). A
fixed-rate QRes model gives one point: ``bpp = Σ −log2 P(latents) / pixels`` (+ the pixel NLL for
the lossless model), PSNR of the eval reconstruction; ``pixels`` is the original H·W (default, like
the real bitstreams and QARV's protocol) or the padded one.

Images are NHWC uint8 (:class:`~lvae_jax.evaluation.images.EvalImage`); the codec pads them to
multiples of 64 by edge replication and crops the output back, like the official code.
"""

from __future__ import annotations

import json
import platform
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from lvae_jax.codec.api import Codec
from lvae_jax.codec.engine import CodecUnsupported
from lvae_jax.codec.formats import OUTPUT_FORMATS
from lvae_jax.evaluation import metrics
from lvae_jax.evaluation.estimate import (BPP_PIXELS, EstimateError, estimate_points,
                                          estimate_rd_curve)
from lvae_jax.files import atomic_write_bytes
from lvae_jax.evaluation.images import EvalImage
from lvae_jax.evaluation.rd_json import RDCurve, save_rd, write_text_atomic
from lvae_jax.image import padded_size, to_uint8
from lvae_jax.models import lambdas as L
from lvae_jax.checkpoint.model_dir import CheckpointError, load_model, read_info

#: File layouts for ``evaluate_bitstreams`` (see the module docstring; the official layout first,
#: the default, so that the bpp is comparable with the official result files).
FORMATS = tuple(sorted(OUTPUT_FORMATS, key=lambda f: f != "official"))


class EvalError(ValueError):
    """Bad input to an evaluation (wrong model kind, λ out of range, no images...)."""


# ------------------------------------------------------------------------------------------------
# Models and λ
# ------------------------------------------------------------------------------------------------


def load_models(paths: Sequence, expect_name: str | None = None) -> list:
    """Load model directories (``lvae_model.json`` + ``params/``); ``expect_name``: every model
    must carry that config name. Raises :class:`~lvae_jax.checkpoint.model_dir.CheckpointError`
    for a directory that is not a model."""
    if not paths:
        raise EvalError("no model directory given")
    models = []
    for path in paths:
        name = read_info(path)["config"]["name"]
        if expect_name and name != expect_name:
            raise CheckpointError(f"{path} holds the model {name!r}, not {expect_name!r}")
        models.append(load_model(path))
    check_model_set(models)
    return models


def check_model_set(models: Sequence) -> None:
    """One variable-rate model, or any number of fixed-rate QRes models of one kind (lossy or
    lossless), each giving one point."""
    if not models:
        raise EvalError("no model")
    if len(models) > 1:
        bad = [m.config.name for m in models if m.config.variable_rate]
        if bad:
            raise EvalError(f"{bad[0]} is a variable-rate model: evaluate it alone (its λ sweep "
                            "gives the curve); several model directories are for fixed-rate QRes "
                            "models, one per λ")
        if len({m.lossless for m in models}) > 1:
            raise EvalError("lossy and lossless models cannot share one result")
        names = list(dict.fromkeys(m.config.name for m in models))
        if len(names) > 1:
            raise EvalError(f"one curve takes one architecture at several λ, got the models "
                            f"{', '.join(names)}: evaluate them separately")
        lmbs = [fixed_lambda(m.config) for m in models]
        dup = sorted({l for l in lmbs if lmbs.count(l) > 1}, key=lambda v: (v is None, v or 0))
        if dup:
            what = "lossless" if dup[0] is None else f"λ = {dup[0]:g}"
            raise EvalError(f"two model directories give the same point ({what}): pass each λ once")


def fixed_lambda(config) -> float | None:
    """λ a fixed-rate QRes model was trained for (None for the lossless model)."""
    return config.default_lmb if config.family == "qres" else None


def lambdas_for(config, lambdas: Sequence[float] | None = None, num: int | None = None,
                lmb_range: Sequence[float] | None = None, default_num: int = L.BITSTREAM_STEPS,
                spacing: str = "log") -> list[float]:
    """:func:`lvae_jax.models.lambdas.lambdas_for` raising :class:`EvalError`."""
    try:
        return L.lambdas_for(config, lambdas, num, lmb_range, default_num, spacing)
    except L.LambdaError as e:
        raise EvalError(str(e)) from None


# ------------------------------------------------------------------------------------------------
# Results
# ------------------------------------------------------------------------------------------------


@dataclass
class LosslessResult:
    """Result of the lossless model: mean bpp over images (bits per sub-pixel = bpp / 3, the
    figure lossless coders are usually compared by), and (real bitstreams) whether every
    decoded image equals its original. ``per_image``: one record per image."""
    name: str
    bpp: float
    per_image: list
    test_set: str | None = None
    exact: bool | None = None
    meta: dict = field(default_factory=dict)

    @property
    def bpsp(self) -> float:
        """Bits per sub-pixel (per colour sample): bpp / 3."""
        return self.bpp / 3.0

    def to_dict(self) -> dict:
        """JSON object in the shape of the official result files (``name``, ``test-set``,
        ``results``), without PSNR:
        ``results: {bpp: [x], bpsp: [x / 3], exact: [bool], per-image: [[...]]}``."""
        out: dict[str, Any] = {"name": self.name}
        if self.test_set is not None:
            out["test-set"] = self.test_set
        out.update(self.meta)
        out["lossless"] = True
        results: dict[str, Any] = {"bpp": [self.bpp], "bpsp": [self.bpsp]}
        if self.exact is not None:
            results["exact"] = [self.exact]
        results["per-image"] = [self.per_image]
        out["results"] = results
        return out


def save_result(result: RDCurve | LosslessResult, path) -> Path:
    """Write an RD curve (official schema, :func:`~lvae_jax.evaluation.rd_json.save_rd`) or a
    lossless result as JSON (atomically: an existing file stays intact on error)."""
    if isinstance(result, RDCurve):
        return save_rd(result, path)
    return write_text_atomic(path, json.dumps(result.to_dict(), indent=4, allow_nan=False) + "\n")


def _run_meta() -> dict:
    """``platform`` and ``device``, as the official eval-var-rate.py records them."""
    import jax
    return {"platform": platform.platform(), "device": str(jax.devices()[0])}


def _model_name(models) -> str:
    names = list(dict.fromkeys(m.config.name for m in models))
    return names[0] if len(names) == 1 else "+".join(names)


# ------------------------------------------------------------------------------------------------
# Real bitstreams
# ------------------------------------------------------------------------------------------------


@dataclass
class _Point:
    codec: Any
    lmb: float | None          # λ given to the codec (None: fixed-rate)
    label: float | None        # λ written to the results


def _size_groups(images: Iterable[EvalImage], stride: int,
                 batch_size: int) -> Iterator[list[tuple[int, EvalImage]]]:
    """(index, image) groups of at most ``batch_size`` images with one padded size; a group is
    yielded as soon as it is full, so at most (sizes × batch_size) images are held at once."""
    pending: dict[tuple[int, int], list] = {}
    for i, im in enumerate(images):
        h, w = im.pixels.shape[:2]
        key = padded_size(h, w, stride)
        pending.setdefault(key, []).append((i, im))
        if len(pending[key]) >= batch_size:
            yield pending.pop(key)
    yield from pending.values()


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "image"


def _image_record(im: EvalImage, data: bytes, parsed, decoded: np.ndarray, lossless: bool,
                  with_ms_ssim: bool) -> dict:
    h, w = im.pixels.shape[:2]
    if decoded.shape != im.pixels.shape:
        raise RuntimeError(f"{im.name}: decoded {decoded.shape}, expected {im.pixels.shape}")
    enc = parsed.encoded
    payload = sum(len(s) for s in enc.latents) + len(enc.pixels or b"")
    rec: dict[str, Any] = {"image": im.name, "height": h, "width": w, "bytes": len(data),
                           "header_bytes": len(data) - payload, "bpp": 8.0 * len(data) / (h * w),
                           "hint_bytes": len(enc.checks.hints or b"")}
    if lossless:
        rec["bpsp"] = rec["bpp"] / 3.0
        rec["exact"] = bool(np.array_equal(to_uint8(decoded), im.pixels))
        return rec
    m = metrics.mse(im.pixels, decoded)
    if m == 0.0:
        raise EvalError(f"{im.name}: decoded exactly by a lossy model, PSNR is infinite")
    rec["mse"] = m
    rec["psnr"] = metrics.psnr_from_mse(m)
    if with_ms_ssim:
        rec["ms-ssim"] = metrics.ms_ssim(im.pixels, decoded)
    return rec


@dataclass(frozen=True)
class RDOptions:
    """How :func:`evaluate_bitstreams` runs. ``lambdas`` / ``num_lambdas`` / ``lmb_range``: λ of a
    variable-rate model (:func:`lambdas_for`; default: 16 over its range). ``fmt``:
    ``"official"`` or ``"lvae"``. ``batch_size``: images of one padded size per device pass
    (encoding and decoding). ``keep_dir``: also write every file there
    (``NN-lmbX/IIII_name.bits``; recorded per image as ``file``). ``num_images``: the count, for
    the progress bar (``progress``: a tqdm bar on stderr). ``log``: receives notes (image
    conversions, decoder notes)."""
    lambdas: Sequence[float] | None = None
    num_lambdas: int | None = None
    lmb_range: Sequence[float] | None = None
    fmt: str = "official"
    with_ms_ssim: bool = False
    batch_size: int = 4
    name: str | None = None
    test_set: str | None = None
    keep_dir: Any = None
    num_images: int | None = None
    progress: bool = False
    log: Callable[[str], None] | None = None


def evaluate_bitstreams(models, images: Iterable[EvalImage],
                        options: RDOptions = RDOptions()) -> RDCurve | LosslessResult:
    """RD evaluation from real bitstreams (see the module docstring).

    ``models``: one model or a list (one variable-rate model, or fixed-rate QRes models giving one
    point each). ``images``: EvalImages, read once. Returns an :class:`RDCurve` (``lambdas``,
    ``bpp``, ``mse``, ``psnr``, optional ``ms-ssim``, ``extra["per-image"]``: per point, one record
    per image) or, for the lossless model, a :class:`LosslessResult`.
    """
    models = list(models) if isinstance(models, (list, tuple)) else [models]
    run = _BitstreamRun(models, options)
    try:
        for group in _size_groups(run.checked(images), models[0].config.max_stride,
                                  options.batch_size):
            run.code(group)
    finally:
        run.bar.close()
    if run.count == 0:
        raise EvalError("no images to evaluate")
    return run.result()


class _BitstreamRun:
    """One :func:`evaluate_bitstreams`: its points (codec, λ), the records per point and image,
    the notes, the progress bar."""

    def __init__(self, models, o: RDOptions):
        check_model_set(models)
        if o.fmt not in FORMATS:
            raise EvalError(f"format must be one of {FORMATS}, got {o.fmt!r}")
        if o.batch_size < 1:
            raise EvalError(f"batch size must be >= 1, got {o.batch_size}")
        if models[0].lossless and o.with_ms_ssim:
            raise EvalError("MS-SSIM of a lossless model is 1: evaluate it without MS-SSIM")
        self.models, self.o = models, o
        self.points = _points(models, o)
        self.dirs = [f"{k:02d}-" + ("lossless" if p.label is None else f"lmb{p.label:.6g}")
                     for k, p in enumerate(self.points)]
        self.records: list[dict[int, dict]] = [{} for _ in self.points]
        self.notes: list[str] = []
        self.count = 0
        total = None if o.num_images is None else o.num_images * len(self.points)
        self.bar = tqdm(total=total, disable=not o.progress, file=sys.stderr, unit="image",
                        desc=f"{_model_name(models)} rd", dynamic_ncols=True)

    def note(self, msg: str) -> None:
        if msg not in self.notes:
            self.notes.append(msg)
            if self.o.log is not None:
                self.o.log(msg)

    def checked(self, images):
        """The images, their notes logged; MS-SSIM's minimum size checked first."""
        for im in images:
            for n in im.notes:
                self.note(n)
            if self.o.with_ms_ssim and min(im.pixels.shape[:2]) < metrics.ms_ssim_min_size():
                raise EvalError(f"{im.name}: {im.pixels.shape[0]}×{im.pixels.shape[1]} is too "
                                f"small for MS-SSIM (needs {metrics.ms_ssim_min_size()} pixels "
                                "per side); evaluate without MS-SSIM")
            yield im

    def code(self, group) -> None:
        """Compress and decompress one group of images (one padded size) at every point."""
        self.count += len(group)
        pixels = [im.pixels for _, im in group]
        lossless = self.models[0].lossless
        for k, p in enumerate(self.points):
            files = p.codec.compress_batch(pixels, p.lmb, fmt=self.o.fmt)
            decoded, parsed, dnotes = p.codec.decompress_batch(files)
            for msg in dnotes:
                self.note(f"{self.dirs[k]}: {msg}")
            for (i, im), data, pf, x in zip(group, files, parsed, decoded):
                rec = _image_record(im, data, pf, x, lossless, self.o.with_ms_ssim)
                if self.o.keep_dir is not None:
                    rec["file"] = self._keep(k, i, im, data)
                self.records[k][i] = rec
            self.bar.update(len(group))
            if not self.bar.disable:
                last = self.records[k][group[-1][0]]
                self.bar.set_postfix_str(f"bpp {last['bpp']:.3f}" + (
                    f" psnr {last['psnr']:.2f}" if "psnr" in last else ""))

    def _keep(self, k: int, i: int, im, data: bytes) -> str:
        suffix = ".lvae" if self.o.fmt == "lvae" else ".bits"
        rel = Path(self.dirs[k]) / f"{i:04d}_{_safe_name(im.name)}{suffix}"
        dst = Path(self.o.keep_dir) / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(dst, data)
        return rel.as_posix()

    def result(self) -> RDCurve | LosslessResult:
        cfg = self.models[0].config
        meta = {**_run_meta(), "rate": "real bitstream: 8 x file bytes / (H x W), headers included",
                "bitstream": _describe_format(self.o.fmt, cfg), "images": self.count,
                "models": [m.config.name for m in self.models]}
        if self.notes:
            meta["notes"] = self.notes
        name = self.o.name or _model_name(self.models)
        per_point = [[self.records[k][i] for i in sorted(self.records[k])]
                     for k in range(len(self.points))]
        if self.models[0].lossless:
            recs = per_point[0]
            meta["header_bytes_mean"] = float(np.mean([r["header_bytes"] for r in recs]))
            return LosslessResult(name, float(np.mean([r["bpp"] for r in recs])), recs,
                                  test_set=self.o.test_set, exact=all(r["exact"] for r in recs),
                                  meta=meta)
        keys = ("bpp", "mse", "psnr") + (("ms-ssim",) if self.o.with_ms_ssim else ())
        rows = []
        for recs in per_point:
            row = metrics.mean_stats([{k: r[k] for k in keys} for r in recs])
            row["per-image"] = recs
            rows.append(row)
        meta["header_bytes_mean"] = [float(np.mean([r["header_bytes"] for r in recs]))
                                     for recs in per_point]
        return RDCurve.from_points(name, rows, test_set=self.o.test_set,
                                   lambdas=[p.label for p in self.points], meta=meta)


def _points(models, o: RDOptions) -> list[_Point]:
    """The points of a run: one codec per λ of a variable-rate model, or one per fixed-rate
    model (sorted by λ)."""
    for m in models:
        if m.config.family == "rd":
            raise EvalError(f"{m.config.name} has no entropy coder (it estimates R(D) by sampling "
                            "its latents): evaluate it with estimated rates (python -m eval estimate)")
    try:
        codecs = [Codec(m) for m in models]
    except CodecUnsupported as e:
        raise EvalError(str(e)) from None
    cfg = models[0].config
    if cfg.variable_rate:
        return [_Point(codecs[0], codecs[0].coder.check_lmb(l), l)
                for l in lambdas_for(cfg, o.lambdas, o.num_lambdas, o.lmb_range)]
    for m in models:
        lambdas_for(m.config, o.lambdas, o.num_lambdas, o.lmb_range)      # refuses any λ choice
    return sorted((_Point(c, None, fixed_lambda(c.config)) for c in codecs),
                  key=lambda p: -1.0 if p.label is None else p.label)


def _describe_format(fmt: str, config) -> str:
    if fmt == "lvae":
        return "lvae-jax container (docs/bitstream.md)"
    if config.family == "qarv":
        return "official QARV layout (image size header + struct body, as compress_file writes)"
    return "official QRes layout (pickle, as compress_file writes)"


# ------------------------------------------------------------------------------------------------
# Estimated rates
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EstimateRun:
    """How :func:`estimate` runs: λ (``lambdas``, or ``num_lambdas`` values over ``lmb_range``;
    defaults: the family's official protocol — QARV 8 values, rd_model_base 16 — over the model's
    range), rd_model_base's ``key`` (required) and ``draws``, ``bpp_pixels`` (``"original"`` or
    ``"padded"`` H·W; default: the protocol of the family, QRes original), the result's ``name``
    and ``test_set``, ``num_images`` / ``progress`` (a tqdm bar on stderr) and ``log``."""
    lambdas: Sequence[float] | None = None
    num_lambdas: int | None = None
    lmb_range: Sequence[float] | None = None
    key: Any = None
    draws: int = 1
    bpp_pixels: str | None = None
    name: str | None = None
    test_set: str | None = None
    num_images: int | None = None
    progress: bool = False
    log: Callable[[str], None] | None = None


def estimate(models, images: Iterable[EvalImage],
             options: EstimateRun = EstimateRun()) -> RDCurve | LosslessResult:
    """Estimated-rate evaluation (no coder), for every model family: a variable-rate model
    (one) follows its family's official protocol
    (:func:`lvae_jax.evaluation.estimate.estimate_rd_curve`), fixed-rate QRes models give one
    point each. Returns an :class:`RDCurve` (``extra["per-image"]`` for QRes), or a
    :class:`LosslessResult` for the lossless model.
    """
    o = options
    models = list(models) if isinstance(models, (list, tuple)) else [models]
    check_model_set(models)
    if o.bpp_pixels is not None and o.bpp_pixels not in BPP_PIXELS:
        raise EvalError(f"bpp_pixels must be one of {BPP_PIXELS}, got {o.bpp_pixels!r}")
    images = list(images)
    for im in images:
        for n in im.notes:
            if o.log is not None:
                o.log(n)
    if not images:
        raise EvalError("no images to evaluate")
    meta = {**_run_meta(), "images": len(images)}
    name = o.name or _model_name(models)
    if models[0].config.variable_rate:
        return _estimate_variable_rate(models[0], images, o, name, meta)
    return _estimate_fixed_rate(models, images, o, name, meta)


def _estimate_variable_rate(model, images, o: EstimateRun, name: str, meta: dict) -> RDCurve:
    cfg = model.config
    protocol = L.PROTOCOLS[cfg.family]
    lmbs = lambdas_for(cfg, o.lambdas, o.num_lambdas, o.lmb_range, default_num=protocol.steps,
                       spacing=protocol.spacing)
    if cfg.family == "rd" and o.key is None:
        raise EvalError(f"{cfg.name} samples its latents even in eval mode: pass a PRNG key")
    if cfg.family != "rd" and o.draws != 1:
        raise EvalError(f"{cfg.name}'s eval-mode rate is deterministic: draws must be 1")
    bar = tqdm(total=len(images), disable=not o.progress, file=sys.stderr, unit="image",
               desc=f"{name} estimate ({len(lmbs)} λ)", dynamic_ncols=True)
    try:
        curve = estimate_rd_curve(model, images, lmbs, key=o.key if cfg.family == "rd" else None,
                                  draws=o.draws, bpp_pixels=o.bpp_pixels, name=name,
                                  test_set=o.test_set, progress=lambda _msg: bar.update(1))
    except EstimateError as e:
        raise EvalError(str(e)) from None
    finally:
        bar.close()
    curve.meta = {**meta, **curve.meta, "protocol": protocol.source}
    return curve


def _estimate_fixed_rate(models, images, o: EstimateRun, name: str, meta: dict):
    cfg = models[0].config
    lambdas_for(cfg, o.lambdas, o.num_lambdas, o.lmb_range)          # refuses any λ choice for QRes
    if o.draws != 1:
        raise EvalError(f"{cfg.name}'s eval-mode rate is deterministic: draws must be 1")
    bpp_pixels = o.bpp_pixels or "original"
    order = sorted(models, key=lambda m: fixed_lambda(m.config) or 0.0)
    bar = tqdm(total=len(images) * len(order), disable=not o.progress, file=sys.stderr,
               unit="image", desc=f"{name} estimate", dynamic_ncols=True)
    try:
        per_point = [estimate_points(m, images, [None], bpp_pixels=bpp_pixels,
                                     progress=lambda _msg: bar.update(1))[0].records
                     for m in order]
    except EstimateError as e:
        raise EvalError(str(e)) from None
    finally:
        bar.close()
    meta.update({"rate": "estimated (eval-mode -log2 P of the quantised latents"
                 + (" + pixel NLL" if cfg.family == "qres" and models[0].lossless else "")
                 + ", no bitstream)", "bpp_pixels": bpp_pixels,
                 "models": [m.config.name for m in order]})
    if models[0].lossless:
        recs = per_point[0]
        return LosslessResult(name, float(np.mean([r["bpp"] for r in recs])), recs,
                              test_set=o.test_set, meta=meta)
    rows = []
    for recs in per_point:
        row = metrics.mean_stats([{k: r[k] for k in ("bpp", "mse", "psnr")} for r in recs])
        row["per-image"] = recs
        rows.append(row)
    return RDCurve.from_points(name, rows, test_set=o.test_set,
                               lambdas=[fixed_lambda(m.config) for m in order], meta=meta)
