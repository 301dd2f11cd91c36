"""Classical image codecs on the evaluation images: JPEG, WebP, AVIF and JPEG XL.

Every codec runs through ``imagecodecs`` (one library, versions recorded in the results), at a
sweep of its 0–100 quality setting. For each image and quality the RGB image is encoded, the
bitstream's length is taken as is — container and headers included (JFIF, RIFF, ISOBMFF, the
JPEG XL codestream) — and the decoded image is compared with the original:

    bpp  = 8 · len(encoded bytes) / (H · W)
    mse  = mean((x/255 - x̂/255)²) over H, W, RGB;   psnr = -10·log10(mse)

and, like the official evaluation, each statistic is averaged over images per quality. The result
is one :class:`~lvae_jax.evaluation.rd_json.RDCurve` per codec (``settings["quality"]`` holds the
sweep, ``meta`` the encoder library, its version and options).

Encoder options (fixed, recorded in ``meta["options"]``): JPEG — libjpeg-turbo defaults with 4:2:0
chroma subsampling (as Pillow); WebP — lossy, libwebp's default method; AVIF — YUV 4:4:4, speed 6
(libavif's own default; imagecodecs' default is the far slower speed 0); JPEG XL — libjxl's
default effort 7, quality mapped to distance by libjxl. A quality at which some image comes back
bit-exact (AVIF at 100 is lossless) has infinite PSNR and is left out with a note.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from lvae_jax.evaluation import metrics
from lvae_jax.evaluation.images import EvalImage
from lvae_jax.evaluation.rd_json import RDCurve

#: The default quality sweep (the codecs' own 0–100 scale; 100 would be (near-)lossless).
DEFAULT_QUALITIES = (10, 20, 30, 40, 50, 60, 70, 80, 90, 95)


class CodecUnavailable(RuntimeError):
    """The installed imagecodecs cannot encode or decode this format."""


@dataclass(frozen=True)
class Codec:
    """A classical codec through imagecodecs: ``{prefix}_encode(pixels, level=quality,
    **options)`` and ``{prefix}_decode(bytes)``; ``feature`` is the imagecodecs capability flag
    (``imagecodecs.JPEGXL.available``), ``library`` the key of its library in
    ``imagecodecs.version(dict)``."""
    name: str
    title: str
    prefix: str
    feature: str
    library: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def _module(self):
        import imagecodecs
        return imagecodecs

    def check(self) -> None:
        """Raise :class:`CodecUnavailable` (saying why) unless this codec can run here."""
        try:
            ic = self._module()
        except ImportError as e:
            raise CodecUnavailable(f"{self.name}: imagecodecs is not installed ({e})") from None
        flag = getattr(ic, self.feature, None)
        if flag is None or not getattr(flag, "available", False):
            raise CodecUnavailable(
                f"{self.name}: imagecodecs {getattr(ic, '__version__', '?')} was built without "
                f"{self.title} support (imagecodecs.{self.feature}.available is False)")
        for fn in (f"{self.prefix}_encode", f"{self.prefix}_decode"):
            if not callable(getattr(ic, fn, None)):
                raise CodecUnavailable(f"{self.name}: imagecodecs has no {fn}()")

    def encode(self, pixels: np.ndarray, quality: int) -> bytes:
        """(H, W, 3) uint8 RGB -> the complete encoded file as bytes."""
        return bytes(getattr(self._module(), f"{self.prefix}_encode")(
            np.ascontiguousarray(pixels), level=quality, **self.options))

    def decode(self, data: bytes) -> np.ndarray:
        return np.asarray(getattr(self._module(), f"{self.prefix}_decode")(data))

    def describe(self) -> dict[str, Any]:
        """Encoder name, library version and options, for the results' ``meta``."""
        ic = self._module()
        versions = ic.version(dict)
        return {"codec": self.title, "library": f"{self.library} {versions.get(self.library, '?')}",
                "imagecodecs": getattr(ic, "__version__", "?"), "options": dict(self.options)}


CODECS: dict[str, Codec] = {
    "jpeg": Codec("jpeg", "JPEG", "jpeg8", "JPEG8", "libjpeg_turbo", {"subsampling": "420"}),
    "webp": Codec("webp", "WebP", "webp", "WEBP", "libwebp", {"lossless": False}),
    "avif": Codec("avif", "AVIF", "avif", "AVIF", "libavif", {"speed": 6, "pixelformat": "444"}),
    "jxl": Codec("jxl", "JPEG XL", "jpegxl", "JPEGXL", "libjxl", {"effort": 7}),
}


