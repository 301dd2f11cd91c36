"""The image codec, one straight path (docs/architecture.md):

image -> :mod:`~lvae_jax.codec.engine` (device passes: symbols, indexes, scales) ->
:mod:`~lvae_jax.codec.core` (CompressAI's range coder: strings + :class:`~lvae_jax.codec.records.Checks`)
-> :mod:`~lvae_jax.codec.formats` (the layouts: :mod:`~lvae_jax.codec.container`,
:mod:`~lvae_jax.codec.tiles`, :mod:`~lvae_jax.codec.official`) -> bytes, and back.
:class:`~lvae_jax.codec.api.Codec` is what a user calls."""

from lvae_jax.codec.api import Codec, DecodeResult

__all__ = ["Codec", "DecodeResult"]
