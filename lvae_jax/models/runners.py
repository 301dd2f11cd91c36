"""How a model's blocks run: one hook, :class:`BlockRunner`, and its implementations.

Every block call of :class:`~lvae_jax.models.vae.HierarchicalVAE` goes through a runner,
``run(block, method, *args)`` (``model.prior_step(i, feature, emb, run=...)``), and every other
jitted function of a pass through ``run.call(fn, *args)``. Two implementations:

- :data:`DIRECT` (:class:`Direct`): in the caller's trace — training, evaluation and the codec's
  encoding pass, each compiled as one program;
- :class:`lvae_jax.models.piecewise.Piecewise`: each block as its own compiled executable, shared
  by every block of one structure and input shape — the codec's sequential decoder.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol


class BlockRunner(Protocol):
    """Runs ``block.method(*args)`` and any other function of a pass."""

    def __call__(self, block, method: str, *args) -> Any: ...

    def call(self, fn: Callable, *args) -> Any: ...


class Direct:
    """Blocks and functions run in the caller's trace (one jitted program for a whole pass)."""

    def __call__(self, block, method: str, *args):
        return getattr(block, method)(*args)

    def call(self, fn: Callable, *args):
        return fn(*args)


#: The default runner of every pass.
DIRECT = Direct()
