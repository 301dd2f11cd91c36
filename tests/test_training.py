"""Training: the official recipe's rules, the jitted step, checkpoints/resume, the loop and CLI.

Tiny model configs and 64×64 crops keep every test to seconds (plus one compilation). The
depthwise convolution is traced in its grouped form here (``LVAE_DEPTHWISE=grouped``): it compiles
several times faster than the CPU shift-sum and these tests are about training, not that kernel.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import lvae_jax
from lvae_jax.models import zoo
from lvae_jax.training import (TrainConfig, TrainingError, export_run, init_train_state,
                               make_optimizer, make_train_step, step_key, train)
from lvae_jax.models.lambdas import sample_lmb, self_evaluate_lambdas as eval_lambdas
from lvae_jax.training.metrics_log import read_metrics
from lvae_jax.training.schedule import ema_decay_schedule, lr_factor_schedule
from parity_support import REPO
from lvae_jax.training.step import median_of_first, step_hyper
from sample_images import images_dir
import tiny_models as T

from parity_support import results_dir
IMAGES = images_dir()


def tiny_qres(lmb=64.0):
    """QRes-shaped, two latent blocks (1/64 and 1/4 resolution): compiles in seconds."""
    return T.config("qres2", lmb=lmb)


def tiny_qarv():
    """QARV-shaped (AdaLN blocks, λ embedding), two latent blocks (1/64 and 1/8 resolution)."""
    return T.config("qarv2")


TINY_QRES_ARGS = T.config_args("qres2")


#: Unoptimised XLA code compiles ~3x faster; these tiny models run a handful of steps.
FAST_XLA = {"xla_backend_optimization_level": 0}


@pytest.fixture(autouse=True)
def fast_compile(monkeypatch):
    monkeypatch.setenv("LVAE_DEPTHWISE", "grouped")


@pytest.fixture(scope="module")
def train_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_images")
    for p in sorted(IMAGES.glob("*.png")):
        shutil.copy(p, root / p.name)
    return root


@pytest.fixture(scope="module")
def eval_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_images")
    for name in ("coffee64.png", "face64-1.png"):  # one size: one evaluation compile
        shutil.copy(IMAGES / name, root / name)
    return root


def run_config(tmp_path, data_dir, **kw) -> TrainConfig:
    base = dict(model="qres34m", model_args=dict(TINY_QRES_ARGS), data_dir=str(data_dir), crop=64,
                batch_size_per_device=4, iterations=6, save_every=3, log_every=1,
                run_dir=str(tmp_path / "run"), tensorboard=False, progress=False, data_workers=2,
                seed=1, compiler_options=dict(FAST_XLA))
    base.update(kw)
    return TrainConfig(**base)


# -- recipe rules --------------------------------------------------------------------------------


def _official_lr_factor(t, T, kind, lrf_min=0.01, warm=0):
    """The official trainer's rule, restated: warm-up, then constant / cosine / half-constant-
    half-cosine; evaluated every 10 steps and held in between."""
    t = t - t % 10

    def cos(tt, TT):
        return lrf_min + 0.5 * (1 - lrf_min) * (1 + math.cos(tt * math.pi / TT))
    if t < warm:
        return (t + 1) / warm
    if kind == "constant":
        return 1.0
    if kind == "cosine":
        return cos(t - warm, T - warm - 1)
    b = round(T * 0.5)
    return 1.0 if t <= b else cos(t - b, T - b - 1)


@pytest.mark.parametrize("kind,T,warm", [("const-0.5-cos", 1000, 0), ("const-0.5-cos", 2_000_000, 0),
                                         ("const-0.5-cos", 1001, 0), ("cosine", 500, 50),
                                         ("constant", 100, 20)])
def test_lr_schedule_matches_official_rule(kind, T, warm):
    # as the training step runs it: T, the floor and the warm-up are traced inputs
    traced = jax.jit(lambda t, T_, m, W: lr_factor_schedule(kind, T_, m, W, 10)(t))

    def f(t):
        return traced(t, np.int32(T), np.float32(0.01), np.int32(warm))
    ts = sorted({0, 1, 9, 10, 11, 19, 20, warm, warm + 1, T // 2 - 1, T // 2, T // 2 + 1,
                 T // 2 + 9, T // 2 + 10, T // 2 + 11, 3 * T // 4, T - 11, T - 10, T - 1})
    got = np.array([float(f(t)) for t in ts])
    want = np.array([_official_lr_factor(t, T, kind, 0.01, warm) for t in ts])
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)
    if kind == "const-0.5-cos":
        assert float(f(T // 2 - 1)) == 1.0 and float(f(T - 1)) < 0.02


def test_ema_decay_schedule():
    traced = jax.jit(lambda t, decay, warmup: ema_decay_schedule(decay, warmup)(t))

    def d(t):
        return traced(t, np.float32(0.9999), np.float32(10_000))
    for t in (0, 1, 100, 10_000, 200_000):
        assert float(d(t)) == pytest.approx(0.9999 * (1 - math.exp(-t / 10_000)), rel=1e-6, abs=1e-9)


def test_lambda_sampling_rules():
    key = jax.random.key(0)
    assert sample_lmb(key, tiny_qres(), 8) is None
    q = np.asarray(sample_lmb(key, tiny_qarv(), 20000))
    assert q.min() >= 16 and q.max() <= 2048
    cube = np.cbrt(q)  # uniform in λ^(1/3)
    assert abs(cube.mean() - (16 ** (1 / 3) + 2048 ** (1 / 3)) / 2) < 0.05
    rd = zoo.rd_model_base_config(enc_dims=(8,) * 5, dec_dims=(8,) * 5, z_dims=(2,) * 5,
                                  enc_nums=(1,) * 5, dec_nums=(1,) * 5, embed_dim=8)
    r = np.asarray(sample_lmb(key, rd, 20000))
    assert r.min() >= 4 and r.max() <= 2048
    assert abs(np.log(r).mean() - (np.log(4) + np.log(2048)) / 2) < 0.05  # uniform in log λ


def test_eval_lambdas_match_official_results_file():
    official = json.loads((results_dir() / "kodak" / "kodak-qarv_base.json").read_text())
    ours = eval_lambdas(lvae_jax.models.get_config("qarv_base"), len(official["lambdas"]))
    np.testing.assert_allclose(ours, official["lambdas"], rtol=1e-6)
    assert eval_lambdas(tiny_qres(), 8) == [None]
    rd = eval_lambdas(lvae_jax.models.get_config("rd_model_base"), 3)  # cube-root spaced
    np.testing.assert_allclose(np.cbrt(rd), np.linspace(4 ** (1 / 3), 2048 ** (1 / 3), 3), rtol=1e-6)


def test_median_matches_numpy():
    rng = np.random.default_rng(0)
    vals = rng.exponential(size=100).astype(np.float32)
    f = jax.jit(median_of_first)
    for count in (1, 2, 3, 10, 57, 99, 100):
        assert float(f(jnp.asarray(vals), count)) == pytest.approx(float(np.median(vals[:count])), rel=1e-6)


def test_optimizer_matches_torch_adam_with_clipping():
    torch = pytest.importorskip("torch")
    cfg = TrainConfig(data_dir="x")
    rng = np.random.default_rng(0)
    p0 = {"a": rng.normal(size=(5, 3)).astype(np.float32), "b": rng.normal(size=(7,)).astype(np.float32)}
    grads = [{k: (rng.normal(size=v.shape) * s).astype(np.float32) for k, v in p0.items()}
             for s in (0.3, 5.0, 1.0)]  # the second is clipped (norm > 2)
    tx = make_optimizer(cfg)
    params = jax.tree.map(jnp.asarray, p0)
    opt = tx.init(params)
    tp = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in p0.items()}
    topt = torch.optim.Adam(list(tp.values()), lr=2e-4, weight_decay=0.0)
    for g in grads:
        upd, opt = tx.update(jax.tree.map(jnp.asarray, g), opt, params)
        params = jax.tree.map(lambda p, u: p - 2e-4 * u, params, upd)
        for k in tp:
            tp[k].grad = torch.tensor(g[k])
        torch.nn.utils.clip_grad_norm_(list(tp.values()), 2.0)
        topt.step()
    for k in p0:
        np.testing.assert_allclose(np.asarray(params[k]), tp[k].detach().numpy(), rtol=0, atol=1e-7)


# -- the jitted step -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compiled_step():
    """(cfg, tx, params, step(state, batch, key)) of the tiny fixed-rate model: the step jitted
    exactly as the trainer does on one device, with the configuration's numbers as its input —
    the same program as the runs below, whose lengths, learning rates and clipping differ (one
    compilation for the module) — compiled at its first call, inside a test, where
    ``LVAE_DEPTHWISE=grouped``."""
    from lvae_jax.training import parallel
    from lvae_jax.training.trainer import build_params
    mc = tiny_qres()
    cfg = TrainConfig(data_dir="x", iterations=100).resolved(mc.variable_rate)
    graphdef, params = build_params(mc, None, seed=0, compiler_options=FAST_XLA)
    tx = make_optimizer(cfg)
    mesh = parallel.make_data_mesh(1)
    rep, bsh = parallel.replicated(mesh), parallel.batch_sharding(mesh)
    jitted = jax.jit(make_train_step(graphdef, mc, cfg), in_shardings=(rep, bsh, rep, rep),
                     out_shardings=(rep, rep), donate_argnums=0, compiler_options=FAST_XLA)
    hyper = parallel.replicate(step_hyper(cfg), mesh)
    return cfg, tx, params, lambda state, batch, key: jitted(state, batch, key, hyper)


def test_step_ema_spike_guard_and_lr_hold(compiled_step):
    """One compiled step exercised on hand-made states: the EMA rule, the spike guard and the
    official 'LR restored only at the next 10-step update' behaviour."""
    cfg, tx, params, step = compiled_step
    batch = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    base = init_train_state(params, tx, cfg)
    key = step_key(base.rng, 0)
    shifted = jax.jit(lambda tree, c: jax.tree.map(lambda e: e + c, tree))

    def at(t, history, lr_scale=1.0, ema_offset=0.0):
        s = init_train_state(params, tx, cfg, ema=shifted(params, ema_offset))
        return s.replace(step=jnp.int32(t), grad_norms=jnp.asarray(history, jnp.float32),
                         lr_scale=jnp.float32(lr_scale))

    calm = np.full(100, 1e6, np.float32)  # huge history: no spike
    s1, m1 = step(at(37, calm, ema_offset=0.5), batch, key)
    assert float(m1["spike"]) == 0.0
    assert float(m1["lr"]) == pytest.approx(2e-4)
    d = 0.9999 * (1 - math.exp(-37 / 10_000))
    assert float(m1["ema_decay"]) == pytest.approx(d, rel=1e-6)
    p_new = jax.tree.leaves(s1.params)
    e_new = jax.tree.leaves(s1.ema)
    p_old = jax.tree.leaves(params)
    for e, p, p0 in zip(e_new[:5], p_new[:5], p_old[:5]):
        np.testing.assert_allclose(np.asarray(e), d * (np.asarray(p0) + 0.5) + (1 - d) * np.asarray(p),
                                   rtol=1e-5, atol=1e-6)
    assert float(s1.grad_norms[37]) == pytest.approx(float(m1["grad_norm"]))
    assert int(s1.step) == 38

    tiny = np.full(100, 1e-9, np.float32)  # tiny history: this step's norm is a spike
    s2, m2 = step(at(37, tiny, lr_scale=1.0, ema_offset=0.5), batch, key)
    assert float(m2["spike"]) == 1.0
    assert float(m2["lr"]) == pytest.approx(2e-5)
    for e, p0 in zip(jax.tree.leaves(s2.ema)[:5], p_old[:5]):
        np.testing.assert_array_equal(np.asarray(e), np.asarray(p0) + 0.5)  # EMA not updated
    # the reduced LR persists until the next multiple of 10 ...
    s3, m3 = step(at(38, calm, lr_scale=0.1), batch, key)
    assert float(m3["lr"]) == pytest.approx(2e-5) and float(s3.lr_scale) == pytest.approx(0.1)
    # ... two spikes compound, and a step t % 10 == 0 restores the scheduled LR
    _, m4 = step(at(38, tiny, lr_scale=0.1), batch, key)
    assert float(m4["lr"]) == pytest.approx(2e-6)
    _, m5 = step(at(40, calm, lr_scale=0.01), batch, key)
    assert float(m5["lr"]) == pytest.approx(2e-4)
    # the median counts only the norms seen so far (t + 1 of them, this one included)
    history = np.zeros(100, np.float32)
    history[:3] = 1e-9
    _, m6 = step(at(3, history), batch, key)  # median of [1e-9 x3, g] -> 1e-9: spike
    assert float(m6["spike"]) == 1.0
    _, m7 = step(at(0, np.full(100, 1e-9, np.float32)), batch, key)  # only itself: never a spike
    assert float(m7["spike"]) == 0.0


def test_runs_that_differ_only_in_their_numbers_share_one_step_program():
    """Learning rate, clipping, length, LR floor and warm-up, EMA decay and warm-up and the spike
    guard's numbers are inputs of the step (``step_hyper``), not constants: two such runs trace to
    the same program (one compilation, shared through the persistent cache); the kind of LR
    schedule shapes it."""
    from lvae_jax.training.step import make_train_step
    mc = tiny_qres()
    graphdef, params = nnx.split(lvae_jax.build_model(mc, abstract=True), nnx.Param)

    def program(**kw):
        cfg = TrainConfig(data_dir="x", **kw).resolved(mc.variable_rate)
        state = jax.eval_shape(lambda p: init_train_state(p, make_optimizer(cfg), cfg), params)
        batch = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.uint8)
        key = jax.ShapeDtypeStruct((2,), jnp.uint32)
        return str(jax.make_jaxpr(make_train_step(graphdef, mc, cfg))(state, batch, key,
                                                                       step_hyper(cfg)))
    base = program(iterations=100)
    assert program(iterations=7_000, lr=1e-3, grad_clip=0.5, lrf_min=0.1, lr_warmup=30,
                   ema_decay=0.999, ema_warmup=50, spike_factor=3.0, spike_lr_scale=0.5) == base
    assert program(iterations=100, lr_schedule="cosine") != base


def test_step_donates_state_and_is_deterministic(compiled_step):
    cfg, tx, params, step = compiled_step
    batch = np.random.default_rng(1).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    s0 = init_train_state(params, tx, cfg)
    leaf = jax.tree.leaves(s0.params)[0]
    s1, m1 = step(s0, batch, step_key(s0.rng, 0))
    assert leaf.is_deleted()  # donated
    s0b = init_train_state(params, tx, cfg)
    s1b, m1b = step(s0b, batch, step_key(s0b.rng, 0))
    assert float(m1["loss"]) == float(m1b["loss"])
    assert float(m1["lr"]) == pytest.approx(2e-4)
    assert {"loss", "bppix", "psnr", "mse", "kl", "grad_norm", "lr", "spike", "ema_decay"} <= set(m1)


# -- the loop: runs, resume, errors ---------------------------------------------------------------


def _sigterm_after(run_dir, step: int) -> threading.Thread:
    """A thread that sends SIGTERM to this process once ``step`` is logged in metrics.jsonl."""
    def watch():
        path = Path(run_dir) / "metrics.jsonl"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if path.is_file() and any(json.loads(l)["step"] >= step
                                      for l in path.read_text().splitlines()):
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.005)
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
def test_train_run_resume_exact_eval_and_export(tmp_path, train_images, eval_images):
    n = 15
    straight = run_config(tmp_path / "a", train_images, iterations=n, save_every=5,
                          eval_dir=str(eval_images), eval_every=10)
    res = train(straight)
    assert res.status == "finished" and res.step == n
    run = Path(straight.run_dir)
    full = read_metrics(run)
    assert sorted(full) == list(range(1, n + 1))
    assert sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit()) == [5, 10, 15]
    saved = json.loads((run / "train_config.json").read_text())
    assert saved["lr_schedule"] == "constant" and saved["iterations"] == n
    # evaluation: official results schema, written at step 10 and at the end
    ev = json.loads((run / "eval" / f"step_{n:08d}_ema.json").read_text())
    assert {"name", "test-set", "lambdas", "results"} <= set(ev)
    assert ev["lambdas"] == [64.0] and set(ev["results"]) == {"bpp", "psnr", "mse"}
    assert ev["results"]["bpp"][0] > 0 and 0 < ev["results"]["mse"][0] < 1
    assert (run / "eval" / "step_00000010_ema.json").is_file()
    # the exported model is the EMA and loads as a model
    model = lvae_jax.load_model(run / "model")
    assert model.config.name == "tiny"

    # SIGTERM: a checkpoint of the step reached, then a clean stop
    interrupted = run_config(tmp_path / "b", train_images, iterations=n, save_every=5)
    _sigterm_after(interrupted.run_dir, 3)
    res1 = train(interrupted)
    stopped_at = res1.step
    assert res1.status == "stopped" and 3 <= stopped_at < n and res1.last_checkpoint == stopped_at
    # resume for 4 more steps (max_steps), then to the end
    res2 = train(interrupted, resume=True, max_steps=4)
    assert res2.status == "stopped" and res2.step == stopped_at + 4
    res3 = train(interrupted, resume=True)
    assert res3.status == "finished" and res3.step == n
    resumed = read_metrics(interrupted.run_dir)
    for t in range(1, n + 1):  # the same losses as the uninterrupted run
        assert resumed[t] == pytest.approx(full[t], rel=1e-6, abs=0), t
    # and the same EMA weights
    out = export_run(interrupted.run_dir, tmp_path / "exported")
    a = lvae_jax.checkpoint.model_dir.load_params(out)[1]
    b = lvae_jax.checkpoint.model_dir.load_params(run / "model")[1]
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-7)


def test_run_dir_guards_and_nan_stop(tmp_path, train_images):
    cfg = run_config(tmp_path, train_images, iterations=4, save_every=1, lr=1e12, grad_clip=1e30,
                     ema=False)
    with pytest.raises(TrainingError, match=r"loss is (nan|inf).*step \d+.*last good checkpoint"):
        train(cfg)
    # a new run refuses to overwrite checkpoints; resume must be asked for
    with pytest.raises(TrainingError, match="--resume"):
        train(run_config(tmp_path, train_images))
    with pytest.raises(TrainingError, match="different lr"):
        train(run_config(tmp_path, train_images, lr=1e-3, grad_clip=1e30, ema=False), resume=True)


@pytest.mark.slow
def test_finetune_from_model_directory(tmp_path, train_images, eval_images):
    from lvae_jax.checkpoint.model_dir import assign_params
    mc = tiny_qarv()
    # "converted" weights: any values will do (lr = 0 below); numpy draws, nothing to compile
    skeleton = lvae_jax.build_model(mc, abstract=True)
    rng = np.random.default_rng(123)
    values = {".".join(map(str, path)): (0.05 * rng.standard_normal(v.shape)).astype(np.float32)
              for path, v in nnx.to_flat_state(nnx.state(skeleton, nnx.Param))}
    src = assign_params(skeleton, values)
    weights = lvae_jax.checkpoint.model_dir.save_model(src, tmp_path / "weights", meta={"k": 1})
    cfg = run_config(tmp_path, train_images, model="qres34m", model_args={}, weights=str(weights),
                     iterations=1, lr=0.0, save_every=10, eval_dir=str(eval_images), eval_lambdas=3)
    res = train(cfg)
    saved_model = json.loads((Path(cfg.run_dir) / "model_config.json").read_text())
    assert saved_model["name"] == "tiny_qarv"  # the config came from the weights directory
    ev = res.last_eval  # variable rate: 3 λ, log-spaced like the official self_evaluate
    np.testing.assert_allclose(ev["lambdas"], [16.0, 181.0193, 2048.0], rtol=1e-5)
    assert len(ev["results"]["bpp"]) == 3 and ev["num_images"] == 2
    a = lvae_jax.checkpoint.model_dir.load_params(weights)[1]
    b = lvae_jax.checkpoint.model_dir.load_params(res.model_dir)[1]
    for k in a:  # lr = 0: the exported EMA is the starting point
        np.testing.assert_array_equal(a[k], b[k])


# -- command line --------------------------------------------------------------------------------


def test_cli_parsing_and_errors(cli_processes, tmp_path, capsys):
    from train.__main__ import build_parser, config_from_args, main
    args = build_parser().parse_args([
        "--model", "qarv_base", "--config-override", "ch=16", "enc_nums=(1,1,1,1,1)",
        "--lmb-range", "32", "1024", "--data-dir", "imgs", "--iterations", "10",
        "--batch-size-per-device", "2", "--no-ema", "--run-dir", str(tmp_path / "r")])
    cfg, resume = config_from_args(args)
    assert not resume and cfg.model == "qarv_base" and cfg.iterations == 10 and not cfg.ema
    assert cfg.model_args == {"ch": 16, "enc_nums": (1, 1, 1, 1, 1), "lmb_range": (32.0, 1024.0)}
    assert cfg.lr == 2e-4 and cfg.batch_size_per_device == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    rc = main(["--model", "qres34m", "--lmb", "64", "--data-dir", str(empty), "--run-dir",
               str(tmp_path / "x"), "--no-progress"])
    assert rc == 2 and "no images found" in capsys.readouterr().err
    rc = main(["--model", "qres34m", "--data-dir", str(empty), "--run-dir", str(tmp_path / "x")])
    assert rc == 2 and "fixed-rate model: give its λ (--lmb" in capsys.readouterr().err
    # a process of its own (--tpu starts jax.distributed), forked from the CLI server
    proc = cli_processes.module("train", "--model", "qarv_base", "--data-dir", empty,
                                "--run-dir", tmp_path / "x", "--tpu", text=True)
    # not a pod: say so, and what to do instead
    assert proc.returncode == 2 and "no cluster was detected" in proc.stderr, proc.stderr
    assert "leave --tpu out" in proc.stderr and "Traceback" not in proc.stderr
    rc = main(["--model", "nope", "--data-dir", str(empty), "--run-dir", str(tmp_path / "y")])
    assert rc == 2 and "unknown model" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="cannot resume"):
        config_from_args(build_parser().parse_args(["--resume", "--run-dir", str(tmp_path / "z")]))


def test_cli_resume_is_the_one_merge(tmp_path, capsys):
    """--resume: the saved configuration with the given operational changes (resume_config, the
    one merge the trainer also uses); a change to anything else is refused with exit status 2."""
    from train.__main__ import build_parser, config_from_args, main
    run = tmp_path / "run"
    run.mkdir()
    TrainConfig(model="qarv_base", data_dir="d", iterations=50, lr=1e-3, run_dir=str(run)).save(
        run / "train_config.json")
    cfg, resume = config_from_args(build_parser().parse_args(
        ["--resume", "--out", str(run), "--iterations", "80", "--log-every", "5"]))
    assert resume and (cfg.model, cfg.lr, cfg.iterations, cfg.log_every) == ("qarv_base", 1e-3,
                                                                              80, 5)
    assert main(["--resume", "--out", str(run), "--lr", "2e-3"]) == 2
    assert "cannot resume with a different lr" in capsys.readouterr().err


def test_per_image_loss_weighting():
    """Same value as the official batch mean; the gradient weighs each image by mean(L)/L_n."""
    from lvae_jax.training.step import batch_loss
    per = jnp.asarray([0.5, 2.0, 8.0], jnp.float32)
    for w in ("official", "per-image"):
        assert float(batch_loss(per, w)) == pytest.approx(float(jnp.mean(per)), rel=1e-6)
    g_official = jax.grad(lambda p: batch_loss(p, "official"))(per)
    g_image = jax.grad(lambda p: batch_loss(p, "per-image"))(per)
    np.testing.assert_allclose(g_official, np.full(3, 1 / 3), rtol=1e-6)
    np.testing.assert_allclose(g_image, float(jnp.mean(per)) / (3 * np.asarray(per)), rtol=1e-6)
    with pytest.raises(ValueError, match="loss weighting"):
        batch_loss(per, "median")


def test_malloc_arena_cap_before_jax_only():
    """The training entry point caps glibc's malloc arenas before JAX starts its threads — and
    leaves malloc alone when told to (``LVAE_MALLOC_ARENAS=0``), when the user chose
    ``MALLOC_ARENA_MAX`` (glibc read it at start-up) or once JAX runs (too late to matter)."""
    code = ("import sys, lvae_jax.xla_defaults as d\n"
            "first = d.limit_malloc_arenas()\n"
            "import jax.numpy as jnp; jnp.ones(2).block_until_ready()\n"
            "print(first, d.limit_malloc_arenas())")

    def run(**env):
        e = {k: v for k, v in os.environ.items() if k not in ("LVAE_MALLOC_ARENAS",
                                                              "MALLOC_ARENA_MAX")}
        out = subprocess.run([sys.executable, "-c", code], env={**e, **env}, cwd=REPO,
                             capture_output=True, text=True, check=True)
        return out.stdout.split()
    assert run() == ["True", "False"]
    assert run(LVAE_MALLOC_ARENAS="0") == ["False", "False"]
    assert run(MALLOC_ARENA_MAX="4") == ["False", "False"]
    with pytest.raises(subprocess.CalledProcessError) as e:
        run(LVAE_MALLOC_ARENAS="one")
    assert "LVAE_MALLOC_ARENAS must be a whole number" in e.value.stderr


def test_every_training_config_field_is_a_flag():
    """The flags are derived from TrainConfig: a field without a flag (or a flag for a field that
    no longer exists) is a bug of the derivation, not a missing line."""
    import dataclasses

    from train.__main__ import FLAGS, build_parser
    from lvae_jax.training.config import TrainConfig
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    dests = {a.dest for a in build_parser()._actions}
    assert fields <= dests, sorted(fields - dests)
    assert set(FLAGS) <= fields, sorted(set(FLAGS) - fields)
    parse = build_parser().parse_args
    from train.__main__ import config_from_args
    cfg, _ = config_from_args(parse(["--data-dir", "d", "--loss-weighting", "per-image",
                                     "--spike-window", "7", "--no-hflip", "--adam-eps", "1e-6"]))
    assert (cfg.loss_weighting, cfg.spike_window, cfg.hflip, cfg.adam_eps) == ("per-image", 7,
                                                                               False, 1e-6)


def test_cli_readme_commands_and_aliases(tmp_path, capsys):
    from train.__main__ import build_parser, config_from_args
    parse = build_parser().parse_args
    # the two commands of README.md
    cfg, _ = config_from_args(parse(["--model", "qres34m", "--lmb", "64", "--tfds", "coco/2017"]))
    assert (cfg.model, cfg.model_args, cfg.tfds, cfg.data_dir) == ("qres34m", {"lmb": 64.0},
                                                                   "coco/2017", None)
    assert cfg.run_dir == "runs/qres34m" and not cfg.distributed
    resolved = cfg.resolved(variable_rate=False)
    assert (resolved.iterations, resolved.eval_every, resolved.lr_schedule) == (800_000, 1000,
                                                                                "constant")
    cfg, _ = config_from_args(parse(["--model", "qarv_base", "--data-dir", "/data/coco/train2017",
                                     "--tpu"]))
    assert cfg.distributed and cfg.data_dir == "/data/coco/train2017" and cfg.tfds is None
    resolved = cfg.resolved(variable_rate=True)
    assert (resolved.iterations, resolved.eval_every, resolved.lr_schedule, resolved.lrf_min,
            resolved.eval_lambdas) == (2_000_000, 2000, "const-0.5-cos", 0.01, 8)
    assert (cfg.lr, cfg.grad_clip, cfg.batch_size_per_device, cfg.crop, cfg.ema_decay,
            cfg.ema_warmup) == (2e-4, 2.0, 16, 256, 0.9999, 10_000)
    # the short spellings
    model_json = tmp_path / "small.json"
    model_json.write_text(json.dumps(tiny_qres().to_dict()))
    cfg, _ = config_from_args(parse([
        "--config", str(model_json), "--data-dir", "d", "--batch-size", "2", "--out",
        str(tmp_path / "o"), "--ckpt-every", "7", "--keep", "5", "--iterations", "9",
        "--eval-every", "3", "--eval-dir", "e", "--seed", "4", "--weights", "w"]))
    assert (cfg.model_config_file, cfg.batch_size_per_device, cfg.run_dir, cfg.save_every,
            cfg.keep_checkpoints, cfg.iterations, cfg.eval_every, cfg.eval_dir, cfg.seed,
            cfg.weights) == (str(model_json), 2, str(tmp_path / "o"), 7, 5, 9, 3, "e", 4, "w")
    with pytest.raises(SystemExit) as exc:
        parse(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--tfds", "--tpu", "--resume", "--weights", "--ckpt-every", "--keep",
                 "--batch-size", "--out", "--config", "--eval-dir", "--eval-every"):
        assert flag in text


# -- evaluation helpers --------------------------------------------------------------------------


def test_bd_rate_against_vtm_anchor_and_degradation(tmp_path):
    from lvae_jax.training import evaluation as ev
    kodak = tmp_path / "Kodak"
    kodak.mkdir()
    assert ev.detect_test_set(kodak) == "kodak"
    anchor = ev.find_anchor(kodak)
    assert anchor == results_dir() / "kodak" / "kodak-vtm18.0.json"
    assert ev.find_anchor(tmp_path) is None  # not a known test set
    official = json.loads((results_dir() / "kodak" / "kodak-qres34m.json").read_text())
    bd, note = ev.compute_bd_rate(anchor, official["results"]["bpp"], official["results"]["psnr"])
    assert note == "ok" and bd == pytest.approx(-4.09, abs=0.01)  # the official qres34m figure
    bd, note = ev.compute_bd_rate(anchor, [0.5], [30.0])  # one λ: no BD-rate, and why
    assert bd is None and "at least 4" in note
    # an early-training curve far below the anchor's PSNR range: no BD-rate, the run goes on
    bd, note = ev.compute_bd_rate(anchor, [0.1, 0.2, 0.3, 0.4], [10.0, 11.0, 12.0, 13.0])
    assert bd is None and "no BD-rate" in note


def test_corrupt_or_truncated_checkpoints_fall_back_to_one_that_verifies(tmp_path, train_images,
                                                                         caplog):
    from lvae_jax.training.checkpoints import TrainCheckpointer
    cfg = run_config(tmp_path, train_images, iterations=6, save_every=2, ema=False,
                     keep_checkpoints=3)
    assert train(cfg).status == "finished"
    ckdir = Path(cfg.run_dir) / "checkpoints"
    ck = TrainCheckpointer(ckdir)
    try:
        assert ck.all_steps() == [2, 4, 6] and all(ck.verify(s) for s in (2, 4, 6))
    finally:
        ck.close()

    def biggest(step):
        return max((p for p in (ckdir / str(step)).rglob("*") if p.is_file()),
                   key=lambda p: p.stat().st_size)

    f = biggest(6)                                 # 16 flipped bytes in the latest
    data = bytearray(f.read_bytes())
    for i in range(16):
        data[len(data) // 2 + i] ^= 0xFF
    f.write_bytes(bytes(data))
    f = biggest(4)                                 # the one before it truncated
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])
    with caplog.at_level("WARNING"):
        out = export_run(cfg.run_dir, tmp_path / "exported", weights="params")
    text = caplog.text
    assert "corrupt" in text and str(ckdir / "6") in text and str(ckdir / "4") in text
    assert lvae_jax.load_model(out).config.name == "tiny"
    ck = TrainCheckpointer(ckdir)
    try:
        assert ck.verify(6) is False and ck.verify(4) is False and ck.verify(2) is True
        assert ck.last_verified_step() == 6        # sealed, even if it no longer verifies
    finally:
        ck.close()
