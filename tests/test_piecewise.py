"""Piecewise execution (lvae_jax.models.piecewise): blocks of one structure and input shape share
one executable, and running block by block gives the numbers of the whole traced program."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import lvae_jax
from lvae_jax.models import piecewise
import tiny_models as T
from lvae_jax.models.runners import DIRECT


def _tiny_qarv():
    # two identical blocks in the first two encoder stages and the first decoder stage
    cfg = T.config("qarv", enc_nums=(2, 2, 1, 1, 1), dec_nums=(2, 1, 1, 1),
                   name="tiny_qarv_repeats")
    return lvae_jax.build_model(cfg)


def _recording(pieces):
    """A block runner that records each block call and its executable's key (structure, method,
    weight shapes, input shapes) before running it through ``pieces``."""
    calls, keys = [], set()

    def run(block, method, *args):
        g, state = pieces.split(block)
        calls.append(method)
        keys.add((g, method, tuple(x.shape for x in jax.tree.leaves(state)),
                  tuple(None if a is None else a.shape for a in args)))
        return pieces(block, method, *args)

    return run, calls, keys


def test_equal_blocks_share_one_executable():
    model = _tiny_qarv()
    x = jnp.asarray(np.random.default_rng(0).random((1, 128, 64, 3), np.float32))
    emb = model.embed(jnp.full((1,), 64.0))
    pieces = piecewise.Piecewise(model)
    run, calls, keys = _recording(pieces)
    model.encode(x, emb, run=run)
    assert len(keys) < len(calls)                 # the repeated blocks are the same key
    assert pieces.distinct() == len(keys)         # ... and compile once


def test_warm_compiles_everything_the_pass_needs():
    """After ``warm`` (an abstract trace, then parallel compilation) the real pass compiles
    nothing; a second warm of the same pass has nothing left to do."""
    model = _tiny_qarv()
    x = jnp.asarray(np.random.default_rng(0).random((2, 64, 64, 3), np.float32))
    pieces = piecewise.Piecewise(model, workers=2)

    def run():
        emb = model.embed(jnp.full((2,), 64.0), run=pieces)
        return model.encode(x, emb, run=pieces)

    n = pieces.warm(run)
    assert n == pieces.distinct() > 0
    out = run()
    assert pieces.distinct() == n and set(out)      # nothing compiled by the real pass
    assert pieces.warm(run) == 0


def test_piecewise_equals_the_traced_program():
    """The same operations in the same order: the program boundaries change nothing here
    (CPU); the codec's byte parity depends on it, so it is checked exactly."""
    model = _tiny_qarv()
    x = jnp.asarray(np.random.default_rng(1).random((2, 64, 128, 3), np.float32))
    lmb = jnp.asarray([32.0, 1024.0])
    pieces = piecewise.Piecewise(model)

    def top_down(model, x, lmb, run):
        emb = model.embed(lmb, run=run)
        enc = model.encode(x, emb, run=run)
        feature = model.initial_feature(2, 1, 2)
        outs = []
        for i in range(model.num_latents):
            feature, pm, pv = model.prior_step(i, feature, emb, run=run)
            qm, _ = model.posterior(i, feature, enc, emb, run=run)
            z = jnp.round(qm - pm) + pm
            outs += [pm, pv, qm]
            feature = model.fuse_step(i, feature, z, emb, run=run)
        return outs + [model.tail(feature, emb, run=run)]

    graphdef, state = nnx.split(model)
    whole = jax.jit(lambda st, x, lmb: top_down(nnx.merge(graphdef, st), x, lmb, DIRECT))(
        state, x, lmb)
    split = top_down(model, x, lmb, pieces)
    assert len(whole) == len(split)
    for a, b in zip(whole, split):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

