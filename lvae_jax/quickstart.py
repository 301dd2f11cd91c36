"""``python -m lvae_jax quickstart``: the first five minutes, offline.

Compresses the sample photographs that ship with scikit-image into real bitstreams with the
embedded demo model (or ``--ckpt DIR``, or ``--model NAME``: official weights), decodes them, and writes to ``--out``:

- ``rd.json``       the model's RD points (real bytes, headers included; PSNR per image, averaged)
                    in the official results schema, and ``jpeg.json`` for JPEG on the same images;
- ``rd.png``        the RD plot, model vs JPEG;
- ``side_by_side.png`` original | decoded | JPEG at about the same size, for one image, labelled
                    with bytes, bpp and PSNR;
- ``<image>.lvae`` / ``<image>.png`` one bitstream and its decoding; ``bitstreams/`` every file.

The RD points come from :func:`lvae_jax.evaluation.model_eval.evaluate_bitstreams` (the one
real-bitstream evaluation loop) on the lvae-jax container.

The demo model is small and was trained on CPU by ``scripts/train_demo_model.py`` on freely licensed
photographs (not these images): it shows the tools working, not the compression of the official
models (see the README for those).
"""

from __future__ import annotations

# lazy imports: the command line registers this command at start-up; its machinery (JAX, the
# codec, the evaluation, plotting) is imported when it runs.

import sys
import time
from pathlib import Path

from lvae_jax.commands import Program, arg, model_arg

SAMPLES = ("astronaut", "coffee", "chelsea", "rocket")


#: The command's arguments (:mod:`lvae_jax.commands` style).
ARGS = (
    arg("--out", type=Path, default=Path("quickstart_out"), help="output folder"),
    arg("--ckpt", help="model directory (default: the embedded demo model)"),
    model_arg(),
    arg("--images", type=Path, help="folder of images (default: scikit-image's samples)"),
    arg("--num-lambdas", type=int, default=4, help="λ values for a variable-rate model"),
    arg("--max-side", type=int, default=256,
        help="centre-crop sample images to at most this size (default 256; 0 = full size)"),
)


