"""Piecewise execution of a model: each block runs as its own compiled executable, shared by
every block of the same structure, weight shapes and input shapes, the block's weights passed as
arguments.

Tracing the top-down pass into one program per latent step (the sequential decoder's unit) makes
XLA compile every block again, although qarv_base's 30 decoder blocks have 7 distinct structures.
Run block by block, a model needs one small executable per distinct (block structure, method,
weight shapes, input shapes), and every further block of a shape reuses it. The numerics are those of the blocks themselves — the same
operations in the same order; only the program boundaries move (tests/test_piecewise.py checks
that the results are bit-identical to the traced whole).

:class:`Piecewise` is a :class:`~lvae_jax.models.runners.BlockRunner` of
:class:`~lvae_jax.models.vae.HierarchicalVAE` (``model.prior_step(i, feature, emb, run=pieces)``);
:meth:`Piecewise.call` runs any other jitted function (the codec's symbol and index computations)
the same way. :meth:`Piecewise.warm`
traces a whole pass abstractly, collects the executables it will need and compiles the missing
ones on a thread pool (XLA compiles outside the GIL), so that the first image of a size does not
pay its compilations one after another. Compilations use JAX's persistent cache like any other.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor

import jax
from flax import nnx


@functools.partial(jax.jit, static_argnums=(0, 1))
def _run_block(graphdef, method: str, state, *args):
    return getattr(nnx.merge(graphdef, state), method)(*args)


def _signature(args) -> tuple:
    """What an executable is specialised to: the pytree structure of its arguments and each
    leaf's shape, dtype and weak type."""
    leaves, tree = jax.tree.flatten(args)
    return tree, tuple((t.shape, t.dtype, t.weak_type) for t in map(jax.typeof, leaves))


def _specs(args):
    """``args`` with every array (or tracer) replaced by its ShapeDtypeStruct."""
    def spec(x):
        t = jax.typeof(x)
        return jax.ShapeDtypeStruct(t.shape, t.dtype, weak_type=t.weak_type)
    return jax.tree.map(spec, args)


class Piecewise:
    """A :class:`~lvae_jax.models.runners.BlockRunner`: runs ``block.method(*args)`` as a compiled
    executable of the block's structure; the block's state is split once. Hold it as long as the
    model: blocks are looked up by identity.

    ``workers``: threads for :meth:`warm` (default: the CPU count)."""

    def __init__(self, model, workers: int | None = None):
        self.model = model          # keeps the blocks (and their identities) alive
        self.workers = workers or os.cpu_count() or 1
        self._split: dict[int, tuple] = {}
        self._compiled: dict[tuple, object] = {}
        self._plan: dict | None = None

    def split(self, block) -> tuple:
        """(graphdef, state) of ``block``, split on first use."""
        key = id(block)
        if key not in self._split:
            self._split[key] = nnx.split(block)
        return self._split[key]

    def __call__(self, block, method: str, *args):
        graphdef, state = self.split(block)
        key = (graphdef, method, _signature((state, args)))
        return self._run(key, functools.partial(_run_block, graphdef, method),
                         functools.partial(_run_block.lower, graphdef, method), state, *args)

    def call(self, fn, *args):
        """``fn(*args)`` for a ``jax.jit``-wrapped ``fn`` without static arguments, compiled and
        planned like the blocks."""
        return self._run((fn, _signature(args)), fn, fn.lower, *args)

    def _run(self, key, fn, lower, *args):
        if self._plan is not None:                       # planning (inside warm): trace only
            self._plan.setdefault(key, (lower, _specs(args)))
            return fn(*args)
        exe = self._compiled.get(key)
        if exe is None:
            exe = self._compiled[key] = lower(*args).compile()
        return exe(*args)

    def warm(self, run) -> int:
        """Compile every executable ``run()`` will need that is not compiled yet, on ``workers``
        threads: ``run`` is traced abstractly (``jax.eval_shape``), its block calls recorded,
        lowered in this thread and compiled in parallel. -> how many were compiled."""
        self._plan = {}
        try:
            jax.eval_shape(run)
        finally:
            plan, self._plan = self._plan, None
        todo = [(key, lower(*specs)) for key, (lower, specs) in plan.items()
                if key not in self._compiled]
        if len(todo) > 1 and self.workers > 1:
            with ThreadPoolExecutor(min(self.workers, len(todo))) as pool:
                compiled = list(pool.map(lambda item: item[1].compile(), todo))
        else:
            compiled = [lowered.compile() for _, lowered in todo]
        for (key, _), exe in zip(todo, compiled):
            self._compiled[key] = exe
        return len(todo)

    def distinct(self) -> int:
        """How many executables have been compiled."""
        return len(self._compiled)
