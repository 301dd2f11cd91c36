"""Codec benchmark: encode/decode latency of lvae-jax vs the official PyTorch code (same machine,
same run), the share of decode time spent in entropy coding, and the peak memory of decoding a
3840×2160 image. Prints figures; nothing is asserted.

What is measured (each measurement in a fresh subprocess, so peaks and caches do not mix):

* ``latency``: batch 1 at ``--size`` (default 512x768), one warm-up call (for lvae-jax it includes
  XLA compilation, reported separately as ``first_*_s``), then the mean and min of ``--repeats``
  calls. lvae-jax: ``Codec.encode`` (one jitted device pass + host range coding + symbol CRCs) and
  ``Codec.decode`` (one jitted step per latent block + host decoding with re-encoding verification
  and the symbol-CRC check). Official: ``model.compress(im)`` / ``model.decompress(obj)`` after
  ``compress_mode(True)``. Container/file layout and padding are excluded on both sides.
* ``entropy share``: the time spent in host entropy decoding (lvae-jax: ``decode_latent_robust``,
  i.e. rANS decode + verification + CRC; official: CompressAI ``EntropyModel.decompress``, i.e.
  table marshalling + rANS decode + dequantisation) divided by the decode time. For lvae-jax the
  decode is also split into the device steps alone (decoding driven by the known symbols) and the
  rANS decode alone (``verify=False``).
* ``4k``: peak resident memory (``ru_maxrss``) of a process that loads the model and decodes one
  3840×2160 image (encoded beforehand by another process), and the RSS before decoding.

Weights are random (official initialisation for the official code, lvae-jax's initialisation for
lvae-jax): the figures are timings, not rate–distortion results. The image is a photograph from
scikit-image resized to the requested size (``--image`` to use another one).

The official code is measured when ``lvae`` imports in ``--official-python`` (default: this
interpreter) with ``--official-src`` (a lossy-vae checkout, default ``$LVAE_OFFICIAL_SRC``) on
PYTHONPATH; otherwise a line says it was skipped.

    python benchmarks/codec.py
    python benchmarks/codec.py --models qres34m --size 512x768 --repeats 2 \\
        --official-python ~/lvae-ref/bin/python --official-src ~/src/lossy-vae --json codec.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness.py, also when imported by path
from harness import current_rss_bytes, official_available, parse_size, peak_rss_bytes  # noqa: E402

MODELS = ["qres34m", "qarv_base"]
#: λ used for the variable-rate model (qarv_base).
BENCH_LMB = 256.0
#: 3840×2160, padded to a multiple of 64 as the codec does (2160 -> 2176 rows).
SIZE_4K = (2176, 3840)


def _stats(times) -> dict:
    return {"mean_s": sum(times) / len(times), "min_s": min(times), "runs": len(times)}


# ------------------------------------------------------------------------------------------------
# lvae-jax workers
# ------------------------------------------------------------------------------------------------


def _jax_codec(model_name: str, precision: str | None = None):
    """The string-level coder of ``model_name`` (random weights) and λ; ``precision``: the
    device passes' matmul precision (default the codec's own, ``numerics.CODEC_PRECISION``)."""
    import lvae_jax
    from lvae_jax.codec.core import StringCoder
    from lvae_jax.numerics import CODEC_PRECISION
    model = lvae_jax.get_model(model_name)
    codec = StringCoder(model, precision=precision or CODEC_PRECISION)
    lmb = BENCH_LMB if model.config.variable_rate else None
    return codec, lmb


def _load_image(path: str):
    import numpy as np
    im = np.load(path)
    return (im.astype(np.float32) / 255.0)[None]          # (1, H, W, 3) in [0, 1]


def worker_jax_latency(model_name: str, image: str, repeats: int, precision: str | None = None) -> dict:
    import jax
    import numpy as np

    from lvae_jax.codec import core
    from lvae_jax.codec.engine import to_coder_order
    from lvae_jax.entropy import coder

    codec, lmb = _jax_codec(model_name, precision)
    im = _load_image(image)

    t0 = time.perf_counter()
    enc = codec.encode(im, lmb)
    first_encode = time.perf_counter() - t0
    enc_times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        enc = codec.encode(im, lmb)
        enc_times.append(time.perf_counter() - t0)

    # Time spent inside host entropy decoding, measured by wrapping the function
    # StringCoder.decode calls.
    spent = {"s": 0.0}
    robust = core.decode_latent_robust

    def timed_robust(*a, **k):
        t = time.perf_counter()
        try:
            return robust(*a, **k)
        finally:
            spent["s"] += time.perf_counter() - t

    core.decode_latent_robust = timed_robust
    t0 = time.perf_counter()
    x = codec.decode(enc, lmb)
    first_decode = time.perf_counter() - t0
    dec_times, coder_times = [], []
    for _ in range(repeats):
        spent["s"] = 0.0
        t0 = time.perf_counter()
        x = codec.decode(enc, lmb)
        dec_times.append(time.perf_counter() - t0)
        coder_times.append(spent["s"])
    core.decode_latent_robust = robust

    # The device steps alone: decoding driven by the known symbols (no range coder).
    symbols = codec.engine.encode(im, lmb).symbols

    def known_z(i, pm, pv, idx):
        return symbols[i].astype(np.float32) + pm

    device_times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        codec.engine.decode((1, *enc[0].grid), lmb, known_z)
        device_times.append(time.perf_counter() - t0)

    # The rANS decode alone (no verification, no CRC), over all latent strings of the image.
    idx = [to_coder_order(i[0]) for i in codec.engine.encode(im, lmb).indexes]
    rans_times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for s, ix in zip(enc[0].latents, idx):
            coder.decode(s, ix, codec.latent_tables, verify=False)
        rans_times.append(time.perf_counter() - t0)

    n_symbols = int(sum(s[0].size for s in symbols))
    return {"impl": "lvae-jax", "device": str(jax.devices()[0]), "model": model_name,
            "image": list(im.shape[1:3]), "latent_blocks": len(enc[0].latents), "symbols": n_symbols,
            "bytes": int(sum(len(s) for s in enc[0].latents)),
            "first_encode_s": first_encode, "encode": _stats(enc_times),
            "first_decode_s": first_decode, "decode": _stats(dec_times),
            "decode_entropy": _stats(coder_times),
            "entropy_share": sum(coder_times) / sum(dec_times),
            "decode_device_only": _stats(device_times),
            "rans_decode_only": _stats(rans_times),
            "decoded_finite": bool(np.all(np.isfinite(x))),
            "peak_rss_mib": peak_rss_bytes() / 2**20}


def worker_jax_encode_file(model_name: str, image: str, out: str) -> dict:
    """Encode one image and store its strings (npz of uint8 arrays) for the decode-memory worker."""
    import numpy as np
    codec, lmb = _jax_codec(model_name)
    im = _load_image(image)
    t0 = time.perf_counter()
    enc = codec.encode(im, lmb)[0]
    seconds = time.perf_counter() - t0
    arrays = {f"latent{i:02d}": np.frombuffer(s, np.uint8) for i, s in enumerate(enc.latents)}
    arrays["grid"] = np.asarray(enc.grid)
    arrays["crcs"] = np.asarray(enc.checks.symbol_crcs, np.uint32)
    np.savez(out, **arrays)
    return {"impl": "lvae-jax", "encode_s_incl_compile": seconds, "peak_rss_mib": peak_rss_bytes() / 2**20}


def worker_jax_decode_memory(model_name: str, strings: str) -> dict:
    import numpy as np
    from lvae_jax.codec.records import Checks, EncodedImage
    codec, lmb = _jax_codec(model_name)
    with np.load(strings) as z:
        n = sum(1 for k in z.files if k.startswith("latent"))
        item = EncodedImage([z[f"latent{i:02d}"].tobytes() for i in range(n)], None,
                            tuple(int(v) for v in z["grid"]),
                            Checks(tuple(int(v) for v in z["crcs"])))
    before = current_rss_bytes() / 2**20
    t0 = time.perf_counter()
    x = codec.decode([item], lmb)
    seconds = time.perf_counter() - t0
    return {"impl": "lvae-jax", "image": list(x.shape[1:3]), "rss_before_decode_mib": before,
            "peak_rss_mib": peak_rss_bytes() / 2**20, "decode_s_incl_compile": seconds}


# ------------------------------------------------------------------------------------------------
# Official workers (run by --official-python; import nothing from lvae_jax)
# ------------------------------------------------------------------------------------------------


def _official_model(model_name: str):
    import torch
    import lvae.models.qarv.zoo  # noqa: F401  (registration side effects)
    import lvae.models.qresvae.zoo  # noqa: F401
    from lvae.models.registry import get_model
    torch.manual_seed(0)
    model = get_model(model_name).eval()
    model.compress_mode(True)
    return model


def _official_calls(model, im):
    variable = hasattr(model, "lmb_range")

    def compress():
        return model.compress(im, lmb=BENCH_LMB) if variable else model.compress(im)
    return compress, model.decompress


def _official_image(path: str):
    import numpy as np
    import torch
    im = np.load(path).astype(np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1)))[None]


def _official_device():
    """CUDA when torch sees a GPU (the official code's own choice), else CPU. On CUDA the
    convolutions run in full float32 unless ``LVAE_BENCH_TF32=1`` (PyTorch's cuDNN default is
    TF32, which changes the prior scales the bitstream depends on; docs/cross_implementation.md)."""
    import torch
    if not torch.cuda.is_available():
        return "cpu", lambda: None
    tf32 = os.environ.get("LVAE_BENCH_TF32", "0") == "1"
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    return "cuda", torch.cuda.synchronize


def worker_official_latency(model_name: str, image: str, repeats: int) -> dict:
    import torch
    from compressai.entropy_models import EntropyModel
    device, sync = _official_device()
    model = _official_model(model_name).to(device)
    im = _official_image(image).to(device)
    compress, decompress = _official_calls(model, im)
    _decompress = decompress

    def decompress(obj):
        out = _decompress(obj)
        sync()
        return out
    with torch.no_grad():
        obj = compress()                                   # warm-up
        enc_times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            obj = compress()
            enc_times.append(time.perf_counter() - t0)

        spent = {"s": 0.0}
        original = EntropyModel.decompress

        def timed(self, *a, **k):
            t = time.perf_counter()
            try:
                return original(self, *a, **k)
            finally:
                spent["s"] += time.perf_counter() - t

        EntropyModel.decompress = timed
        decompress(obj)                                    # warm-up
        dec_times, coder_times = [], []
        for _ in range(repeats):
            spent["s"] = 0.0
            t0 = time.perf_counter()
            decompress(obj)
            dec_times.append(time.perf_counter() - t0)
            coder_times.append(spent["s"])
        EntropyModel.decompress = original
    return {"impl": "official", "device": device, "model": model_name, "torch_threads": torch.get_num_threads(),
            "tf32": bool(device == "cuda" and torch.backends.cudnn.allow_tf32),
            "encode": _stats(enc_times), "decode": _stats(dec_times), "decode_entropy": _stats(coder_times),
            "entropy_share": sum(coder_times) / sum(dec_times), "peak_rss_mib": peak_rss_bytes() / 2**20}


def _save_official(obj, path: str):
    """The official compressed object (QARV: bytes; QRes: [[bytes], ..., shape tuple]) as npz."""
    import numpy as np
    if isinstance(obj, bytes):
        np.savez(path, body=np.frombuffer(obj, np.uint8))
        return
    strings = {f"s{i:02d}": np.frombuffer(x[0], np.uint8) for i, x in enumerate(obj[:-1])}
    np.savez(path, shape=np.asarray(obj[-1]), **strings)


def _load_official(path: str):
    import numpy as np
    with np.load(path) as z:
        if "body" in z.files:
            return z["body"].tobytes()
        n = sum(1 for k in z.files if k[0] == "s" and k[1:].isdigit())
        return [[z[f"s{i:02d}"].tobytes()] for i in range(n)] + [tuple(int(v) for v in z["shape"])]


def worker_official_decode_memory(model_name: str, image: str, out: str, step: str) -> dict:
    """``step == "encode"``: encode and store the strings in ``out``; ``"decode"``: decode them in
    this (fresh) process and report its peak RSS."""
    import torch
    model = _official_model(model_name)
    if step == "encode":
        im = _official_image(image)
        compress, _ = _official_calls(model, im)
        with torch.no_grad():
            _save_official(compress(), out)
        return {"impl": "official", "peak_rss_mib": peak_rss_bytes() / 2**20}
    obj = _load_official(out)
    before = current_rss_bytes() / 2**20
    t0 = time.perf_counter()
    with torch.no_grad():
        x = model.decompress(obj)
    return {"impl": "official", "image": list(x.shape[2:]), "rss_before_decode_mib": before,
            "peak_rss_mib": peak_rss_bytes() / 2**20, "decode_s": time.perf_counter() - t0}


WORKERS = {f.__name__: f for f in (worker_jax_latency, worker_jax_encode_file, worker_jax_decode_memory,
                                   worker_official_latency, worker_official_decode_memory)}


# ------------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------------


def _run(fn: str, kw: dict, python: str = sys.executable, src: str | None = None) -> dict:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([python, os.path.abspath(__file__), "--worker", json.dumps({"fn": fn, "kw": kw})],
                       capture_output=True, text=True, env=env)
    if r.returncode != 0:
        last = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit status {r.returncode}"
        return {"error": last}
    return json.loads(r.stdout.strip().splitlines()[-1])


def write_image(path: Path, size, source: str | None) -> str:
    """A photograph resized to ``size`` (H, W), stored as uint8 .npy for every worker."""
    import numpy as np
    from PIL import Image
    if source:
        img = Image.open(source).convert("RGB")
        what = source
    else:
        from skimage import data
        img = Image.fromarray(data.astronaut())
        what = "scikit-image astronaut"
    h, w = size
    np.save(path, np.asarray(img.resize((w, h), Image.Resampling.BICUBIC), dtype=np.uint8))
    return f"{what}, resized to {h}x{w}"


def _fmt(s) -> str:
    return f"{s['mean_s']:.3f} s (min {s['min_s']:.3f})"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=MODELS, choices=["qres34m", "qres17m", "qarv_base"])
    p.add_argument("--size", type=parse_size, default=(512, 768), help="HxW, e.g. 512x768")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--official-python", default=sys.executable,
                   help="interpreter that imports the official lvae package (default: this one)")
    p.add_argument("--official-src", default=os.environ.get("LVAE_OFFICIAL_SRC"),
                   help="lossy-vae checkout put on PYTHONPATH for the official side "
                        "(default: $LVAE_OFFICIAL_SRC)")
    p.add_argument("--image", help="image file to resize and code (default: a scikit-image photograph)")
    p.add_argument("--skip-4k", action="store_true", help="skip the 3840x2160 decode-memory measurement")
    p.add_argument("--official-4k", action="store_true",
                   help="also measure the official code's 3840x2160 decode memory (slow)")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--precision", choices=("highest", "high", "default"),
                   help="lvae-jax's matmul precision in the codec passes (default: the codec's "
                        "own, highest: files coded otherwise may not decode elsewhere)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")

    if args.worker:
        job = json.loads(args.worker)
        print(json.dumps(WORKERS[job["fn"]](**job["kw"])))
        return 0

    official = official_available(args.official_python, args.official_src)
    results = {"size": list(args.size), "repeats": args.repeats, "lmb_variable_rate": BENCH_LMB,
               "weights": "random initialisation (timing only)", "models": {}}
    with tempfile.TemporaryDirectory(prefix="lvae-codec-bench-") as tmp:
        tmp = Path(tmp)
        image = tmp / "image.npy"
        results["image"] = write_image(image, args.size, args.image)
        h, w = args.size
        print(f"codec latency, batch 1, {h}x{w} ({results['image']}), random weights, "
              f"mean of {args.repeats} after a warm-up; λ = {BENCH_LMB:g} for qarv_base")
        if not official:
            results["official"] = (f"skipped: the official lvae package does not import in "
                                   f"{args.official_python} (see --official-python/--official-src)")
            print(results["official"])
        for m in args.models:
            row = {"jax": _run("worker_jax_latency", {"model_name": m, "image": str(image),
                                                      "repeats": args.repeats,
                                                      "precision": args.precision})}
            if official:
                row["official"] = _run("worker_official_latency",
                                       {"model_name": m, "image": str(image), "repeats": args.repeats},
                                       args.official_python, args.official_src)
            j, o = row["jax"], row.get("official")
            if "error" in j:
                print(f"{m}: lvae-jax failed: {j['error']}")
            else:
                print(f"{m:10s} lvae-jax  encode {_fmt(j['encode'])}  decode {_fmt(j['decode'])}  "
                      f"(first calls incl. compile: {j['first_encode_s']:.1f} s / {j['first_decode_s']:.1f} s)")
                print(f"{'':10s}           decode split: entropy coding {j['decode_entropy']['mean_s']:.3f} s "
                      f"({100 * j['entropy_share']:.1f} %), device steps alone {j['decode_device_only']['mean_s']:.3f} s, "
                      f"rANS decode alone {j['rans_decode_only']['mean_s']:.3f} s; {j['symbols']} symbols")
            if o and "error" in o:
                print(f"{m}: official failed: {o['error']}")
            elif o:
                print(f"{'':10s} official  encode {_fmt(o['encode'])}  decode {_fmt(o['decode'])}  "
                      f"(entropy coding {100 * o['entropy_share']:.1f} % of decode)")
                if "error" not in j:
                    row["encode_ratio"] = j["encode"]["mean_s"] / o["encode"]["mean_s"]
                    row["decode_ratio"] = j["decode"]["mean_s"] / o["decode"]["mean_s"]
                    print(f"{'':10s} lvae-jax / official: encode {row['encode_ratio']:.2f}x, "
                          f"decode {row['decode_ratio']:.2f}x (goal <= 0.70x)")
            results["models"][m] = row
            sys.stdout.flush()

        if not args.skip_4k:
            image4k = tmp / "image4k.npy"
            write_image(image4k, SIZE_4K, args.image)
            print(f"peak memory to decode 3840x2160 (coded as {SIZE_4K[1]}x{SIZE_4K[0]}, padded to a multiple "
                  "of 64; goal <= 4 GiB):")
            for m in args.models:
                strings = tmp / f"{m}_4k.npz"
                enc = _run("worker_jax_encode_file", {"model_name": m, "image": str(image4k), "out": str(strings)})
                row = {"jax_encode": enc}
                if "error" in enc:
                    print(f"{m}: lvae-jax 4K encode failed: {enc['error']}")
                else:
                    dec = _run("worker_jax_decode_memory", {"model_name": m, "strings": str(strings)})
                    row["jax"] = dec
                    if "error" in dec:
                        print(f"{m}: lvae-jax 4K decode failed: {dec['error']}")
                    else:
                        print(f"{m:10s} lvae-jax  peak RSS {dec['peak_rss_mib'] / 1024:.2f} GiB "
                              f"(before decoding {dec['rss_before_decode_mib'] / 1024:.2f} GiB; "
                              f"decode {dec['decode_s_incl_compile']:.1f} s incl. compile)")
                if official and args.official_4k:
                    kw = {"model_name": m, "image": str(image4k), "out": str(tmp / f"{m}_4k_official.npz")}
                    e = _run("worker_official_decode_memory", dict(kw, step="encode"),
                             args.official_python, args.official_src)
                    d = e if "error" in e else _run("worker_official_decode_memory", dict(kw, step="decode"),
                                                    args.official_python, args.official_src)
                    row["official"] = d
                    if "error" in d:
                        print(f"{m}: official 4K failed: {d['error']}")
                    else:
                        print(f"{'':10s} official  peak RSS {d['peak_rss_mib'] / 1024:.2f} GiB "
                              f"(before decoding {d['rss_before_decode_mib'] / 1024:.2f} GiB; "
                              f"decode {d['decode_s']:.1f} s)")
                results["models"].setdefault(m, {})["decode_4k"] = row
                sys.stdout.flush()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
