"""bf16 mixed-precision training (``TrainConfig.precision``, lvae_jax.training.precision): the
step runs, keeps its state in float32, and its loss is the float32 loss within a bound derived
from bfloat16's rounding. (Whole runs against float32 runs: benchmarks/train_agreement.py.)"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import tiny_models as T
from lvae_jax.training.precision import compute_params

#: bfloat16 keeps 8 significant bits: each rounding moves a value by at most 2⁻⁹ (relative).
BF16_UNIT_ROUNDOFF = 2.0 ** -9


#: bfloat16 programs compile slowly on XLA:CPU; unoptimised machine code compiles them several
#: times faster and runs these tiny inputs at once (the arithmetic is the same).
JIT = {"compiler_options": {"xla_backend_optimization_level": 0}}


@pytest.fixture(scope="module", params=["qarv2", "qres2"])
def model(request):
    """Two latent blocks and the decoder's every kind of layer: half the compilation."""
    return T.model(request.param)


def _loss(graphdef, params, rest, im, lmb, key):
    out = nnx.merge(graphdef, params, rest)(im, lmb, training=True, key=key)
    return out.loss, out.metrics


def test_bf16_forward_is_the_float32_loss_within_the_rounding_bound(model):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    im = jnp.asarray(np.random.default_rng(0).random((2, 64, 64, 3)), jnp.float32)
    lmb = jnp.full((2,), 64.0) if model.config.variable_rate else None
    key = jax.random.key(0)
    f32, _ = jax.jit(lambda p: _loss(graphdef, p, rest, im, lmb, key), **JIT)(params)
    b16, m16 = jax.jit(lambda p: _loss(graphdef, compute_params(p, "bf16"), rest, im, lmb,
                                       key), **JIT)(params)
    # the loss and the rates come out in float32 (numerics.pinned), the pass ran in bfloat16
    assert b16.dtype == jnp.float32 and m16["bppix"].dtype == jnp.float32
    # First-order bound: every parameterised layer rounds its weights and its input once
    # (2 roundings of at most 2⁻⁹ each); along the network's path these relative errors add up.
    layers = sum(1 for path, _ in nnx.to_flat_state(params) if path[-1] == "kernel")
    bound = 2 * layers * BF16_UNIT_ROUNDOFF
    rel = abs(float(b16) - float(f32)) / abs(float(f32))
    print(f"{model.config.name}: relative loss difference {rel:.2e}, bound {bound:.2e}")
    assert rel <= bound, (rel, bound, float(f32), float(b16))
    assert rel > 0                                   # it did run in another precision


def test_the_bf16_training_step_keeps_float32_state(tmp_path):
    model = T.model("qres2")               # two latent blocks: the step compiles in seconds
    from lvae_jax.training.config import TrainConfig
    from lvae_jax.training.state import init_train_state, make_optimizer
    from lvae_jax.training.step import make_train_step, step_hyper
    cfg = TrainConfig(data_dir=str(tmp_path), iterations=10, precision="bf16").resolved(
        model.config.variable_rate)
    graphdef, params = nnx.split(model, nnx.Param)
    tx = make_optimizer(cfg)
    state = init_train_state(params, tx, cfg)
    step = jax.jit(make_train_step(graphdef, model.config, cfg), **JIT)
    batch = jnp.asarray(np.random.default_rng(1).integers(0, 256, (2, 64, 64, 3)), jnp.uint8)
    key = jax.random.key_data(jax.random.key(3))
    hyper = step_hyper(cfg)
    state, metrics = step(state, batch, key, hyper)
    state, metrics = step(state, batch, key, hyper)
    leaves = jax.tree.leaves((state.params, state.opt_state, state.ema))
    assert all(x.dtype == jnp.float32 for x in leaves if jnp.issubdtype(x.dtype, jnp.floating))
    assert np.isfinite(float(metrics["loss"])) and int(state.step) == 2
