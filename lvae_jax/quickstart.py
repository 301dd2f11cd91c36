"""``python -m lvae_jax quickstart``: the first five minutes, offline.

Compresses the sample photographs that ship with scikit-image into real bitstreams with the
embedded demo model (or ``--ckpt DIR``), decodes them, and writes to ``--out``:

- ``rd.json``       the model's RD points (real bytes, headers included; PSNR per image, averaged)
                    in the official results schema, and ``jpeg.json`` for JPEG on the same images;
- ``rd.png``        the RD plot, model vs JPEG;
- ``side_by_side.png`` original | decoded | JPEG at about the same size, for one image;
- ``<image>.lvae`` / ``<image>.png`` one bitstream and its decoding.

The demo model is small and trained briefly on a few images: it shows the tools working, not the
compression of the official models (see the README for those).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

SAMPLES = ("astronaut", "coffee", "chelsea", "rocket")


def add_arguments(p):
    p.add_argument("--out", type=Path, default=Path("quickstart_out"), help="output folder")
    p.add_argument("--ckpt", help="model directory (default: the embedded demo model)")
    p.add_argument("--images", type=Path, help="folder of images (default: scikit-image's samples)")
    p.add_argument("--num-lambdas", type=int, default=4, help="λ values for a variable-rate model")
    p.add_argument("--max-side", type=int, default=256,
                   help="centre-crop sample images to at most this size (default 256; 0 = full size)")


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
    import numpy as np
    from tqdm import tqdm

    from lvae_jax.assets import demo_model_dir
    from lvae_jax.checkpoint.orbax_io import load_model, read_info
    from lvae_jax.codec import api
    from lvae_jax.codec.core import Codec
    from lvae_jax.evaluation import baselines
    from lvae_jax.evaluation.bd_rate import BDError, bd_rate
    from lvae_jax.evaluation.metrics import psnr
    from lvae_jax.evaluation.plot import plot_rd
    from lvae_jax.evaluation.rd_json import RDCurve, save_rd
    from lvae_jax.image import save_png, to_float

    t_start = time.perf_counter()
    ckpt = Path(args.ckpt) if args.ckpt else demo_model_dir()
    info = read_info(ckpt)
    meta = info.get("meta", {})
    label = info["config"]["name"]
    print(f"model: {label} ({ckpt})")
    if meta.get("demo"):
        print(f"note: {meta.get('description', 'a demo model, not an official one')}")
    codec = Codec(load_model(ckpt))
    cfg = codec.config
    images = sample_images(args.images, args.max_side)
    print(f"images: {', '.join(f'{n} {a.shape[1]}x{a.shape[0]}' for n, a in images)}")
    if cfg.variable_rate:
        lo, hi = cfg.lmb_range
        k = max(1, args.num_lambdas)
        lambdas = [float(np.float32(math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * i / max(1, k - 1))))
                   for i in range(k)]
    else:
        lambdas = [None]
    out = args.out
    out.mkdir(parents=True, exist_ok=True)

    points, decoded = [], {}
    bar = tqdm(total=len(lambdas) * len(images), desc="compress + decompress", unit="image")
    for lmb in lambdas:
        bpps, psnrs, mses = [], [], []
        for name, im in images:
            data = api.compress(codec, im, lmb)
            res = api.decompress(codec, data)
            h, w = im.shape[:2]
            bpps.append(8 * len(data) / (h * w))
            psnrs.append(psnr(to_float(im), res.image))
            mses.append(float(np.mean((to_float(im).astype(np.float64) - res.image) ** 2)))
            decoded[(name, lmb)] = (data, res.image)
            bar.update()
        points.append({"lmb": lmb, "bpp": float(np.mean(bpps)), "psnr": float(np.mean(psnrs)),
                       "mse": float(np.mean(mses))})
    bar.close()
    model_curve = RDCurve(name=label, test_set="scikit-image samples" if args.images is None else str(args.images),
                          lambdas=None if lambdas == [None] else lambdas,
                          bpp=[p["bpp"] for p in points], psnr=[p["psnr"] for p in points],
                          mse=[p["mse"] for p in points])
    save_rd(model_curve, out / "rd.json")

    print("JPEG on the same images ...")
    from lvae_jax.evaluation.images import array_to_eval_image
    jpeg = baselines.evaluate_codecs([array_to_eval_image(im, n) for n, im in images], ["jpeg"],
                                     qualities=[10, 20, 30, 50, 70, 85, 95], test_set=model_curve.test_set)[0]
    save_rd(jpeg, out / "jpeg.json")
    plot_rd(out / "rd.png", [model_curve], anchors=[jpeg], title=f"{label} vs JPEG (real bitstreams)")

    # Side by side: one image, a middle λ, JPEG at the nearest size.
    name, im = images[0]
    lmb = lambdas[len(lambdas) // 2]
    data, rec = decoded[(name, lmb)]
    (out / f"{name}.lvae").write_bytes(data)
    save_png(out / f"{name}.png", rec)
    q, jpeg_img, jpeg_bytes = _jpeg_near(im, len(data))
    h, w = im.shape[:2]
    gap = np.full((h, 8, 3), 255, np.uint8)
    from lvae_jax.image import to_uint8
    save_png(out / "side_by_side.png", np.concatenate([im, gap, to_uint8(rec), gap, jpeg_img], axis=1))

    print(f"\n{'λ':>10} {'bpp':>8} {'PSNR (dB)':>10}")
    for p in points:
        print(f"{'-' if p['lmb'] is None else format(p['lmb'], 'g'):>10} {p['bpp']:8.4f} {p['psnr']:10.3f}")
    try:
        print(f"BD-rate vs JPEG: {bd_rate(jpeg, model_curve):+.1f} %")
    except (BDError, ValueError) as e:
        print(f"BD-rate vs JPEG: not computable ({e})")
    print(f"side by side ({name}): {len(data)} B ours | {jpeg_bytes} B JPEG q={q}")
    print(f"wrote {out}/rd.json, jpeg.json, rd.png, side_by_side.png, {name}.lvae, {name}.png "
          f"in {time.perf_counter() - t_start:.0f} s")
    return 0


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
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
