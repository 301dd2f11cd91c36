"""Entropy coding on the host: the official scale/CDF tables (:mod:`~lvae_jax.entropy.tables`)
and CompressAI's rANS coder behind validated calls (:mod:`~lvae_jax.entropy.coder`).

Importing this package is cheap (numpy only); the compiled coder is loaded on first use.
"""

from lvae_jax.entropy.coder import BitstreamError, CoderUnavailableError

__all__ = ["BitstreamError", "CoderUnavailableError"]
