"""The codec as a user meets it: images and files in, images and files out.

    codec = lvae_jax.Codec(lvae_jax.get_model("qarv_base", pretrained=True))
    data = codec.compress(image_u8, lmb=256)                 # bytes (the lvae container)
    data = codec.compress(image_u8, lmb=256, fmt="official")  # the official QARV/QRes layout
    image = codec.decompress(data)                            # (H, W, 3) float32 in [0, 1]
    codec.compress_file("photo.png", "photo.lvae", lmb=256)   # the official method names
    image = codec.decompress_file("photo.lvae")

Images of any size are padded right/bottom by edge replication to multiples of 64 and cropped
back, like the official code. ``decompress`` recognises the layout by itself
(:mod:`lvae_jax.codec.formats`), checks that a container was written by this very model (config +
weights id), and can decode progressively from the first k latent blocks — also of a truncated
container. Every decoded string is verified by re-encoding it (:mod:`lvae_jax.codec.core`).

The path of one compress: image -> pad -> :class:`~lvae_jax.codec.core.StringCoder` (the
device pass of :mod:`~lvae_jax.codec.engine`, then the range coder: strings + checks) ->
:func:`lvae_jax.codec.formats.write` (the layout) -> bytes. One decompress:
:func:`lvae_jax.codec.formats.parse` -> :meth:`Codec.check_file` -> ``StringCoder.decode`` ->
crop (tiled files: the same per tile, pasted).
"""

from __future__ import annotations

import copy
import functools
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np

from lvae_jax import image as imageio
from lvae_jax import numerics
from lvae_jax.checkpoint.model_dir import flat_params, weights_digest
from lvae_jax.codec import formats, rate_control, tiles
from lvae_jax.codec.container import model_id as container_model_id
from lvae_jax.codec.core import DecodeReport, Perturbation, StringCoder
from lvae_jax.codec.records import EncodedImage, FileMeta
from lvae_jax.entropy import hints
from lvae_jax.entropy.coder import BitstreamError, as_bytes
from lvae_jax.entropy.tables import NEAR_BOUNDARY
from lvae_jax.files import atomic_write_bytes
from lvae_jax.limits import check_image_size, read_bounded

#: Largest image side the container and the official layouts can record.
MAX_CODED_SIDE = 65535


@dataclass
class DecodeResult:
    """One decoded file. ``image``: (H, W, 3) float32 in [0, 1], cropped to the original size;
    ``fmt``: its layout (:data:`lvae_jax.codec.formats.LAYOUTS`)."""
    image: np.ndarray
    fmt: str
    blocks_decoded: int
    total_blocks: int
    lmb: float | None
    seconds: float
    notes: list
    report: DecodeReport | None = None


@dataclass(frozen=True)
class DecodeOptions:
    """How to decode: the first ``num_blocks`` latent blocks (None: all the file has), the others
    from the prior at ``temperature`` (0: its mean; > 0 needs ``key``); ``allow_partial``: accept
    a truncated container; ``verify``: re-encode and check every string (and recover index
    flips)."""
    num_blocks: int | None = None
    temperature: float = 0.0
    key: jax.Array | None = None
    allow_partial: bool = False
    verify: bool = True
    #: the image returned: ``"float"`` (float32 in [0, 1]) or ``"uint8"`` (what a PNG holds,
    #: rounded like :func:`lvae_jax.image.to_uint8`; a tiled file is then assembled in 3 bytes
    #: per pixel instead of 12)
    pixels: str = "float"

    def __post_init__(self):
        if self.pixels not in ("float", "uint8"):
            raise ValueError(f"pixels must be 'float' or 'uint8', got {self.pixels!r}")
        numerics.check_temperature(self.temperature)


def official_risk_note(at_risk: int, near_boundary: float = NEAR_BOUNDARY) -> str:
    """The warning for an official-layout file with ``at_risk`` elements near a table threshold."""
    return (f"{at_risk} latent element(s) have a prior scale within {near_boundary:g} of a table "
            "boundary: the official decoder (PyTorch, another float path) may pick the other table "
            "there and decode this file silently wrong — the official layout has no checksum. The "
            "lvae container (the default --format) checks every symbol and recovers such flips "
            "(docs/cross_implementation.md)")


