"""Piecewise execution (lvae_jax.models.piecewise): blocks of one structure and input shape share
one executable, and running block by block gives the numbers of the whole traced program."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import lvae_jax
from lvae_jax.models import piecewise, zoo
from lvae_jax.models.vae import direct


def _tiny_qarv():
    # two identical blocks in the first two encoder stages and the first decoder stage
    cfg = zoo.qarv_base_config(ch=16, enc_dims=(16,) * 5, enc_nums=(2, 2, 1, 1, 1),
                               dec_nums=(2, 1, 1, 1), z_dims=(4, 4, 4, 4), embed_dim=16,
                               name="tiny_qarv_repeats")
    return lvae_jax.build_model(cfg)


def _calls_and_keys(model, x, emb):
    """Record every block call of an encoder pass: (number of calls, distinct executables: one
    per structure, method, weight shapes and input shapes)."""
    pieces = piecewise.Piecewise(model)
    calls, keys = [], set()

    def recording(block, method, *args):
        g, state = pieces.split(block)
        calls.append(method)
        keys.add((g, method, tuple(x.shape for x in jax.tree.leaves(state)),
                  tuple(None if a is None else a.shape for a in args)))
        return pieces(block, method, *args)

    feats = model.encode(x, emb, apply=recording)
    return feats, len(calls), len(keys)


def test_equal_blocks_share_one_executable():
    model = _tiny_qarv()
    x = jnp.asarray(np.random.default_rng(0).random((1, 128, 64, 3), np.float32))
    emb = model.embed(jnp.full((1,), 64.0))
    before = piecewise._run_block._cache_size()
    _, n_calls, n_keys = _calls_and_keys(model, x, emb)
    compiled = piecewise._run_block._cache_size() - before
    assert n_keys < n_calls                       # the repeated blocks are the same key
    assert compiled == n_keys                     # ... and compile once


def test_piecewise_equals_the_traced_program():
    """The same operations in the same order: the program boundaries change nothing here
    (CPU); the codec's byte parity depends on it, so it is checked exactly."""
    model = _tiny_qarv()
    x = jnp.asarray(np.random.default_rng(1).random((2, 64, 128, 3), np.float32))
    lmb = jnp.asarray([32.0, 1024.0])
    pieces = piecewise.Piecewise(model)

    def top_down(model, x, lmb, apply):
        emb = model.embed(lmb, apply=apply)
        enc = model.encode(x, emb, apply=apply)
        feature = model.initial_feature(2, 1, 2)
        outs = []
        for i in range(model.num_latents):
            feature, pm, pv = model.prior_step(i, feature, emb, apply=apply)
            qm, _ = model.posterior(i, feature, enc, emb, apply=apply)
            z = jnp.round(qm - pm) + pm
            outs += [pm, pv, qm]
            feature = model.fuse_step(i, feature, z, emb, apply=apply)
        return outs + [model.tail(feature, emb, apply=apply)]

    graphdef, state = nnx.split(model)
    whole = jax.jit(lambda st, x, lmb: top_down(nnx.merge(graphdef, st), x, lmb, direct))(
        state, x, lmb)
    split = top_down(model, x, lmb, pieces)
    assert len(whole) == len(split)
    for a, b in zip(whole, split):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

