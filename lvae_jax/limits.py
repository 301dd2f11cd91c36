"""Resource limits: what a file or header may make lvae-jax allocate, checked before allocating.

A bitstream header states an image size in a few bytes; decoding it allocates activations in
proportion. Every decoder and encoder therefore checks the size it is about to work on against

- :data:`MAX_SIDE` pixels per side and :data:`MAX_PIXELS` per image (hard limits of the tools),
- a **memory budget**: :func:`activation_bytes` estimates the peak memory of a forward pass of the
  model at that size from its configuration, and it must fit in :func:`memory_limit` — by default
  80 % of the memory available now (``MemAvailable``), set with ``LVAE_MAX_MEMORY`` (e.g. ``8G``,
  ``512M``, ``0`` = no memory check) or the command lines' ``--max-memory``.

and every file is read through :func:`read_bounded` (at most :data:`MAX_FILE_BYTES`, so that
``/dev/zero`` or a named pipe cannot fill memory).

The estimate is deliberately an upper-bound style count, not a measurement: for each decoder stage
(the stride it runs at, its width and MLP ratio) the float32 elements per input pixel that one
block holds at once — input, the expanded MLP activation, output — and the largest stage wins,
times the batch; plus the image in and out. It is conservative for XLA, which fuses much of it.
"""

from __future__ import annotations

import os
import re

#: Longest side (pixels) any command accepts: the official QARV header stores sides as uint16.
MAX_SIDE = 65535
#: Largest image (pixels): 16384² (≈ 268 Mpx).
MAX_PIXELS = 1 << 28
#: Largest file any command reads (bytes).
MAX_FILE_BYTES = 1 << 30
#: Share of the available memory a single decode or encode may use by default.
DEFAULT_MEMORY_SHARE = 0.8


class ResourceLimitError(ValueError):
    """An input would need more memory (or pixels, or bytes) than allowed; says which and how to
    allow it."""


def parse_bytes(text: str) -> int:
    """``"8G"``, ``"512M"``, ``"1.5GiB"``, ``"1000000"`` -> bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgGtT]?)(i?[bB])?\s*", str(text))
    if not m:
        raise ValueError(f"not a size in bytes: {text!r} (examples: 8G, 512M, 1000000)")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2).lower()]
    return int(float(m.group(1)) * scale)


def _proc_bytes(path: str, field: str) -> int | None:
    """A ``field: N kB`` line of a /proc file, in bytes (None where there is none)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss() -> int:
    """This process's peak resident memory in bytes (``VmHWM`` of /proc/self/status; 0 where
    there is none). Not ``getrusage``'s ``ru_maxrss``: a forked child inherits its parent's."""
    return _proc_bytes("/proc/self/status", "VmHWM") or 0


def available_memory() -> int:
    """Bytes of memory available now (``MemAvailable`` of /proc/meminfo; else physical memory)."""
    avail = _proc_bytes("/proc/meminfo", "MemAvailable")
    if avail is not None:
        return avail
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


_override: int | None = None


def set_memory_limit(limit) -> None:
    """Set the budget for this process: bytes, a string like ``"8G"``, 0 (no check) or None
    (back to the default)."""
    global _override
    _override = None if limit is None else (parse_bytes(limit) if isinstance(limit, str) else int(limit))


def _explicit_limit() -> int | None:
    if _override is not None:
        return _override
    env = os.environ.get("LVAE_MAX_MEMORY")
    return parse_bytes(env) if env else None


def memory_limit() -> int:
    """The memory limit in bytes (0: unchecked): :func:`set_memory_limit`, else
    ``LVAE_MAX_MEMORY`` — a bound on the whole process's peak —, else 80 % of
    :func:`available_memory` — a bound on what an image may add."""
    explicit = _explicit_limit()
    return explicit if explicit is not None else int(DEFAULT_MEMORY_SHARE * available_memory())


def current_rss() -> int:
    """This process's resident memory now, in bytes (``VmRSS``; 0 where there is none)."""
    return _proc_bytes("/proc/self/status", "VmRSS") or 0


def memory_budget() -> tuple[int, int]:
    """-> (bytes an image's coding may add, the limit) (0, 0: unchecked). An explicit limit
    (``--max-memory`` / ``LVAE_MAX_MEMORY``) bounds the process's peak, so what the process
    already holds (the runtime, the model's weights) is taken off it; the default is a share of
    the memory still available, which already excludes it."""
    explicit = _explicit_limit()
    if explicit is None:
        limit = int(DEFAULT_MEMORY_SHARE * available_memory())
        return limit, limit
    if explicit <= 0:
        return 0, 0
    return max(1, explicit - current_rss()), explicit


def budget_words(budget: int, limit: int) -> str:
    """How a refusal names the budget: "the 3.2 GiB allowed" (+ what the process holds)."""
    if budget == limit:
        return f"the {format_gib(limit)} allowed"
    held = current_rss()
    return (f"the {format_gib(max(0, limit - held))} left of the {format_gib(limit)} "
            f"allowed (this process already holds {format_gib(held)})")


