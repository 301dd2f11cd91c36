"""Command line of the generative tools (sampling, interpolation, inpainting, R(D) curves).

Subcommands ``sample``, ``interpolate``, ``inpaint``, ``progressive`` and ``rd-curve`` in
:data:`COMMANDS` (the :mod:`lvae_jax.commands` style; ``python -m lvae_jax`` includes them).

Every subcommand takes ``--ckpt DIR`` (an lvae-jax model directory, from ``python -m convert`` or
training; default: the embedded demo model), optionally ``--model NAME`` (checked against the directory's model), ``--seed`` and
``--out``. Images of any size are padded (edge replication) to multiples of 64 for the model and
the outputs cropped back. Exit status: 0 success, 2 bad input (the message says why).

Nothing heavy is imported here: JAX and the model load when a command runs.
"""

from __future__ import annotations

# lazy imports: a command imports its machinery (JAX, the model) when it runs, so that the
# command line starts at once.

import sys
from pathlib import Path

from lvae_jax.commands import CommandSet, arg, group, model_arg

COMMANDS = CommandSet("python -m lvae_jax.generative.cli", __doc__.splitlines()[0])
command = COMMANDS.command

# ----------------------------------------------------------------------------- shared pieces


def _common(out_default: str, lmb: bool = True) -> tuple:
    out = (
        arg("--ckpt", metavar="DIR",
            help="model directory (lvae_model.json + params/), e.g. from python -m convert; "
                 "default: the embedded demo model (a small QARV, not official weights)"),
        model_arg(),
        arg("--seed", type=int, default=0, help="PRNG seed of the random draws (default 0)"),
        arg("--out", default=out_default, metavar="PATH", help=f"output (default {out_default})"),
    )
    if lmb:
        out += (arg("--lmb", type=float, metavar="λ",
                    help="λ of a variable-rate model (default: its highest, the official "
                         "default)"),)
    return out


def _load(args):
    """The model of ``--ckpt`` / ``--model`` (official weights) as a GenerativeModel."""
    from lvae_jax.checkpoint.model_dir import load_model
    from lvae_jax.checkpoint.pretrained import model_dirs
    from lvae_jax.generative.sampling import GenerativeModel
    dirs = model_dirs(args.ckpt, args.model)
    if not dirs:
        from lvae_jax.assets import demo_model_dir
        dirs = [demo_model_dir()]
        print("note: no --ckpt or --model given: using the embedded DEMO MODEL (a small QARV "
              "trained by lvae-jax, not the official weights)", file=sys.stderr)
    return GenerativeModel(load_model(dirs[0]))


def _key(args):
    import jax
    return jax.random.key(args.seed)


def _lmb(gm, args):
    """``--lmb`` validated for the model (λ of a QRes model is an error)."""
    lmb = getattr(args, "lmb", None)
    gm.lmb_array(lmb, 1)
    return lmb


def _read(path, stride: int):
    """-> (padded float image (1, Hp, Wp, 3), original (H, W))."""
    from lvae_jax.image import load_rgb8, pad_to_multiple, to_float
    rgb, notes = load_rgb8(path)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    h, w = rgb.shape[:2]
    return pad_to_multiple(to_float(rgb), stride)[None], (h, w)


def _wrote(*paths) -> None:
    for p in paths:
        print(f"wrote {p}")


# ----------------------------------------------------------------------------- sample


@command(
    "sample", "unconditional samples from the prior, as a grid PNG",
    *_common("samples.png"),
    arg("--num", type=int, default=8, help="number of samples (default 8)"),
    arg("--size", type=int, nargs=2, default=(64, 64), metavar=("H", "W"),
        help="image size in pixels, multiples of 64 (default 64 64)"),
    arg("--temperature", "-t", type=float, default=1.0,
        help="prior temperature t (default 1; 0 = prior mean)"),
    arg("--nrow", type=int, default=8, help="images per row of the grid (default 8)"),
)
def _sample(args) -> int:
    """Unconditional samples as a grid PNG (notebook uncond-sampling)."""
    from lvae_jax.generative.figures import save_grid
    from lvae_jax.generative.sampling import GenerativeError, sample
    gm = _load(args)
    h, w = args.size
    s = gm.stride
    if args.num < 1 or h < s or w < s or h % s or w % s:
        raise GenerativeError(f"--num must be >= 1 and --size positive multiples of {s}, "
                              f"got {args.num} and {h} {w}")
    ims = sample(gm, _key(args), args.num, h // s, w // s, lmb=_lmb(gm, args),
                 temperature=args.temperature)
    _wrote(save_grid(args.out, ims, nrow=args.nrow))
    return 0


