"""python -m eval: compare image codecs by their rate-distortion curves.

Result files are JSON RD curves in the schema of the official lossy-vae results (name, test-set,
lambdas, results: bpp / psnr / mse ...); the VTM 18.0 anchors and the official model curves ship
with lvae-jax and are named like kodak/vtm18.0 (python -m eval anchors).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lvae_jax.commands import CommandSet, UsageError, arg, model_arg

EXAMPLES = """\
examples:
  python -m eval anchors
  python -m eval bd-rate kodak/vtm18.0 kodak/qarv_base kodak/qres34m
  python -m eval plot kodak.png kodak/qarv_base kodak/qres34m --anchor kodak/vtm18.0
  python -m eval baselines /data/kodak --out kodak-classical.json --codecs jpeg,webp,avif,jxl
  python -m eval rd --ckpt qarv_base/ /data/kodak --plot kodak.png --anchor kodak/vtm18.0
  python -m eval rd --ckpt qres34m-lmb16/ --ckpt qres34m-lmb64/ /data/kodak --format lvae
  python -m eval estimate --ckpt rd_model_base/ /data/kodak --seed 0
  python -m eval speed --models qres34m qarv_base --official-python ~/ref/bin/python \
      --official-src ~/src/lossy-vae

exit status: 0 success, 1 some figure could not be computed, 2 bad input or usage (bd-rate:
a degenerate, non-overlapping or other-test-set curve).
"""

BD_METHODS = ("cubic", "pchip", "akima")   # lvae_jax.evaluation.bd_rate.METHODS


#: Subcommands in ``--help`` order (the :mod:`lvae_jax.commands` style).
CLI = CommandSet("python -m eval", (__doc__ or "").strip(), epilog=EXAMPLES)
COMMANDS = CLI.commands
command = CLI.command


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
    arg("--allow-mixed-test-sets", action="store_true",
        help="compare curves of different test sets (refused by default)"),
)
def bd_rate_command(args) -> int:
    """Print the Bjøntegaard delta rate (percent; negative = fewer bits than the anchor at equal
    PSNR) and delta PSNR (dB; positive = better) of every candidate against the anchor, over the
    range where their PSNR (resp. rate) overlaps."""
    from lvae_jax.evaluation.bd_rate import BDError, compare
    from lvae_jax.evaluation.official_results import resolve, test_set_of
    from lvae_jax.evaluation.rd_json import load_curves, load_rd

    args.anchor = resolve(args.anchor)
    args.candidates = [resolve(c) for c in args.candidates]
    if args.anchor_name is None and len(load_curves(args.anchor)) > 1:
        names = ", ".join(c.label for c in load_curves(args.anchor))
        raise UsageError(f"{args.anchor} holds several curves ({names}); choose the anchor "
                         "with --anchor-name")
    anchor = load_rd(args.anchor, name=args.anchor_name)
    anchor_set = anchor.test_set or test_set_of(args.anchor)   # the official VTM files name none
    if not args.allow_mixed_test_sets:
        for path in args.candidates:
            for curve in load_curves(path):
                curve_set = curve.test_set or test_set_of(path)
                if anchor_set and curve_set and anchor_set != curve_set:
                    raise UsageError(f"{curve.label} ({path}) is on {curve_set!r}, the anchor "
                                     f"on {anchor_set!r}: BD metrics compare curves of one "
                                     "test set (--allow-mixed-test-sets to compare anyway)")
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
        return 2 if failed else 0
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
    return 2 if failed else 0


# ===================================================================== anchors
@command("anchors", "list the official results that ship with lvae-jax (VTM 18.0 anchors, the "
                    "official models' curves)")
def anchors_command(args) -> int:
    """Print the packaged result names, usable wherever a results file is expected (--anchor,
    --compare, bd-rate, plot): ``kodak/vtm18.0`` is the VTM 18.0 anchor on Kodak."""
    from lvae_jax.evaluation.official_results import names, path_of
    from lvae_jax.evaluation.rd_json import load_curves
    for name in names():
        curves = load_curves(path_of(name))
        print(f"{name:<34} {len(curves[0])} points  ({curves[0].label})")
    return 0


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

    from lvae_jax.evaluation.official_results import resolve
    if not args.curves and not args.anchor:
        raise UsageError("plot: give at least one CURVE.json or --anchor")
    args.curves = [resolve(c) for c in args.curves]
    args.anchor = [resolve(a) for a in args.anchor]
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


# ===================================================================== model evaluation
#: Image-source options shared by the commands that read test images.
SOURCE_ARGS = (
    arg("--alpha", choices=("refuse", "drop"), default="refuse",
        help="images with a non-opaque alpha channel: refuse (default) or drop the alpha"),
    arg("--split", default="test", help="TFDS split (tfds:NAME only; default: test)"),
    arg("--data-dir", help="TFDS data directory (tfds:NAME only)"),
    arg("--image-key", default="image", help="TFDS image feature (tfds:NAME only)"),
)

#: Options of the commands that evaluate model directories.
MODEL_ARGS = (
    arg("--ckpt", action="append", metavar="DIR",
        help="model directory (lvae_model.json + params/, from python -m convert or training); "
             "repeat it for fixed-rate QRes models, one point per directory"),
    arg("images", metavar="IMAGES",
        help="folder of test images (recursive), or tfds:NAME for a prepared TFDS dataset"),
    model_arg(action="append"),
    arg("--lambdas", nargs="+", type=float, metavar="λ",
        help="λ values of a variable-rate model (within its trained range)"),
    arg("--num-lambdas", type=int, metavar="N",
        help="N values of λ spaced like the official scripts, exp(linspace(log lo, log hi, N))"),
    arg("--lmb-range", nargs=2, type=float, metavar=("LO", "HI"),
        help="λ range of --num-lambdas (default: the model's range)"),
    arg("--out", metavar="RESULTS.json",
        help="results file to write (default: TEST_SET-NAME.json in the current folder)"),
    arg("--plot", metavar="RD.png", help="also draw the RD plot (PSNR vs bpp)"),
    arg("--anchor", action="append", default=[], metavar="X.json|NAME",
        help="anchor curve for the plot and BD-rate: a file, or a packaged name such as "
             "kodak/vtm18.0 (python -m eval anchors lists them); repeatable (the first is the "
             "BD-rate reference)"),
    arg("--compare", action="append", default=[], metavar="X.json|NAME",
        help="further curve drawn in the plot, e.g. kodak/qarv_base; repeatable"),
    arg("--method", choices=BD_METHODS, default="cubic", help="BD-rate curve fit (see bd-rate)"),
    arg("--name", help="method name in the results (default: the model's name)"),
    arg("--test-set", help="test-set name for the results (default: the folder or dataset name)"),
    *SOURCE_ARGS,
    arg("--quiet", action="store_true", help="no progress bar or notes"),
)


def _open_source(args):
    """-> (EvalImage iterator, test-set name, number of images or None)."""
    from lvae_jax.evaluation.images import list_image_files, open_images
    source = str(args.images)
    images = open_images(source, split=args.split, data_dir=args.data_dir,
                         image_key=args.image_key, alpha=args.alpha)
    if source.startswith("tfds:"):
        return images, args.test_set or source[len("tfds:"):], None
    path = Path(source).expanduser()
    return images, args.test_set or path.resolve().name, len(list_image_files(path))


def _load_models(args):
    from lvae_jax.evaluation.model_eval import load_models
    from lvae_jax.runtime import enable_compilation_cache
    enable_compilation_cache()
    from lvae_jax.checkpoint.pretrained import model_dirs
    dirs = model_dirs(args.ckpt, args.model)
    if not dirs:
        raise UsageError("give the models: --ckpt DIR (repeatable) or --model NAME (official "
                         "weights, repeatable: --model qres34m-lmb16 --model qres34m-lmb64)")
    return load_models(dirs)


def _resolve_results(args) -> None:
    """``--anchor`` / ``--compare``: files or packaged names (``kodak/vtm18.0``), checked before
    any work starts."""
    from lvae_jax.evaluation.official_results import resolve
    args.anchor = [resolve(a) for a in args.anchor]
    args.compare = [resolve(c) for c in args.compare]


def _check_plot_args(args, models) -> None:
    if (args.plot or args.anchor or args.compare) and models[0].lossless:
        raise UsageError("a lossless model has no RD curve: --plot, --anchor and --compare do "
                         "not apply")
    if (args.compare) and not args.plot:
        raise UsageError("--compare draws curves in the plot: give --plot too")


def _finish(args, result, what: str) -> int:
    """Write the result (and plot), print a summary; the exit status."""
    from lvae_jax.evaluation.model_eval import LosslessResult, save_result
    out = args.out or f"{result.test_set or 'images'}-{result.name}.json"
    path = save_result(result, out)
    if isinstance(result, LosslessResult):
        print(f"{result.name} on {result.test_set}: {result.bpp:.4f} bpp, "
              f"{result.bpsp:.4f} bits per sub-pixel ({what})"
              + ("" if result.exact is None else
                 f", {'every image decoded exactly' if result.exact else 'NOT EXACT'}"))
        bad = [r["image"] for r in result.per_image if r.get("exact") is False]
        for name in bad:
            print(f"error: {name} did not decode exactly", file=sys.stderr)
        print(f"wrote {path}")
        return 1 if bad else 0
    _print_curve(result)
    if args.anchor:
        _print_bd(args, result)
    if args.plot:
        from lvae_jax.evaluation.plot import plot_rd
        plot = plot_rd(args.plot, [result, *args.compare], args.anchor,
                       bd_anchor=0 if args.anchor else None, method=args.method)
        print(f"wrote {plot}")
    print(f"wrote {path} ({what})")
    return 0


def _print_curve(curve) -> None:
    cols = [("λ", curve.lambdas, "{:>10.4g}"), ("bpp", curve.bpp, "{:>10.5f}"),
            ("PSNR (dB)", curve.psnr, "{:>10.4f}")]
    if curve.ms_ssim is not None:
        cols.append(("MS-SSIM", curve.ms_ssim, "{:>10.5f}"))
    print(f"{curve.label}" + (f" on {curve.test_set}" if curve.test_set else ""))
    print("  ".join(f"{title:>10}" for title, _, _ in cols))
    for i in range(len(curve)):
        print("  ".join(fmt.format(values[i]) for _, values, fmt in cols))


def _print_bd(args, curve) -> None:
    from lvae_jax.evaluation.bd_rate import BDError, compare
    from lvae_jax.evaluation.rd_json import load_rd
    anchor = load_rd(args.anchor[0])
    try:
        r = compare(anchor, curve, method=args.method)
        print(f"BD-rate vs {anchor.label}: {r.bd_rate:+.2f} %, BD-PSNR {r.bd_psnr:+.3f} dB "
              f"({args.method})")
    except BDError as e:
        print(f"BD-rate vs {anchor.label}: n/a ({e})")


@command(
    "rd", "RD curve of a model from real bitstreams on an image folder",
    *MODEL_ARGS,
    arg("--format", choices=("official", "lvae"), default="official",
        help="file layout whose size is the rate: 'official' (default; what the official "
             "compress_file writes, comparable with the official results) or 'lvae' (the "
             "lvae-jax container: a checked header with model id and CRCs, a little larger)"),
    arg("--ms-ssim", action="store_true",
        help="also compute MS-SSIM (needs images of at least 161x161 pixels)"),
    arg("--batch-size", type=int, default=4, metavar="N",
        help="images of one padded size per device pass (default 4)"),
    arg("--keep-bitstreams", metavar="DIR", help="also keep every compressed file in DIR"),
)
def rd_command(args) -> int:
    """Compress and decompress every test image at every λ and write the RD curve: bpp from the
    size of the whole compressed file (headers included) over the original H×W, RGB PSNR of the
    decoded float image per image, then averaged over images (as the official
    eval-var-rate.py / eval-fix-rate.py). A variable-rate model is swept over λ (default: 16
    values over its range, as eval-var-rate.py); a fixed-rate QRes model gives one point at its
    trained λ (pass one --ckpt per λ for a curve); the lossless model reports its bpp and checks
    that every image decodes exactly. Per-image results go to results['per-image']."""
    from lvae_jax.evaluation.model_eval import RDOptions, evaluate_bitstreams

    if args.lambdas is not None and (args.num_lambdas is not None or args.lmb_range is not None):
        raise UsageError("give --lambdas or --num-lambdas/--lmb-range, not both")
    _resolve_results(args)                           # a missing anchor fails first
    images, test_set, count = _open_source(args)     # then a missing or empty folder
    models = _load_models(args)
    _check_plot_args(args, models)
    log = None if args.quiet else (lambda msg: print(f"note: {msg}", file=sys.stderr, flush=True))
    result = evaluate_bitstreams(models, images, RDOptions(
        args.lambdas, args.num_lambdas, args.lmb_range, fmt=args.format,
        with_ms_ssim=args.ms_ssim, batch_size=args.batch_size, name=args.name, test_set=test_set,
        keep_dir=args.keep_bitstreams, num_images=count, progress=not args.quiet, log=log))
    return _finish(args, result, f"real bitstreams, {args.format} layout")


@command(
    "estimate", "RD curve of a model from its estimated rates (no entropy coder)",
    *MODEL_ARGS,
    arg("--seed", type=int, default=0,
        help="PRNG seed of rd_model_base's latent draws (default 0)"),
    arg("--draws", type=int, default=1,
        help="rd_model_base: latent draws per image and λ, averaged (default 1, the official)"),
    arg("--bpp-pixels", choices=("original", "padded"),
        help="bpp denominator: the original or the padded H×W (default: rd_model_base padded, as "
             "its evaluate.py; QARV and QRes original)"),
)
def estimate_command(args) -> int:
    """Evaluate a model with its eval-mode forward pass: bpp from the theoretical rates (−log2 of
    the prior probability of the quantised latents; rd_model_base: the KL of its sampled
    latents), PSNR of the reconstruction, per image then averaged. Every model family:
    rd_model_base and QARV follow their official protocols (λ grids of rd/evaluate.py and
    QARV's self_evaluate: 16 and 8 values), QRes gives one point per model directory, the
    lossless model its estimated bpp (latents + pixels)."""
    import jax

    from lvae_jax.evaluation.model_eval import EstimateRun, estimate

    if args.lambdas is not None and (args.num_lambdas is not None or args.lmb_range is not None):
        raise UsageError("give --lambdas or --num-lambdas/--lmb-range, not both")
    if args.draws < 1:
        raise UsageError(f"--draws must be >= 1, got {args.draws}")
    _resolve_results(args)
    images, test_set, count = _open_source(args)
    models = _load_models(args)
    _check_plot_args(args, models)
    log = None if args.quiet else (lambda msg: print(f"note: {msg}", file=sys.stderr, flush=True))
    result = estimate(models, images, EstimateRun(
        args.lambdas, args.num_lambdas, args.lmb_range, key=jax.random.key(args.seed),
        draws=args.draws, bpp_pixels=args.bpp_pixels, name=args.name, test_set=test_set,
        num_images=count, progress=not args.quiet, log=log))
    if models[0].config.family == "rd":
        result.meta["seed"] = args.seed
    return _finish(args, result, "estimated rates, no bitstream")


# ===================================================================== speed
def benchmark_script() -> Path:
    """The codec benchmark that ``speed`` runs: ``$LVAE_BENCHMARKS/codec.py``, else
    ``benchmarks/codec.py`` of the current directory (the repository's root; the benchmarks are
    not part of the installed package)."""
    import os
    root = os.environ.get("LVAE_BENCHMARKS")
    return (Path(root) if root else Path.cwd() / "benchmarks") / "codec.py"


#: Models the codec benchmark times (official architectures, random weights).
SPEED_MODELS = ("qres34m", "qres17m", "qarv_base")


def speed_argv(args) -> list[str]:
    """The arguments of benchmarks/codec.py for ``eval speed``'s options."""
    if args.repeats is not None and args.repeats < 1:
        raise UsageError(f"--repeats must be >= 1, got {args.repeats}")
    if args.size is not None:
        h, w = args.size
        if h <= 0 or w <= 0 or h % 64 or w % 64:
            raise UsageError(f"--size: height and width must be positive multiples of 64, got "
                             f"{h} {w}")
    if args.official_src is not None and not Path(args.official_src).expanduser().is_dir():
        raise UsageError(f"--official-src {args.official_src}: not a directory")
    argv: list[str] = []
    if args.models:
        argv += ["--models", *args.models]
    if args.size:
        argv += ["--size", f"{args.size[0]}x{args.size[1]}"]
    if args.repeats is not None:
        argv += ["--repeats", str(args.repeats)]
    if args.official_python:
        argv += ["--official-python", args.official_python]
    if args.official_src:
        argv += ["--official-src", str(Path(args.official_src).expanduser())]
    if not args.memory_4k:
        argv.append("--skip-4k")
    if args.json:
        argv += ["--json", str(Path(args.json).absolute())]
    extra = list(args.extra or [])
    return argv + (extra[1:] if extra[:1] == ["--"] else extra)


@command(
    "speed", "encode/decode time per model (512x768) and the ratio to the official code",
    arg("--models", nargs="+", choices=SPEED_MODELS, metavar="NAME",
        help=f"models to time, of {', '.join(SPEED_MODELS)} (default: qres34m qarv_base)"),
    arg("--size", nargs=2, type=int, metavar=("H", "W"),
        help="image size, multiples of 64 (default 512 768)"),
    arg("--repeats", type=int, metavar="N", help="timed calls after the warm-up (default 2)"),
    arg("--official-python", metavar="PY",
        help="a Python that runs the official PyTorch code (torch, torchvision, compressai, "
             "timm); default: this one. The official code is timed when it imports there"),
    arg("--official-src", metavar="DIR",
        help="lossy-vae checkout to put on its PYTHONPATH (default: $LVAE_OFFICIAL_SRC)"),
    arg("--memory-4k", action="store_true",
        help="also measure the peak memory of decoding a 3840x2160 image (slow on CPU)"),
    arg("--json", metavar="OUT.json", help="also write the figures as JSON"),
    arg("extra", nargs=argparse.REMAINDER, metavar="-- ARGS",
        help="further arguments for benchmarks/codec.py, after --"),
)
def speed_command(args) -> int:
    """Time encoding and decoding of each model (batch 1, 512×768 by default; random weights:
    timings, not RD results) and print the ratio lvae-jax / official when the official PyTorch
    code runs in --official-python, measured in the same run. This runs the codec benchmark,
    benchmarks/codec.py (which also reports the entropy-coding share of decoding, and with
    --memory-4k the peak memory of a 4K decode), in a subprocess; its exit status is returned."""
    import subprocess

    script = benchmark_script()
    if not script.is_file():
        raise UsageError(f"speed runs the codec benchmark {script}, which is not there: run it "
                         "from the repository's root (the benchmarks/ folder ships with the "
                         "repository, not the package), or set LVAE_BENCHMARKS=DIR")
    argv = speed_argv(args)
    sys.stdout.flush()
    return subprocess.call([sys.executable, str(script), *argv], cwd=script.parents[1])


# ===================================================================== main
def build_parser():
    return CLI.parser()


def main(argv=None) -> int:
    return CLI.main(argv)


if __name__ == "__main__":
    sys.exit(main())
