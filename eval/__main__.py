"""python -m eval: compare image codecs by their rate-distortion curves.

Result files are JSON RD curves in the schema of the official lossy-vae results (name, test-set,
lambdas, results: bpp / psnr / mse ...); the VTM 18.0 anchors and the official model curves are
in shared/results/.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, NamedTuple

EXAMPLES = """\
examples:
  python -m eval bd-rate kodak-vtm18.0.json kodak-qarv_base.json kodak-qres34m.json
  python -m eval plot kodak.png kodak-qarv_base.json kodak-qres34m.json --anchor kodak-vtm18.0.json
  python -m eval baselines /data/kodak --out kodak-classical.json --codecs jpeg,webp,avif,jxl

exit status: 0 success, 1 some figure could not be computed, 2 bad input or usage.
"""

BD_METHODS = ("cubic", "pchip", "akima")   # lvae_jax.evaluation.bd_rate.METHODS


class Arg(NamedTuple):
    flags: tuple[str, ...]
    kwargs: dict[str, Any]


def arg(*flags: str, **kwargs: Any) -> Arg:
    """One ``add_argument(*flags, **kwargs)`` of a subcommand."""
    return Arg(flags, kwargs)


class Command(NamedTuple):
    help: str
    args: tuple[Arg, ...]
    run: Callable[[argparse.Namespace], int]


#: Subcommands in ``--help`` order: name -> (one-line help, arguments, function).
COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, *args: Arg):
    """Register the decorated ``fn(args) -> exit status`` as subcommand ``name``."""
    def register(fn):
        if name in COMMANDS:
            raise ValueError(f"subcommand {name!r} is registered twice")
        COMMANDS[name] = Command(help, args, fn)
        return fn
    return register


class UsageError(Exception):
    """Bad command-line input (exit status 2)."""


# ===================================================================== bd-rate
@command(
    "bd-rate", "BD-rate and BD-PSNR of result files against an anchor",
    arg("anchor", metavar="ANCHOR.json", help="the reference curve, e.g. kodak-vtm18.0.json"),
    arg("candidates", metavar="CANDIDATE.json", nargs="+",
        help="curves to compare (a file may hold a list of curves)"),
    arg("--method", choices=BD_METHODS, default="cubic",
        help="curve fit: 'cubic' = least-squares cubic of log-rate vs PSNR, the definition the "
             "official lossy-vae figures use (default); 'pchip'/'akima' = piecewise "
             "interpolation as in the JVET common test conditions"),
    arg("--anchor-name", metavar="NAME",
        help="the anchor's curve name, when ANCHOR.json holds several (e.g. jpeg)"),
    arg("--json", action="store_true", help="print JSON instead of a table"),
)
def bd_rate_command(args) -> int:
    """Print the Bjøntegaard delta rate (percent; negative = fewer bits than the anchor at equal
    PSNR) and delta PSNR (dB; positive = better) of every candidate against the anchor, over the
    range where their PSNR (resp. rate) overlaps."""
    from lvae_jax.evaluation.bd_rate import BDError, compare
    from lvae_jax.evaluation.rd_json import load_curves, load_rd

    if args.anchor_name is None and len(load_curves(args.anchor)) > 1:
        names = ", ".join(c.label for c in load_curves(args.anchor))
        raise UsageError(f"{args.anchor} holds several curves ({names}); choose the anchor "
                         "with --anchor-name")
    anchor = load_rd(args.anchor, name=args.anchor_name)
    rows, failed = [], 0
    for path in args.candidates:
        for curve in load_curves(path):
            row = {"candidate": curve.label, "source": curve.source, "test_set": curve.test_set,
                   "points": len(curve), "method": args.method}
            if anchor.test_set and curve.test_set and anchor.test_set != curve.test_set:
                row["warning"] = (f"test sets differ: anchor {anchor.test_set!r}, "
                                  f"candidate {curve.test_set!r}")
            try:
                r = compare(anchor, curve, method=args.method)
                row.update(bd_rate=r.bd_rate, bd_psnr=r.bd_psnr, psnr_range=r.psnr_range,
                           rate_range=r.rate_range)
            except BDError as e:
                row["error"] = str(e)
                failed += 1
            rows.append(row)
    if args.json:
        print(json.dumps({"anchor": {"name": anchor.label, "source": anchor.source,
                                     "test_set": anchor.test_set, "points": len(anchor)},
                          "results": rows}, indent=2))
        return 1 if failed else 0
    print(f"anchor: {anchor.label}" + (f" on {anchor.test_set}" if anchor.test_set else "")
          + f" ({len(anchor)} points, {anchor.source})")
    print(f"method: {args.method}")
    width = max(len("candidate"), *(len(r["candidate"]) for r in rows))
    print(f"{'candidate':<{width}}  {'test set':<18} {'BD-rate':>9}  {'BD-PSNR':>10}  PSNR overlap")
    for r in rows:
        head = f"{r['candidate']:<{width}}  {str(r['test_set'] or '-'):<18} "
        if "error" in r:
            print(head + f"{'n/a':>9}  {'n/a':>10}  {r['error']}")
        else:
            lo, hi = r["psnr_range"]
            print(head + f"{r['bd_rate']:>+8.2f}%  {r['bd_psnr']:>+7.3f} dB  {lo:.2f}-{hi:.2f} dB")
        if "warning" in r:
            print(f"{'':<{width}}  warning: {r['warning']}")
    return 1 if failed else 0


# ===================================================================== plot
@command(
    "plot", "RD plot (PSNR vs bpp) of result files as a PNG",
    arg("out", metavar="OUT.png", help="image to write (PNG; .pdf/.svg also work)"),
    arg("curves", metavar="CURVE.json", nargs="*", help="curves to draw"),
    arg("--anchor", action="append", default=[], metavar="X.json",
        help="anchor curve, drawn in grey; repeatable. The first one is the BD-rate reference "
             "shown in the legend"),
    arg("--no-bd", action="store_true", help="no BD-rates in the legend"),
    arg("--method", choices=BD_METHODS, default="cubic", help="BD-rate curve fit (see bd-rate)"),
    arg("--title", help="figure title (default: the common test set)"),
    arg("--xlim", nargs=2, type=float, metavar=("LO", "HI"), help="bpp axis range"),
    arg("--ylim", nargs=2, type=float, metavar=("LO", "HI"), help="PSNR axis range (dB)"),
)
def plot_command(args) -> int:
    """Draw RD curves (RGB PSNR in dB against bits per pixel) into one figure, anchors
    highlighted, with every curve's BD-rate against the first anchor in the legend."""
    from lvae_jax.evaluation.plot import plot_rd

    if not args.curves and not args.anchor:
        raise UsageError("plot: give at least one CURVE.json or --anchor")
    path = plot_rd(args.out, args.curves, args.anchor, bd_anchor=None if args.no_bd else 0,
                   method=args.method, title=args.title, xlim=args.xlim, ylim=args.ylim)
    print(f"wrote {path}")
    return 0


