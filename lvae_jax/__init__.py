"""lvae-jax: the official lossy-vae image codecs (QRes-VAE, QARV, the R-D upper-bound model) in
JAX/Flax, with the official weights and bitstreams.

    >>> import lvae_jax
    >>> model = lvae_jax.get_model("qarv_base", pretrained=True)   # the official weights
    >>> codec = lvae_jax.Codec(model)
    >>> codec.compress_file("photo.png", "photo.lvae", lmb=256)
"""

from __future__ import annotations

# lazy imports: `import lvae_jax` stays light (no JAX) until a model or the codec is used.

from lvae_jax import xla_defaults as _xla_defaults

_xla_defaults.apply()

__version__ = "0.1.0"


def get_model(name: str, pretrained=False, *, seed: int = 0, abstract: bool = False, **kwargs):
    """An official model by its official name and arguments, as the official zoo builds it.

    ``get_model("qarv_base", pretrained=True)`` has the official weights: downloaded from the
    authors' Hugging Face repository on first use, verified, converted once into the lvae-jax
    model cache and loaded from there afterwards, with no network
    (:mod:`lvae_jax.checkpoint.pretrained`). ``get_model("qres34m", lmb=64, pretrained=True)``
    picks ``qres34m-lmb64.pt``; ``pretrained="file.pt"`` converts a local official checkpoint.
    Without ``pretrained``: a random initialisation from ``seed`` (``abstract=True``: shapes
    only, no memory).
    """
    if pretrained:
        from lvae_jax.checkpoint.pretrained import load_pretrained
        return load_pretrained(name, pretrained, **kwargs)
    from lvae_jax.models import build_model, get_config
    return build_model(get_config(name, **kwargs), seed=seed, abstract=abstract)


def build_model(config, *, seed: int = 0, abstract: bool = False):
    """Build a :class:`~lvae_jax.models.HierarchicalVAE` from a :class:`ModelConfig`."""
    from lvae_jax.models import build_model as _build
    return _build(config, seed=seed, abstract=abstract)


def load_model(path_or_name, **kwargs):
    """A model directory (from ``python -m convert``, training or the model cache), or an official
    model by name with its official weights (``"qarv_base"``, ``"qres34m-lmb64"``: the names
    ``python -m lvae_jax models`` lists; a directory of that name wins). ``kwargs``: for a
    directory, configuration fields to change (``lmb_range=(16, 2048)``); for a name, the
    official builder's arguments (as :func:`get_model`)."""
    from pathlib import Path
    from lvae_jax.checkpoint.model_dir import load_model as _load
    if Path(path_or_name).is_dir():
        return _load(path_or_name, **kwargs)
    from lvae_jax.checkpoint.pretrained import load_spec
    return load_spec(str(path_or_name), **kwargs)


def list_models():
    from lvae_jax.models import list_models as _lm
    return _lm()


def __getattr__(name):
    # lazy: `import lvae_jax` stays light (no JAX until a model or the codec is used)
    if name == "Codec":
        from lvae_jax.codec import Codec
        return Codec
    raise AttributeError(f"module 'lvae_jax' has no attribute {name!r}")