# ----------------------------------------------------------------------------- interpolate


@command(
    "interpolate", "decode linear mixtures of the latents of two images (strip PNG)",
    *_common("interpolation.png"),
    arg("image1", help="first image"),
    arg("image2", help="second image (same size)"),
    arg("--steps", type=int, default=8, help="decoded mixtures, ends included (default 8)"),
    arg("--temperature", "-t", type=float, default=0.0,
        help="pixel temperature of the lossless head (default 0: the pixel mean)"),
)
def _interpolate(args) -> int:
    """Latent interpolation strip: image 1, decodings of mixed latents, image 2."""
    import numpy as np
    from lvae_jax.generative.figures import save_strip
    from lvae_jax.generative.interpolation import interpolate
    from lvae_jax.generative.sampling import GenerativeError
    gm = _load(args)
    a, size_a = _read(args.image1, gm.stride)
    b, size_b = _read(args.image2, gm.stride)
    if size_a != size_b:
        raise GenerativeError(f"the two images differ in size: {size_a} vs {size_b}")
    res = interpolate(gm, a, b, steps=args.steps, lmb=_lmb(gm, args), key=_key(args),
                      temperature=args.temperature)
    h, w = size_a
    strip = [im[0, :h, :w] for im in (a, *res.frames[:, None], b)]
    _wrote(save_strip(args.out, [np.asarray(x) for x in strip]))
    return 0


# ----------------------------------------------------------------------------- inpaint


@command(
    "inpaint", "repaint a box of an image (QRes models; strip PNG)",
    *_common("inpaint.png", lmb=False),
    arg("image", help="image to repaint"),
    arg("--box", type=float, nargs=4, default=(0.4, 0.4, 0.8, 0.8),
        metavar=("X1", "Y1", "X2", "Y2"),
        help="box to repaint, fractions of width/height (default 0.4 0.4 0.8 0.8)"),
    arg("--steps", type=int, default=20, help="iterations (default 20, the notebook)"),
    arg("--temperature", "-t", type=float, default=0.8,
        help="prior temperature inside the box (default 0.8, the notebook)"),
    arg("--samples", type=int, default=6, help="independent results (default 6)"),
    arg("--no-mask", action="store_true",
        help="do not grey out the box first (the notebook does)"),
)
def _inpaint(args) -> int:
    """Inpainting (QRes): a row of input, masked input and the results."""
    from lvae_jax.generative.figures import save_strip
    from lvae_jax.generative.inpainting import check_box, inpaint
    gm = _load(args)
    x, (h, w) = _read(args.image, gm.stride)
    hp, wp = x.shape[1:3]
    x1, y1, x2, y2 = check_box(args.box)
    box = (x1 * w / wp, y1 * h / hp, x2 * w / wp, y2 * h / hp)   # the same pixels, padded frame
    res = inpaint(gm, x, box, key=_key(args), steps=args.steps, temperature=args.temperature,
                  num_samples=args.samples, mask_input=not args.no_mask)
    row = [x[0, :h, :w], res.masked[0, :h, :w], *res.samples[:, :h, :w]]
    _wrote(save_strip(args.out, row))
    return 0


# ----------------------------------------------------------------------------- progressive


@command(
    "progressive", "coarse-to-fine decoding of an image, k = 0..L latents (strip PNG)",
    *_common("progressive.png"),
    arg("image", help="image to decode coarse to fine"),
    arg("--temperature", "-t", type=float, default=0.0,
        help="temperature of the latents not taken from the image (default 0: prior mean)"),
    arg("--ks", type=int, nargs="+", metavar="K",
        help="numbers of latents to take from the image (default 0..L)"),
)
def _progressive(args) -> int:
    """Coarse-to-fine strip: the first k latents from the image, the rest from the prior."""
    from lvae_jax.evaluation.metrics import psnr
    from lvae_jax.generative.figures import save_strip
    from lvae_jax.generative.sampling import progressive
    gm = _load(args)
    x, (h, w) = _read(args.image, gm.stride)
    res = progressive(gm, x, ks=args.ks, temperature=args.temperature, key=_key(args),
                      lmb=_lmb(gm, args))
    frames = res.frames[:, 0, :h, :w]
    print(f"{'k':>3}  {'bpp':>9}  {'PSNR':>8}")
    for k, bpp, frame in zip(res.ks, res.bpp[:, 0], frames):
        print(f"{k:>3}  {bpp:9.5f}  {psnr(x[0, :h, :w], frame):8.3f}")
    _wrote(save_strip(args.out, list(frames)))
    return 0


