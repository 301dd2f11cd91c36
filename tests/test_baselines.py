"""Classical codec baselines, and the evaluation image loading they run on."""

from __future__ import annotations

import json
from types import SimpleNamespace

import imagecodecs
import numpy as np
import pytest
from PIL import Image

from lvae_jax.evaluation import baselines, metrics
from lvae_jax.evaluation.baselines import (CODECS, CodecUnavailable, code_image, codec_availability,
                                           evaluate_codecs, get_codec, with_options)
from lvae_jax.evaluation.images import (ImageSetError, array_to_eval_image, iter_tfds,
                                        list_image_files, open_images, read_image)
from lvae_jax.evaluation.rd_json import load_curves, save_rd
from lvae_jax.image import ImageError
from sample_images import images_dir

IMAGES = images_dir()


def small_images():
    return [im for im in open_images(IMAGES) if im.name in ("cat128.png", "coffee64.png")]


# ==================================================================== codecs
@pytest.mark.parametrize("name", list(CODECS))
def test_each_codec_runs_or_says_why_not(name):
    reason = codec_availability([name])[name]
    codec = get_codec(name)
    if reason is not None:
        assert name in reason and "imagecodecs" in reason
        with pytest.raises(CodecUnavailable):
            codec.check()
        return
    x = np.asarray(Image.open(IMAGES / "rocket128.png").convert("RGB"))
    data = codec.encode(x, 50)
    y = codec.decode(data)
    assert y.shape == x.shape and y.dtype == np.uint8
    assert 20.0 < metrics.psnr(x, y) < 60.0
    stats = code_image(codec, x, 50)
    # bpp counts every byte the encoder wrote (container/headers included).
    assert stats["bpp"] == 8 * len(data) / (128 * 128)
    assert stats["psnr"] == pytest.approx(metrics.psnr(x, y), abs=1e-12)
    assert stats["mse"] == pytest.approx(metrics.mse(x, y), abs=1e-15)
    desc = codec.describe()
    assert desc["library"].startswith(codec.library) and desc["options"] == dict(codec.options)


def test_files_are_complete_containers():
    x = np.asarray(Image.open(IMAGES / "rocket128.png").convert("RGB"))
    magic = {"jpeg": b"\xff\xd8\xff", "webp": b"RIFF", "avif": b"ftypavif", "jxl": b"\xff\x0a"}
    for name, available in codec_availability().items():
        if available is None:
            data = get_codec(name).encode(x, 50)
            assert magic[name] in data[:12], name
            # a standalone decoder (Pillow) reads the JPEG and WebP files as they are
            if name in ("jpeg", "webp"):
                import io
                assert Image.open(io.BytesIO(data)).size == (128, 128)


def test_unavailable_codec_is_reported_and_refused(monkeypatch):
    monkeypatch.setattr(imagecodecs, "JPEGXL", SimpleNamespace(available=False))
    reason = codec_availability(["jpeg", "jxl"])
    assert reason["jpeg"] is None
    assert "jxl" in reason["jxl"] and "JPEG XL" in reason["jxl"] and "JPEGXL.available" in reason["jxl"]
    with pytest.raises(CodecUnavailable, match="jxl"):
        evaluate_codecs(small_images(), ["jpeg", "jxl"], [50])


def test_curves_are_per_image_averages(tmp_path):
    images = small_images()
    qualities = [30, 60, 90]
    curves = evaluate_codecs(images, ["jpeg", "webp"], qualities, test_set="samples")
    assert [c.name for c in curves] == ["jpeg", "webp"]
    for c in curves:
        codec = get_codec(c.name)
        assert c.test_set == "samples" and c.settings["quality"] == tuple(qualities)
        assert c.meta["num_images"] == 2 and c.meta["codec"] == codec.title
        for i, q in enumerate(qualities):
            per = [code_image(codec, im.pixels, q) for im in images]
            assert c.bpp[i] == pytest.approx(np.mean([s["bpp"] for s in per]), rel=1e-12)
            assert c.psnr[i] == pytest.approx(np.mean([s["psnr"] for s in per]), rel=1e-12)
            assert c.mse[i] == pytest.approx(np.mean([s["mse"] for s in per]), rel=1e-12)
        assert list(c.bpp) == sorted(c.bpp) and list(c.psnr) == sorted(c.psnr)
    # the results file is the official schema, one object per codec
    path = save_rd(curves, tmp_path / "classical.json")
    data = json.loads(path.read_text())
    assert [d["name"] for d in data] == ["jpeg", "webp"]
    assert set(data[0]["results"]) == {"bpp", "mse", "psnr"} and data[0]["quality"] == qualities
    assert load_curves(path) == curves


def test_ms_ssim_is_optional_and_checks_image_size():
    images = [read_image(IMAGES / "face64-1.png")]          # too small
    with pytest.raises(ValueError, match="too small for MS-SSIM"):
        evaluate_codecs(images, ["jpeg"], [50], with_ms_ssim=True)
    big = [read_image(IMAGES / "astronaut256.png")]
    c, = evaluate_codecs(big, ["jpeg"], [20, 80], with_ms_ssim=True)
    assert c.ms_ssim[0] < c.ms_ssim[1] < 1.0


