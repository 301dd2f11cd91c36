"""Generative uses of the trained models, as in the official notebooks: unconditional sampling
with temperature, latent interpolation, inpainting (QRes), coarse-to-fine (progressive) decoding,
and estimated R(D) curves of the variable-rate models.

    import jax, lvae_jax
    from lvae_jax import generative as G
    gm = G.GenerativeModel(lvae_jax.load_model("models/qres17m-lmb4"))
    ims = G.sample(gm, jax.random.key(0), n=8, temperature=1.0)      # (8, 64, 64, 3) in [0, 1]
    G.save_grid("samples.png", ims, nrow=8)

Importing this package is cheap: the submodules (and JAX) load on first use. The command line
is :mod:`lvae_jax.generative.cli`.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "GenerativeModel": "sampling", "GenerativeError": "sampling", "Inference": "sampling",
    "as_generative": "sampling", "sample": "sampling", "decode_with_latents": "sampling",
    "decode_prefix": "sampling", "progressive": "sampling", "ProgressiveResult": "sampling",
    "interpolate": "interpolation", "InterpolationResult": "interpolation",
    "interpolation_weights": "interpolation",
    "inpaint": "inpainting", "InpaintResult": "inpainting", "box_slices": "inpainting",
    "mask_box": "inpainting", "latent_keep_masks": "inpainting",
    "estimate_rd_curve": "rd_curve", "lambda_grid": "rd_curve", "official_lambdas": "rd_curve",
    "write_rd_curve": "rd_curve", "PROTOCOLS": "rd_curve",
    "make_grid": "figures", "save_grid": "figures", "save_strip": "figures",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
