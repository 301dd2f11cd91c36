"""What the benchmarks share: the official code's environment and its availability probe, peak
and current resident memory, and image-size arguments.

Importable from either interpreter — lvae-jax's and the official reference environment's (whose
workers report their memory the same way) — so it uses the standard library only.
"""

from __future__ import annotations

import argparse
import os
import subprocess

#: What a benchmark needs of the official code: torch and its vision stack, and the three zoos.
OFFICIAL_PROBE = ("import torch, torchvision, timm, lvae.models.registry, lvae.models.qarv.zoo, "
                  "lvae.models.qresvae.zoo, lvae.models.rd.zoo")


def official_env(src: str | None, extra: dict | None = None) -> dict:
    """This environment with the official checkout ``src`` first on ``PYTHONPATH`` (its
    ``pip install -e`` is broken) and ``extra`` variables."""
    env = dict(os.environ, **(extra or {}))
    if src:
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def official_available(python: str, src: str | None) -> bool:
    """Whether ``python`` imports the official code (with ``src`` on its path)."""
    try:
        return subprocess.run([python, "-c", OFFICIAL_PROBE], capture_output=True,
                              env=official_env(src), timeout=300).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _status_bytes(field: str) -> int:
    """A ``field: N kB`` line of /proc/self/status in bytes (0 where there is none)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def peak_rss_bytes() -> int:
    """This process's peak resident memory (VmHWM; unlike ``ru_maxrss``, not inherited from a
    forking parent)."""
    return _status_bytes("VmHWM")


def current_rss_bytes() -> int:
    """This process's resident memory now (VmRSS)."""
    return _status_bytes("VmRSS")


def parse_size(text: str) -> tuple[int, int]:
    """``"512x768"`` -> (512, 768): height × width, positive multiples of 64 (an argparse type)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 512x768 (height x width), got "
                                         f"{text!r}") from None
    if h <= 0 or w <= 0 or h % 64 or w % 64:
        raise argparse.ArgumentTypeError(f"height and width must be positive multiples of 64, "
                                         f"got {h}x{w}")
    return h, w
