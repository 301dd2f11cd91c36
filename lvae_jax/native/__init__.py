"""Native XLA:CPU kernels of lvae-jax, called through the XLA FFI (``jax.ffi``).

One kernel so far: the depthwise 'same' convolution (forward and kernel gradient), the operation
that decides the speed of these models on CPU (see :mod:`lvae_jax.nn.depthwise`). It is compiled
from ``depthwise.cc`` by the package's install (``setup.py``, against the XLA FFI headers of the
pinned jaxlib) into ``_lvae_native*.so`` next to this file, loaded with :mod:`ctypes` and
registered as FFI targets for the CPU platform on first use. Nothing is compiled at run time.

:func:`available` tells whether the library is there; :func:`unavailable_reason` says why not.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

#: FFI target names registered with ``jax.ffi.register_ffi_target`` (platform ``cpu``).
DEPTHWISE_FWD = "lvae_depthwise_fwd"
DEPTHWISE_KGRAD = "lvae_depthwise_kgrad"
#: ``lvae_native_abi_version()`` of the library this Python code expects.
ABI_VERSION = 1

_HERE = Path(__file__).resolve().parent


def library_path() -> Path | None:
    """The compiled library next to this file, or None."""
    found = sorted(_HERE.glob("_lvae_native*.so")) + sorted(_HERE.glob("_lvae_native*.pyd"))
    return found[0] if found else None


@functools.lru_cache(maxsize=1)
def _load() -> tuple[bool, str]:
    path = library_path()
    if path is None:
        return False, (f"the native kernels were not built (no _lvae_native*.so in {_HERE}); "
                       "reinstall with scripts/setup.sh (needs a C++17 compiler)")
    try:
        lib = ctypes.CDLL(str(path))
        version = lib.lvae_native_abi_version()
    except (OSError, AttributeError) as e:
        return False, f"{path} cannot be loaded: {e}"
    if version != ABI_VERSION:
        return False, f"{path} has ABI version {version}, this code needs {ABI_VERSION}; reinstall"
    import jax
    for name, symbol in ((DEPTHWISE_FWD, lib.LvaeDepthwiseFwd), (DEPTHWISE_KGRAD, lib.LvaeDepthwiseKgrad)):
        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(symbol), platform="cpu")
    return True, f"loaded from {path}"


def available() -> bool:
    """True when the compiled kernels are present and registered (registers them)."""
    return _load()[0]


def unavailable_reason() -> str | None:
    ok, why = _load()
    return None if ok else why


def describe() -> str:
    return _load()[1]
