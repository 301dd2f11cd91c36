"""Subprocess worker for tests/test_training_distributed.py (not a test module).

    python tests/_train_worker.py mesh             # one step on 1 vs N devices; prints JSON
    python tests/_train_worker.py train CFG.json   # lvae_jax.training.train(TrainConfig); prints JSON

Device counts come from the parent's ``XLA_FLAGS`` (``--xla_force_host_platform_device_count``).
"""

from __future__ import annotations

import json
import sys


def tiny_qres():
    """QRes-shaped, two latent blocks: compiles in seconds (tests/tiny_models.py)."""
    import tiny_models
    return tiny_models.config("qres2")


def mesh_equivalence() -> dict:
    """Two steps of the same global batch on a 1-device and an N-device data mesh."""
    import jax
    import numpy as np

    from lvae_jax.training import TrainConfig, init_train_state, make_optimizer, make_train_step
    from lvae_jax.training import parallel
    from lvae_jax.training.step import step_hyper, step_key
    from lvae_jax.training.trainer import build_params

    mc = tiny_qres()
    cfg = TrainConfig(data_dir="x", iterations=100).resolved(mc.variable_rate)
    graphdef, params = build_params(mc, None, seed=0,
                                    compiler_options={"xla_backend_optimization_level": 0})
    tx = make_optimizer(cfg)
    n = jax.device_count()
    batches = [np.random.default_rng(s).integers(0, 256, (2 * n, 64, 64, 3), dtype=np.uint8)
               for s in range(2)]
    out = {"devices": n}
    results = {}
    for size in (1, n):
        mesh = parallel.make_data_mesh(size)
        rep = parallel.replicated(mesh)
        step = jax.jit(make_train_step(graphdef, mc, cfg), in_shardings=(
            rep, parallel.batch_sharding(mesh), rep, rep), out_shardings=(rep, rep),
            donate_argnums=0, compiler_options={"xla_backend_optimization_level": 0})
        hyper = parallel.replicate(step_hyper(cfg), mesh)
        state = parallel.replicate(init_train_state(params, tx, cfg), mesh)
        losses = []
        for t, b in enumerate(batches):
            batch = parallel.global_batch_array(b, mesh, b.shape[0])
            if t == 0:
                out[f"shard_rows_{size}"] = [int(s.data.shape[0]) for s in batch.addressable_shards]
            state, m = step(state, batch, step_key(state.rng, t), hyper)
            losses.append({k: float(v) for k, v in parallel.to_host(m).items()})
        results[size] = (losses, [np.asarray(x) for x in jax.tree.leaves(parallel.to_host(state))])
    (l1, s1), (ln, sn) = results[1], results[n]
    out["losses_1"], out["losses_n"] = l1, ln
    out["max_param_diff"] = max(float(np.max(np.abs(a.astype(np.float64) - b)))
                                for a, b in zip(s1, sn) if a.dtype.kind == "f")
    out["max_param"] = max(float(np.max(np.abs(a))) for a in s1 if a.dtype.kind == "f")
    return out


def run_training(cfg_path: str) -> dict:
    from lvae_jax.training import TrainConfig, train
    cfg = TrainConfig.load(cfg_path)
    res = train(cfg)
    import jax
    return {"status": res.status, "step": res.step, "process": jax.process_index(),
            "processes": jax.process_count(), "devices": jax.device_count()}


def main():
    mode = sys.argv[1]
    if mode == "mesh":
        result = mesh_equivalence()
    elif mode == "train":
        result = run_training(sys.argv[2])
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
