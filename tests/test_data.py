"""Training input: sources, augmentation, deterministic sampling, the prefetching loader."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lvae_jax.data import (DataError, DataPosition, EpochSampler, ImageFolderSource,
                           Reading, TFDSImageSource, TrainLoader, random_crop_flip)
from lvae_jax.data.augment import reflect_pad_to
from sample_images import images_dir

IMAGES = images_dir()


@pytest.fixture()
def image_dir(tmp_path):
    """A nested folder of the real sample images plus converted variants and a non-image file."""
    root = tmp_path / "imgs"
    (root / "sub" / "deeper").mkdir(parents=True)
    names = sorted(p.name for p in IMAGES.glob("*.png"))
    for i, name in enumerate(names[:6]):
        dst = root / ("sub" if i % 2 else ".") / name
        shutil.copy(IMAGES / name, dst)
    rgb = np.asarray(Image.open(IMAGES / "coffee64.png").convert("RGB"))
    Image.fromarray(rgb).convert("L").save(root / "sub" / "deeper" / "gray.png")
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 128, np.uint8)], axis=-1)
    Image.fromarray(rgba, "RGBA").save(root / "sub" / "rgba.png")
    g16 = (rgb[..., 0].astype(np.uint16) * 257)
    Image.fromarray(g16).save(root / "sub" / "deeper" / "g16.png")
    Image.fromarray(rgb).save(root / "sub" / "q.jpg", quality=95)
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.png").write_bytes(b"junk")
    return root


# -- sources -------------------------------------------------------------------------------------


def test_folder_source_recursive_and_converted(image_dir, caplog):
    src = ImageFolderSource(image_dir)
    names = [Path(src.describe(i)).name for i in range(len(src))]
    assert len(src) == 6 + 4
    assert "notes.txt" not in names and ".hidden.png" not in names
    assert names == [Path(p).name for p in sorted(src.paths)]
    with caplog.at_level(logging.INFO, logger="lvae_jax.data.sources"):
        for i in range(len(src)):
            im = src[i]
            assert im.dtype == np.uint8 and im.ndim == 3 and im.shape[-1] == 3
    text = caplog.text
    assert "grayscale replicated to RGB" in text
    assert "alpha channel discarded" in text
    assert "16-bit" in text
    gray = src[names.index("gray.png")]
    assert np.array_equal(gray[..., 0], gray[..., 2])
    g16 = src[names.index("g16.png")]
    ref = np.asarray(Image.open(IMAGES / "coffee64.png").convert("RGB"))[..., 0]
    assert np.array_equal(g16[..., 0], ref)  # x*257/257 exactly


def test_folder_source_errors(tmp_path):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="no images found"):
        ImageFolderSource(empty)
    with pytest.raises(DataError, match="does not exist"):
        ImageFolderSource(tmp_path / "missing")
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(IMAGES / "coffee64.png", bad / "a.png")
    (bad / "b_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    src = ImageFolderSource(bad)
    assert src[0].shape == (64, 64, 3)
    with pytest.raises(DataError, match="b_broken.png"):
        src[1]
    with pytest.raises(DataError, match="b_broken.png"):
        ImageFolderSource(bad, check=True)


def test_tfds_source_mock():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
        src = TFDSImageSource("coco/2017", split="train")
        assert len(src) == 6
        im = src[2]
        assert im.dtype == np.uint8 and im.ndim == 3 and im.shape[-1] == 3
        np.testing.assert_array_equal(im, src[2])  # random access is deterministic
        with TrainLoader(src, global_batch=3, crop=64, seed=0, reading=Reading(2)) as loader:
            b1, b2, b3 = next(loader), next(loader), next(loader)
            assert b1.shape == (3, 64, 64, 3) and b1.dtype == np.uint8
            assert loader.position == DataPosition(1, 3)


def test_tfds_missing_dataset_is_a_clear_error(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(DataError, match="array_record"):
        TFDSImageSource("coco/2017", data_dir=str(tmp_path))


# -- augmentation --------------------------------------------------------------------------------


def test_reflect_pad_is_torchvision_pad_if_needed():
    im = np.arange(2 * 3 * 1, dtype=np.uint8).reshape(2, 3, 1)  # H=2, W=3
    out = reflect_pad_to(im, 5)
    # width: 5-3 = 2 on both sides -> 7; height: 5-2 = 3 on both sides -> 8 (numpy reflect,
    # which repeats the reflection for pads longer than the image, like torchvision on PIL)
    assert out.shape == (8, 7, 1)
    row = np.pad(im[0, :, 0], (2, 2), mode="reflect")
    np.testing.assert_array_equal(out[3, :, 0], row)
    np.testing.assert_array_equal(out[:, 2, 0], np.pad(im[:, 0, 0], (3, 3), mode="reflect"))


def test_random_crop_flip_properties():
    rng_im = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    flips, corners = 0, set()
    for s in range(200):
        out = random_crop_flip(rng_im, 32, True, np.random.default_rng(s))
        again = random_crop_flip(rng_im, 32, True, np.random.default_rng(s))
        np.testing.assert_array_equal(out, again)
        assert out.shape == (32, 32, 3)
        found = False
        for flipped in (False, True):
            cand = out[:, ::-1] if flipped else out
            # locate the crop in the source
            for i in range(40 - 32 + 1):
                js = np.flatnonzero((rng_im[i, :19, 0] == cand[0, 0, 0]))
                for j in js:
                    if np.array_equal(rng_im[i:i + 32, j:j + 32], cand):
                        found, corners = True, corners | {(i, j)}
                        flips += flipped
                        break
                if found:
                    break
            if found:
                break
        assert found
    assert 60 < flips < 140  # p = 0.5
    assert len(corners) > 50  # corners spread over the 9 x 19 valid positions
    small = np.random.default_rng(1).integers(0, 256, (20, 70, 3), dtype=np.uint8)
    assert random_crop_flip(small, 64, True, np.random.default_rng(0)).shape == (64, 64, 3)


# -- sampling and loading ------------------------------------------------------------------------


def test_epoch_sampler_permutations_and_positions():
    s = EpochSampler(10, 4, seed=3)
    assert s.batches_per_epoch == 2
    r0, _, p = s.batch_at(DataPosition())
    r1, _, p = s.batch_at(p)
    r2, _, p2 = s.batch_at(p)  # 2 left < 4: next epoch (drop_last)
    assert p2 == DataPosition(1, 4)
    assert len(set(r0 + r1)) == 8 and set(r0 + r1) <= set(range(10))
    assert r0 + r1 == s.permutation(0)[:8].tolist()
    assert r2 == s.permutation(1)[:4].tolist()
    assert not np.array_equal(s.permutation(0), s.permutation(1))
    np.testing.assert_array_equal(EpochSampler(10, 4, 3).permutation(5), s.permutation(5))
    assert not np.array_equal(EpochSampler(10, 4, 4).permutation(0), s.permutation(0))
    # rows of a global batch: the same records and seeds however the batch is split
    full = s.batch_at(DataPosition(2, 4))
    a = s.batch_at(DataPosition(2, 4), slice(0, 2))
    b = s.batch_at(DataPosition(2, 4), slice(2, 4))
    assert a[0] + b[0] == full[0] and a[1] + b[1] == full[1]
    with pytest.raises(ValueError, match="fewer than one global batch"):
        EpochSampler(3, 4, 0)
    # batch numbers: the loader's random access
    pos = DataPosition()
    for number in range(7):
        assert s.batch_number(pos) == number and s.position_of(number) == s.normalise(pos)
        records, seeds, pos = s.batch_at(pos)
        assert [s.example(number, k) for k in range(4)] == list(zip(records, seeds))


def test_loader_is_deterministic_resumable_and_splittable(image_dir):
    src = ImageFolderSource(image_dir)
    with TrainLoader(src, 4, crop=64, seed=7, reading=Reading(2, 2)) as loader:
        batches, positions = [], []
        for _ in range(6):
            batches.append(next(loader))
            positions.append(loader.position)
    assert positions[0] == DataPosition(0, 4) and positions[1] == DataPosition(1, 0)
    # each batch is the sampler's records with their augmentation seeds
    sampler, pos = EpochSampler(len(src), 4, 7), DataPosition()
    for k in range(6):
        records, seeds, pos = sampler.batch_at(pos)
        expected = np.stack([random_crop_flip(src[r], 64, True, np.random.default_rng(list(sd)))
                             for r, sd in zip(records, seeds)])
        np.testing.assert_array_equal(batches[k], expected)
        assert sampler.normalise(pos) == positions[k]
    # resume from a saved position: the same following batches
    with TrainLoader(src, 4, crop=64, seed=7, position=positions[2], reading=Reading(1)) as loader:
        for k in range(3, 6):
            np.testing.assert_array_equal(next(loader), batches[k])
    # two processes' rows make the global batch
    parts = []
    for rows in (slice(0, 2), slice(2, 4)):
        with TrainLoader(src, 4, crop=64, seed=7, rows=rows, reading=Reading(2)) as loader:
            parts.append([next(loader) for _ in range(3)])
    for k in range(3):
        np.testing.assert_array_equal(np.concatenate([parts[0][k], parts[1][k]]), batches[k])
    # another seed, other batches
    with TrainLoader(src, 4, crop=64, seed=8, reading=Reading(2)) as loader:
        assert not np.array_equal(next(loader), batches[0])


def test_loader_reports_unreadable_image(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        shutil.copy(IMAGES / "coffee64.png", root / name)
    (root / "zz_bad.png").write_bytes(b"not a png")
    loader = TrainLoader(ImageFolderSource(root), 4, crop=64, seed=0, reading=Reading(2))
    with pytest.raises(DataError, match="zz_bad.png"):
        next(loader)
    loader.close()


def test_unprepared_tfds_dataset_names_the_build_command(tmp_path):
    import tensorflow_datasets as tfds
    from lvae_jax.data.sources import TFDSImageSource

    class Tiny(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
                {"image": tfds.features.Image(shape=(None, None, 3))}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            yield 0, {"image": np.zeros((8, 8, 3), np.uint8)}

    if "lvae_train_tiny_images" not in tfds.core.registered.list_imported_builders():
        type("LvaeTrainTinyImages", (Tiny,), {"__module__": __name__})   # registers it
    with pytest.raises(DataError, match=r"not prepared .*tfds build lvae_train_tiny_images "
                                        r"--file_format=array_record --data_dir"):
        TFDSImageSource("lvae_train_tiny_images", "train", str(tmp_path))
    with pytest.raises(DataError, match="no_such_dataset_anywhere"):
        TFDSImageSource("no_such_dataset_anywhere", "train", str(tmp_path))
