"""``python -m lvae_jax doctor``: check that an installation can do everything it promises.

Prints one line per check and returns non-zero if any fails: versions, the JAX backend and its
devices, the depthwise-convolution kernel in use, and CompressAI's compiled range coder loaded
without importing the ``compressai`` package (which pins numpy<2).
"""

from __future__ import annotations

# lazy imports: the doctor imports each part it checks inside that check, so that one broken part
# is reported, not raised at import.

import importlib
import sys


def run() -> int:
    failures = 0

    def report(ok: bool, what: str, detail: str = ""):
        nonlocal failures
        failures += not ok
        print(f"[{'ok' if ok else 'FAIL'}] {what}{': ' + detail if detail else ''}")

    import numpy
    report(int(numpy.__version__.split(".")[0]) >= 2, "numpy", numpy.__version__)
    for mod in ("jax", "flax", "optax", "orbax.checkpoint", "torch"):
        try:
            m = importlib.import_module(mod)
            report(True, mod, getattr(m, "__version__", "?"))
        except Exception as e:  # noqa: BLE001 - report anything
            report(False, mod, f"{type(e).__name__}: {e}")
    try:
        import jax
        from lvae_jax.nn.depthwise import depthwise_impl
        report(True, "jax backend", f"{jax.default_backend()} {jax.devices()} "
                                    f"(depthwise conv: {depthwise_impl()})")
    except Exception as e:  # noqa: BLE001
        report(False, "jax backend", str(e))
    try:
        import jax
        from lvae_jax import native
        if native.available():
            report(True, "native CPU kernels", native.describe())
        else:
            # Only the CPU needs them; without them XLA's own (several times slower) kernel is used.
            report(jax.default_backend() != "cpu", "native CPU kernels", native.unavailable_reason())
    except Exception as e:  # noqa: BLE001
        report(False, "native CPU kernels", f"{type(e).__name__}: {e}")
    try:
        from lvae_jax.entropy import coder
        report(True, "CompressAI range coder", coder.self_test())
    except Exception as e:  # noqa: BLE001
        report(False, "CompressAI range coder", f"{type(e).__name__}: {e} (run scripts/setup.sh)")
    print("all checks passed" if not failures else f"{failures} check(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(run())