def get_codec(name: str | Codec) -> Codec:
    if isinstance(name, Codec):
        return name
    try:
        return CODECS[name.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown codec {name!r}; known: {', '.join(CODECS)}") from None


def codec_availability(names: Iterable[str] | None = None) -> dict[str, str | None]:
    """``{name: None}`` for codecs that run here, ``{name: reason}`` for the others."""
    out = {}
    for name in (names if names is not None else CODECS):
        try:
            get_codec(name).check()
            out[name] = None
        except CodecUnavailable as e:
            out[name] = str(e)
    return out


def code_image(codec: Codec, pixels: np.ndarray, quality: int,
               with_ms_ssim: bool = False) -> dict[str, float]:
    """Encode and decode one (H, W, 3) uint8 image; its bpp, mse, psnr (and ms-ssim)."""
    data = codec.encode(pixels, quality)
    decoded = codec.decode(data)
    if decoded.shape != pixels.shape or decoded.dtype != np.uint8:
        raise RuntimeError(f"{codec.name} at quality {quality}: decoded {decoded.shape} "
                           f"{decoded.dtype}, expected {pixels.shape} uint8")
    h, w = pixels.shape[:2]
    m = metrics.mse(pixels, decoded)
    stats = {"bpp": 8.0 * len(data) / (h * w), "mse": m, "psnr": metrics.psnr_from_mse(m)}
    if with_ms_ssim:
        stats["ms-ssim"] = metrics.ms_ssim(pixels, decoded)
    return stats


def evaluate_codecs(images: Iterable[EvalImage], codecs: Sequence[str | Codec],
                    qualities: Sequence[int] | Mapping[str, Sequence[int]] | None = None, *,
                    with_ms_ssim: bool = False, test_set: str | None = None,
                    progress: Callable[[str], None] | None = None) -> list[RDCurve]:
    """RD curves of classical codecs on ``images`` (one :class:`RDCurve` per codec).

    ``qualities``: one sweep for every codec, a ``{codec name: sweep}`` mapping, or None for
    :data:`DEFAULT_QUALITIES`. Unavailable codecs raise :class:`CodecUnavailable` before any
    image is coded (filter with :func:`codec_availability` first to skip them). Each image is
    read once and coded at every (codec, quality).
    """
    codecs = [get_codec(c) for c in codecs]
    if not codecs:
        raise ValueError("no codecs to evaluate")
    for codec in codecs:
        codec.check()
    sweeps = {c.name: _sweep(c.name, qualities) for c in codecs}
    per_image: dict[tuple[str, int], list[dict]] = {(c.name, q): [] for c in codecs
                                                    for q in sweeps[c.name]}
    count = 0
    for image in images:
        if with_ms_ssim and min(image.pixels.shape[:2]) < metrics.ms_ssim_min_size():
            raise ValueError(f"{image.name}: {image.pixels.shape[0]}×{image.pixels.shape[1]} is "
                             f"too small for MS-SSIM (needs {metrics.ms_ssim_min_size()} pixels "
                             "per side); evaluate without MS-SSIM")
        for note in image.notes:
            if progress:
                progress(f"note: {note}")
        for codec in codecs:
            for q in sweeps[codec.name]:
                per_image[(codec.name, q)].append(code_image(codec, image.pixels, q, with_ms_ssim))
        count += 1
        if progress:
            progress(f"[{count}] {image.name}: coded at {sum(map(len, sweeps.values()))} settings")
    if count == 0:
        raise ValueError("no images to evaluate")

    curves = []
    for codec in codecs:
        points, kept, dropped = [], [], []
        for q in sweeps[codec.name]:
            stats = per_image[(codec.name, q)]
            if any(s["mse"] == 0.0 for s in stats):
                dropped.append(q)
                continue
            points.append(metrics.mean_stats(stats))
            kept.append(q)
        if dropped and progress:
            progress(f"{codec.name}: qualities {dropped} reproduce some image exactly (infinite "
                     "PSNR) and are left out")
        if not points:
            raise ValueError(f"{codec.name}: every quality was lossless on some image; no RD points")
        meta = {**codec.describe(), "num_images": count}
        if dropped:
            meta["lossless_qualities_left_out"] = dropped
        curves.append(RDCurve.from_points(codec.name, points, test_set=test_set,
                                          settings={"quality": kept}, meta=meta))
    return curves


def _sweep(name: str, qualities) -> tuple[int, ...]:
    if qualities is None:
        sweep = DEFAULT_QUALITIES
    elif isinstance(qualities, Mapping):
        sweep = qualities.get(name, DEFAULT_QUALITIES)
    else:
        sweep = qualities
    sweep = tuple(sweep)
    if not sweep:
        raise ValueError(f"{name}: empty quality sweep")
    for q in sweep:
        if isinstance(q, bool) or not isinstance(q, (int, np.integer)) or not 0 <= q <= 100:
            raise ValueError(f"{name}: quality {q!r} is not an integer in 0..100")
    if len(set(sweep)) != len(sweep):
        raise ValueError(f"{name}: quality sweep {sweep} repeats a value")
    return tuple(int(q) for q in sweep)


def with_options(name: str, **options) -> Codec:
    """A codec from :data:`CODECS` with some encoder options changed, e.g.
    ``with_options("avif", speed=0)``."""
    codec = get_codec(name)
    return dataclasses.replace(codec, options={**codec.options, **options})
