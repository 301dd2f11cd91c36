"""Compile time of the codec's device passes: the first encode and decode of an image size against
the steady state, per model, each source tree in a fresh process with no persistent compilation
cache. Prints figures; nothing is asserted.

For each model (random weights: compile time does not depend on them) and each source tree:

* ``encode first`` / ``encode steady``: the first and second ``CodecEngine.encode`` (the engine of ``StringCoder``) of ``--size``;
* ``decode after encode``: the first decode in the process that encoded (a round trip), then the
  steady decode;
* ``new size``: the first encode of ``--size2`` after ``--size`` (what a second image size costs);
* ``decode only``: a fresh process whose first call is a decode (what ``decompress`` pays).

    python benchmarks/compile_time.py [--models qarv_base qres34m] [--size 512x768] \\
        [--size2 448x640] [--src before=/path/to/old/checkout] [--src after=.]

``--src LABEL=PATH`` names a checkout (default: this one as ``this``); a checkout's native kernel
must be built (``lvae_jax/native/_lvae_native.so``), or its depthwise convolutions fall back.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

WORKER = r"""
import json, sys, time
import numpy as np
import lvae_jax
from lvae_jax.codec.core import StringCoder
name, size, size2, mode = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
h, w = map(int, size.split("x")); h2, w2 = map(int, size2.split("x"))
model = lvae_jax.get_model(name)
lmb = 256.0 if model.config.variable_rate else None
eng = StringCoder(model).engine
rng = np.random.default_rng(0)
im = rng.random((1, h, w, 3), dtype=np.float32)
out = {}
def timed(key, fn):
    t = time.perf_counter(); r = fn(); out[key] = time.perf_counter() - t; return r
def choose(enc):
    return lambda i, pm, pv, idx: enc.symbols[i].astype(np.float32) + pm
pixels = lambda mean, scale, idx, level: mean
grid = (1, h // 64, w // 64)
if mode == "round_trip":
    enc = timed("encode_first_s", lambda: eng.encode(im, lmb))
    timed("encode_steady_s", lambda: eng.encode(im, lmb))
    timed("decode_after_encode_s", lambda: eng.decode(grid, lmb, choose(enc), pixels))
    timed("decode_steady_s", lambda: eng.decode(grid, lmb, choose(enc), pixels))
    im2 = rng.random((1, h2, w2, 3), dtype=np.float32)
    timed("encode_new_size_s", lambda: eng.encode(im2, lmb))
else:
    z = lambda i, pm, pv, idx: pm
    timed("decode_only_first_s", lambda: eng.decode(grid, lmb, z, pixels))
    timed("decode_only_steady_s", lambda: eng.decode(grid, lmb, z, pixels))
print("RESULT " + json.dumps(out))
"""


def run_worker(src: Path, name: str, size: str, size2: str, mode: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(src) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("LVAE_CACHE_DIR", None)
    env["JAX_ENABLE_COMPILATION_CACHE"] = "false"
    r = subprocess.run([sys.executable, "-c", WORKER, name, size, size2, mode], cwd=src, env=env,
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{src} {name} {mode} failed:\n{r.stderr[-2000:]}")
    line = next(x for x in r.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["qarv_base", "qres34m"])
    p.add_argument("--size", default="512x768")
    p.add_argument("--size2", default="448x640")
    p.add_argument("--src", action="append", default=[], metavar="LABEL=PATH")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args(argv)
    srcs = [tuple(s.split("=", 1)) for s in args.src] or [("this", str(REPO))]
    rows = []
    for name in args.models:
        for label, src in srcs:
            r = {"model": name, "src": label, "size": args.size, "size2": args.size2}
            r.update(run_worker(Path(src).resolve(), name, args.size, args.size2, "round_trip"))
            r.update(run_worker(Path(src).resolve(), name, args.size, args.size2, "decode_only"))
            rows.append(r)
            print(f"{name:10s} {label:8s} encode first {r['encode_first_s']:6.2f} s, steady "
                  f"{r['encode_steady_s']:6.3f} s | decode after encode "
                  f"{r['decode_after_encode_s']:6.2f} s, steady {r['decode_steady_s']:6.3f} s | "
                  f"new size {r['encode_new_size_s']:6.2f} s | decode only first "
                  f"{r['decode_only_first_s']:6.2f} s, steady {r['decode_only_steady_s']:6.3f} s",
                  flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
