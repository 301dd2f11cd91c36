"""Evaluation of image codecs: RD results files, BD-rate, metrics, test images, classical
baselines and RD plots. The command line over it is ``python -m eval``.

    from lvae_jax.evaluation import load_rd, bd_rate
    vtm = load_rd("results/kodak/kodak-vtm18.0.json")
    qarv = load_rd("results/kodak/kodak-qarv_base.json")
    bd_rate(vtm, qarv)            # -5.90 (percent; negative = fewer bits than the anchor)

``bd_rate`` here is the function; its module is ``lvae_jax.evaluation.bd_rate`` (import names
from it with ``from lvae_jax.evaluation.bd_rate import METHODS``).

Importing this package is cheap (numpy only); Pillow, imagecodecs, matplotlib and TFDS are
imported by the functions that need them.
"""

from lvae_jax.evaluation.bd_rate import BDError, BDResult, bd_psnr, bd_rate, compare
from lvae_jax.evaluation.images import EvalImage, ImageSetError, open_images, read_image
from lvae_jax.evaluation.metrics import mean_psnr, mean_stats, mse, ms_ssim, psnr, ssim
from lvae_jax.evaluation.rd_json import RDCurve, RDFormatError, load_curves, load_rd, save_rd

__all__ = [
    "BDError", "BDResult", "bd_psnr", "bd_rate", "compare",
    "EvalImage", "ImageSetError", "open_images", "read_image",
    "mean_psnr", "mean_stats", "mse", "ms_ssim", "psnr", "ssim",
    "RDCurve", "RDFormatError", "load_curves", "load_rd", "save_rd",
]