def activation_bytes(config, height: int, width: int, batch: int = 1) -> int:
    """Estimated peak bytes of one forward (encode or decode) pass of the model ``config`` on a
    ``batch`` of ``height`` × ``width`` images (padded to the model's stride)."""
    s = config.max_stride
    hp, wp = -(-height // s) * s, -(-width // s) * s
    pixels = hp * wp * batch
    per_pixel = 0.0                       # float32 elements per image pixel, worst stage
    stride = s
    for spec in config.dec_blocks:
        if spec is None:
            continue
        if spec.type == "patch_up":
            stride //= int(getattr(spec, "rate", 2))
            per_pixel = max(per_pixel, (spec.in_ch + spec.out_ch) / (stride * stride))
        else:
            per_pixel = max(per_pixel, _block_elements(spec) / (stride * stride))
    stride = 1
    for spec in config.enc_blocks:
        if spec is None or not hasattr(spec, "type"):
            continue
        if spec.type in ("patch_down", "convnext_down"):
            stride *= int(getattr(spec, "rate", 2))
            per_pixel = max(per_pixel, (spec.in_ch * stride * stride / 4 + spec.out_ch)
                            / (stride * stride))
        else:
            per_pixel = max(per_pixel, _block_elements(spec) / (stride * stride))
    per_pixel += 4 * config.im_channels   # image in, reconstruction out
    return int(4 * pixels * per_pixel)


def _block_elements(spec) -> float:
    """Float32 elements per position one block holds at once: input, MLP expansion, output."""
    width = getattr(spec, "dim", None) or getattr(spec, "width", None) or 0
    return width * (2.0 + float(getattr(spec, "mlp_ratio", 2.0) or 2.0))


def format_gib(n: int) -> str:
    """A byte count for messages: GiB with one decimal, or MiB / KiB / bytes when smaller."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}" if unit == "GiB" else f"{n / scale:.0f} {unit}"
    return f"{int(n)} bytes"


def check_dimensions(height: int, width: int, what: str = "image") -> None:
    """Raise :class:`ResourceLimitError` for an image beyond :data:`MAX_SIDE` or
    :data:`MAX_PIXELS` (no model needed: the tools' hard limits)."""
    h, w = int(height), int(width)
    if max(h, w) > MAX_SIDE or h * w > MAX_PIXELS:
        raise ResourceLimitError(f"{what}: {w}×{h} is larger than lvae-jax handles (at most "
                                 f"{MAX_SIDE} per side and {MAX_PIXELS / 1e6:.0f} Mpx)")


def check_image_size(config, height: int, width: int, *, batch: int = 1, what: str = "image") -> None:
    """Raise :class:`ResourceLimitError` unless a ``batch`` of ``height`` × ``width`` images is
    within the side and pixel limits and its estimated memory within :func:`memory_limit`."""
    h, w = int(height), int(width)
    if h < 1 or w < 1:
        raise ResourceLimitError(f"{what}: invalid size {w}×{h}")
    check_dimensions(h, w, what)
    budget, limit = memory_budget()
    if limit <= 0:
        return
    need = activation_bytes(config, h, w, batch)
    if need > budget:
        raise ResourceLimitError(
            f"{what}: {w}×{h} would need about {format_gib(need)} to code with {config.name} (estimate), "
            f"more than {budget_words(budget, limit)}; allow more with --max-memory SIZE or "
            "LVAE_MAX_MEMORY=SIZE (0 = no check), or use a smaller image")


def _is_stdin(path) -> bool:
    try:
        return os.path.samestat(os.stat(path), os.fstat(0))
    except (OSError, ValueError):
        return False


def read_bounded(path, limit: int | None = None, what: str = "file") -> bytes:
    """The bytes of ``path``, refusing anything longer than ``limit`` (default
    :data:`MAX_FILE_BYTES`) without reading more than ``limit + 1`` bytes. ``-`` (or a path
    that is this process's standard input, such as ``/dev/stdin``) reads the standard input;
    any other non-regular file (a FIFO, a device) is refused before it is opened: opening a FIFO
    with no writer would wait forever, and a device may never end."""
    import stat
    import sys
    limit = MAX_FILE_BYTES if limit is None else int(limit)
    if str(path) == "-" or _is_stdin(path):
        data = sys.stdin.buffer.read(limit + 1)
        if len(data) > limit:
            raise ResourceLimitError(f"{what} on standard input is larger than {limit} bytes")
        return data
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
        raise ResourceLimitError(f"{what} {path} is {kind}: only regular files are read (pipe "
                                 "data to standard input with -)")
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ResourceLimitError(f"{what} {path} is larger than {limit} bytes: not read")
    return data