def test_lossless_qualities_are_left_out():
    name = next((n for n in ("avif", "webp") if codec_availability([n])[n] is None), None)
    assert name is not None, "neither AVIF nor WebP is available"
    codec = with_options("avif", speed=9) if name == "avif" else with_options("webp", lossless=True)
    messages = []
    c, = evaluate_codecs(small_images(), [codec], [40, 100], progress=messages.append)
    assert c.settings["quality"] == (40,)
    assert c.meta["lossless_qualities_left_out"] == [100]
    assert any("infinite PSNR" in m for m in messages)


@pytest.mark.parametrize("qualities,message", [
    ([50, 101], "quality 101 is not an integer in 0..100"),
    ([50, 50], "repeats"),
    ([True], "not an integer"),
    ([], "empty quality sweep"),
])
def test_bad_quality_sweeps(qualities, message):
    with pytest.raises(ValueError, match=message):
        evaluate_codecs(small_images(), ["jpeg"], qualities)


def test_unknown_codec_and_no_images():
    with pytest.raises(ValueError, match="unknown codec 'png'.*jpeg, webp, avif, jxl"):
        get_codec("png")
    with pytest.raises(ValueError, match="no images"):
        evaluate_codecs([], ["jpeg"], [50])


def test_default_sweep_is_lossy():
    assert max(baselines.DEFAULT_QUALITIES) < 100


# ==================================================================== images
def save(path, array, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kw)
    return path


def test_folder_is_recursive_sorted_and_skips_non_images(tmp_path):
    rgb = np.zeros((4, 5, 3), np.uint8)
    save(tmp_path / "b.png", rgb)
    save(tmp_path / "a" / "z.jpg", rgb)
    save(tmp_path / "a" / "c.PNG", rgb)
    save(tmp_path / ".hidden" / "x.png", rgb)
    (tmp_path / "README.txt").write_text("not an image")
    (tmp_path / ".DS_Store").write_bytes(b"\0")
    assert [p.relative_to(tmp_path).as_posix() for p in list_image_files(tmp_path)] == \
        ["a/c.PNG", "a/z.jpg", "b.png"]
    assert [im.name for im in open_images(tmp_path)] == ["a/c.PNG", "a/z.jpg", "b.png"]


def test_sample_images_are_read_exactly():
    images = list(open_images(IMAGES))
    assert len(images) == 12 and images[0].name == "astronaut256.png"
    ref = np.asarray(Image.open(IMAGES / "coffee256.png"))
    im = next(i for i in images if i.name == "coffee256.png")
    assert im.pixels.dtype == np.uint8 and np.array_equal(im.pixels, ref) and im.notes == ()
    assert im.num_pixels == 256 * 256


def test_conversions_are_noted(tmp_path):
    gray = np.arange(20, dtype=np.uint8).reshape(4, 5) * 10
    im = read_image(save(tmp_path / "g.png", gray))
    assert np.array_equal(im.pixels, np.repeat(gray[..., None], 3, -1))
    assert any("grayscale" in n for n in im.notes)

    rgba = np.dstack([np.full((4, 5, 3), 7, np.uint8), np.full((4, 5), 255, np.uint8)])
    im = read_image(save(tmp_path / "opaque.png", rgba))
    assert np.all(im.pixels == 7) and any("opaque alpha" in n for n in im.notes)

    rgba[0, 0, 3] = 10
    path = save(tmp_path / "see-through.png", rgba)
    with pytest.raises(ImageError, match="see-through.png: has a non-opaque alpha"):
        read_image(path)
    assert any("discarded" in n for n in read_image(path, alpha="drop").notes)

    pal = Image.fromarray(np.full((4, 5, 3), 100, np.uint8)).convert("P")
    pal.save(tmp_path / "pal.png")
    im = read_image(tmp_path / "pal.png")
    assert np.array_equal(im.pixels, np.asarray(pal.convert("RGB")))
    assert any("palette" in n for n in im.notes)

    g16 = (np.arange(20, dtype=np.uint16).reshape(4, 5) * 3000 + 200)
    (tmp_path / "g16.png").write_bytes(imagecodecs.png_encode(g16))
    im = read_image(tmp_path / "g16.png")
    assert np.array_equal(im.pixels[..., 0], np.round(g16 / 257).astype(np.uint8))
    assert any("16-bit" in n for n in im.notes)


