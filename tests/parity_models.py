"""Official checkpoints rebuilt from a parity manifest and converted by the real converter, once
per manifest and test session (:class:`Store`, the session fixture ``parity_models`` of
``conftest.py``).

The collection hook of ``conftest.py`` runs the parity tests of one manifest one after another
(and sends them to one xdist worker), so the store keeps only the most recent model: the largest,
rd_model_base, is 0.75 GB of weights.
"""

from __future__ import annotations

import functools
import gc
from pathlib import Path

import jax
from flax import nnx

class Converted:
    """An official checkpoint rebuilt from the recipe, converted by the real converter, loaded,
    with its jitted functions (each compiled once per input shape)."""

    def __init__(self, manifest, tmp_dir: Path):
        from lvae_jax import load_model
        from lvae_jax.checkpoint.torch_io import convert_torch_to_model, write_torch_checkpoint
        self.manifest = manifest
        self.state_dict = manifest.rebuild_state_dict()
        self.pt = write_torch_checkpoint(self.state_dict, tmp_dir / f"{manifest.model}.pt")
        self.result = convert_torch_to_model(self.pt, tmp_dir / f"{manifest.model}_jax",
                                             lmb=manifest.args.get("lmb"))
        self.model = load_model(self.result.out_dir)
        self.graphdef, self.params = nnx.split(self.model)
        self._fns = {}

    @functools.cached_property
    def codec(self):
        """The codec of the model (QRes and QARV), built once."""
        from lvae_jax.codec.api import Codec
        return Codec(self.model)

    def fn(self, name):
        """The jitted ``eval`` (free running), ``eval_tf`` (teacher forced) or ``train`` (loss,
        outputs and gradients with the given noise) function over the split parameters."""
        if name not in self._fns:
            g = self.graphdef
            jit = jax.jit            # at the session's optimisation level (conftest.py)
            if name == "eval":
                self._fns[name] = jit(lambda p, im, lmb: nnx.merge(g, p)(im, lmb, training=False))
            elif name == "eval_tf":
                self._fns[name] = jit(lambda p, im, lmb, zs: nnx.merge(g, p)(im, lmb, training=False,
                                                                              latents=zs))
            elif name == "train":
                def loss(p, im, lmb, noise):
                    out = nnx.merge(g, p)(im, lmb, training=True, noise=noise)
                    return out.loss, out

                self._fns[name] = jit(jax.value_and_grad(loss, has_aux=True))
        return self._fns[name]


class Store:
    """Converted models by manifest (its content digest): each converted once per session; the
    most recent ``keep`` are held."""

    def __init__(self, tmp_dir: Path, keep: int = 1):
        self.tmp_dir, self.keep = Path(tmp_dir), keep
        self._models: dict[str, Converted] = {}
        self.conversions = 0

    def get(self, manifest) -> Converted:
        key = manifest.digest
        if key in self._models:
            self._models[key] = self._models.pop(key)          # most recent last
            return self._models[key]
        while len(self._models) >= self.keep:
            self._models.pop(next(iter(self._models)))
            gc.collect()
        where = self.tmp_dir / f"{manifest.model}-{key[:12]}"
        where.mkdir(parents=True, exist_ok=True)
        self._models[key] = Converted(manifest, where)
        self.conversions += 1
        return self._models[key]
