"""Test images for evaluation: every image of a folder, or of a prepared TFDS dataset.

Each image arrives as :class:`EvalImage` — a name, (H, W, 3) uint8 RGB pixels and the notes of
any conversion. Conversions are those of :func:`lvae_jax.image.load_rgb8` (the same as ``compress``): grayscale
and palette images are expanded to RGB, a fully opaque alpha channel is dropped, 16-bit images are
reduced with ``round(x / 257)`` (decoded at full depth, not Pillow's high byte), a multi-frame file
is taken at its first frame; each is reported in ``notes``. A non-opaque alpha channel is refused
unless ``alpha="drop"``, and so are float or 32-bit images — evaluation never guesses.

Folders are read like the official ``imcoding_evaluate`` reads them (recursive, sorted paths),
but only files whose suffix Pillow knows are taken and hidden files/folders are skipped, so a
stray ``README`` or ``.DS_Store`` is not an error.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from lvae_jax.image import (ImageError, image_suffixes, list_images, load_rgb8, reduce_16bit,
                            to_rgb8)


@dataclass(frozen=True)
class EvalImage:
    """One test image: ``name`` (path relative to the folder, or ``tfds:NAME/SPLIT#i``),
    ``pixels`` (H, W, 3) uint8 RGB and the conversion ``notes``."""
    name: str
    pixels: np.ndarray
    notes: tuple[str, ...] = ()

    @property
    def num_pixels(self) -> int:
        return int(self.pixels.shape[0] * self.pixels.shape[1])


class ImageSetError(ValueError):
    """The test images cannot be found or read; the message says which and why."""


def list_image_files(root) -> list[Path]:
    """Every image file under ``root`` (recursive, sorted, hidden entries skipped)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ImageSetError(f"{root}: not a directory")
    files = list_images(root)
    if not files:
        suffixes = image_suffixes()
        raise ImageSetError(f"{root}: no image files (looked for {', '.join(sorted(suffixes)[:8])}, "
                            "... recursively)")
    return files


def read_image(path, alpha: str = "refuse", name: str | None = None) -> EvalImage:
    """Read one image file as 8-bit RGB (see :func:`lvae_jax.image.load_rgb8`)."""
    path = Path(path)
    rgb, notes = load_rgb8(path, alpha=alpha, name=name or str(path))
    return EvalImage(name or str(path), rgb, tuple(notes))


def iter_folder(root, alpha: str = "refuse") -> Iterator[EvalImage]:
    """Yield every image under ``root`` (names relative to ``root``), in sorted order."""
    root = Path(root).expanduser()
    for path in list_image_files(root):
        yield read_image(path, alpha=alpha, name=path.relative_to(root).as_posix())


def iter_tfds(name: str, split: str = "test", data_dir=None, image_key: str = "image",
              alpha: str = "refuse") -> Iterator[EvalImage]:
    """Yield the images of a prepared TFDS dataset split, in dataset order. Nothing is
    downloaded: an unprepared dataset raises :class:`ImageSetError` saying how to prepare it."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImageSetError(f"tfds:{name}: tensorflow-datasets is not installed ({e}): "
                            "pip install 'lvae-jax[tfds]'") from None
    where = f"tfds:{name} (split {split!r}, data_dir {data_dir or 'default'})"
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        dataset = builder.as_dataset(split=split, shuffle_files=False)
    except tfds.core.DatasetNotFoundError:
        raise ImageSetError(f"{where}: no such dataset — neither a TFDS catalog name nor a "
                            "prepared dataset in the data directory") from None
    except Exception as e:   # not prepared (AssertionError), unknown split (ValueError), ...
        first_line = (str(e).strip().splitlines() or [""])[0][:300]
        raise ImageSetError(
            f"{where} cannot be read: {type(e).__name__}: {first_line} Prepare it first "
            f"(e.g. `tfds build {name}`); evaluation never downloads.") from None
    for i, example in enumerate(tfds.as_numpy(dataset)):
        label = f"tfds:{name}/{split}#{i}"
        if image_key not in example:
            raise ImageSetError(f"{label}: no feature {image_key!r} (features: {sorted(example)})")
        yield array_to_eval_image(example[image_key], label, alpha=alpha)


def array_to_eval_image(arr, name: str, alpha: str = "refuse") -> EvalImage:
    """(H, W[, C]) uint8/uint16 pixels, C in {1, 3, 4}, as an 8-bit RGB :class:`EvalImage`."""
    from PIL import Image
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)):
        raise ImageError(f"{name}: expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) pixels, "
                         f"got shape {np.asarray(arr).shape}")
    notes = []
    if a.dtype == np.uint16:
        a = reduce_16bit(a)
        notes.append(f"{name}: 16-bit pixels reduced to 8 bits (round(x / 257))")
    elif a.dtype != np.uint8:
        raise ImageError(f"{name}: pixels of dtype {a.dtype} are not supported (uint8 or uint16)")
    # uint8 (H, W) / (H, W, 3) / (H, W, 4) become Pillow modes L / RGB / RGBA.
    rgb, more = to_rgb8(Image.fromarray(np.ascontiguousarray(a)), name, alpha)
    return EvalImage(name, rgb, tuple(notes + more))


def open_images(source, *, split: str = "test", data_dir=None, image_key: str = "image",
                alpha: str = "refuse") -> Iterator[EvalImage]:
    """Images from a folder path, or from ``"tfds:NAME"`` (a prepared TFDS dataset; ``split``,
    ``data_dir`` and ``image_key`` apply to it)."""
    text = str(source)
    if text.startswith("tfds:"):
        name = text[len("tfds:"):]
        if not name:
            raise ImageSetError("tfds: needs a dataset name, e.g. tfds:clic")
        return iter_tfds(name, split=split, data_dir=data_dir, image_key=image_key, alpha=alpha)
    path = Path(text).expanduser()
    if not path.exists():
        raise ImageSetError(f"{path}: no such folder (pass an image folder or tfds:NAME)")
    list_image_files(path)          # fail now, not at the first next()
    return iter_folder(path, alpha=alpha)
