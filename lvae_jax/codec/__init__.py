"""Image codec: bitstream file formats (:mod:`~lvae_jax.codec.formats` for the official QARV and
QRes files, :mod:`~lvae_jax.codec.container` for the lvae-jax container) and the device passes
that produce and consume the coder symbols (:mod:`~lvae_jax.codec.engine`)."""
