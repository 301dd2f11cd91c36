"""Reading, converting, padding and writing images (HWC, RGB).

The codecs work on 8-bit RGB. :func:`load_rgb8` converts what it safely can — grayscale,
palette, opaque alpha, CMYK, 16-bit — and says what it did in ``notes``; it refuses what it cannot
convert without silently changing the picture (a non-opaque alpha channel unless
``alpha="drop"``, float or 32-bit integer images). The file itself is never modified.

Float images are float32 in [0, 1], computed as ``uint8 / 255`` like torchvision's ``to_tensor``.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from pathlib import Path

import numpy as np
from lvae_jax.files import atomic_file
from lvae_jax.limits import ResourceLimitError, check_dimensions, read_bounded


class ImageError(ValueError):
    """An image cannot be read or converted to 8-bit RGB."""


@contextlib.contextmanager
def _pil_errors(name: str):
    """Pillow's failures while opening or decoding ``name`` as one :class:`ImageError` each; its
    decompression-bomb *warning* silenced (:mod:`lvae_jax.limits` applies its own limits)."""
    from PIL import Image, UnidentifiedImageError
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    except ImageError:
        raise
    except ResourceLimitError as e:
        raise ImageError(str(e)) from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"{name}: refused as a decompression bomb ({e})") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not a readable image (no format Pillow reads: empty, text "
                         "or damaged)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{name}: not a readable image ({e})") from None
    except MemoryError:
        raise ImageError(f"{name}: not enough memory to decode this image") from None


def image_suffixes() -> frozenset[str]:
    """File suffixes Pillow can open (lower case, with the dot)."""
    from PIL import Image
    return frozenset(ext.lower() for ext in Image.registered_extensions())


def list_images(root) -> list[Path]:
    """Every image file under the folder ``root``: recursive, sorted, selected by suffix
    (:func:`image_suffixes`), hidden files and folders skipped. Empty if there are none (the
    callers name their own error)."""
    root = Path(root)
    suffixes = image_suffixes()
    return sorted(p for p in root.rglob("*")
                  if p.suffix.lower() in suffixes and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def read_image_bytes(source, name: str | None = None) -> bytes:
    """The bytes of an image file (at most :data:`lvae_jax.limits.MAX_FILE_BYTES`), or
    ``source`` itself if it is bytes. Read once, then give them to :func:`image_size` and
    :func:`load_rgb8`."""
    if isinstance(source, (bytes, bytearray)):
        return bytes(source)
    name = name or str(source)
    try:
        return read_bounded(source, what="image file")
    except FileNotFoundError:
        raise ImageError(f"{name}: no such file") from None
    except ResourceLimitError as e:
        raise ImageError(str(e)) from None
    except OSError as e:
        raise ImageError(f"{name}: cannot read ({e.strerror or e})") from None


#: EXIF orientation (tag 0x0112) -> how the stored pixels become what a viewer shows, on an
#: (H, W, C) array; the same transforms as Pillow's ``ImageOps.exif_transpose``.
_ORIENT = {
    2: lambda a: a[:, ::-1],                       # mirrored
    3: lambda a: a[::-1, ::-1],                    # rotated 180°
    4: lambda a: a[::-1],                          # flipped
    5: lambda a: a.transpose(1, 0, 2),             # transposed
    6: lambda a: np.rot90(a, -1),                  # stored turned 90° anticlockwise
    7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],  # transversed
    8: lambda a: np.rot90(a, 1),                   # stored turned 90° clockwise
}
ORIENTATIONS = ("apply", "keep")


def _orientation(img) -> int:
    try:
        value = int(img.getexif().get(0x0112, 1))
    except Exception:  # a damaged EXIF block: the stored orientation
        return 1
    return value if value in _ORIENT else 1


def image_size(source, name: str | None = None, orientation: str = "apply") -> tuple[int, int]:
    """(height, width) of an image file (path or bytes) from its header alone (nothing is
    decoded), as :func:`load_rgb8` will return it (EXIF orientation applied unless ``keep``)."""
    from PIL import Image
    name = name or ("<bytes>" if isinstance(source, (bytes, bytearray)) else str(source))
    data = read_image_bytes(source, name)
    with _pil_errors(name), Image.open(io.BytesIO(data)) as img:
        w, h = img.size
        turned = orientation == "apply" and _orientation(img) in (5, 6, 7, 8)
    return (w, h) if turned else (h, w)


def load_rgb8(source, alpha: str = "refuse", name: str | None = None,
              orientation: str = "apply") -> tuple[np.ndarray, list[str]]:
    """Read an image file (path or bytes) as (H, W, 3) uint8 RGB. Returns (array, notes).

    ``alpha``: ``"refuse"`` (default) refuses an alpha channel that is not fully opaque,
    ``"drop"`` discards it (with a note). 16-bit RGB(A) and gray+alpha PNG/TIFF files, which
    Pillow opens as 8-bit by keeping the high byte, are decoded at full depth (imagecodecs) and
    rounded like every 16-bit image; a multi-frame file (GIF, TIFF, APNG) is read at its first
    frame, with a note. The header's size is checked against :mod:`lvae_jax.limits` before
    anything is decoded, and so is a JPEG too short for the size it claims (truncated or forged).
    ``orientation``: ``"apply"`` (default) turns the pixels the way the EXIF orientation tag says
    (what an image viewer shows; with a note), ``"keep"`` keeps them as stored.
    """
    if orientation not in ORIENTATIONS:
        raise ValueError(f"orientation must be one of {ORIENTATIONS}, got {orientation!r}")
    from PIL import Image
    name = name or ("<bytes>" if isinstance(source, (bytes, bytearray)) else str(source))
    data = read_image_bytes(source, name)
    with _pil_errors(name):
        img = Image.open(io.BytesIO(data))
        w, h = img.size                              # the header's claim, before decoding
        check_dimensions(h, w, name)
        if img.format == "JPEG":
            check_jpeg_length(data, name)
        img.load()
    notes = []
    frames = getattr(img, "n_frames", 1)
    if frames > 1:
        notes.append(f"{name}: has {frames} frames; only the first is used")
    deep = _decode_deep_rgb(data, img, name, alpha)
    rgb, more = deep if deep is not None else to_rgb8(img, name, alpha)
    code = _orientation(img)
    if code != 1 and orientation == "apply":
        rgb = np.ascontiguousarray(_ORIENT[code](rgb))
        more.append(f"{name}: turned as its EXIF orientation ({code}) says, as a viewer shows it "
                    "(--keep-orientation keeps the stored pixels)")
    elif code != 1:
        more.append(f"{name}: EXIF orientation {code} ignored (--keep-orientation): coded as stored")
    return rgb, notes + more


def check_jpeg_length(data: bytes, name: str) -> None:
    """Refuse a Huffman-coded JPEG shorter than any complete JPEG of the size it claims.

    Each 8×8 block of each component starts with a Huffman-coded DC difference of at least one
    bit (also in a progressive file's first scan, which has no end-of-band runs), so a complete
    file holds at least one bit per block. A shorter one is truncated, or its header forged: libjpeg
    would decode it with the missing data filled in (for a forged size: minutes and gigabytes)."""
    frame = _jpeg_frame(data)
    if frame is None:
        return
    h, w, comps = frame
    hmax, vmax = max(c[0] for c in comps), max(c[1] for c in comps)
    blocks = sum(math.ceil(math.ceil(w * hs / hmax) / 8) * math.ceil(math.ceil(h * vs / vmax) / 8)
                 for hs, vs in comps)
    if len(data) * 8 < blocks:
        raise ImageError(f"{name}: a JPEG of {w}×{h} holds at least {blocks // 8} bytes of coded "
                         f"data, this file has {len(data)}: truncated or damaged")


def _jpeg_frame(data: bytes):
    """(height, width, [(h, v) sampling per component]) of a Huffman JPEG's frame header, or
    None (arithmetic coding, or no frame header found)."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2, 0xC3):                   # Huffman SOF0..SOF3
            seg = data[i + 4:i + 2 + length]
            if len(seg) < 6:
                return None
            h, w, n = int.from_bytes(seg[1:3], "big"), int.from_bytes(seg[3:5], "big"), seg[5]
            comps = [(seg[7 + 3 * k] >> 4, seg[7 + 3 * k] & 15) for k in range(n)
                     if 8 + 3 * k <= len(seg)]
            if not comps or any(a == 0 or b == 0 for a, b in comps):
                return None
            return h, w, comps
        if marker in (0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xDA):  # arithmetic, or a scan first
            return None
        i += 2 + length
    return None


def _alpha_notes(opaque: bool, name: str, alpha: str) -> list[str]:
    """The alpha-channel rule: an opaque channel is dropped with a note; a non-opaque one is
    refused unless ``alpha == "drop"``."""
    if opaque:
        return [f"{name}: fully opaque alpha channel dropped"]
    if alpha != "drop":
        raise ImageError(f"{name}: has a non-opaque alpha channel; the codecs are RGB only "
                         "(pass --alpha drop to discard it)")
    return [f"{name}: non-opaque alpha channel discarded"]


def reduce_16bit(arr: np.ndarray) -> np.ndarray:
    """16-bit pixels to 8 bits: ``round(x / 257)`` (exact for images widened by ``x · 257``)."""
    return np.clip(np.round(np.asarray(arr, np.float64) / 257.0), 0, 255).astype(np.uint8)


def _decode_deep_rgb(data: bytes, img, name: str, alpha: str):
    """Full-depth decode of a 16-bit RGB, RGBA or gray+alpha PNG/TIFF (which Pillow opens as
    8-bit by keeping the high byte) as (rgb8, notes), or None for every other image."""
    if img.mode not in ("RGB", "RGBA", "LA"):
        return None
    import imagecodecs
    arr = None
    if img.format == "PNG" and len(data) > 25 and data[24] == 16:   # IHDR bit depth
        arr = imagecodecs.png_decode(data)
    elif img.format == "TIFF":
        bits = img.tag_v2.get(258, (8,))
        bits = bits if isinstance(bits, tuple) else (bits,)
        if max(bits) > 8:
            arr = imagecodecs.tiff_decode(data)    # the first page, full depth
    if arr is None:
        return None
    if arr.dtype != np.uint16 or arr.ndim != 3 or arr.shape[-1] not in (2, 3, 4):
        raise ImageError(f"{name}: a deep image with shape {arr.shape} and dtype {arr.dtype} is "
                         "not supported (convert it to 8-bit RGB first)")
    notes = [f"{name}: 16-bit pixels reduced to 8 bits (round(x / 257))"]
    if arr.shape[-1] in (2, 4):
        notes += _alpha_notes(bool(arr[..., -1].min() == 65535), name, alpha)
        arr = arr[..., :-1]
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
        notes.append(f"{name}: grayscale replicated to RGB")
    return reduce_16bit(arr), notes


def to_rgb8(img, name: str = "image", alpha: str = "refuse") -> tuple[np.ndarray, list[str]]:
    """Convert a PIL image to (H, W, 3) uint8 RGB, with notes; see :func:`load_rgb8`."""
    notes = []
    mode = img.mode
    if img.width < 1 or img.height < 1:
        raise ImageError(f"{name}: empty image ({img.width}x{img.height})")
    if mode == "RGB":
        return np.asarray(img, np.uint8).copy(), notes
    if mode in ("I;16", "I;16B", "I;16L", "I;16N") or (mode == "I" and _is_16bit(img)):
        arr8 = reduce_16bit(np.asarray(img))
        notes.append(f"{name}: 16-bit grayscale reduced to 8 bits and replicated to RGB")
        return np.repeat(arr8[..., None], 3, axis=-1), notes
    if mode in ("I", "F"):
        raise ImageError(f"{name}: {mode!r} ({'32-bit integer' if mode == 'I' else 'float'}) images "
                         "are not supported; convert to 8- or 16-bit first")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        notes += _alpha_notes(bool(np.asarray(rgba)[..., 3].min() == 255), name, alpha)
        rgb = np.asarray(rgba, np.uint8)[..., :3].copy()
        if mode in ("LA", "La"):
            notes.append(f"{name}: grayscale replicated to RGB")
        return rgb, notes
    if mode in ("L", "1"):
        notes.append(f"{name}: {'1-bit' if mode == '1' else 'grayscale'} replicated to RGB")
    elif mode == "P":
        notes.append(f"{name}: palette image converted to RGB")
    else:  # CMYK, YCbCr, LAB, HSV, RGBX...
        notes.append(f"{name}: {mode} converted to RGB")
    try:
        return np.asarray(img.convert("RGB"), np.uint8).copy(), notes
    except (ValueError, OSError) as e:
        raise ImageError(f"{name}: cannot convert mode {mode!r} to RGB ({e})") from None


def _is_16bit(img) -> bool:
    arr = np.asarray(img)
    return arr.dtype.kind in "iu" and arr.min() >= 0 and arr.max() <= 65535 and arr.max() > 255


def to_float(im8: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0, 1] (``x / 255`` in float32, like torchvision ``to_tensor``)."""
    return np.asarray(im8, np.float32) / np.float32(255.0)


def to_uint8(im: np.ndarray) -> np.ndarray:
    """float in [0, 1] -> uint8 by rounding (``floor(x·255 + 0.5)``, like torchvision
    ``save_image``)."""
    return np.clip(np.floor(np.asarray(im, np.float32) * 255.0 + 0.5), 0, 255).astype(np.uint8)


def padded_size(h: int, w: int, multiple: int = 64) -> tuple[int, int]:
    return multiple * math.ceil(h / multiple), multiple * math.ceil(w / multiple)


def pad_to_multiple(im: np.ndarray, multiple: int = 64) -> np.ndarray:
    """Pad (…, H, W, C) on the right and bottom by edge replication to multiples of
    ``multiple`` (the official ``pad_divisible_by``)."""
    h, w = im.shape[-3], im.shape[-2]
    th, tw = padded_size(h, w, multiple)
    if (th, tw) == (h, w):
        return im
    pad = [(0, 0)] * (im.ndim - 3) + [(0, th - h), (0, tw - w), (0, 0)]
    return np.pad(im, pad, mode="edge")


def save_png(path, im) -> Path:
    """Write a float [0, 1] or uint8 (H, W, 3) image as PNG, atomically (:mod:`lvae_jax.files`)."""
    from PIL import Image
    arr = im if np.asarray(im).dtype == np.uint8 else to_uint8(im)
    path = Path(path)
    with atomic_file(path) as tmp:
        Image.fromarray(np.asarray(arr)).save(tmp, format="PNG")
    return path
