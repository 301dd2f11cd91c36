"""Random-access image sources for training: a folder of image files, or a TFDS dataset.

A source is a sequence of images: ``len(src)`` and ``src[i] -> (H, W, 3) uint8 RGB``. Random
access is what makes the input deterministic and resumable: the sampler
(:mod:`lvae_jax.data.sampler`) decides which index comes next, so a data position is just
``(epoch, index)``.

TFDS is read through ``tfds.data_source`` (ArrayRecord random access), not ``tfds.load``/tf.data:
random access gives exact, cheap resumption and per-process sharding by index, needs no TF graph
in the input path, and keeps TensorFlow out of the process unless ``--tfds`` is used.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Protocol

import numpy as np

from lvae_jax.image import ImageError, list_images, load_rgb8

log = logging.getLogger(__name__)

#: How many conversion notes (grayscale, alpha, 16-bit ...) are logged before going quiet.
MAX_NOTES = 10


class DataError(ValueError):
    """The training data cannot be used (empty folder, unreadable image, missing dataset)."""


class ImageSource(Protocol):
    name: str

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> np.ndarray: ...

    def describe(self, index: int) -> str: ...


class _NoteLog:
    """Logs the first :data:`MAX_NOTES` conversion notes, then a single 'more suppressed' line."""

    def __init__(self):
        self.count = 0
        self.lock = threading.Lock()

    def add(self, notes):
        with self.lock:
            for note in notes:
                self.count += 1
                if self.count <= MAX_NOTES:
                    log.info("converted: %s", note)
                elif self.count == MAX_NOTES + 1:
                    log.info("(further image conversion notes suppressed)")


class ImageFolderSource:
    """Every image file under ``root`` (recursive, sorted paths, any format Pillow reads).

    Files are selected by suffix (Pillow's registered extensions; hidden files and folders are
    skipped). Grayscale, palette, CMYK, 16-bit and RGBA images are converted to 8-bit RGB like the
    official loader's ``Image.convert("RGB")`` (alpha dropped), each with a logged note; 16-bit
    images are scaled by 1/257 instead of being clipped. A file that cannot be read raises
    :class:`DataError` naming it.
    """

    def __init__(self, root, check: bool = False):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DataError(f"image folder {self.root} does not exist or is not a directory")
        self.paths = list_images(self.root)
        if not self.paths:
            raise DataError(f"no images found in {self.root} (searched recursively for files "
                            "Pillow can read: .png, .jpg, .jpeg, .webp, .bmp, .tif, ...)")
        self.name = str(self.root)
        self._notes = _NoteLog()
        if check:
            self.check()

    def __len__(self) -> int:
        return len(self.paths)

    def describe(self, index: int) -> str:
        return str(self.paths[index])

    def __getitem__(self, index: int) -> np.ndarray:
        path = self.paths[index]
        try:
            im, notes = load_rgb8(path, alpha="drop")
        except ImageError as e:
            raise DataError(f"unreadable training image {path}: {e}") from None
        if notes:
            self._notes.add(notes)
        return im

    def check(self) -> None:
        """Open every file's header (cheap) and raise :class:`DataError` naming the first file that
        Pillow cannot identify."""
        from PIL import Image, UnidentifiedImageError
        for path in self.paths:
            try:
                with Image.open(path) as img:
                    img.size  # noqa: B018 (header parsed)
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
                raise DataError(f"unreadable training image {path}: {e}") from None


class TFDSImageSource:
    """The ``image`` feature of a TFDS dataset, read by random access (``tfds.data_source``).

    The dataset must be prepared in ArrayRecord format (``tfds build coco/2017
    --file_format=array_record``); nothing is downloaded here.
    """

    def __init__(self, name: str = "coco/2017", split: str = "train", data_dir=None,
                 image_key: str = "image"):
        try:
            import tensorflow_datasets as tfds
        except ImportError:
            raise DataError("--tfds needs tensorflow-datasets: pip install 'lvae-jax[tfds]' "
                            "(scripts/setup.sh installs it)") from None
        self.name, self.split, self.image_key = name, split, image_key
        build = (f"prepare it once, in ArrayRecord format: `tfds build {name.split('/')[0]}"
                 + (f" --config {name.split('/', 1)[1]}" if "/" in name else "")
                 + " --file_format=array_record"
                 + (f" --data_dir {data_dir}" if data_dir else "") + "`")
        try:
            self._ds = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
        except Exception as e:  # TFDS raises many kinds; say which case it is and what to run
            raise DataError(self._diagnose(tfds, name, split, data_dir, build, e)) from None
        if len(self._ds) == 0:
            raise DataError(f"TFDS dataset {name!r} split {split!r} is empty")

    @staticmethod
    def _diagnose(tfds, name, split, data_dir, build, error) -> str:
        try:
            builder = tfds.builder(name, data_dir=data_dir)
        except Exception as e:  # unknown name, bad version, ...
            return f"TFDS dataset {name!r}: {e}"
        if not builder.is_prepared():
            return (f"TFDS dataset {name!r} is not prepared in {data_dir or builder.data_dir} "
                    f"(nothing is downloaded here): {build}")
        if split not in builder.info.splits:
            return (f"TFDS dataset {name!r} has no split {split!r} (it has: "
                    f"{', '.join(sorted(builder.info.splits)) or 'none'}): {build}")
        return (f"TFDS dataset {name!r} split {split!r} is not available for random access "
                f"(data_dir={data_dir or 'default'}): {error}\n{build[0].upper() + build[1:]}")

    def __len__(self) -> int:
        return len(self._ds)

    def describe(self, index: int) -> str:
        return f"{self.name}[{self.split}] record {index}"

    def __getitem__(self, index: int) -> np.ndarray:
        try:
            example = self._ds[int(index)]
        except Exception as e:  # a damaged record: name it
            raise DataError(f"unreadable record {self.describe(index)}: {e}") from e
        im = np.asarray(example[self.image_key])
        if im.dtype != np.uint8 or im.ndim != 3 or im.shape[-1] not in (1, 3):
            raise DataError(f"{self.describe(index)}: expected an (H, W, 3) uint8 image, got "
                            f"{im.shape} {im.dtype}")
        if im.shape[-1] == 1:
            im = np.repeat(im, 3, axis=-1)
        return im


def open_source(data_dir=None, tfds_name: str | None = None, tfds_split: str = "train",
                tfds_data_dir=None, check: bool = False) -> ImageSource:
    """An image folder (``data_dir``) or a TFDS dataset (``tfds_name``), exactly one of them."""
    if (data_dir is None) == (tfds_name is None):
        raise DataError("give exactly one training source: an image folder or a TFDS dataset name")
    if data_dir is not None:
        return ImageFolderSource(data_dir, check=check)
    return TFDSImageSource(tfds_name, tfds_split, tfds_data_dir)
