"""Builds lvae-jax's native XLA:CPU kernels (``lvae_jax/native``); everything else is in
pyproject.toml.

The kernels are compiled against the XLA FFI headers shipped with the pinned jaxlib (a build
requirement). They are a plain shared library loaded with ctypes (no Python C API). If no C++17
compiler is available the package still installs — lvae-jax then falls back to XLA's own
depthwise convolution on CPU, several times slower, and ``python -m lvae_jax doctor`` says so.
"""

import importlib.util
import os
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def _ffi_include() -> str:
    spec = importlib.util.find_spec("jaxlib")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("jaxlib (a build requirement) is not installed in the build environment")
    include = Path(list(spec.submodule_search_locations)[0]) / "include"
    if not (include / "xla" / "ffi" / "api" / "ffi.h").is_file():
        raise RuntimeError(f"no XLA FFI headers under {include}")
    return str(include)


class BuildNative(build_ext):
    """Compile the native kernels; a failure is a warning, not a failed install."""

    def build_extension(self, ext):
        try:
            ext.include_dirs.append(_ffi_include())
            super().build_extension(ext)
        except Exception as e:  # noqa: BLE001 - any compiler problem
            if os.environ.get("LVAE_REQUIRE_NATIVE") == "1":
                raise
            print(f"WARNING: lvae-jax native kernels not built ({e}); the CPU falls back to XLA's "
                  "depthwise convolution (slower). Set LVAE_REQUIRE_NATIVE=1 to make this an error.",
                  file=sys.stderr)

    def get_ext_filename(self, ext_name):
        # A plain shared library named _lvae_native.so (loaded with ctypes, not imported).
        return os.path.join(*ext_name.split(".")) + ".so"


native = Extension(
    "lvae_jax.native._lvae_native",
    sources=["lvae_jax/native/depthwise.cc"],
    depends=["lvae_jax/native/depthwise_kernels.inc"],
    language="c++",
    extra_compile_args=["-O3", "-std=c++17", "-fno-math-errno", "-Wno-psabi", "-Wno-attributes"],
)

setup(ext_modules=[native], cmdclass={"build_ext": BuildNative})
