"""Forward-pass benchmark: lvae-jax vs the official PyTorch code, same machine, same run.

For each model: jit-compile time, steady-state evaluation forward time (batch 1, 512×768 by
default; mean and min over repeats after a warm-up) and the peak memory of a fresh process
(host RSS; on GPU also the device's peak bytes). Each measurement runs in its own subprocess so
peaks do not mix.

The official code is measured when it can be imported: in this interpreter, or in another one
given with ``--official-python`` (e.g. a virtualenv with torch, torchvision, compressai and timm)
and ``--official-src`` (a checkout of github.com/duanzhiihao/lossy-vae; its ``pip install -e`` is
broken, so it is put on PYTHONPATH).

    python benchmarks/forward.py
    python benchmarks/forward.py --models qres34m qarv_base --official-python ~/lvae-ref/bin/python \\
        --official-src ~/src/lossy-vae
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness.py, also when imported by path
from harness import official_available, peak_rss_bytes  # noqa: E402

MODELS = ["qres34m", "qres34m_lossless", "qres17m", "qarv_base", "rd_model_base"]


def worker_jax(model_name: str, h: int, w: int, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    import lvae_jax
    model = lvae_jax.get_model(model_name)
    graphdef, state = nnx.split(model)
    variable = model.config.variable_rate
    key = jax.random.key(0)
    fwd = jax.jit(lambda st, im, k: nnx.merge(graphdef, st)(im, 256.0 if variable else None,
                                                            training=False, key=k))
    im = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (1, h, w, 3)).astype(np.float32))
    t0 = time.perf_counter()
    compiled = fwd.lower(state, im, key).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(state, im, key))  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(state, im, key))
        times.append(time.perf_counter() - t0)
    out = {"impl": "lvae-jax", "device": str(jax.devices()[0]), "compile_s": compile_s,
           "mean_s": float(np.mean(times)), "min_s": float(np.min(times)), "peak_rss_mib": peak_rss_bytes() / 2**20}
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        out["device_peak_mib"] = stats["peak_bytes_in_use"] / 2**20
    return out


def worker_official(model_name: str, h: int, w: int, repeats: int) -> dict:
    import numpy as np
    import torch
    from lvae.models.registry import get_model
    import lvae.models.qresvae.zoo  # noqa: F401  (registration side effects)
    import lvae.models.qarv.zoo  # noqa: F401
    import lvae.models.rd.zoo  # noqa: F401
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = get_model(model_name).eval().to(device)
    im = torch.from_numpy(np.random.default_rng(0).uniform(0, 1, (1, 3, h, w)).astype(np.float32)).to(device)
    variable = hasattr(model, "lmb_range")

    def run():
        with torch.no_grad():
            if variable:
                model(im, lmb=torch.full((1,), 256.0, device=device))
            else:
                model(im)
        if device == "cuda":
            torch.cuda.synchronize()

    run()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    out = {"impl": "official", "device": device, "compile_s": 0.0, "mean_s": float(np.mean(times)),
           "min_s": float(np.min(times)), "peak_rss_mib": peak_rss_bytes() / 2**20,
           "torch_threads": torch.get_num_threads()}
    if device == "cuda":
        out["device_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _spawn(python, impl, model, args, extra_env=None) -> dict | None:
    env = dict(os.environ, **(extra_env or {}))
    cmd = [python, os.path.abspath(__file__), "--worker", impl, "--models", model,
           "--size", str(args.size[0]), str(args.size[1]), "--repeats", str(args.repeats)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        print(f"  {impl} {model}: failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
        return None
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--size", type=int, nargs=2, default=(512, 768), metavar=("H", "W"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--official-python", default=sys.executable)
    p.add_argument("--official-src", default=None, help="lossy-vae checkout to put on PYTHONPATH")
    p.add_argument("--worker", choices=["jax", "official"], help=argparse.SUPPRESS)
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)

    if args.worker:
        fn = worker_jax if args.worker == "jax" else worker_official
        print(json.dumps(fn(args.models[0], args.size[0], args.size[1], args.repeats)))
        return

    official = official_available(args.official_python, args.official_src)
    print(f"forward (eval mode), batch 1, {args.size[0]}x{args.size[1]}, mean of {args.repeats} after a warm-up")
    if not official:
        print("official lossy-vae not importable: measuring lvae-jax only "
              "(see --official-python/--official-src)")
    rows = []
    for m in args.models:
        j = _spawn(sys.executable, "jax", m, args)
        o = None
        if official:
            env = {"PYTHONPATH": args.official_src} if args.official_src else None
            o = _spawn(args.official_python, "official", m, args, env)
        rows.append({"model": m, "jax": j, "official": o})
        line = f"{m:18s}"
        if j:
            line += f" lvae-jax {j['mean_s']:7.3f} s (min {j['min_s']:.3f}, compile {j['compile_s']:5.1f} s, peak {j['peak_rss_mib']:6.0f} MiB)"
        if o:
            line += f" | official {o['mean_s']:7.3f} s (peak {o['peak_rss_mib']:6.0f} MiB)"
        if j and o:
            line += f" | ratio {j['mean_s'] / o['mean_s']:.2f}x"
        print(line, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
