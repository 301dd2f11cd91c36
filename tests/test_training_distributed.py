"""Data parallelism and preemption, in subprocesses (CPU devices forced with XLA_FLAGS):

- one step on a global batch sharded over 4 devices equals the 1-device step;
- a two-process ``jax.distributed`` run (localhost coordinator, each process loading its own rows)
  trains like the one-process run on the same global batch;
- a run killed with SIGKILL resumes from its last complete checkpoint, re-takes the lost steps with
  the losses the killed process had logged and finishes (the real command line, ``python -m train``).

(Exact resumption against an uninterrupted run is tested in-process in ``test_training.py``.)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lvae_jax.training.metrics_log import read_metrics
import tiny_models as T
from sample_images import images_dir

#: Subprocesses that compile and run: deselect locally with -m "not slow".
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().parent / "_train_worker.py"
IMAGES = images_dir()
FAST_XLA = {"xla_backend_optimization_level": 0}
#: QRes-shaped, two latent blocks: compiles in seconds.
TINY_QRES_ARGS = T.config_args("qres2")


@pytest.fixture(scope="module")
def jax_cache():
    """The session's persistent compilation cache (tests/conftest.py), shared with
    test_training.py and with this module's in-process run: the 1-device tiny-model program is
    compiled once."""
    return Path(os.environ["JAX_COMPILATION_CACHE_DIR"])


def _env(devices: int, cache: Path) -> dict:
    env = dict(os.environ)
    if devices > 1:  # (XLA_FLAGS is part of the cache key: 1-device runs leave it as it is)
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                            f" --xla_force_host_platform_device_count={devices}").strip()
    env.update(JAX_PLATFORMS="cpu", LVAE_DEPTHWISE="grouped",
               JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""))
    return env


def _result(proc_out: str) -> dict:
    lines = [l for l in proc_out.splitlines() if l.startswith("RESULT ")]
    assert lines, proc_out[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _train_config(run_dir, data_dir, **kw) -> dict:
    cfg = dict(model="qres34m", model_args=TINY_QRES_ARGS, data_dir=str(data_dir), crop=64,
               batch_size_per_device=2, iterations=4, save_every=2, log_every=1,
               run_dir=str(run_dir), tensorboard=False, progress=False, data_workers=2, seed=3,
               compiler_options=FAST_XLA)
    cfg.update(kw)
    return cfg


def test_sharded_step_equals_single_device_step(jax_cache):
    proc = subprocess.run([sys.executable, str(WORKER), "mesh"], env=_env(4, jax_cache),
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = _result(proc.stdout)
    assert r["devices"] == 4
    assert r["shard_rows_4"] == [2, 2, 2, 2] and r["shard_rows_1"] == [8]
    for m1, mn in zip(r["losses_1"], r["losses_n"]):
        for k in ("loss", "kl", "bppix", "mse", "psnr", "grad_norm"):
            assert mn[k] == pytest.approx(m1[k], rel=2e-5), k
        assert mn["lr"] == m1["lr"] and mn["spike"] == m1["spike"]
    # Adam's update is ~lr·sign(g) where |g| is tiny, so allow a few LR steps of difference
    assert r["max_param_diff"] < 4 * 2e-4


def test_two_process_distributed_run_matches_one_process(tmp_path, jax_cache, monkeypatch):
    """Two ``jax.distributed`` processes on localhost (one CPU device and 2 images each, each
    loading only its own rows) train like one process with the same global batch of 4."""
    import jax

    from lvae_jax.training import TrainConfig, train
    port = _free_port()
    dist_dir, ref_dir = tmp_path / "dist", tmp_path / "ref"
    procs = []
    for pid in range(2):
        cfg_path = tmp_path / f"cfg{pid}.json"
        cfg_path.write_text(json.dumps(_train_config(
            dist_dir, IMAGES, distributed=True, coordinator_address=f"localhost:{port}",
            num_processes=2, process_id=pid)))
        procs.append(subprocess.Popen([sys.executable, str(WORKER), "train", str(cfg_path)],
                                      env=_env(1, jax_cache), stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, cwd=REPO))
    try:
        # the one-process run, here, while the two processes work
        monkeypatch.setenv("LVAE_DEPTHWISE", "grouped")
        assert 4 % jax.device_count() == 0
        ref = train(TrainConfig(**_train_config(
            ref_dir, IMAGES, batch_size_per_device=4 // jax.device_count())))
        assert ref.status == "finished" and ref.step == 4
        outs = [p.communicate(timeout=600)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    results = [_result(o) for o in outs]
    assert sorted(r["process"] for r in results) == [0, 1]
    assert all(r["processes"] == 2 and r["devices"] == 2 and r["step"] == 4 for r in results)
    dist, one = read_metrics(dist_dir), read_metrics(ref_dir)
    assert sorted(dist) == sorted(one) == [1, 2, 3, 4]
    for t in one:
        assert dist[t] == pytest.approx(one[t], rel=1e-5), t
    steps = sorted(int(p.name) for p in (dist_dir / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [2, 4]


def _wait_for(predicate, timeout: float, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.02)
    return False


def test_sigkill_resumes_from_last_complete_checkpoint(tmp_path, jax_cache):
    """``python -m train`` killed with SIGKILL a few steps after a checkpoint: ``--resume`` starts
    from the last complete checkpoint, re-takes the lost steps with exactly the losses the killed
    process had logged for them (same parameters, optimizer state, key and data position), and
    finishes the run."""
    n, every = 16, 5
    common = ["--model", "qres34m", "--model-arg", "lmb=64.0", "ch=8", "enc_nums=(0,0,0,0,0)",
              "dec_nums=(1,0,0,0,1)", "name='tiny'", "--data-dir", str(IMAGES), "--crop", "64",
              "--batch-size", "4", "--iterations", str(n), "--log-every", "1",
              "--ckpt-every", str(every), "--keep", "2", "--no-tensorboard", "--no-progress",
              "--seed", "5", "--compiler-option", "xla_backend_optimization_level=0"]
    env = _env(1, jax_cache)
    run_dir = tmp_path / "run"
    victim = subprocess.Popen([sys.executable, "-m", "train", *common, "--out", str(run_dir)],
                              env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    ckpts = run_dir / "checkpoints"

    def complete(step):
        return (ckpts / str(step) / "_CHECKPOINT_METADATA").is_file()

    def logged():
        path = run_dir / "metrics.jsonl"
        return max(read_metrics(run_dir), default=0) if path.is_file() else 0

    # kill mid-interval: checkpoint 5 complete and a few later steps taken
    reached = _wait_for(lambda: complete(every) and logged() >= every + 3, timeout=400, proc=victim)
    victim.send_signal(signal.SIGKILL)
    out = victim.communicate(timeout=60)[0]
    assert reached, out[-3000:]
    assert victim.returncode == -signal.SIGKILL
    before = read_metrics(run_dir)
    kept = sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit())
    last = max(s for s in kept if complete(s))
    assert every <= last < max(before) < n  # steps after the last checkpoint were lost

    resumed = subprocess.run([sys.executable, "-m", "train", "--resume", "--out", str(run_dir),
                              "--no-progress"], env=env, cwd=REPO, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"finished at step {n}" in resumed.stdout
    lines = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in lines if r["split"] == "train"]
    # the resumed process logged from the last complete checkpoint on, to the end
    k = len(steps) - steps[::-1].index(last + 1) - 1
    assert steps[k:] == list(range(last + 1, n + 1))
    again = read_metrics(run_dir)  # the last line logged for each step: the resumed process's
    for t in range(last + 1, max(before) + 1):  # the lost steps, taken again
        assert again[t] == pytest.approx(before[t], rel=1e-6, abs=0), t
    assert (run_dir / "model" / "lvae_model.json").is_file()
    shutil.rmtree(tmp_path, ignore_errors=True)
