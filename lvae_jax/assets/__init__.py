"""Data shipped inside the package: the demo model of the offline quickstart."""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent


def demo_model_dir() -> Path:
    """The embedded demo model: a small QARV-shaped model trained by lvae-jax on a handful of
    sample images (see docs/training.md). It shows the tools working offline; it is not one of the
    official models and its compression is far from theirs."""
    d = ASSETS / "demo_model"
    if not (d / "lvae_model.json").is_file():
        raise FileNotFoundError(f"the embedded demo model is missing from {d}; reinstall lvae-jax, or "
                                "pass --ckpt DIR with a converted official model")
    return d
