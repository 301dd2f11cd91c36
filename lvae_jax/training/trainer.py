"""The training loop: model, data, jitted step, checkpoints, evaluation and logs for one run.

    >>> from lvae_jax.training import TrainConfig, train
    >>> result = train(TrainConfig(model="qarv_base", data_dir="coco/train2017", eval_dir="kodak"))

A run lives in ``cfg.run_dir``::

    train_config.json     the resolved training configuration
    model_config.json     the model (``ModelConfig.to_dict()``)
    checkpoints/<step>/   Orbax checkpoints (state + data position), the last k kept
    metrics.jsonl         training means per log interval, evaluation results
    eval/step_<N>.json    RD points (official results schema) of each evaluation
    tensorboard/          TensorBoard events
    model/                the final EMA weights as a model directory (``lvae_jax.load_model``)

Resuming (``resume=True``) restores the latest complete checkpoint — parameters, optimizer state,
EMA, step, run key, spike-guard history and the data position — so the following steps are the
ones the uninterrupted run would have taken. SIGTERM/SIGINT save a checkpoint and stop cleanly; a
second SIGINT aborts.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np

from lvae_jax import xla_defaults
from lvae_jax.files import atomic_write_text
from lvae_jax.training import parallel
from lvae_jax.training.config import TrainConfig
from lvae_jax.training.errors import TrainingError  # noqa: F401  (re-exported)
from lvae_jax.checkpoint.model_dir import assign_params, load_params, save_model
from lvae_jax.checkpoint.pretrained import spec_dir
from lvae_jax.data import DataPosition, ImageFolderSource, Reading, TrainLoader, open_source
from lvae_jax.evaluation.official_results import resolve
from lvae_jax.models import ModelConfig, build_model, get_config
from lvae_jax.training.checkpoints import TrainCheckpointer, abstract_like
from lvae_jax.training.evaluation import RDEvaluator
from lvae_jax.training.metrics_log import IntervalMeans, MetricsLogger, ProgressBar
from lvae_jax.training.state import init_train_state, make_optimizer
from lvae_jax.training.step import make_train_step, step_hyper, step_key

log = logging.getLogger(__name__)

MODEL_CONFIG_FILE = "model_config.json"
TRAIN_CONFIG_FILE = "train_config.json"


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    #: "finished" (all iterations done) or "stopped" (SIGTERM/SIGINT or ``max_steps``; a
    #: checkpoint of the last step is saved — continue with ``resume=True``).
    status: str
    last_checkpoint: int | None
    model_dir: Path | None = None
    last_eval: dict | None = None


# ------------------------------------------------------------------------------------------------
# Model
# ------------------------------------------------------------------------------------------------


def resolve_model_config(cfg: TrainConfig):
    """-> (ModelConfig, flat initial parameters or None, description of the source)."""
    if cfg.weights:
        # a model directory, or an official model's name: its official weights (cached)
        where = cfg.weights if Path(cfg.weights).is_dir() else spec_dir(str(cfg.weights))
        config, params, info = load_params(where)
        if cfg.model_args:
            log.warning("--weights %s defines the model; ignoring model arguments %s",
                        cfg.weights, cfg.model_args)
        return config, params, f"weights {cfg.weights} ({config.name})"
    if cfg.model_config_file:
        d = json.loads(Path(cfg.model_config_file).read_text())
        return ModelConfig.from_dict(d.get("config", d)), None, f"config {cfg.model_config_file}"
    args = dict(cfg.model_args)
    name = args.pop("name", None)  # the ModelConfig's name, not the registry's
    config = get_config(cfg.model, **args)
    if "lmb" in config.args and "lmb" not in cfg.model_args:
        # the builder has a default λ (32), the official train script another (2048): neither
        # is a safe silent choice for a fixed-rate model
        raise TrainingError(f"{cfg.model} is a fixed-rate model: give its λ (--lmb, e.g. "
                            "--lmb 2048, the official training script's default; the published "
                            "weights use 16, 32, ..., 2048)")
    if name:
        config = dataclasses.replace(config, name=str(name))
    return config, None, f"{cfg.model} {cfg.model_args or ''}"


def build_params(model_config, flat_params, seed: int, abstract: bool = False,
                 compiler_options: dict | None = None):
    """-> (graphdef, params State) split once from the NNX model (``nnx.split(model, nnx.Param)``).

    A fresh model is ``build_model(config, seed=seed)`` (initialised on the host: nothing to
    compile); ``abstract=True`` gives shapes only (a restore target); ``flat_params`` (from a
    model directory) are loaded as they are. ``compiler_options`` is accepted for compatibility
    and unused.
    """
    from flax import nnx

    skeleton = build_model(model_config, abstract=True)
    if flat_params is not None:
        return nnx.split(assign_params(skeleton, flat_params), nnx.Param)
    graphdef, shapes = nnx.split(skeleton, nnx.Param)
    if abstract:
        return graphdef, shapes
    return graphdef, nnx.split(build_model(model_config, seed=seed), nnx.Param)[1]


def export_model(graphdef, params, path, meta: dict) -> Path:
    """Write parameters as a model directory (``lvae_jax.load_model``-able)."""
    from flax import nnx

    model = nnx.merge(graphdef, jax.tree.map(np.asarray, parallel.to_host(params)))
    return save_model(model, path, meta=meta, overwrite=True)


# ------------------------------------------------------------------------------------------------
# Stop requests
# ------------------------------------------------------------------------------------------------


class StopRequest:
    """SIGTERM/SIGINT -> a flag the loop polls (a second SIGINT raises KeyboardInterrupt).
    With several processes the stop step is agreed through JAX's preemption sync point (which
    itself listens for SIGTERM)."""

    def __init__(self):
        self.signal: int | None = None
        self._old = {}
        # With several processes SIGTERM is left to JAX's preemption notifier (installed by
        # jax.distributed.initialize), which a Python handler would replace.
        sigs = (signal.SIGINT,) if jax.process_count() > 1 else (signal.SIGTERM, signal.SIGINT)
        if threading.current_thread() is threading.main_thread():
            for sig in sigs:
                self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum

    def should_stop(self, step: int) -> bool:
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            return bool(multihost_utils.reached_preemption_sync_point(step))
        return self.signal is not None

    def restore(self):
        for sig, old in self._old.items():
            signal.signal(sig, old)


# ------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------


def _check_resume_config(saved: TrainConfig, cfg: TrainConfig) -> None:
    def canon(v):  # as saved in JSON (tuples become lists)
        return json.loads(json.dumps(v, default=list))
    diff = [f.name for f in dataclasses.fields(TrainConfig)
            if f.name not in TrainConfig.RESUMABLE_CHANGES
            and getattr(cfg, f.name) is not None
            and canon(getattr(saved, f.name)) != canon(getattr(cfg, f.name))]
    if diff:
        raise TrainingError("cannot resume with a different " + ", ".join(
            f"{k} (run: {getattr(saved, k)!r}, now: {getattr(cfg, k)!r})" for k in diff))


def resume_config(run_dir, changes: dict) -> TrainConfig:
    """The configuration of a resumed run — the one merge: the run's saved configuration with
    ``changes`` (field -> value; None values ignored) applied. Only the fields of
    ``TrainConfig.RESUMABLE_CHANGES`` may differ from the saved ones (:class:`TrainingError`)."""
    run_dir = Path(run_dir)
    if not (run_dir / TRAIN_CONFIG_FILE).is_file():
        raise TrainingError(f"cannot resume: {run_dir} has no {TRAIN_CONFIG_FILE}")
    saved = TrainConfig.load(run_dir / TRAIN_CONFIG_FILE)
    changes = {k: v for k, v in changes.items() if v is not None}
    changed = dataclasses.replace(saved, **changes)
    _check_resume_config(saved, changed)
    return dataclasses.replace(changed, run_dir=str(run_dir))


def prepare_run_dir(cfg: TrainConfig, resume: bool):
    """Check or create the run directory. -> (resolved config, ModelConfig, initial params)."""
    run_dir = Path(cfg.run_dir)
    ckpt_dir = run_dir / "checkpoints"
    has_ckpt = ckpt_dir.is_dir() and any(p.name.isdigit() for p in ckpt_dir.iterdir())
    if resume:
        # cfg may be the resumed configuration itself (the command line's resume_config) or a
        # full configuration of the same run: either way its fields must match the saved ones
        # outside RESUMABLE_CHANGES, and only those are taken from it.
        merged = resume_config(run_dir, {f.name: getattr(cfg, f.name)
                                         for f in dataclasses.fields(TrainConfig)})
        model_config = ModelConfig.from_dict(json.loads((run_dir / MODEL_CONFIG_FILE).read_text()))
        return merged.resolved(model_config.variable_rate), model_config, None
    if has_ckpt:
        raise TrainingError(f"{run_dir} already holds checkpoints: pass --resume to continue that "
                            "run, or choose another --run-dir")
    model_config, params, source = resolve_model_config(cfg)
    log.info("model: %s", source)
    return cfg.resolved(model_config.variable_rate), model_config, params


def train(cfg: TrainConfig, resume: bool = False, max_steps: int | None = None) -> TrainResult:
    """Train (or resume) the run described by ``cfg``; see the module docstring.

    ``max_steps``: stop after that many steps in this call (with a checkpoint), e.g. to fit a
    job's time limit; a later ``resume=True`` continues exactly.
    """
    cfg.validate()
    xla_defaults.limit_malloc_arenas()  # before JAX's threads: less peak memory per step
    if cfg.distributed:
        parallel.initialize_distributed(cfg.coordinator_address, cfg.num_processes, cfg.process_id)
    is_main = jax.process_index() == 0
    cfg, model_config, init_params = prepare_run_dir(cfg, resume)
    run_dir = Path(cfg.run_dir)
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(run_dir / TRAIN_CONFIG_FILE)
        atomic_write_text(run_dir / MODEL_CONFIG_FILE, json.dumps(model_config.to_dict(), indent=1))

    # -- data first (cheap, and the most common errors) --------------------------------------
    source = open_source(cfg.data_dir, cfg.tfds, cfg.tfds_split, cfg.tfds_data_dir, cfg.check_data)
    if cfg.eval_dir and is_main:
        ImageFolderSource(cfg.eval_dir)  # fails now, not after the model is built
        if cfg.eval_anchor:
            resolve(cfg.eval_anchor)      # a missing anchor too

    # -- devices, model, state ----------------------------------------------------------------
    mesh = parallel.make_data_mesh()
    global_batch = cfg.batch_size_per_device * mesh.size
    # A resumed run restores everything from its checkpoint: shapes are enough.
    graphdef, params = build_params(model_config, init_params, cfg.seed, abstract=resume,
                                    compiler_options=cfg.compiler_options)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    tx = make_optimizer(cfg)
    if resume:
        state = jax.eval_shape(lambda p: init_train_state(p, tx, cfg), params)
    else:
        state = parallel.replicate(init_train_state(params, tx, cfg), mesh)
    del params
    checkpointer = TrainCheckpointer(run_dir / "checkpoints", keep=cfg.keep_checkpoints)
    try:
        setup = _Setup(cfg, is_main, run_dir, model_config, source, mesh, global_batch, graphdef)
        run = _Run(setup, state, checkpointer, resume)
        if is_main:
            log.info("%s: %.2fM parameters; %d device(s) in %d process(es), global batch %d; "
                     "%d training images (%s); steps %d -> %d; loss weighting: %s",
                     model_config.name, n_params / 1e6, mesh.size, jax.process_count(),
                     global_batch, len(source), source.name, run.start, cfg.iterations,
                     cfg.loss_weighting)
        return run.loop(max_steps)
    finally:
        checkpointer.close()


@dataclass(frozen=True)
class _Setup:
    """What a run is made of besides its state: the configuration, whether this process logs,
    the run directory, the model, the data source, the device mesh and global batch and the model's
    graph."""
    cfg: TrainConfig
    is_main: bool
    run_dir: Path
    model_config: object
    source: object
    mesh: object
    global_batch: int
    graphdef: object


class _Run:
    """One call of :func:`train` after the set-up: the jitted step, the loader, the evaluator and
    the logs around a state that is restored (``resume``) or fresh. ``settle`` fetches the last
    dispatched step's metrics (the device stays one step ahead), ``save`` writes a checkpoint,
    ``evaluate`` the RD evaluation, ``loop`` runs the steps and returns the :class:`TrainResult`."""

    def __init__(self, setup: _Setup, state, checkpointer, resume: bool):
        cfg, is_main, run_dir = setup.cfg, setup.is_main, setup.run_dir
        model_config, source, mesh = setup.model_config, setup.source, setup.mesh
        global_batch, graphdef = setup.global_batch, setup.graphdef
        self.cfg, self.is_main, self.run_dir = cfg, is_main, run_dir
        self.model_config, self.source, self.mesh = model_config, source, mesh
        self.global_batch, self.graphdef, self.checkpointer = global_batch, graphdef, checkpointer
        rep, bsh = parallel.replicated(mesh), parallel.batch_sharding(mesh)
        self.position = DataPosition()
        if resume:
            state, data = checkpointer.restore(abstract_like(state, rep))
            self.position = DataPosition.from_dict(data)
            if data.get("global_batch") not in (None, global_batch):
                log.warning("resuming with global batch %d (run used %s): the data order "
                            "continues from the saved position but is no longer that of the "
                            "original run", global_batch, data.get("global_batch"))
        self.state = state
        self.start = int(parallel.to_host(state.step))
        self.last_ckpt = checkpointer.latest_step()
        self.train_step = jax.jit(make_train_step(graphdef, model_config, cfg),
                                  in_shardings=(rep, bsh, rep, rep), out_shardings=(rep, rep),
                                  donate_argnums=0, compiler_options=cfg.compiler_options or None)
        self.hyper = parallel.replicate(step_hyper(cfg), mesh)
        self.next_key = jax.jit(step_key, out_shardings=rep)
        self.evaluator = None
        if cfg.eval_dir and is_main:
            self.evaluator = RDEvaluator(graphdef, model_config, cfg.eval_dir, cfg.eval_lambdas,
                                         name=f"{model_config.name}@{run_dir.name}",
                                         anchor=cfg.eval_anchor, seed=cfg.seed,
                                         compiler_options=cfg.compiler_options)
        self.loader = self.bar = self.logger = self.means = None
        self.last_eval = None
        self.pending: tuple[int, dict] | None = None

    # -- the three services of the loop ------------------------------------------------------
    def settle(self) -> None:
        """Fetch the metrics of the last dispatched step (waits for it); stop on NaN."""
        if self.pending is None:
            return
        cfg = self.cfg
        t, dev_metrics = self.pending
        self.pending = None
        m = parallel.to_host(dev_metrics)
        loss = float(m["loss"])
        if not math.isfinite(loss):
            good = None
            if self.last_ckpt is not None:
                self.checkpointer.wait()                       # complete and sealed
                good = self.checkpointer.newest_good_step()
            where = (f"the last good checkpoint (checksums verified) is step {good} in "
                     f"{self.checkpointer.directory}" if good is not None
                     else "no verified checkpoint was saved yet")
            raise TrainingError(f"loss is {loss} at step {t} (0-based); stopping — {where}")
        if m["spike"] > 0 and self.is_main:
            self.bar.write(f"step {t}: large gradient norm {float(m['grad_norm']):.4g} "
                           f"(> {cfg.spike_factor:g}× the running median): LR "
                           f"{float(m['lr']):.3g}, EMA not updated")
        self.means.add(m)
        done = t + 1
        if done % cfg.log_every == 0 or done == cfg.iterations:
            interval = self.means.pop()
            self.logger.log(done, "train", interval)
            self.bar.update_to(done, interval)

    def save(self, done: int, wait: bool = False) -> None:
        self.settle()
        self.checkpointer.save(done, self.state, self.loader.position,
                               {"global_batch": self.global_batch, "seed": self.cfg.seed},
                               wait=wait)
        self.last_ckpt = done

    def evaluate(self, done: int) -> None:
        self.settle()
        if self.evaluator is None:
            return
        cfg, run_dir = self.cfg, self.run_dir
        t0 = time.perf_counter()
        for which in (("ema", "params") if cfg.eval_weights == "both" else (cfg.eval_weights,)):
            weights = self.state.ema if which == "ema" else self.state.params
            res = self.evaluator(parallel.local_copy(weights), step=done, weights=which)
            (run_dir / "eval").mkdir(exist_ok=True)
            atomic_write_text(run_dir / "eval" / f"step_{done:08d}_{which}.json",
                              json.dumps(res, indent=1))
            flat = {"bd_rate": res.get("bd_rate")}
            psnrs = res["results"].get("psnr") or [None] * len(res["results"]["bpp"])
            for lmb, b, p in zip(res["lambdas"], res["results"]["bpp"], psnrs):
                tag = "lossless" if lmb is None else f"lmb{round(lmb)}"
                flat[f"bpp_{tag}"], flat[f"psnr_{tag}"] = b, p
            self.logger.log(done, f"eval_{which}", {k: v for k, v in flat.items() if v is not None})
            bd = res.get("bd_rate")
            self.bar.write(
                f"eval step {done} ({which}): bpp {np.round(res['results']['bpp'], 4).tolist()} "
                + (f"psnr {np.round(psnrs, 2).tolist()}" if psnrs[0] is not None else "lossless")
                + (f" BD-rate {bd:+.2f}%" if bd is not None else "")
                + (f" ({res['bd_rate_note']})" if res.get("bd_rate_note") else ""))
            self.last_eval = res
        log.info("evaluation took %.1fs", time.perf_counter() - t0)

    # -- the loop ------------------------------------------------------------------------------
    def loop(self, max_steps: int | None) -> TrainResult:
        cfg, run_dir, mesh, start = self.cfg, self.run_dir, self.mesh, self.start
        stop = None
        try:
            self.logger = MetricsLogger(run_dir, self.is_main, cfg.tensorboard, cfg.wandb,
                                        cfg.wandb_project, config={
                                            "train": cfg.to_dict(),
                                            "model": self.model_config.to_dict()})
            self.loader = TrainLoader(self.source, self.global_batch, crop=cfg.crop,
                                      hflip=cfg.hflip, seed=cfg.seed, position=self.position,
                                      rows=parallel.process_rows(mesh, self.global_batch),
                                      reading=Reading(cfg.data_workers, cfg.prefetch))
            stop = StopRequest()
            self.bar = ProgressBar(start, cfg.iterations, enabled=self.is_main and cfg.progress)
            self.means = IntervalMeans()
            status, done = "finished", start
            if cfg.eval_first and start == 0:
                self.evaluate(0)
            for t in range(start, cfg.iterations):
                if stop.should_stop(t) or (max_steps is not None and t - start >= max_steps):
                    status = "stopped"
                    break
                batch = parallel.global_batch_array(next(self.loader), mesh, self.global_batch)
                self.state, metrics = self.train_step(self.state, batch,
                                                      self.next_key(self.state.rng, t), self.hyper)
                self.settle()  # the previous step's metrics: the device stays one step ahead
                self.pending = (t, metrics)
                done = t + 1
                if done % cfg.save_every == 0 and done < cfg.iterations:
                    self.save(done)
                if (self.evaluator is not None and done % cfg.eval_every == 0
                        and done < cfg.iterations):
                    self.evaluate(done)
            self.settle()
            if self.last_ckpt != done:
                self.save(done, wait=True)
            self.checkpointer.wait()
            if status == "stopped":
                why = f"signal {stop.signal}" if stop.signal is not None else "request"
                self.bar.write(f"stopped by {why} at step {done}; checkpoint saved — continue "
                               "with --resume")
                return TrainResult(run_dir, done, status, self.last_ckpt, None, self.last_eval)
            self.evaluate(done)
            model_dir = None
            if jax.process_count() > 1:
                # Model directories are written by a single-process Orbax checkpointer.
                log.info("multi-process run: export the final weights from the last checkpoint "
                         "with `python -m train --export %s`", run_dir)
            else:
                weights = self.state.ema if cfg.ema else self.state.params
                model_dir = export_model(self.graphdef, weights, run_dir / "model", meta={
                    "source": "lvae-jax training", "run": str(run_dir), "step": done,
                    "weights": "ema" if cfg.ema else "params", "train_config": cfg.to_dict()})
            return TrainResult(run_dir, done, status, self.last_ckpt, model_dir, self.last_eval)
        finally:
            for obj in (self.loader, self.bar, self.logger):
                if obj is not None:
                    obj.close()
            if stop is not None:
                stop.restore()


def export_run(run_dir, out=None, weights: str = "ema", step: int | None = None) -> Path:
    """Write the weights of a run's checkpoint (default: the latest; ``weights`` "ema" or
    "params") as a model directory (default ``RUN/model``). Runs in one process."""
    run_dir = Path(run_dir)
    cfg = TrainConfig.load(run_dir / TRAIN_CONFIG_FILE)
    model_config = ModelConfig.from_dict(json.loads((run_dir / MODEL_CONFIG_FILE).read_text()))
    graphdef, params = build_params(model_config, None, cfg.seed, abstract=True)
    tx = make_optimizer(cfg)
    template = jax.eval_shape(lambda p: init_train_state(p, tx, cfg), params)
    mesh = parallel.make_data_mesh(1)
    checkpointer = TrainCheckpointer(run_dir / "checkpoints", keep=cfg.keep_checkpoints)
    try:
        state, _ = checkpointer.restore(abstract_like(template, parallel.replicated(mesh)), step)
    finally:
        checkpointer.close()
    if weights == "ema" and state.ema is None:
        raise TrainingError(f"{run_dir} was trained without EMA; export weights='params'")
    chosen = state.ema if weights == "ema" else state.params
    done = int(parallel.to_host(state.step))
    return export_model(graphdef, chosen, Path(out) if out else run_dir / "model", meta={
        "source": "lvae-jax training", "run": str(run_dir), "step": done, "weights": weights,
        "train_config": cfg.to_dict()})