def sample_images(folder: Path | None, max_side: int):
    """(name, (H, W, 3) uint8) of the quickstart: ``folder``'s images or scikit-image's
    samples, centre-cropped to at most ``max_side`` (0: full size)."""
    import numpy as np
    from lvae_jax.image import load_rgb8
    if folder is not None:
        from lvae_jax.evaluation.images import open_images
        items = [(im.name, im.pixels) for im in open_images(folder)]
    else:
        from skimage import data
        items = [(n, np.asarray(getattr(data, n)())) for n in SAMPLES]
    out = []
    for name, a in items:
        if max_side:
            h, w = a.shape[:2]
            t, l = max(0, (h - max_side) // 2), max(0, (w - max_side) // 2)
            a = a[t:t + max_side, l:l + max_side]
        out.append((Path(str(name)).stem, np.ascontiguousarray(a[..., :3])))
    return out


def run(args) -> int:
    """Compress and decompress the sample images, RD curve vs JPEG, side-by-side PNG."""
    import numpy as np

    from lvae_jax.assets import demo_model_dir
    from lvae_jax.checkpoint.model_dir import load_model, read_info
    from lvae_jax.checkpoint.pretrained import model_dirs
    from lvae_jax.codec import Codec
    from lvae_jax.evaluation import baselines
    from lvae_jax.files import atomic_write_bytes
    from lvae_jax.evaluation.bd_rate import BDError, bd_rate
    from lvae_jax.evaluation.images import array_to_eval_image
    from lvae_jax.evaluation.model_eval import RDOptions, evaluate_bitstreams
    from lvae_jax.evaluation.plot import plot_rd
    from lvae_jax.evaluation.rd_json import save_rd
    from lvae_jax.image import save_png
    from lvae_jax.models.lambdas import lambda_grid

    t_start = time.perf_counter()
    ckpt = (model_dirs(args.ckpt, args.model) or [demo_model_dir()])[0]
    info = read_info(ckpt)
    meta = info.get("meta", {})
    label = info["config"]["name"]
    print(f"model: {label} ({ckpt})")
    if meta.get("demo"):
        print(f"note: {meta.get('description', 'a demo model, not an official one')}")
    model = load_model(ckpt)
    cfg = model.config
    images = sample_images(args.images, args.max_side)
    print(f"images: {', '.join(f'{n} {a.shape[1]}x{a.shape[0]}' for n, a in images)}")
    lambdas = (lambda_grid(*cfg.lmb_range, max(1, args.num_lambdas)) if cfg.variable_rate else None)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    test_set = "scikit-image samples" if args.images is None else str(args.images)
    eval_images = [array_to_eval_image(im, n) for n, im in images]

    # Real bitstreams: every image compressed to a file at every λ and decoded back.
    curve = evaluate_bitstreams(model, eval_images, RDOptions(
        lambdas, fmt="lvae", name=label, test_set=test_set, keep_dir=out / "bitstreams",
        progress=True, num_images=len(eval_images)))
    save_rd(curve, out / "rd.json")

    print("JPEG on the same images ...")
    jpeg = baselines.evaluate_codecs(eval_images, ["jpeg"], qualities=[5, 10, 20, 30, 50, 70, 85, 95],
                                     test_set=test_set)[0]
    save_rd(jpeg, out / "jpeg.json")
    plot_rd(out / "rd.png", [curve], anchors=[jpeg], title=f"{label} vs JPEG (real bitstreams)")

    # Side by side: the first image at the middle λ, JPEG at the nearest size.
    name, im = images[0]
    k = len(curve.bpp) // 2
    record = curve.extra["per-image"][k][0]
    data = (out / "bitstreams" / record["file"]).read_bytes()
    rec = Codec(model).decompress(data)
    atomic_write_bytes(out / f"{name}.lvae", data)
    save_png(out / f"{name}.png", rec)
    q, jpeg_img, jpeg_bytes = _jpeg_near(im, len(data))
    from lvae_jax.evaluation.metrics import psnr
    def caption(what, nbytes, x):
        return [what, f"{nbytes} B, {8 * nbytes / im[..., 0].size:.3f} bpp", f"PSNR {psnr(im, x):.2f} dB"]

    panels = [(im, ["original", f"{im.shape[1]}x{im.shape[0]}"]),
              (rec, caption(f"{label} (lvae-jax)", len(data), rec)),
              (jpeg_img, caption(f"JPEG q={q}", jpeg_bytes, jpeg_img))]
    save_png(out / "side_by_side.png", side_by_side(panels))

    print(f"\n{'λ':>10} {'bpp':>8} {'PSNR (dB)':>10}")
    for lmb, b, p in zip(curve.lambdas or [None], curve.bpp, curve.psnr):
        print(f"{'-' if lmb is None else format(lmb, 'g'):>10} {b:8.4f} {p:10.3f}")
    try:
        print(f"BD-rate vs JPEG: {bd_rate(jpeg, curve):+.1f} % (negative: fewer bits than JPEG "
              "at the same PSNR)")
    except (BDError, ValueError) as e:
        print(f"BD-rate vs JPEG: not computable ({e})")
    print(f"side by side ({name}): {len(data)} B {label} | {jpeg_bytes} B JPEG q={q}")
    print(f"wrote {out}/rd.json, jpeg.json, rd.png, side_by_side.png, {name}.lvae, {name}.png, "
          f"bitstreams/ in {time.perf_counter() - t_start:.0f} s")
    return 0


def side_by_side(panels, gap: int = 8, line: int = 13) -> "np.ndarray":
    """Images (H, W, 3) (uint8 or float in [0, 1]) side by side, each over its caption lines."""
    import numpy as np
    from PIL import Image, ImageDraw

    from lvae_jax.image import to_uint8
    arrays = [p if np.asarray(p).dtype == np.uint8 else to_uint8(p) for p, _ in panels]
    h = max(a.shape[0] for a in arrays)
    w = sum(a.shape[1] for a in arrays) + gap * (len(arrays) - 1)
    band = line * max(len(c) for _, c in panels) + 6
    canvas = Image.new("RGB", (w, h + band), "white")
    draw = ImageDraw.Draw(canvas)
    x = 0
    for a, (_, lines) in zip(arrays, panels):
        canvas.paste(Image.fromarray(a), (x, 0))
        for k, text in enumerate(lines):
            draw.text((x + 2, h + 3 + k * line), text, fill=(0, 0, 0))
        x += a.shape[1] + gap
    return np.asarray(canvas)


def _jpeg_near(im, nbytes: int):
    """JPEG of ``im`` whose size is closest to ``nbytes``: (quality, decoded uint8, bytes)."""
    from lvae_jax.evaluation.baselines import get_codec
    jpeg = get_codec("jpeg")
    best = None
    for q in range(5, 100, 5):
        enc = jpeg.encode(im, q)
        if best is None or abs(len(enc) - nbytes) < abs(best[2] - nbytes):
            best = (q, jpeg.decode(enc), len(enc))
    return best


if __name__ == "__main__":
    sys.exit(Program("python -m lvae_jax.quickstart", __doc__.splitlines()[0], ARGS, run).main())
