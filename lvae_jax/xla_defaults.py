"""XLA settings lvae-jax applies before JAX starts (CPU only; opt out with ``LVAE_XLA_DEFAULTS=0``).

``--xla_cpu_experimental_ynn_fusion_type=`` (empty: no YNNPACK library fusions). In jaxlib 0.10,
XLA:CPU hands element-wise fusions to YNNPACK, which materialises every shifted slice of the
depthwise 7×7 convolution and broadcasts its kernel to the full activation size, several times
the temporaries and about twice the time of the same block without the library fusion (figures:
docs/benchmarks.md, "XLA defaults"). The flag only concerns the CPU backend; GPU/TPU are
unaffected.

XLA reads ``XLA_FLAGS`` once, when the first backend starts, so this must run before any JAX
computation: importing :mod:`lvae_jax` does it, and does nothing if the user already chose a value
for the flag or JAX is already running.

:func:`limit_malloc_arenas` (the training entry point calls it): one glibc malloc arena instead of
one per thread. XLA:CPU's thread pool frees and re-allocates the step's multi-GB temporaries every
step; with an arena per thread they stay resident in several arenas (a training step's peak
resident memory drops by about an eighth, its time unchanged; docs/benchmarks.md). The codec's
encode/decode are not helped by it, so importing the package does not apply it.
"""

from __future__ import annotations

import os
import sys

CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=",)


def apply() -> bool:
    """Append :data:`CPU_FLAGS` to ``XLA_FLAGS`` unless opted out, already set, or too late."""
    if os.environ.get("LVAE_XLA_DEFAULTS", "1") == "0":
        return False
    if _backend_started():
        return False
    flags = os.environ.get("XLA_FLAGS", "")
    added = [f for f in CPU_FLAGS if f.split("=")[0] not in flags]
    if added:
        os.environ["XLA_FLAGS"] = " ".join([flags, *added]).strip()
    return bool(added)


def _backend_started() -> bool:
    xb = sys.modules.get("jax._src.xla_bridge")
    return bool(xb is not None and getattr(xb, "_backends", None))


M_ARENA_MAX = -8  # glibc <malloc.h>


def limit_malloc_arenas() -> bool:
    """Cap glibc malloc at ``LVAE_MALLOC_ARENAS`` arenas (default 1; ``0``: leave malloc alone)
    before JAX starts its threads. Does nothing where the user set ``MALLOC_ARENA_MAX`` (glibc
    read it at start-up), JAX is already running, or the C library is not glibc."""
    raw = os.environ.get("LVAE_MALLOC_ARENAS", "1").strip() or "0"
    if not raw.isdigit():
        raise ValueError(f"LVAE_MALLOC_ARENAS must be a whole number of arenas (0: leave malloc "
                         f"alone), got {raw!r}")
    n = int(raw)
    if n <= 0 or os.environ.get("MALLOC_ARENA_MAX") or _backend_started():
        return False
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_ARENA_MAX, n))
    except (OSError, AttributeError):
        return False
