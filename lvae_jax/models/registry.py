"""Model names -> configurations and the published official weights.

An explicit table (no import-time registration side effects). Unknown names raise an error that
lists the valid ones. The weights are the official PyTorch checkpoints (``{"model": state_dict}``)
the lossy-vae authors published in the Hugging Face repository :data:`OFFICIAL_REPO`; the file
names and which argument picks a file mirror the official zoo (``lvae/models/*/zoo.py``:
``qres34m(lmb=32, pretrained=True)`` loads ``qres34m/qres34m-lmb32.pt``).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

from lvae_jax.models import zoo
from lvae_jax.models.specs import ModelConfig

OFFICIAL_REPO = "duanzh0/my-model-weights"
OFFICIAL_REVISION = "main"


@dataclass(frozen=True)
class WeightsFile:
    """One published checkpoint: its path in :data:`OFFICIAL_REPO`, the builder arguments it was
    trained for, and its spec (``qres34m-lmb64``: the name commands take with ``--model``)."""
    path: str
    spec: str
    args: tuple = ()

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{OFFICIAL_REPO}/resolve/{OFFICIAL_REVISION}/{self.path}"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    build: Callable[..., ModelConfig]
    description: str
    #: the published files: ``{path: value of weights_arg}`` (one file: ``{path: None}``)
    weights: dict
    #: the builder argument that picks a file (QRes: ``lmb``, one file per λ), or None
    weights_arg: str | None = None

    def default(self):
        """The official default of :attr:`weights_arg` (the builder's default)."""
        return inspect.signature(self.build).parameters[self.weights_arg].default

    def files(self) -> list[WeightsFile]:
        out = []
        for path, value in self.weights.items():
            if self.weights_arg is None:
                out.append(WeightsFile(path, self.name))
            else:
                out.append(WeightsFile(path, f"{self.name}-{self.weights_arg}{value:g}",
                                       ((self.weights_arg, value),)))
        return out

    def file_for(self, **kwargs) -> WeightsFile:
        """The file the official zoo loads for these arguments (KeyError if none is published)."""
        files = self.files()
        if not files:
            raise KeyError(f"{self.name} has no published weights (a research fork's model)")
        if self.weights_arg is None:
            return files[0]
        value = kwargs.get(self.weights_arg, self.default())
        for f in files:
            if float(dict(f.args)[self.weights_arg]) == float(value):
                return f
        published = ", ".join(f"{v:g}" for v in self.weights.values())
        raise KeyError(f"no official {self.name} weights for {self.weights_arg}={value:g}; "
                       f"published: {self.weights_arg} ∈ {{{published}}}")


def _qres(prefix: str, lmbs) -> dict:
    return {f"{prefix}-lmb{l}.pt": l for l in lmbs}


MODELS: dict[str, ModelEntry] = {
    "qres34m": ModelEntry(
        "qres34m", zoo.qres34m_config, "QRes-VAE 34M, fixed rate (WACV'23)",
        _qres("qres34m/qres34m", (16, 32, 64, 128, 256, 512, 1024, 2048)), "lmb"),
    "qres34m_lossless": ModelEntry(
        "qres34m_lossless", zoo.qres34m_lossless_config, "QRes-VAE 34M, lossless",
        {"qres34m/qres34m-lossless.pt": None}),
    "qres17m": ModelEntry(
        "qres17m", zoo.qres17m_config, "QRes-VAE 17M for 64×64 faces (CelebA)",
        _qres("qres17m/qres17m", (1, 2, 4, 8, 16, 32, 64, 1024)), "lmb"),
    "qarv_base": ModelEntry(
        "qarv_base", zoo.qarv_base_config, "QARV, variable rate λ ∈ [16, 2048] (TPAMI'23)",
        {"qarv_base-2022-dec-12.pt": None}),
    "rd_model_base": ModelEntry(
        "rd_model_base", zoo.rd_model_base_config,
        "Rate–distortion upper-bound estimator, λ ∈ [4, 2048] (ICIP'23)",
        {"rd_model_base-200k-feb14-2023.pt": None}),
}


def register_model(name: str, build: Callable[..., ModelConfig], description: str) -> ModelEntry:
    """Make ``name`` a model of ``get_config`` / ``python -m train --model`` (a research fork's,
    without published weights: docs/extending.md)."""
    if name in MODELS and MODELS[name].build is not build:
        raise ValueError(f"model {name!r} is already registered")
    MODELS[name] = ModelEntry(name, build, description, {})
    return MODELS[name]


def list_models() -> list[str]:
    return sorted(MODELS)


def _entry(name: str) -> ModelEntry:
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")
    return MODELS[name]


def get_config(name: str, **kwargs) -> ModelConfig:
    """The configuration of an official model, with the official keyword arguments
    (``lmb`` for QRes, ``lmb_range`` for QARV/rd) or any builder argument of
    :mod:`lvae_jax.models.zoo`."""
    return _entry(name).build(**kwargs)


def weights_file(name: str, **kwargs) -> WeightsFile:
    """The published file of ``name`` for the official arguments ``kwargs``."""
    return _entry(name).file_for(**kwargs)


def parse_spec(spec: str) -> tuple[str, dict]:
    """``"qres34m-lmb64"`` -> ``("qres34m", {"lmb": 64})``; ``"qarv_base"`` -> ``("qarv_base", {})``.
    The specs are the published files' names (``python -m lvae_jax models`` lists them)."""
    if spec in MODELS:
        return spec, {}
    for entry in MODELS.values():
        for f in entry.files():
            if f.spec == spec:
                return entry.name, dict(f.args)
    specs = [f.spec for e in MODELS.values() for f in e.files()]
    raise KeyError(f"unknown model {spec!r}; official models: {', '.join(list_models())} "
                   f"(or one file of them: {', '.join(s for s in specs if s not in MODELS)})")
