"""``python -m train``: the training command line (the library is :mod:`lvae_jax.training`)."""
