"""The tiny random models of the tests, written once.

:func:`config` gives the official architectures with a few channels and one block per stage
(``qres``, ``qarv``, ``lossless``, ``rd``), or two latent blocks and no encoder blocks
(``qres2``, ``qarv2``, ``lossless2``: half the compilation); keyword arguments override the
builder's (``config("qarv", dec_nums=(2, 1, 1, 1))``). One architecture and input shape is one
compiled program, shared by every test file through the session's compilation cache
(``conftest.py``), so the files use these and not variants of their own.

Weights: :func:`perturbed` moves a built model's parameters off their initialisation (the
official initialisation zeroes layers, which would make every latent its prior mean and hide
bugs); :func:`drawn` draws them afresh. Both draw with NumPy: an eager ``jax.random`` call per
parameter shape compiles a program each (tens of seconds for a model on 2 cores).
"""

from __future__ import annotations

import functools
import re

import jax
import numpy as np
from flax import nnx

import lvae_jax
from lvae_jax.models import zoo

_ONE = (1,) * 5
_BUILDERS = {
    "qres": (zoo.qres34m_config, dict(ch=8, enc_nums=_ONE, dec_nums=_ONE, name="tiny_qres")),
    "qarv": (zoo.qarv_base_config, dict(ch=16, enc_dims=(16,) * 5, enc_nums=_ONE,
                                        dec_nums=(1, 1, 1, 1), z_dims=(4, 4, 4, 4), embed_dim=16,
                                        name="tiny_qarv")),
    "lossless": (zoo.qres34m_lossless_config, dict(ch=8, enc_nums=_ONE, dec_nums=_ONE,
                                                   name="tiny_lossless")),
    "rd": (zoo.rd_model_base_config, dict(enc_dims=(16,) * 5, dec_dims=(16,) * 5, enc_nums=_ONE,
                                          dec_nums=_ONE, z_dims=(4,) * 5, embed_dim=16,
                                          name="tiny_rd")),
    # two latent blocks (at strides 64 and 4, or 64 and 8), no encoder blocks
    "qres2": (zoo.qres34m_config, dict(lmb=64.0, ch=8, enc_nums=(0,) * 5,
                                       dec_nums=(1, 0, 0, 0, 1), name="tiny")),
    "qarv2": (zoo.qarv_base_config, dict(ch=16, enc_dims=(16,) * 5, enc_nums=(0,) * 5,
                                         dec_nums=(1, 0, 0, 1), z_dims=(4, 4, 4, 4), embed_dim=16,
                                         name="tiny_qarv")),
    "lossless2": (zoo.qres34m_lossless_config, dict(ch=8, enc_nums=(0,) * 5,
                                                    dec_nums=(1, 0, 0, 0, 1), name="tiny_lossless")),
}
KINDS = tuple(_BUILDERS)


def config_args(kind: str, **overrides) -> dict:
    """The builder arguments of a tiny ``kind`` (JSON-friendly: what ``--model-arg`` and
    ``TrainConfig.model_args`` take)."""
    return {**_BUILDERS[kind][1], **overrides}


def config(kind: str, **overrides):
    """The :class:`~lvae_jax.models.specs.ModelConfig` of a tiny ``kind``."""
    build, _ = _BUILDERS[kind]
    return build(**config_args(kind, **overrides))


def perturbed(model, seed: int = 1, scale: float = 0.5, *, fan_in: bool = True, gains=()):
    """``model`` with every parameter ``p`` replaced by ``(p + scale·N(0, 1)·s)·g``: ``s`` is
    1/√fan-in for kernels (``fan_in``) and 1 otherwise; ``g`` the factor of the first
    ``(regex, factor)`` of ``gains`` that matches the parameter's dotted path (else 1)."""
    graphdef, state = nnx.split(model)
    rng = np.random.default_rng(seed)
    flat = []
    for path, v in nnx.to_flat_state(state):
        x = np.asarray(v.get_value() if hasattr(v, "get_value") else v)
        s = 1.0 / np.sqrt(np.prod(x.shape[:-1])) if (fan_in and x.ndim >= 2) else 1.0
        x = x + scale * rng.standard_normal(x.shape).astype(np.float32) * s
        name = ".".join(map(str, path))
        x = x * next((g for rx, g in gains if re.search(rx, name)), 1.0)
        flat.append((path, v.replace(jax.numpy.asarray(x, np.float32))))
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


def drawn(config_, seed: int):
    """A model of ``config_`` with parameters drawn afresh: kernels N(0, 0.75/fan-in), everything
    else 0.5·N(0, 1), so that latents differ from their prior means."""
    graphdef, state = nnx.split(lvae_jax.build_model(config_, abstract=True))
    rng = np.random.default_rng(seed)
    draw = lambda x: ((np.sqrt(0.75 / np.prod(x.shape[:-1])) if len(x.shape) >= 2 else 0.5)  # noqa: E731
                      * rng.standard_normal(x.shape)).astype(x.dtype)
    return nnx.merge(graphdef, jax.tree.map(draw, state))


@functools.cache
def model(kind: str, seed: int = 1):
    """The tiny ``kind`` built and :func:`perturbed` with ``seed`` (once per process)."""
    return perturbed(lvae_jax.build_model(config(kind)), seed)


@functools.cache
def codec(kind: str, seed: int = 1):
    """The :class:`~lvae_jax.codec.api.Codec` of :func:`model` (once per process)."""
    from lvae_jax.codec.api import Codec
    return Codec(model(kind, seed))