def as_float_image(im) -> np.ndarray:
    """An (H, W, 3) RGB image as float32 in [0, 1] (uint8 is divided by 255)."""
    a = np.asarray(im)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {a.shape}")
    if a.dtype == np.uint8:
        return imageio.to_float(a)
    a = a.astype(np.float32)
    if not np.all(np.isfinite(a)) or a.min() < 0 or a.max() > 1:
        raise ValueError("float images must be finite and within [0, 1]")
    return a


class Codec:
    """Compress images into files and decompress files into images with one model (QRes or
    QARV; rd_model_base has no entropy coder).

    ``near_boundary``, ``perturbation`` and ``precision`` are for tests and measurements (see
    :class:`~lvae_jax.codec.core.StringCoder`); the defaults are what every file is written with.
    """

    def __init__(self, model, *, near_boundary: float = NEAR_BOUNDARY,
                 perturbation: Perturbation | None = None,
                 precision: str = numerics.CODEC_PRECISION):
        self.coder = StringCoder(model, near_boundary=near_boundary, perturbation=perturbation,
                                 precision=precision)
        self.model, self.config = model, model.config

    @property
    def num_latents(self) -> int:
        return self.coder.num_latents

    def with_perturbation(self, perturbation: Perturbation) -> "Codec":
        """This codec (the same compiled passes and model id) decoding as if "on another
        device" (:class:`~lvae_jax.codec.core.Perturbation`): for tests and portability studies."""
        other = copy.copy(self)
        other.coder = self.coder.with_perturbation(perturbation)
        return other

    @functools.cached_property
    def model_id(self) -> bytes:
        """16-byte id of the model (config fingerprint + weights digest) that the container
        records: computed once — from the digest a loaded model carries
        (``model.weights_sha256``, verified when it was loaded), else by hashing the weights."""
        digest = getattr(self.model, "weights_sha256", None) or weights_digest(flat_params(self.model))
        return container_model_id(self.config.fingerprint(), digest)

    # -- compression ----------------------------------------------------------------------------

    def compress(self, image, lmb=None, *, fmt: str = "lvae", tile=None,
                 hint_bound_exp: int | None = hints.DEFAULT_BOUND_EXP,
                 notes: list | None = None) -> bytes:
        """One (H, W, 3) image (uint8, or float in [0, 1]) -> one file's bytes.

        ``lmb``: λ of a variable-rate model (None for QRes). ``fmt``: ``"lvae"`` or
        ``"official"`` (:data:`lvae_jax.codec.formats.OUTPUT_FORMATS`). ``tile``: None codes the
        image whole; ``"auto"`` tiles it only when it does not fit the memory budget
        (:func:`lvae_jax.codec.tiles.choose_tile`); an int N codes it in N × N tiles (a tiled
        file; the lvae format only). ``hint_bound_exp``: lvae files carry portable-index hints
        for decoders whose prior scales are within 2^-exp (relative) of this encoder's
        (:mod:`lvae_jax.entropy.hints`; None: a version-1 file without hints). ``notes``: a list
        that receives, per official-layout file with elements at risk, :func:`official_risk_note`."""
        size = tuple(np.shape(image)[:2])
        tile_size = self.resolve_tile(size, tile)
        if tile_size is None:
            return self.compress_batch([image], lmb, fmt=fmt, hint_bound_exp=hint_bound_exp,
                                       notes=notes)[0]
        if fmt != "lvae":
            raise ValueError("tiled files need the lvae format: the official layouts hold one whole "
                             f"image ({size[1]}x{size[0]} would be coded in tiles of "
                             f"{tile_size[1]}x{tile_size[0]})")
        tiles.check_tiled(self.config, size, tile_size)
        parts = []
        for k in range(tiles.num_tiles(size, tile_size)):   # one tile at a time: one tile's memory
            t = as_float_image(tiles.padded_tile(np.asarray(image), tile_size, k))
            enc = self.coder.encode(t[None], lmb, hint_bound_exp=hint_bound_exp)[0]
            parts.append(formats.write("lvae", self._meta(lmb, tile_size), enc, self.config))
        return tiles.write_tiled(size, tile_size, parts)

    def compress_batch(self, images, lmb=None, *, fmt: str = "lvae",
                       hint_bound_exp: int | None = hints.DEFAULT_BOUND_EXP,
                       notes: list | None = None) -> list[bytes]:
        """Images (each (H, W, 3), uint8 or float in [0, 1]) -> one file each; images of one
        padded size go through the device in one pass. Options as :meth:`compress`."""
        if fmt not in formats.OUTPUT_FORMATS:
            raise ValueError(f"format must be one of {formats.OUTPUT_FORMATS}")
        s = self.config.max_stride
        floats = [as_float_image(im) for im in images]
        for f in floats:
            if max(f.shape[:2]) > MAX_CODED_SIDE:
                raise ValueError(f"image of {f.shape[0]}x{f.shape[1]}: sides above "
                                 f"{MAX_CODED_SIDE} px are not supported")
        out: list = [None] * len(floats)
        groups: dict = {}
        for i, f in enumerate(floats):
            groups.setdefault(imageio.padded_size(f.shape[0], f.shape[1], s), []).append(i)
        hint_exp = hint_bound_exp if fmt == "lvae" else None
        for idx in groups.values():
            batch = np.stack([imageio.pad_to_multiple(floats[i], s) for i in idx])
            for i, enc in zip(idx, self.coder.encode(batch, lmb, hint_bound_exp=hint_exp)):
                out[i] = formats.write(fmt, self._meta(lmb, floats[i].shape[:2]), enc, self.config)
                if fmt == "official" and enc.at_risk and notes is not None:
                    notes.append(official_risk_note(enc.at_risk, self.coder.near_boundary))
        return out

    def compress_to_target(self, image, *, target_bytes: int, fmt: str = "lvae", tile=None,
                           how: rate_control.Search = rate_control.Search()
                           ) -> rate_control.RateControlResult:
        """Variable-rate models: the file of at most ``target_bytes`` and within the tolerance of
        it (:mod:`lvae_jax.codec.rate_control`)."""
        if not self.config.variable_rate:
            raise ValueError(f"{self.config.name} is fixed-rate: rate control needs a variable-rate "
                             "model (qarv_base)")

        def compress(lmb):
            notes: list = []
            return self.compress(image, lmb, fmt=fmt, tile=tile, notes=notes), notes
        return rate_control.search(compress, self.config.lmb_range, target_bytes, how)

    def resolve_tile(self, image_size, tile) -> tuple[int, int] | None:
        """The tile size :meth:`compress` uses for ``tile`` (None, ``"auto"`` or pixels) on an
        image of ``image_size`` = (H, W): None for a whole-image file."""
        if tile is None:
            return None
        if tile == "auto":
            return tiles.choose_tile(self.config, image_size)
        if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)):
            raise ValueError(f"tile must be None, 'auto' or a number of pixels, got {tile!r}")
        s = self.config.max_stride
        size = tiles.tile_size_for(image_size, int(tile), s)
        return None if size == imageio.padded_size(*image_size, s) else size

    def _meta(self, lmb, image_size) -> FileMeta:
        return FileMeta(self.config.name, self.model_id, None if lmb is None else float(lmb),
                        tuple(int(v) for v in image_size), self.config.max_stride)

    # -- decompression --------------------------------------------------------------------------

    def decompress(self, data, **options) -> np.ndarray:
        """A file's bytes (any layout) -> the image, (H, W, 3) float32 in [0, 1]. ``options``:
        the fields of :class:`DecodeOptions` (``num_blocks``, ``temperature``, ``key``,
        ``allow_partial``, ``verify``, ``pixels``)."""
        return self.decompress_details(data, **options).image

    def decompress_details(self, data, **options) -> DecodeResult:
        """:meth:`decompress` with everything the decode has to say (:class:`DecodeResult`)."""
        opts = DecodeOptions(**options)
        t0 = time.perf_counter()
        data = as_bytes(data)
        if tiles.is_tiled(data):
            res = self._decompress_tiled(data, opts)
        else:
            res = self._decompress_one(formats.parse(data, allow_partial=opts.allow_partial), opts)
        res.seconds = time.perf_counter() - t0
        return res

    def decompress_batch(self, files) -> tuple[list[np.ndarray], list[formats.ParsedFile], list[str]]:
        """Files of one padded image size and one λ, decoded in one batched device pass (the
        same parsing, model check and verified decoding as :meth:`decompress`). -> (the images,
        cropped to their sizes, float32 [0, 1]; the parsed files; the decoder's notes)."""
        parsed = [formats.parse(d) for d in files]
        for p in parsed:
            self.check_file(p)
        if len({tuple(p.encoded.grid) for p in parsed}) != 1 or len({p.meta.lmb for p in parsed}) != 1:
            raise ValueError("decompress_batch: files of one latent grid and one λ only")
        report = DecodeReport(near_boundary=self.coder.near_boundary)
        out = self.coder.decode([p.encoded for p in parsed], parsed[0].meta.lmb, report=report)
        images = [x[:p.meta.image_size[0], :p.meta.image_size[1]] for x, p in zip(out, parsed)]
        return images, parsed, report.notes()

    def check_file(self, p: formats.ParsedFile) -> None:
        """Refuse a file that was not written by (a model compatible with) this codec's model."""
        cfg = self.config
        if p.layout == formats.LVAE:
            if p.meta.model_id != self.model_id:
                raise BitstreamError(
                    f"this file was written by model {p.meta.model_name!r} with other weights or "
                    f"config (id {p.meta.model_id.hex()}), not by the loaded {cfg.name!r} "
                    f"(id {self.model_id.hex()})")
        elif p.layout != formats.OFFICIAL_LAYOUT.get(cfg.family):
            family = "QARV" if p.layout == formats.QARV_OFFICIAL else "QRes"
            raise BitstreamError(f"an official {family} file cannot be decoded with {cfg.name} "
                                 f"({cfg.family})")
        if p.total_latents != self.num_latents:
            raise BitstreamError(f"the file has {p.total_latents} latent blocks, {cfg.name} has "
                                 f"{self.num_latents} (wrong model?)")
        if p.lossless != self.model.lossless:
            raise BitstreamError(f"a {'lossless' if p.lossless else 'lossy'} file cannot be decoded "
                                 f"with {'lossless' if self.model.lossless else 'lossy'} {cfg.name}")
        h, w = p.meta.image_size
        s = cfg.max_stride
        if imageio.padded_size(h, w, s) != (p.encoded.grid[0] * s, p.encoded.grid[1] * s):
            raise BitstreamError(f"image size {h}x{w} does not match the latent grid {p.encoded.grid}")

    def _decompress_one(self, p: formats.ParsedFile, opts: DecodeOptions) -> DecodeResult:
        self.check_file(p)
        check_image_size(self.config, *p.meta.image_size, what="bitstream")  # before any allocation
        n = len(p.encoded.latents)
        k = n if opts.num_blocks is None else min(opts.num_blocks, n)
        notes = list(p.notes)
        if k < self.num_latents:
            notes.append(f"decoded {k} of {self.num_latents} latent blocks; the rest "
                         + ("at the prior mean" if opts.temperature == 0 else
                            f"sampled at temperature {opts.temperature:g}"))
        report = DecodeReport(near_boundary=self.coder.near_boundary)
        img = self.coder.decode([p.encoded], p.meta.lmb, num_blocks=k, temperature=opts.temperature,
                                key=opts.key, verify=opts.verify, robust=opts.verify,
                                report=report)[0]
        h, w = p.meta.image_size
        img = img[:h, :w] if opts.pixels == "float" else imageio.to_uint8(img[:h, :w])
        return DecodeResult(img, p.layout, k, self.num_latents, p.meta.lmb, 0.0,
                            notes + report.notes(), report)

    def _decompress_tiled(self, data: bytes, opts: DecodeOptions) -> DecodeResult:
        """Decode a tiled file tile by tile into the whole image (memory: one tile + the image)."""
        hdr = tiles.read_tiled_header(data)
        tiles.check_tiled(self.config, hdr.image_size, hdr.tile_size, what="bitstream")
        if len(data) > hdr.total_size:
            raise BitstreamError(f"lvae tiled file: {len(data) - hdr.total_size} bytes after the "
                                 "last tile (extended or corrupt)")
        if len(data) < hdr.total_size and not opts.allow_partial:
            raise BitstreamError(f"lvae tiled file: {len(data)} bytes, the header announces "
                                 f"{hdr.total_size} (truncated; --partial decodes what it holds)")
        h, w = hdr.image_size
        as_pixels = imageio.to_uint8 if opts.pixels == "uint8" else (lambda a: a)
        out = np.empty((h, w, 3), np.uint8 if opts.pixels == "uint8" else np.float32)
        state = _TiledDecode(self.num_latents, DecodeReport(near_boundary=self.coder.near_boundary))
        for k, payload, problem in tiles.iter_tiles(data, hdr, opts.allow_partial):
            img = self._decode_tile(k, payload, problem, hdr, opts, state)
            rs, cs = hdr.region(k)
            out[rs, cs] = as_pixels(img[: rs.stop - rs.start, : cs.stop - cs.start])
        rows, cols = hdr.grid
        state.notes.insert(0, f"tiled file: {rows}×{cols} tiles of {hdr.tile_size[1]}x"
                              f"{hdr.tile_size[0]}")
        return DecodeResult(out, formats.LVAE_TILED, state.blocks, self.num_latents, state.lmb,
                            0.0, state.notes, state.report)

    def _decode_tile(self, k: int, payload, problem, hdr, opts: DecodeOptions, state) -> np.ndarray:
        """Tile ``k`` of a tiled file (an lvae container of one full tile), or the prior alone
        when the file no longer holds it."""
        key = None if opts.key is None else jax.random.fold_in(opts.key, k)
        res = None
        if payload is not None:
            try:
                res = self._decode_tile_file(k, payload, hdr, opts, key, partial=problem is not None)
            except BitstreamError:
                if problem is None:
                    raise
                payload = None                     # not even the tile's header survived
        if payload is None:
            img, blocks, lmb = self._prior_tile(k, hdr, opts, key, state.lmb), 0, state.lmb
        else:
            if state.lmb is not None and res.lmb != state.lmb:
                raise BitstreamError(f"lvae tiled file: tile {k} has λ = {res.lmb:g}, tile 0 "
                                     f"λ = {state.lmb:g} (corrupt)")
            img, blocks, lmb = res.image, res.blocks_decoded, res.lmb
            state.notes += [f"tile {k}: {n}" for n in res.notes]
            state.report.merge(res.report, f"tile {k}")
        if problem is not None:
            state.notes.append(f"tile {k}: {problem}; " + ("decoded from the prior alone" if payload
                                                         is None else "decoded from the latent "
                                                         "blocks it holds"))
        state.lmb = lmb if state.lmb is None else state.lmb
        state.blocks = min(state.blocks, blocks)
        return img

    def _decode_tile_file(self, k, payload, hdr, opts, key, partial: bool) -> DecodeResult:
        parsed = formats.parse(payload, allow_partial=partial)
        if parsed.layout != formats.LVAE:
            raise BitstreamError(f"lvae tiled file: tile {k} is not an lvae container (corrupt)")
        if parsed.meta.image_size != hdr.tile_size:
            size = parsed.meta.image_size
            raise BitstreamError(f"lvae tiled file: tile {k} holds a {size[1]}x{size[0]} image, "
                                 f"not a {hdr.tile_size[1]}x{hdr.tile_size[0]} tile (corrupt)")
        tile_opts = DecodeOptions(opts.num_blocks, opts.temperature, key, partial, opts.verify)
        # (each tile as float32; converted as it is placed)
        return self._decompress_one(parsed, tile_opts)

    def _prior_tile(self, k, hdr, opts: DecodeOptions, key, lmb) -> np.ndarray:
        if lmb is None and self.config.variable_rate:
            raise BitstreamError(f"tile {k} is missing and no earlier tile gives λ")
        s = self.config.max_stride
        item = EncodedImage([], None, (hdr.tile_size[0] // s, hdr.tile_size[1] // s))
        return self.coder.decode([item], lmb, num_blocks=0, temperature=opts.temperature, key=key,
                                 verify=False, robust=False)[0]

    # -- files ----------------------------------------------------------------------------------

    def compress_file(self, src, dst, lmb=None, **options) -> Path:
        """Compress the image file ``src`` (any format Pillow reads) into the file ``dst``
        (written atomically); ``options`` as :meth:`compress`. -> ``dst``."""
        im, _ = imageio.load_rgb8(src)
        return atomic_write_bytes(dst, self.compress(im, lmb, **options))

    def decompress_file(self, src, dst=None, **options) -> np.ndarray:
        """Decompress the file ``src``; -> the image, (H, W, 3) float32 in [0, 1], also written
        as a PNG to ``dst`` when given. ``options`` as :meth:`decompress`."""
        image = self.decompress(read_bounded(src, what="bitstream"), **options)
        if dst is not None:
            imageio.save_png(dst, image)
        return image


@dataclass
class _TiledDecode:
    """What a tiled decode has gathered so far: λ (from the first tile that gives it), the
    fewest latent blocks any tile decoded, notes and the merged report."""
    blocks: int
    report: DecodeReport
    lmb: float | None = None
    notes: list = None

    def __post_init__(self):
        self.notes = [] if self.notes is None else self.notes
