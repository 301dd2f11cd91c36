"""lvae-jax: the official lossy-vae image codecs (QRes-VAE, QARV, the R-D upper-bound model) in
JAX/Flax, with the official weights and bitstreams.

    >>> import lvae_jax
    >>> model = lvae_jax.get_model("qarv_base", lmb_range=(16, 2048))
"""

from __future__ import annotations

from lvae_jax import xla_defaults as _xla_defaults

_xla_defaults.apply()

__version__ = "0.1.0"


def get_model(name: str, *, seed: int = 0, abstract: bool = False, **kwargs):
    """Build an official model (random initialisation) by its official name and arguments.

    ``get_model("qres34m", lmb=64)``, ``get_model("qarv_base", lmb_range=(16, 2048))``.
    ``abstract=True`` returns shapes only (no memory), the target for loading weights.
    Load converted weights with :func:`lvae_jax.load_model`.
    """
    from lvae_jax.models import HierarchicalVAE, get_config
    return build_model(get_config(name, **kwargs), seed=seed, abstract=abstract)


def build_model(config, *, seed: int = 0, abstract: bool = False):
    """Build a :class:`~lvae_jax.models.HierarchicalVAE` from a :class:`ModelConfig`."""
    from flax import nnx
    from lvae_jax.models import HierarchicalVAE
    from lvae_jax.nn.layers import HostInit
    if abstract:
        return nnx.eval_shape(lambda: HierarchicalVAE(config, rngs=HostInit(seed, abstract=True)))
    import jax
    graphdef, state = nnx.split(HierarchicalVAE(config, rngs=HostInit(seed)))
    return nnx.merge(graphdef, jax.device_put(state))  # host arrays -> device, in one transfer


def load_model(path, **kwargs):
    """Load a model saved by ``python -m convert`` or by training (an Orbax checkpoint dir)."""
    from lvae_jax.checkpoint.orbax_io import load_model as _load
    return _load(path, **kwargs)


def list_models():
    from lvae_jax.models import list_models as _lm
    return _lm()