# ----------------------------------------------------------------------------- rd-curve


@command(
    "rd-curve", "estimated R(D) curve of rd_model_base / QARV from theoretical rates (JSON)",
    *_common("rd-curve.json", lmb=False),
    arg("images", help="image folder (recursive) or tfds:NAME"),
    group(
        arg("--lambdas", type=float, nargs="+", metavar="λ", help="explicit λ values"),
        arg("--lmb-range", type=float, nargs=2, metavar=("LO", "HI"),
            help="λ range (default: the official one: rd 4 2048, qarv 16 2048)"),
        exclusive=True),
    arg("--steps", type=int, help="number of λ (default: rd 16, qarv 8)"),
    arg("--spacing", choices=("log", "cube-root"),
        help="λ spacing (default log, the official scripts')"),
    arg("--draws", type=int, default=1,
        help="rd: latent draws per image and λ, averaged (default 1, the official)"),
    arg("--bpp-pixels", choices=("padded", "original"),
        help="bpp denominator (default: rd padded H·W, qarv original H·W)"),
    arg("--test-set", help="test-set name in the JSON (default: the folder name)"),
    arg("--name", help="curve name in the JSON (default: the model name)"),
    arg("--plot", metavar="PNG", help="also draw the curve"),
    arg("--anchor", action="append", default=[], metavar="JSON",
        help="anchor curve for the plot: a JSON file or a packaged name such as "
             "kodak/vtm18.0 (`python -m eval anchors`; repeatable)"),
)
def _rd_curve(args) -> int:
    """Estimated R(D) curve (theoretical rate) of a variable-rate model, official JSON schema."""
    from lvae_jax.generative.rd_curve import (PROTOCOLS, estimate_rd_curve, lambda_grid,
                                              official_lambdas, write_rd_curve)
    from lvae_jax.generative.sampling import GenerativeError
    from lvae_jax.evaluation.official_results import UnknownResult, resolve
    try:
        args.anchor = [resolve(a) for a in args.anchor]       # before any work
    except UnknownResult as e:
        raise GenerativeError(str(e)) from None
    gm = _load(args)
    if gm.family not in PROTOCOLS:
        raise GenerativeError(f"{gm.name} is a fixed-rate {gm.family} model; rd-curve needs a "
                              "variable-rate model (qarv, rd)")
    proto = PROTOCOLS[gm.family]
    if args.lambdas:
        lambdas = args.lambdas
    elif args.lmb_range or args.steps or args.spacing:
        lo, hi = args.lmb_range or proto.lmb_range
        lambdas = lambda_grid(lo, hi, args.steps or proto.steps, args.spacing or proto.spacing)
    else:
        lambdas = official_lambdas(gm.family)
    src = str(args.images)
    test_set = args.test_set or (src[5:] if src.startswith("tfds:") else Path(src).name)
    curve = estimate_rd_curve(
        gm, args.images, lambdas, key=_key(args) if gm.family == "rd" else None,
        draws=args.draws, bpp_pixels=args.bpp_pixels, name=args.name, test_set=test_set,
        meta={"seed": args.seed} if gm.family == "rd" else None,
        progress=lambda line: print(line, file=sys.stderr))
    for lmb, bpp, p in zip(curve.lambdas, curve.bpp, curve.psnr):
        print(f"λ={lmb:10.4f}  bpp={bpp:.5f}  psnr={p:.3f}")
    _wrote(*write_rd_curve(curve, args.out, args.plot, args.anchor))
    return 0


def main(argv=None) -> int:
    """Stand-alone entry (``python -m lvae_jax.generative.cli COMMAND ...``)."""
    return COMMANDS.main(argv)


if __name__ == "__main__":
    sys.exit(main())
