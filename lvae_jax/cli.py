"""The subcommands of ``python -m lvae_jax`` (:data:`COMMANDS`, in the style of
:mod:`lvae_jax.commands`): quickstart, compress, decompress, the generative tools
(:mod:`lvae_jax.generative.cli`) and doctor.

Nothing heavy is imported here; JAX and the model load when a command runs. Bad input (a
corrupt file, a wrong model, an unreadable image) ends with one ``error:`` line and exit status 2.
"""

from __future__ import annotations

# lazy imports: a command imports its machinery (JAX, the model, the codec) when it runs, so that
# `--help` and every other command start at once.

import argparse
import sys
import time
from pathlib import Path

from lvae_jax.commands import CommandSet, arg, group, model_arg


def _before(args) -> None:
    """Before every command: the persistent compilation cache, the memory limit; with the output
    ``-`` (standard output) the command's report goes to standard error."""
    from lvae_jax.files import is_stdout
    if is_stdout(getattr(args, "output", None) or ""):
        sys.stdout = sys.stderr
    if args.command != "doctor":
        from lvae_jax.runtime import enable_compilation_cache
        enable_compilation_cache()
    if getattr(args, "max_memory", None):
        from lvae_jax.limits import set_memory_limit
        set_memory_limit(args.max_memory)


COMMANDS = CommandSet("python -m lvae_jax", "The lvae-jax command line.",
                      epilog="python -m lvae_jax quickstart   # offline demo on embedded images "
                             "and model\npython -m lvae_jax doctor       # check the installation",
                      before=_before)
command = COMMANDS.command


def _model_args(lmb_help: str | None = None) -> tuple:
    out = (
        arg("--ckpt", metavar="DIR",
            help="model directory (from python -m convert or training); default: the embedded "
                 "demo model"),
        model_arg(),
        arg("--max-memory", metavar="SIZE",
            help="the most memory this process may use (e.g. 8G; 0 = no check; or "
                 "LVAE_MAX_MEMORY; default: an image may add 80%% of the available memory); "
                 "inputs that would need more are refused before any allocation"),
    )
    if lmb_help:
        out += (arg("--lmb", type=float, metavar="λ", help=lmb_help),)
    return out


def model_dir(args) -> Path:
    """The model directory of ``--ckpt`` / ``--model`` (official weights), else the demo model."""
    from lvae_jax.assets import demo_model_dir
    from lvae_jax.checkpoint.pretrained import model_dirs
    dirs = model_dirs(args.ckpt, args.model)
    return dirs[0] if dirs else demo_model_dir()


def _load_codec(args):
    from lvae_jax.checkpoint.model_dir import load_model
    from lvae_jax.codec.api import Codec
    return Codec(load_model(model_dir(args)))


def _finite(args, *names) -> None:
    """Numeric flags must be finite numbers (``nan``/``inf`` parse as floats)."""
    import math
    for n in names:
        v = getattr(args, n, None)
        if v is not None and not math.isfinite(v):
            raise ValueError(f"--{n.replace('_', '-')} must be a finite number, got {v}")


def _check_rate_args(args) -> None:
    """One way to choose the rate, each within what it means."""
    from lvae_jax.commands import UsageError
    if args.lmb is not None and (args.target_bpp is not None or args.target_bytes is not None):
        raise UsageError("--lmb and --target-bpp/--target-bytes both choose the rate: give one")
    if args.target_bpp is not None and not 0 < args.target_bpp <= 48:
        raise ValueError(f"--target-bpp must be in (0, 48] bits per pixel (24 is uncompressed "
                         f"8-bit RGB), got {args.target_bpp:g}")
    if args.target_bytes is not None and args.target_bytes <= 0:
        raise ValueError(f"--target-bytes must be a positive number of bytes, got "
                         f"{args.target_bytes}")


# -- doctor ------------------------------------------------------------------------------------


def _doctor(args) -> int:
    """Print versions, devices and the range coder's self-check."""
    from lvae_jax.doctor import run
    return run()


# -- compress ----------------------------------------------------------------------------------


def _quickstart(args) -> int:
    """Offline: compress and decompress sample images with the embedded demo model (or --ckpt),
    the RD curve vs JPEG and a labelled side-by-side PNG."""
    from lvae_jax import quickstart
    return quickstart.run(args)


def _register_quickstart() -> None:
    from lvae_jax import quickstart
    COMMANDS.command("quickstart", "offline demo: compress/decompress sample images with the "
                     "embedded demo model, RD curve vs JPEG, side-by-side PNG",
                     *quickstart.ARGS)(_quickstart)


_register_quickstart()


def _tile_arg(text: str):
    if text in ("auto", "none"):
        return None if text == "none" else text
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of pixels, auto or none, got {text!r}") from None
    if n < 64:
        raise argparse.ArgumentTypeError(f"tiles must be at least 64 pixels, got {n}")
    return n


