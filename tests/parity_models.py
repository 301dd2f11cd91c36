"""Official checkpoints rebuilt from a parity manifest and converted by the real converter,
cached one model at a time (the largest, rd_model_base, is 0.75 GB of weights)."""

from __future__ import annotations

import gc

import jax
from flax import nnx


class Converted:
    """An official checkpoint rebuilt from the recipe, converted by the real converter."""

    def __init__(self, manifest, tmp_dir):
        from lvae_jax import load_model
        from lvae_jax.checkpoint.torch_io import convert_torch_to_orbax, write_torch_checkpoint
        self.manifest = manifest
        self.state_dict = manifest.rebuild_state_dict()
        self.pt = write_torch_checkpoint(self.state_dict, tmp_dir / f"{manifest.model}.pt")
        self.result = convert_torch_to_orbax(self.pt, tmp_dir / f"{manifest.model}_jax",
                                             lmb=manifest.args.get("lmb"))
        self.model = load_model(self.result.out_dir)
        self.graphdef, self.params = nnx.split(self.model)
        self._fns = {}

    def fn(self, name):
        if name not in self._fns:
            g = self.graphdef
            if name == "eval":
                self._fns[name] = jax.jit(lambda p, im, lmb: nnx.merge(g, p)(im, lmb, training=False))
            elif name == "eval_tf":
                self._fns[name] = jax.jit(lambda p, im, lmb, zs: nnx.merge(g, p)(im, lmb, training=False,
                                                                                   latents=zs))
            elif name == "train":
                def loss(p, im, lmb, noise):
                    out = nnx.merge(g, p)(im, lmb, training=True, noise=noise)
                    return out.loss, out

                self._fns[name] = jax.jit(jax.value_and_grad(loss, has_aux=True))
        return self._fns[name]


_CACHE: dict = {}


def converted_model(manifest, tmp_path_factory) -> Converted:
    if manifest.model not in _CACHE:
        _CACHE.clear()
        gc.collect()
        _CACHE[manifest.model] = Converted(manifest, tmp_path_factory.mktemp(manifest.model))
    return _CACHE[manifest.model]
