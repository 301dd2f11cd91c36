"""Fuzz the image loader (what ``compress`` and ``eval`` read) with mutated valid image files,
through the harness of ``scripts/fuzz_bitstreams.py``:

    python scripts/fuzz_bitstreams.py --corpus fuzz_images:build_corpus \\
        --decoder fuzz_images:load_file --cases 5000

The corpus: small images in every format and mode users bring (PNG 8/16-bit RGB, RGBA, grey,
palette; baseline and progressive JPEG, with and without an EXIF orientation; TIFF; GIF; WebP;
BMP). Each case mutates one of them with the harness's byte-level mutations (bit flips,
truncation, garbage, ...) and its ``size`` mutation, which here forges the size in the PNG header
(IHDR, CRC recomputed) or the JPEG frame header (SOF) — small files that claim huge images.
:func:`load_file` must return an (H, W, 3) uint8 image whose size is what the (oriented) header
says, or refuse with ``ImageError``/``ValueError``; anything else, a crash, a hang past the time
limit or a peak memory above the harness's bound is a failure.
"""

from __future__ import annotations

import collections
import io
import struct
import zlib

import numpy as np


def _png_size(data: bytes, h: int, w: int) -> bytes:
    """The PNG with its IHDR width/height replaced and the chunk CRC recomputed."""
    out = bytearray(data)
    struct.pack_into(">II", out, 16, w, h)
    struct.pack_into(">I", out, 29, zlib.crc32(bytes(out[12:29])))
    return bytes(out)


def _jpeg_size(data: bytes, h: int, w: int) -> bytes:
    out = bytearray(data)
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        i = out.find(marker)
        if i >= 0:
            struct.pack_into(">HH", out, i + 5, min(h, 65535), min(w, 65535))
            break
    return bytes(out)


def forge_size(entry, h: int, w: int) -> bytes:
    """``entry``'s file claiming an ``h`` × ``w`` image (its header only; the data unchanged)."""
    if entry.meta["format"] == "PNG":
        return _png_size(entry.data, h, w)
    if entry.meta["format"] == "JPEG":
        return _jpeg_size(entry.data, h, w)
    return entry.data


def build_corpus(seed: int = 0) -> list:
    """Entries (``fuzz_bitstreams.Entry``, ``fmt="image"``) of small valid image files."""
    from PIL import Image
    from fuzz_bitstreams import Entry
    rng = np.random.default_rng([seed, 0x1A6E])
    rgb = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
    deep = rng.integers(0, 65536, (24, 40, 3), dtype=np.uint16)
    images = {
        "png-rgb": (Image.fromarray(rgb), "PNG", {}),
        "png-rgba": (Image.fromarray(np.dstack([rgb, np.full((24, 40), 255, np.uint8)])), "PNG", {}),
        "png-grey": (Image.fromarray(rgb[..., 0]), "PNG", {}),
        "png-palette": (Image.fromarray(rgb).convert("P"), "PNG", {}),
        "jpeg": (Image.fromarray(rgb), "JPEG", {"quality": 90}),
        "jpeg-progressive": (Image.fromarray(rgb), "JPEG", {"progressive": True}),
        "tiff": (Image.fromarray(rgb), "TIFF", {}),
        "gif": (Image.fromarray(rgb).convert("P"), "GIF", {}),
        "webp": (Image.fromarray(rgb), "WEBP", {"quality": 80}),
        "bmp": (Image.fromarray(rgb), "BMP", {}),
    }
    corpus = []
    for name, (im, fmt, kw) in images.items():
        buf = io.BytesIO()
        im.save(buf, fmt, **kw)
        corpus.append(Entry(name, "image", buf.getvalue(), meta={"format": fmt, "shape": (24, 40)}))
    exif = Image.fromarray(rgb).getexif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", exif=exif)
    corpus.append(Entry("jpeg-exif6", "image", buf.getvalue(),
                        meta={"format": "JPEG", "shape": (40, 24)}))
    buf = io.BytesIO()
    import imagecodecs
    buf.write(imagecodecs.png_encode(deep))
    corpus.append(Entry("png-16bit", "image", buf.getvalue(), meta={"format": "PNG", "shape": (24, 40)}))
    return corpus


def load_file(data: bytes, entry, stats: collections.Counter, mutation: str = "",
              detail: str = ""):
    """Load ``data`` as the command lines do (:func:`lvae_jax.image.load_rgb8`) and check it."""
    from lvae_jax.image import image_size, load_rgb8
    try:
        rgb, notes = load_rgb8(data, name="case")
    except Exception:
        assert data != entry.data, f"{entry.name}: the unmodified file was refused"
        raise
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3, rgb.shape
    assert rgb.shape[:2] == image_size(data, "case"), (rgb.shape, image_size(data, "case"))
    if data == entry.data:
        assert rgb.shape[:2] == tuple(entry.meta["shape"]), (entry.name, rgb.shape)
        stats["image-unmodified"] += 1
    else:
        stats["image-accepted-modified"] += 1
    return rgb


load_file.wants_entry = True
