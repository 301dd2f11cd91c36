"""Writing files safely: atomically, never over an input, never a partial result.

Every file lvae-jax writes for a user (bitstreams, PNGs, JSON, plots) goes through
:func:`atomic_file` / :func:`atomic_write_bytes` (model directories:
:func:`lvae_jax.checkpoint.model_dir.save_params`, the same scheme for a directory): the content is
written to a temporary next to the destination, flushed to disk (``fsync``) and renamed over it in
one step, so a kill, a full disk or an exception at any moment leaves the old file (or nothing) or
the complete new one, never a truncated one. :func:`check_output` is the overwrite rule of the
command lines: an existing output needs ``--overwrite``, and an output that *is* one of the inputs
(same inode, whatever the spelling of the path) is refused even then.

Only regular files are replaced. An output that is a character device (``/dev/null``) or a FIFO is
written *into*, as ``cp`` does — it is never replaced, and needs no ``--overwrite`` since nothing
is lost; ``-`` is the standard output. Block devices, sockets and directories are refused.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import sys
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


STDOUT = "-"


def is_stdout(path) -> bool:
    """Whether an output path means the standard output (``-``)."""
    return str(path) == STDOUT


def special_kind(path) -> str | None:
    """``"character device"``, ``"FIFO"``, ``"block device"``, ``"socket"`` for an existing
    special file at ``path`` (links followed), else None."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    for test, kind in ((stat.S_ISCHR, "character device"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return kind
    return None


def written_into(path) -> bool:
    """Whether an output is written into rather than replaced: ``-``, a character device, a FIFO."""
    return is_stdout(path) or special_kind(path) in ("character device", "FIFO")


def check_output(output, *, overwrite: bool, inputs=(), what: str = "output") -> Path:
    """Refuse an output that exists (unless ``overwrite``), that is one of ``inputs``, a
    directory, a block device or a socket, or whose folder does not exist. ``-`` (standard
    output), character devices and FIFOs are written into: allowed."""
    output = Path(output)
    if is_stdout(output):
        return output
    kind = special_kind(output)
    if kind in ("block device", "socket"):
        raise OutputError(f"{what} {output} is a {kind}: lvae-jax writes regular files, character "
                          "devices, FIFOs and - (standard output)")
    if kind is not None:
        return output                      # written into, never replaced: nothing is lost
    for src in inputs:
        if src is not None and same_file(output, src):
            raise OutputError(f"{what} {output} is the input {src}: refusing to overwrite an input")
    if output.is_dir():
        raise OutputError(f"{what} {output} is a directory")
    if output.exists() and not overwrite:
        raise OutputError(f"{output} exists (pass --overwrite)")
    if not output.absolute().parent.is_dir():
        raise OutputError(f"{what} {output}: the folder {output.absolute().parent} does not exist "
                          "(create it first)")
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
    temporary (default: ``p``'s, so writers that infer a format from it keep working). ``-``, a
    character device or a FIFO receives the complete content once it is written, and stays what
    it is (module docstring)."""
    path = Path(path)
    if written_into(path):
        with _into_special(path, suffix) as tmp:
            yield tmp
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix if suffix is None else suffix,
                               dir=path.parent)
    tmp = Path(tmp)
    try:
        # mkstemp creates 0600; give the file the mode a plain open() would (an existing
        # destination keeps its own mode)
        try:
            mode = path.stat().st_mode & 0o7777
        except OSError:
            mode = 0o666 & ~_umask()
        os.fchmod(fd, mode)
        os.close(fd)
        fd = None
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        if fd is not None:
            os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def _into_special(path: Path, suffix: str | None):
    """Write to a private temporary, then copy it into ``path`` (``-``: the standard output)."""
    with tempfile.TemporaryDirectory(prefix="lvae-out-") as d:
        tmp = Path(d) / f"out{path.suffix if suffix is None else suffix}"
        yield tmp
        with open(tmp, "rb") as src:
            if is_stdout(path):
                sys.stdout.flush()
                out = sys.__stdout__.buffer
                shutil.copyfileobj(src, out)
                out.flush()
            else:
                with open(path, "wb") as dst:      # into the device or pipe, never replacing it
                    shutil.copyfileobj(src, dst)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_RENAME_EXCHANGE = 2          # linux/fs.h


def _renameat2_exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where
    the kernel, libc or file system cannot."""
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd = -100
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def replace_dir(new, path) -> None:
    """Put the directory ``new`` at ``path`` (same file system), removing what was there. Where
    ``path`` exists the two are swapped atomically (``RENAME_EXCHANGE``), so a kill at any moment
    leaves the old directory or the new one at ``path``; without kernel support, the old one is
    first moved aside (a kill between the two renames leaves it at ``.NAME.old.*/NAME``)."""
    new, path = Path(new), Path(path)
    _fsync_dir(new)
    if not path.exists():
        os.replace(new, path)
    elif _renameat2_exchange(new, path):
        shutil.rmtree(new, ignore_errors=True)        # now the old directory
    else:
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent)) / path.name
        os.replace(path, old)
        try:
            os.replace(new, path)
        except BaseException:
            os.replace(old, path)
            raise
        shutil.rmtree(old.parent, ignore_errors=True)
    _fsync_dir(path.parent)


def atomic_write_bytes(path, data: bytes) -> Path:
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))