# ===================================================================== baselines
@command(
    "baselines", "RD curves of JPEG, WebP, AVIF and JPEG XL on an image folder",
    arg("images", metavar="IMAGE_DIR",
        help="folder of test images (recursive), or tfds:NAME for a prepared TFDS dataset"),
    arg("--out", required=True, metavar="RESULTS.json",
        help="results file to write: one curve per codec (a JSON list if several)"),
    arg("--codecs", default="jpeg,webp,avif,jxl",
        help="comma-separated codecs (default: jpeg,webp,avif,jxl); unavailable ones are "
             "skipped with a message"),
    arg("--qualities", nargs="+", type=int, metavar="Q",
        help="quality settings 0-100 for every codec (default: 10 20 ... 90 95)"),
    arg("--ms-ssim", action="store_true",
        help="also compute MS-SSIM (needs images of at least 161x161 pixels)"),
    arg("--test-set", help="test-set name for the results (default: the folder or dataset name)"),
    arg("--alpha", choices=("refuse", "drop"), default="refuse",
        help="images with a non-opaque alpha channel: refuse (default) or drop the alpha"),
    arg("--split", default="test", help="TFDS split (tfds:NAME only; default: test)"),
    arg("--data-dir", help="TFDS data directory (tfds:NAME only)"),
    arg("--image-key", default="image", help="TFDS image feature (tfds:NAME only)"),
    arg("--quiet", action="store_true", help="no progress messages"),
)
def baselines_command(args) -> int:
    """Code every test image with classical codecs at a sweep of quality settings and write
    their RD curves: bpp from the size of the complete encoded file, RGB PSNR per image then
    averaged over images (as the official evaluation)."""
    from lvae_jax.evaluation.baselines import CODECS, codec_availability, evaluate_codecs
    from lvae_jax.evaluation.images import open_images
    from lvae_jax.evaluation.rd_json import save_rd

    names = [c.strip().lower() for c in args.codecs.split(",") if c.strip()]
    unknown = [c for c in names if c not in CODECS]
    if unknown or not names:
        raise UsageError(f"--codecs: unknown codec(s) {unknown or args.codecs!r}; "
                         f"known: {', '.join(CODECS)}")
    available = []
    for name, reason in codec_availability(names).items():
        if reason:
            print(f"skipping {name}: {reason}", file=sys.stderr)
        else:
            available.append(name)
    if not available:
        print("error: none of the requested codecs is available", file=sys.stderr)
        return 2
    source = str(args.images)
    test_set = args.test_set or (source[len("tfds:"):] if source.startswith("tfds:")
                                 else Path(source).expanduser().resolve().name)
    images = open_images(source, split=args.split, data_dir=args.data_dir,
                         image_key=args.image_key, alpha=args.alpha)
    progress = None if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    curves = evaluate_codecs(images, available, args.qualities, with_ms_ssim=args.ms_ssim,
                             test_set=test_set, progress=progress)
    path = save_rd(curves[0] if len(curves) == 1 else curves, args.out)
    for c in curves:
        print(f"{c.name:<5} quality {list(c.settings['quality'])}")
        print(f"{'':<5} bpp  {[round(v, 4) for v in c.bpp]}")
        print(f"{'':<5} psnr {[round(v, 3) for v in c.psnr]}")
    print(f"wrote {path} ({len(curves)} curve{'s' if len(curves) > 1 else ''}, test set "
          f"{test_set!r})")
    return 0


# ===================================================================== main
def build_parser() -> argparse.ArgumentParser:
    doc = (__doc__ or "").strip().splitlines()
    parser = argparse.ArgumentParser(
        prog="python -m eval", description="\n".join(doc),
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.run.__doc__ or cmd.help)
        for a in cmd.args:
            p.add_argument(*a.flags, **a.kwargs)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command].run(args)
    except UsageError as e:
        print(f"python -m eval {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as e:
        # RDFormatError, BDError, ImageSetError, ImageError, CodecUnavailable, bad values...
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
