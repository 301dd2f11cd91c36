"""XLA settings lvae-jax applies before JAX starts (CPU only; opt out with ``LVAE_XLA_DEFAULTS=0``).

``--xla_cpu_experimental_ynn_fusion_type=`` (empty: no YNNPACK library fusions). In jaxlib 0.10,
XLA:CPU hands element-wise fusions to YNNPACK, which materialises every shifted slice of the
depthwise 7×7 convolution and broadcasts its kernel to the full activation size: a ConvNeXt block
at 128×192×192 then needs 324 MiB of temporaries and 143 ms; without the library fusion 72 MiB
and 65 ms (measured here, 2 threads). Whole models at 512×768: qres34m forward 2.13 s / 3.0 GiB
-> 1.43 s / 1.4 GiB. The flag only concerns the CPU backend; GPU/TPU are unaffected.

XLA reads ``XLA_FLAGS`` once, when the first backend starts, so this must run before any JAX
computation: importing :mod:`lvae_jax` does it, and does nothing if the user already chose a value
for the flag or JAX is already running.
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