@pytest.mark.parametrize("fmt", ["png", "tiff"])
def test_16_bit_rgb_is_rounded_not_truncated(tmp_path, fmt):
    # Pillow opens these as 8-bit RGB keeping the high byte (x >> 8); evaluation decodes the
    # full depth and rounds like 16-bit grayscale.
    rgb16 = (np.arange(4 * 5 * 3, dtype=np.uint16).reshape(4, 5, 3) * 1000 + 200)
    path = tmp_path / f"deep.{fmt}"
    path.write_bytes(imagecodecs.png_encode(rgb16) if fmt == "png"
                     else imagecodecs.tiff_encode(rgb16, photometric="rgb"))
    assert Image.open(path).mode == "RGB"               # what Pillow alone would do
    im = read_image(path)
    expected = np.round(rgb16 / 257.0).astype(np.uint8)
    assert np.array_equal(im.pixels, expected)
    assert not np.array_equal(expected, (rgb16 >> 8).astype(np.uint8))
    assert any("16-bit pixels reduced to 8 bits" in n for n in im.notes)


def test_16_bit_alpha_is_checked(tmp_path):
    rgba16 = np.full((4, 5, 4), 40000, np.uint16)
    rgba16[..., 3] = 65535
    (tmp_path / "opaque.png").write_bytes(imagecodecs.png_encode(rgba16))
    im = read_image(tmp_path / "opaque.png")
    assert np.all(im.pixels == round(40000 / 257)) and any("opaque alpha" in n for n in im.notes)
    la16 = np.full((4, 5, 2), 1000, np.uint16)              # gray + alpha, alpha not opaque
    (tmp_path / "la.png").write_bytes(imagecodecs.png_encode(la16))
    with pytest.raises(ImageError, match="la.png: has a non-opaque alpha"):
        read_image(tmp_path / "la.png")
    im = read_image(tmp_path / "la.png", alpha="drop")
    assert im.pixels.shape == (4, 5, 3) and np.all(im.pixels == 4)
    assert any("grayscale" in n for n in im.notes) and any("discarded" in n for n in im.notes)


def test_multi_frame_files_use_the_first_frame(tmp_path):
    frames = [Image.fromarray(np.full((4, 5, 3), v, np.uint8)) for v in (0, 255)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    im = read_image(tmp_path / "anim.gif")
    assert np.all(im.pixels == 0) and any("2 frames" in n for n in im.notes)


def test_unreadable_inputs(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ImageError, match="broken.png: not a readable image"):
        list(open_images(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageSetError, match="empty: no image files"):
        open_images(tmp_path / "empty")
    with pytest.raises(ImageSetError, match="no such folder"):
        open_images(tmp_path / "missing")
    with pytest.raises(ImageSetError, match="needs a dataset name"):
        open_images("tfds:")
    with pytest.raises(ImageError, match="got shape"):
        array_to_eval_image(np.zeros((4, 5, 2), np.uint8), "two-channel")
    with pytest.raises(ImageError, match="float32"):
        array_to_eval_image(np.zeros((4, 5, 3), np.float32), "floats")


# -------------------------------------------------------------------- TFDS
@pytest.fixture(scope="module")
def tfds_builders():
    """Two tiny dataset builders (RGB and grayscale images), registered once."""
    import tensorflow_datasets as tfds

    class Base(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("1.0.0")
        CHANNELS = 3

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
                {"image": tfds.features.Image(shape=(None, None, self.CHANNELS))}))

        def _split_generators(self, dl_manager):
            return {"test": self._generate_examples()}

        def _generate_examples(self):
            yield 0, {"image": np.zeros((8, 8, self.CHANNELS), np.uint8)}

    def make(name, channels):    # registered under the snake-case class name
        return type(name, (Base,), {"CHANNELS": channels, "__module__": __name__})

    return {"rgb": make("LvaeEvalRgbImages", 3), "gray": make("LvaeEvalGrayImages", 1)}


def test_tfds_images_are_read_and_converted(tfds_builders):
    import tensorflow_datasets as tfds
    with tfds.testing.mock_data(num_examples=3, policy=tfds.testing.MockPolicy.USE_CODE):
        rgb = list(open_images("tfds:lvae_eval_rgb_images", split="test"))
        gray = list(iter_tfds("lvae_eval_gray_images", split="test"))
    assert [im.name for im in rgb] == [f"tfds:lvae_eval_rgb_images/test#{i}" for i in range(3)]
    for im in rgb + gray:
        assert im.pixels.dtype == np.uint8 and im.pixels.ndim == 3 and im.pixels.shape[-1] == 3
    assert all(im.notes == () for im in rgb)
    assert all(any("grayscale" in n for n in im.notes) for im in gray)
    assert all(np.array_equal(im.pixels[..., 0], im.pixels[..., 2]) for im in gray)


def test_unprepared_tfds_dataset_says_how_to_prepare(tfds_builders, tmp_path):
    with pytest.raises(ImageSetError, match=r"tfds:lvae_eval_rgb_images .*tfds build .*never downloads"):
        list(open_images("tfds:lvae_eval_rgb_images", data_dir=str(tmp_path)))
    with pytest.raises(ImageSetError, match="no_such_dataset_anywhere .*no such dataset") as err:
        list(open_images("tfds:no_such_dataset_anywhere", data_dir=str(tmp_path)))
    assert len(str(err.value)) < 400
