"""Flax NNX implementations of the official lossy-vae models."""

from lvae_jax.models.registry import MODELS, get_config, list_models
from lvae_jax.models.specs import ModelConfig
from lvae_jax.models.vae import ForwardOutput, HierarchicalVAE, LatentStats, build_model

__all__ = ["MODELS", "ModelConfig", "HierarchicalVAE", "ForwardOutput", "LatentStats",
           "build_model", "get_config", "list_models"]