@command(
    "compress", "compress an image",
    arg("input", type=Path, help="image (any format Pillow reads); - for standard input"),
    arg("output", type=Path, help="output bitstream file; - for standard output (a device or "
                                  "FIFO is written into, never replaced)"),
    *_model_args("λ of a variable-rate model (qarv_base: 16..2048; larger = better quality, "
                 "bigger file). Required for variable-rate models unless a target size is given"),
    arg("--format", choices=("lvae", "official"), default="lvae",
        help="lvae: checked container (default); official: the official file layout "
             "(QARV struct / QRes pickle) that the official decompress_file reads"),
    group(arg("--target-bpp", type=float, help="search λ for this many bits per pixel (±2 %%)"),
          arg("--target-bytes", type=int, help="search λ for a file of this many bytes (±2 %%)"),
          exclusive=True),
    arg("--alpha", choices=("refuse", "drop"), default="refuse",
        help="what to do with a non-opaque alpha channel (default: refuse)"),
    arg("--keep-orientation", action="store_true",
        help="code the pixels as stored, ignoring an EXIF orientation tag (default: turn the "
             "image as a viewer shows it, with a note)"),
    arg("--tile", type=_tile_arg, default="auto", metavar="N|auto|none",
        help="code the image as independent N×N tiles (N a multiple of 64), in the "
             "memory of one tile; auto (default): only images with a side above 4096 "
             "px (in tiles of at most 4096) or that would not fit --max-memory; none: "
             "never (lvae format only)"),
    arg("--overwrite", action="store_true"),
)
def _compress(args) -> int:
    """Compress an image into a bitstream file."""
    from lvae_jax.codec import tiles
    from lvae_jax.files import atomic_write_bytes, check_output
    from lvae_jax.image import image_size, load_rgb8, read_image_bytes
    from lvae_jax.limits import check_image_size
    check_output(args.output, overwrite=args.overwrite, inputs=[args.input])
    _finite(args, "lmb", "target_bpp")
    _check_rate_args(args)
    name = str(args.input)
    raw = read_image_bytes(args.input, name)        # read once
    orientation = "keep" if args.keep_orientation else "apply"
    h, w = image_size(raw, name, orientation)       # the header's claim, before decoding
    codec = _load_codec(args)
    if args.format != "lvae" and isinstance(args.tile, int):
        raise ValueError("--tile needs the lvae format: the official layouts hold one whole image")
    tile = args.tile if args.format == "lvae" else None
    tile_size = codec.resolve_tile((h, w), tile)
    if tile_size is None:
        check_image_size(codec.config, h, w, what=name)
    else:
        tiles.check_tiled(codec.config, (h, w), tile_size, what=name)
    im, notes = load_rgb8(raw, alpha=args.alpha, name=name, orientation=orientation)
    for n in notes:
        print(f"note: {n}")
    h, w = im.shape[:2]
    if tile_size is not None:
        rows, cols = tiles.tile_grid((h, w), tile_size)
        why = "" if args.tile != "auto" else (
            f" (--tile auto: a side above {tiles.MAX_UNTILED_SIDE} px)" if max(h, w) > tiles.MAX_UNTILED_SIDE
            else " (--tile auto: the whole image would not fit --max-memory)")
        print(f"note: coding {rows}×{cols} independent tiles of {tile_size[1]}x{tile_size[0]}{why}")
    t0 = time.perf_counter()
    if args.target_bpp is not None or args.target_bytes is not None:
        target = args.target_bytes if args.target_bytes is not None else round(args.target_bpp * h * w / 8)
        res = codec.compress_to_target(im, target_bytes=target, fmt=args.format, tile=tile)
        data, lmb = res.data, res.lmb
        print(f"rate control: {res.message} after {len(res.trials)} trials")
        for n in res.notes:
            print(f"warning: {n}", file=sys.stderr)
        if not res.within_tolerance:
            print("note: the target was not reached within 2 %", file=sys.stderr)
    else:
        risk: list = []
        data, lmb = codec.compress(im, args.lmb, fmt=args.format, tile=tile, notes=risk), args.lmb
        for n in risk:
            print(f"warning: {n}", file=sys.stderr)
    dt = time.perf_counter() - t0
    atomic_write_bytes(args.output, data)
    lm = f", λ = {lmb:g}" if lmb is not None else ""
    print(f"{args.input} ({w}x{h}) -> {args.output}: {len(data)} bytes, {8 * len(data) / (h * w):.4f} bpp"
          f"{lm}, {codec.config.name}, {args.format} format, {dt:.2f} s")
    return 0


# -- decompress --------------------------------------------------------------------------------


