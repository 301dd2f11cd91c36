"""Periodic evaluation during training: estimated rate–distortion points on an image folder.

For each λ (the model's own for fixed-rate models; ``steps`` λ spaced as the official
``self_evaluate`` for variable-rate ones, see :mod:`lvae_jax.training.lambdas`) and each image,
an evaluation-mode forward pass (rounded latents, the coder's likelihoods — no bitstream):

- the image is padded to a multiple of 64 by edge replication and the reconstruction cropped back
  (the official variable-rate ``_self_evaluate``; the official fixed-rate evaluation crops the image
  to a multiple of 64 instead — identical on Kodak-sized images);
- ``bpp = Σ rates (nats) · log2(e) / (H · W)`` of the original size; ``mse`` in [0, 1] units of the
  clamped reconstruction; ``psnr = −10 log10(mse)``; each averaged over images.

Results follow the schema of the official results files (``name``, ``test-set``, ``lambdas``,
``results: {bpp, psnr, mse}``) with a few extra keys (``step``, ``weights``, ``estimated``). When
the folder is a known test set (Kodak, Tecnick, CLIC 2022) or an anchor file is given, the BD-rate
against the VTM 18.0 anchor is added (``lvae_jax.evaluation.bd_rate``).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lvae_jax import numerics
from lvae_jax.data.sources import ImageFolderSource
from lvae_jax.image import pad_to_multiple, to_float
from lvae_jax.training.lambdas import eval_lambdas

log = logging.getLogger(__name__)

#: Test sets with VTM 18.0 anchors in ``<shared>/results/<set>/<set>-vtm18.0.json``.
KNOWN_TEST_SETS = ("kodak", "tecnick-rgb-1200", "clic2022-test")


def shared_dir() -> Path:
    """``$LVAE_SHARED_DIR`` or the ``shared`` folder beside the repository."""
    env = os.environ.get("LVAE_SHARED_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared"


def detect_test_set(folder) -> str | None:
    """A known test-set name if the folder looks like one (by name), else None."""
    name = Path(folder).resolve().name.lower()
    for known in KNOWN_TEST_SETS:
        if known in name:
            return known
    return None


def find_anchor(folder, anchor: str | None = None) -> Path | None:
    """The anchor RD curve for BD-rate: ``anchor`` if given, else VTM 18.0 of a known test set."""
    if anchor:
        return Path(anchor)
    test_set = detect_test_set(folder)
    if test_set is None:
        return None
    path = shared_dir() / "results" / test_set / f"{test_set}-vtm18.0.json"
    return path if path.is_file() else None


def compute_bd_rate(anchor_path, bpp, psnr) -> tuple[float | None, str]:
    """-> (BD-rate in percent against the anchor curve, or None; a note saying why not).

    The anchor is read with :func:`lvae_jax.evaluation.rd_json.load_rd` (any official
    spelling) and the BD-rate is :func:`lvae_jax.evaluation.bd_rate.bd_rate` (the official
    cubic fit); a curve it cannot handle (fewer than 4 points, no PSNR overlap with the anchor)
    gives None and the reason instead of stopping the run."""
    from lvae_jax.evaluation.bd_rate import MIN_POINTS, BDError, bd_rate
    from lvae_jax.evaluation.rd_json import RDFormatError, load_rd
    if len(bpp) < MIN_POINTS:
        return None, f"BD-rate needs at least {MIN_POINTS} RD points, have {len(bpp)}"
    try:
        anchor = load_rd(anchor_path)
        return bd_rate(anchor, (list(bpp), list(psnr))), "ok"
    except (BDError, RDFormatError) as e:
        return None, f"no BD-rate: {e}"


class RDEvaluator:
    """Estimated RD points of a model's parameters on the images of ``folder``.

    ``evaluator(params, step=..., weights="ema") -> results dict`` (official schema + extras).
    Each image size is compiled once (the parameters are an argument, not a constant).
    """

    def __init__(self, graphdef, model_config, folder, lambdas: int, name: str,
                 anchor: str | None = None, seed: int = 0, compiler_options: dict | None = None):
        self.graphdef, self.config, self.name = graphdef, model_config, name
        self.folder = Path(folder)
        src = ImageFolderSource(self.folder)
        self.images = [(src.describe(i), src[i]) for i in range(len(src))]
        self.lambdas = eval_lambdas(model_config, lambdas)
        self.test_set = detect_test_set(self.folder) or self.folder.name
        self.anchor = find_anchor(self.folder, anchor)
        self.key = jax.random.key_data(jax.random.key(seed))  # rd_model_base samples z
        self._fwd = jax.jit(self._forward, static_argnums=(4, 5),
                            compiler_options=compiler_options or None)

    def _forward(self, params, im, lmb, key, h: int, w: int):
        model = nnx.merge(self.graphdef, params)
        out = model(im, lmb, training=False, key=jax.random.wrap_key_data(key))
        nats = sum(jnp.sum(st.rate) for st in out.latents)
        x_hat = out.x_hat[:, :h, :w, :]  # the lossless model's x_hat is already its pixel mean
        target = im[:, :h, :w, :]
        mse = jnp.mean(jnp.square(numerics.process_output(x_hat) - target))
        return nats, mse

    def __call__(self, params, step: int | None = None, weights: str = "ema") -> dict:
        bpp_all, psnr_all, mse_all = [], [], []
        for lmb in self.lambdas:
            bpps, psnrs, mses = [], [], []
            for _, im8 in self.images:
                h, w = im8.shape[:2]
                im = jnp.asarray(pad_to_multiple(to_float(im8), self.config.max_stride)[None])
                lmb_arg = None if lmb is None else jnp.float32(lmb)
                nats, mse = self._fwd(params, im, lmb_arg, self.key, h, w)
                nats, mse = float(nats), float(mse)
                bpps.append(nats * numerics.LOG2_E / (h * w))
                mses.append(mse)
                psnrs.append(-10.0 * math.log10(mse) if mse > 0 else float("inf"))
            bpp_all.append(float(np.mean(bpps)))
            psnr_all.append(float(np.mean(psnrs)))
            mse_all.append(float(np.mean(mses)))
        from lvae_jax.evaluation.rd_json import RDCurve
        lambdas = [self.config.default_lmb if l is None else l for l in self.lambdas]
        meta = {"step": step, "weights": weights, "estimated": True,
                "num_images": len(self.images)}
        if self.anchor is not None:
            bd, note = compute_bd_rate(self.anchor, bpp_all, psnr_all)
            meta.update(bd_rate_anchor=str(self.anchor), bd_rate=bd)
            if bd is None:
                meta["bd_rate_note"] = note
        curve = RDCurve(name=self.name, bpp=bpp_all, psnr=psnr_all, mse=mse_all,
                        test_set=self.test_set, lambdas=lambdas, meta=meta)
        return curve.to_dict()  # the official results schema (lvae_jax.evaluation.rd_json)
