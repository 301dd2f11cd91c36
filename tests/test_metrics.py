"""PSNR / MSE / MS-SSIM: hand-computed values, an independent float64 SSIM, and TensorFlow."""

from __future__ import annotations

import math

import imagecodecs
import numpy as np
import pytest
from PIL import Image

from lvae_jax.evaluation import metrics
from sample_images import images_dir

IMAGES = images_dir()


def load(name: str) -> np.ndarray:
    return np.asarray(Image.open(IMAGES / name).convert("RGB"))


def jpeg(x: np.ndarray, quality: int) -> np.ndarray:
    return imagecodecs.jpeg8_decode(imagecodecs.jpeg8_encode(x, level=quality))


# -------------------------------------------------------------------- PSNR
def test_psnr_of_a_constant_error_is_exact():
    x = np.full((4, 6, 3), 0.5)
    assert metrics.mse(x, x + 0.1) == pytest.approx(0.01, rel=1e-12)
    assert metrics.psnr(x, x + 0.1) == pytest.approx(20.0, abs=1e-9)
    assert metrics.psnr_from_mse(1e-4) == pytest.approx(40.0, abs=1e-12)


def test_uint8_is_read_as_x_over_255_and_may_meet_float():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-3, 4, a.shape), 0, 255).astype(np.uint8)
    expected = -10 * math.log10(np.mean(((a / 255.0) - (b / 255.0)) ** 2))
    assert metrics.psnr(a, b) == pytest.approx(expected, abs=1e-9)
    assert metrics.psnr(a, b.astype(np.float32) / np.float32(255)) == pytest.approx(expected, abs=1e-5)
    assert metrics.psnr(a, a) == math.inf


def test_batches_give_one_value_per_image():
    x = np.zeros((2, 4, 4, 3))
    y = np.stack([np.full((4, 4, 3), 0.1), np.full((4, 4, 3), 0.01)])
    np.testing.assert_allclose(metrics.psnr(x, y), [20.0, 40.0])


def test_dataset_psnr_is_the_mean_of_per_image_psnrs():
    # Official rule: average per-image PSNRs (20 and 40 dB -> 30 dB), not the PSNR of the mean
    # MSE (10·log10(1 / 0.00505) = 22.97 dB).
    per_image = [{"mse": 0.01, "psnr": 20.0}, {"mse": 0.0001, "psnr": 40.0}]
    assert metrics.mean_psnr([20.0, 40.0]) == 30.0
    assert metrics.mean_stats(per_image) == {"mse": pytest.approx(0.00505), "psnr": 30.0}
    with pytest.raises(ValueError, match="image 1 has statistics"):
        metrics.mean_stats([{"psnr": 1.0}, {"bpp": 1.0}])
    with pytest.raises(ValueError, match="no PSNR"):
        metrics.mean_psnr([])


def test_bad_images_are_refused():
    x = np.zeros((4, 4, 3))
    with pytest.raises(ValueError, match=r"second image: float pixels must lie in \[0, 1\] \(got 0..235\)"):
        metrics.psnr(x, np.arange(48.0).reshape(4, 4, 3) * 5)
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.psnr(x, np.zeros((4, 5, 3)))
    with pytest.raises(ValueError, match="NaN"):
        metrics.psnr(x, np.full((4, 4, 3), np.nan))
    with pytest.raises(ValueError, match="dtype int64"):
        metrics.psnr(x.astype(np.int64), x.astype(np.int64))
    with pytest.raises(ValueError, match=r"\(\.\.\., H, W, C\)"):
        metrics.psnr(np.zeros((4, 4)), np.zeros((4, 4)))


# -------------------------------------------------------------------- SSIM / MS-SSIM
def test_ssim_matches_a_direct_2d_float64_computation():
    from scipy.signal import correlate
    x = load("coffee256.png")
    y = jpeg(x, 20)
    a, b = x / 255.0, y / 255.0
    g = np.exp(-0.5 * ((np.arange(11) - 5) / 1.5) ** 2)
    kernel = np.outer(g, g) / np.outer(g, g).sum()
    f = lambda z: np.stack([correlate(z[..., c], kernel, mode="valid", method="direct")
                            for c in range(3)], -1)
    mu_a, mu_b = f(a), f(b)
    var_a, var_b, cov = f(a * a) - mu_a ** 2, f(b * b) - mu_b ** 2, f(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ref = np.mean((2 * mu_a * mu_b + c1) * (2 * cov + c2)
                  / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2)))
    assert metrics.ssim(x, y) == pytest.approx(ref, abs=1e-12)


@pytest.fixture(scope="module")
def tf():
    import tensorflow
    return tensorflow


def _tf_ms_ssim(tf, x, y):
    return float(tf.image.ssim_multiscale(tf.constant(x[None]), tf.constant(y[None]),
                                          max_val=255)[0])


@pytest.mark.parametrize("name,crop,quality", [
    ("coffee256.png", None, 20),
    ("astronaut256.png", None, 50),
    ("astronaut512.png", None, 10),
    ("astronaut256.png", (201, 255), 30),   # odd sizes: padding before each 2x2 pooling
    ("rocket256.png", (161, 163), 30),   # the smallest size 5 scales allow
])
def test_ms_ssim_matches_tensorflow(tf, name, crop, quality):
    x = load(name)
    if crop:
        x = np.ascontiguousarray(x[:crop[0], :crop[1]])
    y = jpeg(x, quality)
    ours = metrics.ms_ssim(x, y)
    # TensorFlow computes in float32 (variances by cancellation): ~1e-5 from the float64 value.
    assert ours == pytest.approx(_tf_ms_ssim(tf, x, y), abs=3e-5)
    assert 0.5 < ours < 1.0


def test_ms_ssim_of_noise_matches_tensorflow(tf):
    rng = np.random.default_rng(1)
    x = load("coffee512.png")
    y = np.clip(x + rng.normal(0, 25, x.shape), 0, 255).astype(np.uint8)
    assert metrics.ms_ssim(x, y) == pytest.approx(_tf_ms_ssim(tf, x, y), abs=3e-5)


def test_ms_ssim_orders_distortions_and_is_one_for_identical_images():
    x = load("coffee256.png")
    assert metrics.ms_ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    assert metrics.ms_ssim(x, jpeg(x, 10)) < metrics.ms_ssim(x, jpeg(x, 50)) < \
        metrics.ms_ssim(x, jpeg(x, 90)) < 1.0
    assert metrics.ms_ssim_db(0.99) == pytest.approx(20.0)


def test_ms_ssim_needs_161_pixels():
    assert metrics.ms_ssim_min_size() == 161
    x = load("rocket128.png")
    with pytest.raises(ValueError, match="at least 161×161 pixels, got 128×128"):
        metrics.ms_ssim(x, x)
    with pytest.raises(ValueError, match="at least 11×11"):
        metrics.ssim(x[:10, :10], x[:10, :10])
