"""Process-level JAX settings used by the command lines.

:func:`enable_compilation_cache` turns on JAX's persistent compilation cache, so that the second
run of a command (a decode is a dozen compiled steps per image size) skips XLA compilation. The
directory is ``$LVAE_CACHE_DIR`` or ``~/.cache/lvae_jax/xla``; ``LVAE_CACHE_DIR=off`` disables it.
Library code never calls this: it is the application's choice.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path | None:
    """The compilation-cache folder: ``$LVAE_CACHE_DIR`` or ``~/.cache/lvae_jax/xla``; None for
    ``LVAE_CACHE_DIR=off``. Its parent holds lvae-jax's other per-user records."""
    where = os.environ.get("LVAE_CACHE_DIR") or Path.home() / ".cache" / "lvae_jax" / "xla"
    return None if str(where).lower() == "off" else Path(where)


def enable_compilation_cache(path: str | os.PathLike | None = None) -> Path | None:
    if path:
        where = None if str(path).lower() == "off" else Path(path)
    else:
        where = cache_dir()
    if where is None:
        return None
    import jax
    try:
        where.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(where))
    # every program, also the sub-second ones: a decode is a dozen small steps per image size
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return where

