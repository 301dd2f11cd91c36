"""Piecewise execution of a model: each block runs as its own compiled executable, shared by
every block of the same structure and input shape, with the block's weights as arguments.

Tracing a whole hierarchical VAE into one program per image size makes XLA compile every block
again, although qarv_base's 69 blocks have 14 distinct structures (7 encoder, 7 decoder). Run
block by block instead, a model compiles one small executable per distinct (block structure,
method, input shapes): the first image of a size compiles a handful of programs, each a fraction
of a second, and every further block of that shape reuses them. The numerics are those of the
blocks themselves (the same operations in the same order); only the program boundaries move.

:class:`Piecewise` is the ``apply`` hook of :class:`~lvae_jax.models.vae.HierarchicalVAE`
(``model.prior_step(i, feature, emb, apply=pieces)``). The executables live in one process-wide
``jax.jit`` keyed by the block's graph definition (equal for equal structures, so two loads of a
model share them) and use the persistent compilation cache like any other.
"""

from __future__ import annotations

import functools

import jax
from flax import nnx


@functools.partial(jax.jit, static_argnums=(0, 1))
def _run_block(graphdef, method: str, state, *args):
    return getattr(nnx.merge(graphdef, state), method)(*args)


class Piecewise:
    """Runs ``block.method(*args)`` as a compiled executable of the block's structure, its state
    split once per block. Hold it as long as the model: blocks are looked up by identity."""

    def __init__(self, model):
        self.model = model          # keeps the blocks (and their identities) alive
        self._split: dict[int, tuple] = {}

    def split(self, block) -> tuple:
        """(graphdef, state) of ``block``, split on first use."""
        key = id(block)
        if key not in self._split:
            self._split[key] = nnx.split(block)
        return self._split[key]

    def __call__(self, block, method: str, *args):
        graphdef, state = self.split(block)
        return _run_block(graphdef, method, state, *args)

    def distinct(self) -> int:
        """How many distinct block structures have run so far (a lower bound of the compiled
        executables: one per structure, method and input shapes)."""
        return len({g for g, _ in self._split.values()})
