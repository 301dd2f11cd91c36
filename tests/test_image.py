"""Image input for the codec command lines (lvae_jax.image): conversions with notes, refusals."""

from __future__ import annotations

import imagecodecs
import numpy as np
import pytest
from PIL import Image

from lvae_jax.image import ImageError, load_rgb8, pad_to_multiple, to_float, to_uint8


def test_16_bit_rgb_png_is_read_at_full_depth(tmp_path):
    # Pillow would keep the high byte (200 >> 8 == 0); round(200 / 257) == 1.
    arr = np.full((3, 5, 3), 200, np.uint16)
    arr[0, 0] = (65535, 257 * 7, 0)
    (tmp_path / "deep.png").write_bytes(imagecodecs.png_encode(arr))
    rgb, notes = load_rgb8(tmp_path / "deep.png")
    assert rgb.dtype == np.uint8 and rgb.shape == (3, 5, 3)
    assert np.all(rgb[1:] == 1) and tuple(rgb[0, 0]) == (255, 7, 0)
    assert any("16-bit" in n for n in notes)


def test_16_bit_gray_and_alpha_rules(tmp_path):
    gray = np.full((4, 4), 257 * 9, np.uint16)
    Image.fromarray(gray).save(tmp_path / "g16.png")
    rgb, notes = load_rgb8(tmp_path / "g16.png")
    assert np.all(rgb == 9) and any("grayscale" in n for n in notes)
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 3] = 10
    Image.fromarray(rgba).save(tmp_path / "a.png")
    with pytest.raises(ImageError, match="non-opaque alpha"):
        load_rgb8(tmp_path / "a.png")
    _, notes = load_rgb8(tmp_path / "a.png", alpha="drop")
    assert any("discarded" in n for n in notes)


def test_bytes_missing_and_garbage():
    buf = imagecodecs.png_encode(np.zeros((2, 3, 3), np.uint8))
    rgb, _ = load_rgb8(buf)
    assert rgb.shape == (2, 3, 3)
    with pytest.raises(ImageError, match="no such file"):
        load_rgb8("/nonexistent/x.png")
    with pytest.raises(ImageError, match="not a readable image"):
        load_rgb8(b"not an image at all")


def test_padding_replicates_edges_and_float_round_trip():
    im = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    p = pad_to_multiple(im, 4)
    assert p.shape == (4, 4, 3)
    assert np.array_equal(p[:2, :3], im) and np.array_equal(p[3, 3], im[1, 2])
    assert np.array_equal(to_uint8(to_float(im)), im)
