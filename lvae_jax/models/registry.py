"""Model names -> configurations and the published official weights.

An explicit table (no import-time registration side effects). Unknown names raise an error that
lists the valid ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from lvae_jax.models import zoo
from lvae_jax.models.specs import ModelConfig

_HF = "https://huggingface.co/duanzh0/my-model-weights/resolve/main"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    build: Callable[..., ModelConfig]
    description: str
    #: Official PyTorch checkpoints (``{"model": state_dict}``), keyed by a label (λ for QRes).
    weights: dict


MODELS: dict[str, ModelEntry] = {
    "qres34m": ModelEntry(
        "qres34m", zoo.qres34m_config, "QRes-VAE 34M, fixed rate (WACV'23)",
        {f"lmb{l}": f"{_HF}/qres34m/qres34m-lmb{l}.pt" for l in (16, 32, 64, 128, 256, 512, 1024, 2048)}),
    "qres34m_lossless": ModelEntry(
        "qres34m_lossless", zoo.qres34m_lossless_config, "QRes-VAE 34M, lossless",
        {"default": f"{_HF}/qres34m/qres34m-lossless.pt"}),
    "qres17m": ModelEntry(
        "qres17m", zoo.qres17m_config, "QRes-VAE 17M for 64×64 faces (CelebA)",
        {f"lmb{l}": f"{_HF}/qres17m/qres17m-lmb{l}.pt" for l in (1, 2, 4, 8, 16, 32, 64, 1024)}),
    "qarv_base": ModelEntry(
        "qarv_base", zoo.qarv_base_config, "QARV, variable rate λ ∈ [16, 2048] (TPAMI'23)",
        {"default": f"{_HF}/qarv_base-2022-dec-12.pt"}),
    "rd_model_base": ModelEntry(
        "rd_model_base", zoo.rd_model_base_config,
        "Rate–distortion upper-bound estimator, λ ∈ [4, 2048] (ICIP'23)",
        {"default": f"{_HF}/rd_model_base-200k-feb14-2023.pt"}),
}


def list_models() -> list[str]:
    return sorted(MODELS)


def get_config(name: str, **kwargs) -> ModelConfig:
    """The configuration of an official model, with the official keyword arguments
    (``lmb`` for QRes, ``lmb_range`` for QARV/rd) or any builder argument of
    :mod:`lvae_jax.models.zoo`."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")
    return MODELS[name].build(**kwargs)
