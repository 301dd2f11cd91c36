"""Image quality metrics for evaluation: MSE, PSNR, MS-SSIM (numpy, float64).

Images are (H, W, C) arrays (RGB: C = 3), either float in [0, 1] or uint8 (read as ``x / 255``,
like torchvision's ``to_tensor``); a float and a uint8 image may be compared. Leading batch
dimensions are allowed and give one value per image. Everything is accumulated in float64.

Dataset figures follow the official evaluation (``lvae/evaluation.py``): every statistic is
computed per image and then averaged over images — the dataset PSNR is the mean of per-image
PSNRs, not the PSNR of the mean MSE (:func:`mean_stats`).

MS-SSIM is Wang, Simoncelli & Bovik (2003), "Multi-scale structural similarity for image quality
assessment": 5 scales with weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), an 11×11 Gaussian
window with σ = 1.5 ('valid' filtering), K1 = 0.01, K2 = 0.03, data range 1, 2×2 average pooling
between scales. It is computed per colour channel and averaged over channels, with negative
contrast-structure terms clipped to 0 and odd sizes padded by repeating the last row/column
before pooling — the conventions of ``tf.image.ssim_multiscale``, which the tests compare against.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np

#: Wang et al. 2003, Table 1 (also tf.image.ssim_multiscale and pytorch-msssim).
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
SSIM_K1 = 0.01
SSIM_K2 = 0.03
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


def as_float_image(x, name: str = "image") -> np.ndarray:
    """An image as float64 in [0, 1]: uint8 is divided by 255; floats must already be in [0, 1]."""
    a = np.asarray(x)
    if a.dtype == np.uint8:
        return a.astype(np.float64) / 255.0
    if a.dtype.kind != "f":
        raise ValueError(f"{name}: expected uint8 or float pixels, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if a.size and not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: contains NaN or infinite pixels")
    if a.size and (a.min() < 0.0 or a.max() > 1.0):
        raise ValueError(f"{name}: float pixels must lie in [0, 1] (got {a.min():.4g}..{a.max():.4g});"
                         " clamp model output, or pass uint8 arrays for 8-bit images")
    return a


def _pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    a, b = as_float_image(x, "first image"), as_float_image(y, "second image")
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")
    if a.ndim < 3:
        raise ValueError(f"expected (..., H, W, C) images, got shape {a.shape}")
    if a.shape[-3] < 1 or a.shape[-2] < 1:
        raise ValueError(f"empty images: shape {a.shape}")
    return a, b


#: Elements per block of rows in :func:`mse` (float64 copies of a whole 48-Mpx image would take
#: 1.2 GB each).
_MSE_BLOCK = 1 << 22


def mse(x, y):
    """Mean squared error per image over H, W and C, on [0, 1] pixels (float or array).

    Computed in float64 over blocks of rows, so that its memory does not grow with the image."""
    xa, ya = np.asarray(x), np.asarray(y)
    if xa.shape != ya.shape:
        raise ValueError(f"image shapes differ: {xa.shape} vs {ya.shape}")
    if xa.ndim < 3:
        raise ValueError(f"expected (..., H, W, C) images, got shape {xa.shape}")
    h = xa.shape[-3]
    row = int(np.prod(xa.shape[-2:]) * np.prod(xa.shape[:-3], dtype=np.int64))
    step = max(1, _MSE_BLOCK // max(row, 1))
    total = 0.0
    for r in range(0, max(h, 1), step):
        a, b = _pair(xa[..., r : r + step, :, :], ya[..., r : r + step, :, :])
        total = total + np.sum(np.square(a - b), axis=(-3, -2, -1))
    out = total / (h * xa.shape[-2] * xa.shape[-1])
    return float(out) if np.ndim(out) == 0 else out


def psnr_from_mse(m, max_val: float = 1.0):
    """``10·log10(max_val² / mse)`` in dB; ``inf`` for mse = 0."""
    m = np.asarray(m, dtype=np.float64)
    with np.errstate(divide="ignore"):
        out = 10.0 * np.log10(max_val ** 2 / m)
    return float(out) if out.ndim == 0 else out


def psnr(x, y):
    """PSNR in dB per image (RGB: over all three channels), ``inf`` for identical images."""
    return psnr_from_mse(mse(x, y))


def psnr_uint8(x: np.ndarray, y: np.ndarray, rows: int = 256) -> float:
    """PSNR in dB of two uint8 images of one shape, as :func:`psnr` of their ``x / 255`` (exact
    integer sums), in strips of ``rows`` rows: no float copy of a large image."""
    if x.shape != y.shape or x.dtype != np.uint8 or y.dtype != np.uint8:
        raise ValueError(f"psnr_uint8 needs two uint8 images of one shape, got {x.shape} "
                         f"{x.dtype} and {y.shape} {y.dtype}")
    sq = 0
    for r in range(0, x.shape[0], rows):
        d = x[r:r + rows].astype(np.int32) - y[r:r + rows]
        sq += int(np.sum(d * d, dtype=np.int64))
    return psnr_from_mse(sq / (x.size * 255.0 ** 2))


def mean_psnr(psnrs: Iterable[float]) -> float:
    """The dataset PSNR: the mean of per-image PSNRs (the official rule)."""
    values = np.asarray(list(psnrs), dtype=np.float64)
    if values.size == 0:
        raise ValueError("no PSNR values to average")
    return float(values.mean())


def mean_stats(per_image: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Average per-image statistics key by key (``{"bpp", "mse", "psnr", ...}`` per image ->
    dataset means). Every image must have the same keys."""
    if not per_image:
        raise ValueError("no per-image statistics to average")
    keys = list(per_image[0])
    for i, s in enumerate(per_image):
        if set(s) != set(keys):
            raise ValueError(f"image {i} has statistics {sorted(s)}, image 0 has {sorted(keys)}")
    return {k: float(np.mean([float(s[k]) for s in per_image])) for k in keys}


