"""Periodic evaluation during training: estimated rate–distortion points on an image folder.

For each λ (the model's own for fixed-rate models; ``steps`` λ spaced as the official
``self_evaluate`` for variable-rate ones, see :mod:`lvae_jax.models.lambdas`) and each image,
the estimated rate and distortion of :mod:`lvae_jax.evaluation.estimate` (evaluation-mode forward
pass: rounded latents, the coder's likelihoods — no bitstream; the image padded to a multiple of
64 and the reconstruction cropped back, as the official variable-rate ``_self_evaluate``; bpp
over the original H·W), averaged over images.

Results follow the schema of the official results files (``name``, ``test-set``, ``lambdas``,
``results: {bpp, psnr, mse}``) with a few extra keys (``step``, ``weights``, ``estimated``). When
the folder is a known test set (Kodak, Tecnick, CLIC 2022) or an anchor file is given, the BD-rate
against the VTM 18.0 anchor (packaged: :mod:`lvae_jax.evaluation.official_results`) is added
(``lvae_jax.evaluation.bd_rate``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import jax

from lvae_jax.data.sources import ImageFolderSource
from lvae_jax.evaluation.images import EvalImage
from lvae_jax.models.lambdas import self_evaluate_lambdas
from lvae_jax.evaluation.bd_rate import BDError, MIN_POINTS, bd_rate
from lvae_jax.evaluation.estimate import estimate_curve, estimate_points
from lvae_jax.evaluation.official_results import TEST_SETS, anchor_for, resolve
from lvae_jax.evaluation.rd_json import RDFormatError, load_rd
from lvae_jax.models.inference import InferenceModel

log = logging.getLogger(__name__)

def detect_test_set(folder) -> str | None:
    """A known test-set name if the folder looks like one (by name), else None."""
    name = Path(folder).resolve().name.lower()
    for known in TEST_SETS:
        if known in name:
            return known
    return None


def find_anchor(folder, anchor: str | None = None) -> Path | None:
    """The anchor RD curve for BD-rate: ``anchor`` (a file or a packaged name such as
    ``kodak/vtm18.0``) if given, else the packaged VTM 18.0 curve of a known test set."""
    if anchor:
        return resolve(anchor)
    test_set = detect_test_set(folder)
    return None if test_set is None else anchor_for(test_set)


def compute_bd_rate(anchor_path, bpp, psnr) -> tuple[float | None, str]:
    """-> (BD-rate in percent against the anchor curve, or None; a note saying why not).

    The anchor is read with :func:`lvae_jax.evaluation.rd_json.load_rd` (any official
    spelling) and the BD-rate is :func:`lvae_jax.evaluation.bd_rate.bd_rate` (the official
    cubic fit); a curve it cannot handle (fewer than 4 points, no PSNR overlap with the anchor)
    gives None and the reason instead of stopping the run."""
    if len(bpp) < MIN_POINTS:
        return None, f"BD-rate needs at least {MIN_POINTS} RD points, have {len(bpp)}"
    try:
        anchor = load_rd(anchor_path)
        return bd_rate(anchor, (list(bpp), list(psnr))), "ok"
    except (BDError, RDFormatError) as e:
        return None, f"no BD-rate: {e}"


class RDEvaluator:
    """Estimated RD points of a model's parameters on the images of ``folder`` (the official
    ``self_evaluate`` λ, :func:`lvae_jax.models.lambdas.self_evaluate_lambdas`; the loop is
    :func:`lvae_jax.evaluation.estimate.estimate_curve`).

    ``evaluator(params, step=..., weights="ema") -> results dict`` (official schema + extras).
    Each image size is compiled once (the parameters are an argument, not a constant).
    """

    def __init__(self, graphdef, model_config, folder, lambdas: int, name: str,
                 anchor: str | None = None, seed: int = 0, compiler_options: dict | None = None):
        self.graphdef, self.config, self.name = graphdef, model_config, name
        self.folder = Path(folder)
        src = ImageFolderSource(self.folder)
        self.images = [EvalImage(src.describe(i), src[i]) for i in range(len(src))]
        self.lambdas = self_evaluate_lambdas(model_config, lambdas)
        self.test_set = detect_test_set(self.folder) or self.folder.name
        self.anchor = find_anchor(self.folder, anchor)
        self.key = jax.random.key(seed)  # rd_model_base samples z

    def __call__(self, params, step: int | None = None, weights: str = "ema") -> dict:
        model = InferenceModel(self.graphdef, params, self.config)
        meta = {"step": step, "weights": weights, "estimated": True,
                "num_images": len(self.images)}
        if self.config.lossless:
            # lossless: the rate only (bits per pixel and per sub-pixel), no PSNR
            bpp = estimate_points(model, self.images, self.lambdas)[0].mean("bpp")
            return {"name": self.name, "test-set": self.test_set, **meta, "lossless": True,
                    "lambdas": [None], "results": {"bpp": [bpp], "bpsp": [bpp / 3.0]}}
        curve = estimate_curve(model, self.images, self.lambdas,
                               key=self.key if self.config.family == "rd" else None,
                               name=self.name, test_set=self.test_set)
        if self.anchor is not None:
            bd, note = compute_bd_rate(self.anchor, curve.bpp, curve.psnr)
            meta.update(bd_rate_anchor=str(self.anchor), bd_rate=bd)
            if bd is None:
                meta["bd_rate_note"] = note
        curve.meta = meta
        return curve.to_dict()  # the official results schema (lvae_jax.evaluation.rd_json)
