"""Training-step benchmark: lvae-jax vs the official PyTorch step, the input pipeline, and data-
parallel scaling. Prints figures (JSON lines); nothing is asserted.

1. ``step``: forward + backward + update at batch 4, 256×256, for qres34m and qarv_base — the jitted
   lvae-jax step (``lvae_jax.training.step``: λ sampling, loss, gradients, clipping, Adam, spike
   guard, EMA) and the official step (``model(x)`` in train mode, ``loss.backward()``,
   ``clip_grad_norm_(2.0)``, ``Adam.step()``), each in its own subprocess, same machine, same run,
   with each worker's peak resident memory (``peak_rss_gb``: VmHWM, model and state included).
   The official code is timed only when it imports (``lvae`` + torch + torchvision + timm) in this
   interpreter or in ``--official-python`` (with ``--official-src``, a lossy-vae checkout);
   otherwise it says it skipped.
2. ``pipeline``: images/s of the prefetching loader alone (random 256² crops + flips of 640×480
   JPEGs, like COCO), to compare with the images/s the training step consumes.
3. ``loop``: steady-state steps/s of the real training loop (``lvae_jax.training.train``, the
   loader on those JPEGs, logging every step) for the first model, batch 4 — it reuses the
   compilation of (1) through a persistent compilation cache shared by the workers — beside the
   official ``train-fix-rate.py`` loop (its ``TrainWrapper``, dataloader included) on the same
   JPEGs and batch, for a QRes model, when ``--official-src`` is given.
4. ``scaling``: step time of one global batch on a data mesh of 1, 2 and 4 devices (CPU devices
   forced with XLA_FLAGS; on a CPU they share the same cores, so this measures the overhead of
   sharding, not a speed-up).

    python benchmarks/train_step.py                                  # all four
    python benchmarks/train_step.py --only step --models qres34m --official-python ~/ref/bin/python \\
        --official-src ~/src/lossy-vae
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
from harness import official_available, peak_rss_bytes  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------
# Workers (each runs in a fresh subprocess)
# ------------------------------------------------------------------------------------------------


def _jax_step_setup(model_name, batch, size, model_args=None, precision="fp32"):
    from lvae_jax import xla_defaults
    xla_defaults.limit_malloc_arenas()  # as lvae_jax.training.train does, before JAX starts
    import jax
    import numpy as np

    from lvae_jax.models import get_config
    from lvae_jax.training import TrainConfig, init_train_state, make_optimizer, make_train_step
    from lvae_jax.training.trainer import build_params
    config = get_config(model_name, **(model_args or {}))
    graphdef, params = build_params(config, None, seed=0)
    cfg = TrainConfig(data_dir="x", precision=precision).resolved(config.variable_rate)
    tx = make_optimizer(cfg)
    im = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    return jax, config, graphdef, params, cfg, tx, im, init_train_state, make_train_step


def worker_jax(model_name: str, batch: int, size: int, repeats: int, model_args=None,
               precision: str = "fp32") -> dict:
    jax, config, graphdef, params, cfg, tx, im, init_state, make_step = _jax_step_setup(
        model_name, batch, size, model_args, precision)
    import numpy as np

    from lvae_jax.training import parallel, step_key
    from lvae_jax.training.step import step_hyper
    mesh = parallel.make_data_mesh(1)
    rep, bsh = parallel.replicated(mesh), parallel.batch_sharding(mesh)
    state = parallel.replicate(init_state(params, tx, cfg), mesh)
    # jitted exactly as the trainer does (so `loop` below reuses this compilation)
    step = jax.jit(make_step(graphdef, config, cfg), in_shardings=(rep, bsh, rep, rep),
                   out_shardings=(rep, rep), donate_argnums=0)
    hyper = parallel.replicate(step_hyper(cfg), mesh)
    rss_before = peak_rss_bytes() / 1e9
    t0 = time.perf_counter()
    compiled = step.lower(state, im, step_key(state.rng, 0), hyper).compile()
    compile_s = time.perf_counter() - t0
    rss_compiled = peak_rss_bytes() / 1e9
    mem = compiled.memory_analysis()
    state, m = compiled(state, im, step_key(state.rng, 0), hyper)
    jax.block_until_ready(m)
    times = []
    for t in range(repeats):
        t0 = time.perf_counter()
        state, m = compiled(state, im, step_key(state.rng, t + 1), hyper)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t0)
    return {"impl": "lvae-jax", "precision": precision, "device": str(jax.devices()[0]),
            "compile_s": compile_s,
            "mean_s": float(np.mean(times)), "min_s": float(np.min(times)),
            "depthwise": os.environ.get("LVAE_DEPTHWISE", "auto"),
            # where the memory goes: the step's buffers as XLA planned them (state in and out
            # alias: donated), the peak before compiling (model + state built), after compiling
            # or loading the executable, and at the end (after the steps)
            "xla_temp_gb": mem.temp_size_in_bytes / 1e9 if mem else None,
            "xla_args_gb": mem.argument_size_in_bytes / 1e9 if mem else None,
            "peak_rss_before_compile_gb": rss_before,
            "peak_rss_after_compile_gb": rss_compiled, "peak_rss_gb": peak_rss_bytes() / 1e9}


def worker_official(model_name: str, batch: int, size: int, repeats: int) -> dict:
    import numpy as np
    import torch
    import lvae.models.qarv.zoo  # noqa: F401  (registration side effects)
    import lvae.models.qresvae.zoo  # noqa: F401
    from lvae.models.registry import get_model
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = get_model(model_name).train().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=2e-4, weight_decay=0.0)
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (batch, 3, size, size))
                         .astype(np.float32) / 255.0).to(device)

    def step():
        stats = model(x)
        stats["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)
        opt.step()
        opt.zero_grad()
        if device == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {"impl": "official", "device": device, "threads": torch.get_num_threads(),
            "mean_s": float(np.mean(times)), "min_s": float(np.min(times)),
            "peak_rss_gb": peak_rss_bytes() / 1e9}


def worker_pipeline(batch: int, size: int, seconds: float, workers: int | None) -> dict:
    from lvae_jax.data import ImageFolderSource, Reading, TrainLoader
    with tempfile.TemporaryDirectory() as tmp:
        _coco_like_folder(Path(tmp))
        loader = TrainLoader(ImageFolderSource(tmp), batch, crop=size, seed=0,
                             reading=Reading(workers))
        next(loader)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            next(loader)
            n += 1
        dt = time.perf_counter() - t0
        loader.close()
    return {"batches_per_s": n / dt, "images_per_s": n * batch / dt,
            "workers": workers or min(8, os.cpu_count() or 1), "cpus": os.cpu_count()}


def _coco_like_folder(root: Path, count: int = 64) -> Path:
    """``count`` 640×480 JPEGs (quality 90, like COCO) made from the sample images."""
    from PIL import Image
    shared = Path(os.environ.get("LVAE_SHARED_DIR", REPO.parent / "shared")) / "images"
    srcs = sorted(shared.glob("*.png"))
    for i in range(count):
        im = Image.open(srcs[i % len(srcs)]).convert("RGB").resize((640, 480))
        im.save(root / f"{i:03d}.jpg", quality=90)
    return root


def worker_loop(model_name: str, batch: int, size: int, steps: int,
                model_args: dict | None = None) -> dict:
    """Steady-state steps/s of the real training loop (``lvae_jax.training.train``: the
    prefetching loader on COCO-like JPEGs, the jitted step, metrics and logging; no checkpoint or
    evaluation inside the measured steps), from the per-step log after the first two steps."""
    import json as _json

    import numpy as np

    from lvae_jax.training import TrainConfig, train
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        _coco_like_folder(data)
        cfg = TrainConfig(model=model_name, data_dir=str(data), crop=size, model_args=model_args or {},
                          batch_size_per_device=batch, iterations=steps, log_every=1,
                          save_every=10 ** 9, run_dir=str(Path(tmp) / "run"), tensorboard=False,
                          progress=False)
        t0 = time.perf_counter()
        train(cfg)
        total = time.perf_counter() - t0
        rows = [_json.loads(l) for l in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    rates = [r["steps_per_s"] for r in rows if r["split"] == "train" and r["step"] > 2]
    return {"impl": "lvae-jax", "steps_per_s": float(np.median(rates)),
            "images_per_s": float(np.median(rates)) * batch, "steps": steps,
            "run_s_incl_compile": total, "peak_rss_gb": peak_rss_bytes() / 1e9}


def worker_official_loop(model_name: str, batch: int, size: int, steps: int, lmb: float,
                         src: str, workers: int) -> dict:
    """Steady-state steps/s of the official ``train-fix-rate.py`` loop (its ``TrainWrapper``: the
    official dataloader — ``ImageDataset``, RandomCrop + flip, ``DataLoader`` with ``workers``
    processes —, the step, gradient clipping, Adam, EMA, the progress-bar and W&B logging in
    ``disabled`` mode) on the same JPEGs and batch as :func:`worker_loop`.

    Adapted only where the official loop cannot run here: the device is CUDA when torch sees one,
    else the CPU (``set_device`` assumes CUDA; ``torch.cuda.max_memory_allocated`` reads 0 on
    the CPU), and the evaluation on Kodak is skipped (not part of a training step; it runs every
    1 000 steps and at the end). Steps/s: the median over steps 3.. of the inverse time between
    successive batch requests, so the loader, step and logging of each step are all counted."""
    import importlib.util

    import numpy as np
    import torch
    script = Path(src) / "train-fix-rate.py"
    spec = importlib.util.spec_from_file_location("official_train_fix_rate", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cuda = torch.cuda.is_available()
    if not cuda:  # the official logging reads CUDA memory statistics every step
        torch.cuda.max_memory_allocated = lambda *a, **k: 0
        torch.cuda.reset_peak_memory_stats = lambda *a, **k: None
    stamps = []

    class Wrapper(mod.TrainWrapper):
        def set_device(self):
            self.device = torch.device("cuda", 0) if cuda else torch.device("cpu")

        def evaluate(self):
            self._results = "evaluation skipped (benchmark)"

        def make_training_loader(self, dataset):
            super().make_training_loader(dataset)
            inner = self.trainloader

            def timed():
                for b in inner:
                    stamps.append(time.perf_counter())
                    yield b
            self.trainloader = timed()

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        _coco_like_folder(data)
        os.chdir(tmp)  # the official trainer writes runs/<project>/<name>
        sys.argv = ["train-fix-rate.py", "--model", model_name, "--model_args", f"lmb={lmb}",
                    "--trainset", str(data), "--transform", f"crop={size},hflip=True",
                    "--batch_size", str(batch), "--iterations", str(steps),
                    "--workers", str(workers), "--wbmode", "disabled"]
        t0 = time.perf_counter()
        Wrapper(mod.parse_args()).main()
        total = time.perf_counter() - t0
    gaps = np.diff(np.asarray(stamps))[2:]
    return {"impl": "official", "device": "cuda" if cuda else "cpu",
            "threads": torch.get_num_threads(), "steps_per_s": float(np.median(1.0 / gaps)),
            "images_per_s": float(np.median(1.0 / gaps)) * batch, "steps": steps,
            "loader_workers": workers, "run_s": total, "peak_rss_gb": peak_rss_bytes() / 1e9}


def worker_scaling(model_name: str, model_args: dict, batch: int, size: int, repeats: int) -> dict:
    jax, config, graphdef, params, cfg, tx, im, init_state, make_step = _jax_step_setup(
        model_name, batch, size, model_args)
    import numpy as np

    from lvae_jax.training import parallel, step_key
    from lvae_jax.training.step import step_hyper
    out = {"devices": jax.device_count(), "global_batch": batch}
    for n in (1, 2, 4):
        if n > jax.device_count() or batch % n:
            continue
        mesh = parallel.make_data_mesh(n)
        rep = parallel.replicated(mesh)
        step = jax.jit(make_step(graphdef, config, cfg), in_shardings=(
            rep, parallel.batch_sharding(mesh), rep, rep), out_shardings=(rep, rep),
            donate_argnums=0)
        hyper = parallel.replicate(step_hyper(cfg), mesh)
        state = parallel.replicate(init_state(params, tx, cfg), mesh)
        times = []
        for t in range(repeats + 1):
            gb = parallel.global_batch_array(im, mesh, batch)
            t0 = time.perf_counter()
            state, m = step(state, gb, step_key(state.rng, t), hyper)
            jax.block_until_ready(m)
            times.append(time.perf_counter() - t0)
        out[f"{n}_devices_s"] = float(np.min(times[1:]))
    return out


# ------------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------------


def _run(payload: dict, python: str = sys.executable, env_extra: dict | None = None,
         src: str | None = None, timeout: int = 3600) -> dict:
    env = dict(os.environ, **(env_extra or {}))
    if src:
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    code = (f"import json, sys; sys.path.insert(0, {str(REPO)!r}); "
            f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); import train_step as b; "
            f"r = getattr(b, {payload['fn']!r})(**json.loads({json.dumps(json.dumps(payload['kw']))})); "
            "print('RESULT ' + json.dumps(r))")
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, env=env,
                          timeout=timeout)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["failed"]}
    return json.loads(lines[-1][7:])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=["step", "pipeline", "loop", "scaling"], nargs="+",
                   default=["step", "pipeline", "loop", "scaling"])
    p.add_argument("--loop-steps", type=int, default=6)
    p.add_argument("--loop-workers", type=int, default=min(6, os.cpu_count() or 1),
                   help="DataLoader processes of the official loop (its default 6, at most the "
                        "CPU count)")
    p.add_argument("--models", nargs="+", default=["qres34m", "qarv_base"])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--official-python", default=sys.executable)
    p.add_argument("--official-src", default=None)
    p.add_argument("--pipeline-batch", type=int, default=16)
    p.add_argument("--pipeline-workers", type=int, default=None)
    p.add_argument("--scaling-model", default="qres34m")
    p.add_argument("--scaling-args", default='{"ch": 32}', help="JSON model builder arguments")
    p.add_argument("--scaling-batch", type=int, default=8)
    p.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"],
                   help="lvae-jax step precisions (TrainConfig.precision), each its own rows")
    p.add_argument("--model-args", default="{}",
                   help="JSON builder arguments of --models (e.g. a narrower configuration); "
                        "the official step is skipped when given")
    args = p.parse_args(argv)
    cache = tempfile.mkdtemp(prefix="lvae_bench_xla_")  # shared by the workers of this run
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", cache)

    if "step" in args.only:
        official = official_available(args.official_python, args.official_src)
        if not official:
            print(json.dumps({"official": "skipped: lvae + torch + torchvision + timm do not import "
                                          f"in {args.official_python} (see --official-python)"}))
        model_args = json.loads(args.model_args)
        for name, precision in [(n, pr) for n in args.models for pr in args.precision]:
            kw = dict(model_name=name, batch=args.batch, size=args.size, repeats=args.repeats)
            row = {"bench": "train_step", "model": name, "batch": args.batch, "size": args.size,
                   "precision": precision, "model_args": model_args}
            jkw = dict(kw, model_args=model_args, precision=precision)
            row["lvae_jax"] = _run({"fn": "worker_jax", "kw": jkw})
            # the same step again in a fresh process: the executable now comes from the run's
            # persistent compilation cache (as in a resumed run), so its peak memory is the
            # step's own, without the compiler's
            row["lvae_jax_cached"] = _run({"fn": "worker_jax", "kw": jkw})
            if official and not model_args and precision == args.precision[0]:
                row["official"] = _run({"fn": "worker_official", "kw": kw}, python=args.official_python,
                                       src=args.official_src)
                j, o = row["lvae_jax"].get("mean_s"), row["official"].get("mean_s")
                if j and o:
                    row["jax_over_official"] = j / o
            print(json.dumps(row), flush=True)
    if "pipeline" in args.only:
        r = _run({"fn": "worker_pipeline", "kw": dict(batch=args.pipeline_batch, size=args.size,
                                                       seconds=10.0, workers=args.pipeline_workers)})
        print(json.dumps({"bench": "input_pipeline", "batch": args.pipeline_batch, "size": args.size,
                          **r}), flush=True)
    if "loop" in args.only:
        name = args.models[0]
        # fixed-rate models: the official train-fix-rate.py default λ (the cost does not depend on it)
        model_args = {} if name.startswith("qarv") or name.startswith("rd_") else {"lmb": 2048.0}
        row = {"bench": "training_loop", "model": name, "batch": args.batch, "size": args.size}
        row["lvae_jax"] = _run({"fn": "worker_loop", "kw": dict(
            model_name=name, batch=args.batch, size=args.size, steps=args.loop_steps,
            model_args=model_args)})
        if name.startswith("qres") and args.official_src and official_available(
                args.official_python, args.official_src):
            row["official"] = _run({"fn": "worker_official_loop", "kw": dict(
                model_name=name, batch=args.batch, size=args.size, steps=args.loop_steps,
                lmb=model_args["lmb"], src=args.official_src, workers=args.loop_workers)},
                python=args.official_python, src=args.official_src)
            j, o = row["lvae_jax"].get("steps_per_s"), row["official"].get("steps_per_s")
            if j and o:
                row["jax_over_official_steps_per_s"] = j / o
        else:
            row["official"] = ("skipped: the official fixed-rate loop (train-fix-rate.py) needs "
                               "--official-src and a QRes model")
        print(json.dumps(row), flush=True)
    if "scaling" in args.only:
        flags = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
        r = _run({"fn": "worker_scaling", "kw": dict(
            model_name=args.scaling_model, model_args=json.loads(args.scaling_args),
            batch=args.scaling_batch, size=args.size, repeats=args.repeats)},
            env_extra={"XLA_FLAGS": flags})
        print(json.dumps({"bench": "data_parallel_scaling", "model": args.scaling_model,
                          "model_args": json.loads(args.scaling_args), "size": args.size, **r}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