# -------------------------------------------------------------------- SSIM
def _gaussian_window(size: int, sigma: float) -> np.ndarray:
    coords = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-0.5 * (coords / sigma) ** 2)
    return g / g.sum()


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of (..., H, W, C) with the window ``g ⊗ g``."""
    k = g.size
    h, w = x.shape[-3], x.shape[-2]
    rows = sum(g[i] * x[..., i:h - k + 1 + i, :, :] for i in range(k))
    return sum(g[i] * rows[..., :, i:w - k + 1 + i, :] for i in range(k))


def _ssim_terms(a, b, g, max_val, k1, k2) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean SSIM and mean contrast-structure term, shape (..., C)."""
    c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
    mu_a, mu_b = _filter_valid(a, g), _filter_valid(b, g)
    mu_ab, mu_aa_bb = mu_a * mu_b, mu_a ** 2 + mu_b ** 2
    cov_ab = _filter_valid(a * b, g) - mu_ab
    var_sum = _filter_valid(a * a + b * b, g) - mu_aa_bb
    luminance = (2.0 * mu_ab + c1) / (mu_aa_bb + c1)
    cs = (2.0 * cov_ab + c2) / (var_sum + c2)
    return np.mean(luminance * cs, axis=(-3, -2)), np.mean(cs, axis=(-3, -2))


def _downsample(x: np.ndarray) -> np.ndarray:
    """2×2 average pooling; an odd height/width first repeats its last row/column."""
    h, w = x.shape[-3], x.shape[-2]
    pad = [(0, 0)] * (x.ndim - 3) + [(0, h % 2), (0, w % 2), (0, 0)]
    if h % 2 or w % 2:
        x = np.pad(x, pad, mode="symmetric")
    return 0.25 * (x[..., 0::2, 0::2, :] + x[..., 1::2, 0::2, :]
                   + x[..., 0::2, 1::2, :] + x[..., 1::2, 1::2, :])


def ms_ssim_min_size(scales: int = len(MS_SSIM_WEIGHTS), window: int = SSIM_WINDOW) -> int:
    """The smallest height/width for which every scale is at least one window wide (161)."""
    size = window
    for _ in range(scales - 1):
        size = 2 * size - 1     # ceil(s / 2) >= window  <=>  s >= 2·window - 1
    return size


def ssim(x, y, window: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA,
         k1: float = SSIM_K1, k2: float = SSIM_K2):
    """Single-scale SSIM per image (Wang et al. 2004), averaged over channels."""
    a, b = _pair(x, y)
    if min(a.shape[-3], a.shape[-2]) < window:
        raise ValueError(f"SSIM needs images of at least {window}×{window} pixels, got "
                         f"{a.shape[-3]}×{a.shape[-2]}")
    s, _ = _ssim_terms(a, b, _gaussian_window(window, sigma), 1.0, k1, k2)
    out = s.mean(axis=-1)
    return float(out) if out.ndim == 0 else out


def ms_ssim(x, y, weights: Sequence[float] = MS_SSIM_WEIGHTS, window: int = SSIM_WINDOW,
            sigma: float = SSIM_SIGMA, k1: float = SSIM_K1, k2: float = SSIM_K2):
    """MS-SSIM per image in [0, 1] (see the module docstring for the exact definition).

    Images must be at least :func:`ms_ssim_min_size` (161 for 5 scales) pixels high and wide.
    """
    a, b = _pair(x, y)
    h, w = a.shape[-3], a.shape[-2]
    need = ms_ssim_min_size(len(weights), window)
    if min(h, w) < need:
        raise ValueError(f"MS-SSIM with {len(weights)} scales and an {window}-pixel window needs "
                         f"images of at least {need}×{need} pixels, got {h}×{w}")
    g = _gaussian_window(window, sigma)
    factors = []
    for scale in range(len(weights)):
        if scale:
            a, b = _downsample(a), _downsample(b)
        s, cs = _ssim_terms(a, b, g, 1.0, k1, k2)
        factors.append(np.maximum(cs, 0.0))
    factors[-1] = np.maximum(s, 0.0)            # the last scale contributes the full SSIM
    value = np.prod([f ** wt for f, wt in zip(factors, weights)], axis=0)   # (..., C)
    out = value.mean(axis=-1)
    return float(out) if out.ndim == 0 else out


def ms_ssim_db(value: float) -> float:
    """MS-SSIM on the decibel scale used in RD plots: ``-10·log10(1 - MS-SSIM)``."""
    return math.inf if value >= 1.0 else -10.0 * math.log10(1.0 - value)