@command(
    "decompress", "decompress a bitstream (lvae, official QARV or official QRes layout)",
    arg("input", type=Path, help="bitstream (lvae container, tiled or not, or an official "
                                 "QARV/QRes file)"),
    arg("output", type=Path, help="output PNG; - for standard output (a device or FIFO is "
                                  "written into, never replaced)"),
    *_model_args(),
    arg("--blocks", type=int, metavar="K",
        help="progressive: decode only the first K latent blocks; the rest from the prior"),
    arg("--temperature", type=float, default=0.0,
        help="prior temperature of the latents not decoded (default 0: the prior mean)"),
    arg("--seed", type=int, default=0, help="PRNG seed for --temperature > 0"),
    arg("--partial", action="store_true",
        help="accept a truncated lvae container and decode the latent blocks it still holds"),
    arg("--original", type=Path, help="the original image, to print the PSNR"),
    arg("--strip", type=Path, metavar="PNG",
        help="also write the coarse-to-fine strip (decoding 0..L latent blocks)"),
    arg("--overwrite", action="store_true"),
)
def _decompress(args) -> int:
    """Decompress a bitstream file (any of the three layouts) into a PNG."""
    import jax
    import numpy as np
    from lvae_jax.files import check_output, written_into
    from lvae_jax.image import load_rgb8, save_png
    from lvae_jax.limits import read_bounded
    inputs = [args.input, args.original]
    check_output(args.output, overwrite=args.overwrite, inputs=inputs)
    if args.strip:
        check_output(args.strip, overwrite=args.overwrite, inputs=inputs + [args.output])
    for out in (args.output, args.strip):
        if out is not None and not written_into(out) and out.suffix.lower() != ".png":
            raise ValueError(f"{out}: decompress writes PNG; name the output *.png")
    from lvae_jax.numerics import check_temperature
    check_temperature(args.temperature, "--temperature")
    if args.blocks is not None and args.blocks < 0:
        raise ValueError(f"--blocks must be >= 0, got {args.blocks}")
    data = read_bounded(args.input, what="bitstream")
    orig = load_rgb8(args.original, alpha="drop")[0] if args.original else None
    codec = _load_codec(args)
    key = jax.random.key(args.seed)
    # uint8, what the PNG holds: a tiled image is assembled in 3 bytes per pixel, and the PSNR
    # printed is the written file's
    res = codec.decompress_details(data, num_blocks=args.blocks, temperature=args.temperature,
                                   key=key, allow_partial=args.partial, pixels="uint8")
    h, w = res.image.shape[:2]
    if orig is not None and orig.shape != res.image.shape:
        raise ValueError(f"--original is {orig.shape[1]}x{orig.shape[0]}, the decoded image {w}x{h} "
                         "(nothing written)")
    save_png(args.output, res.image)
    msg = (f"{args.input} ({res.fmt}, {len(data)} bytes, {8 * len(data) / (h * w):.4f} bpp) -> "
           f"{args.output} ({w}x{h}), {res.blocks_decoded}/{res.total_blocks} latent blocks, {res.seconds:.2f} s")
    if orig is not None:
        from lvae_jax.evaluation.metrics import psnr_uint8
        msg += f", PSNR {psnr_uint8(orig, res.image):.3f} dB"
        if codec.model.lossless:
            exact = np.array_equal(res.image, orig)
            msg += " (exact)" if exact else " (NOT exact)"
    print(msg)
    for n in res.notes:
        print(f"note: {n}")
    if args.strip:
        from lvae_jax.generative.figures import save_strip
        frames = [codec.decompress(data, num_blocks=k, allow_partial=args.partial)
                  for k in range(res.blocks_decoded + 1)]
        print(f"wrote {save_strip(args.strip, frames)}")
    return 0


# -- models ------------------------------------------------------------------------------------


@command(
    "models", "list the official models, their published files and which are cached",
    arg("--fetch", nargs="+", metavar="NAME",
        help="download and convert these now (e.g. for a machine that will run offline)"),
)
def _models(args) -> int:
    """Each official model's published files (``--model`` names), and where each is cached."""
    from lvae_jax.checkpoint.pretrained import model_table, models_dir, spec_dir
    from lvae_jax.models.registry import MODELS, OFFICIAL_REPO
    for spec in args.fetch or ():
        print(f"{spec}: {spec_dir(spec)}")
    rows = model_table()
    print(f"official weights: https://huggingface.co/{OFFICIAL_REPO} (HF_ENDPOINT for a mirror); "
          f"cache: {models_dir()}")
    width = max(len(r["spec"]) for r in rows)
    last = None
    for r in rows:
        if r["model"] != last:
            print(f"\n{r['model']}: {MODELS[r['model']].description}")
            last = r["model"]
        default = f"(= {r['model']}, the official default)" if r["default"] and r["spec"] != r["model"] else ""
        print(f"  {r['spec']:<{width}}  {r['path']:<34}  {'cached' if r['cached'] else '-':<6}  {default}".rstrip())
    print("\nuse: --model NAME on compress, decompress, sample, inpaint, rd-curve, quickstart, "
          "eval rd; train --weights NAME; in Python lvae_jax.get_model(name, pretrained=True)")
    return 0


# -- the generative tools, doctor --------------------------------------------------------------

def _register_rest() -> None:
    from lvae_jax.generative.cli import COMMANDS as GENERATIVE
    COMMANDS.include(GENERATIVE)
    COMMANDS.command("doctor", "check the installation (versions, devices, the range coder)")(
        _doctor)


_register_rest()
