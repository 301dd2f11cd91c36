"""Writing files safely: atomically, never over an input, never a partial result.

Every file lvae-jax writes for a user (bitstreams, PNGs, JSON, plots) goes through
:func:`atomic_file` / :func:`atomic_write_bytes` (model directories:
:func:`lvae_jax.checkpoint.orbax_io.save_params`, the same scheme for a directory): the content is
written to a temporary next to the destination, flushed to disk (``fsync``) and renamed over it in
one step, so a kill, a full disk or an exception at any moment leaves the old file (or nothing) or
the complete new one, never a truncated one. :func:`check_output` is the overwrite rule of the
command lines: an existing output needs ``--overwrite``, and an output that *is* one of the inputs
(same inode, whatever the spelling of the path) is refused even then.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


class OutputError(ValueError):
    """An output that must not be written (exists without --overwrite, or is an input)."""


def same_file(a, b) -> bool:
    """Whether two paths name the same existing file (same device and inode)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_output(output, *, overwrite: bool, inputs=(), what: str = "output") -> Path:
    """Refuse an output that exists (unless ``overwrite``) or that is one of ``inputs``."""
    output = Path(output)
    for src in inputs:
        if src is not None and same_file(output, src):
            raise OutputError(f"{what} {output} is the input {src}: refusing to overwrite an input")
    if output.exists() and not overwrite:
        raise OutputError(f"{output} exists (pass --overwrite)")
    if output.is_dir():
        raise OutputError(f"{what} {output} is a directory")
    return output


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path, suffix: str | None = None):
    """``with atomic_file(p) as tmp: write tmp`` — on success ``tmp`` replaces ``p`` atomically
    (after fsync); on any exception ``tmp`` is removed and ``p`` is untouched. ``suffix``: of the
    temporary (default: ``p``'s, so writers that infer a format from it keep working)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix if suffix is None else suffix,
                               dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_bytes(path, data: bytes) -> Path:
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))
