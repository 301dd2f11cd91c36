"""Rate control for variable-rate models: the λ whose file is as large as a target allows.

File size is *not* monotone in λ (a few bytes of range-coder tail, rounding of latents), so a
single bisection like the official ``test-at-target-bytes`` can miss files that exist. The search
first encodes at ``grid`` λ spaced evenly in log λ over the model's range, then bisects (in
log λ) every interval whose ends bracket the target, the most promising first, until a file lands
in ``[target·(1 − tolerance), target]`` or ``max_iter`` encodes are spent. The answer is the
largest file seen that is not above the target (the smallest one seen when every file is too
big); the message says how close it landed and, if the target is out of reach, over which trials.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np


@dataclass
class RateControlResult:
    data: bytes
    lmb: float
    trials: list                   # (λ, bytes) per trial
    within_tolerance: bool
    message: str
    notes: list = field(default_factory=list)   # of the chosen file (see Codec.compress)


@dataclass(frozen=True)
class Search:
    """How far the search goes: ``tolerance`` below the target, ``max_iter`` encodes, a first
    ``grid`` of λ."""
    tolerance: float = 0.02
    max_iter: int = 24
    grid: int = 9


def search(compress: Callable[[float], tuple[bytes, list]], lmb_range, target_bytes: int,
           how: Search = Search()) -> RateControlResult:
    """The file of at most ``target_bytes`` and within the tolerance of it. ``compress(λ)`` ->
    (the file's bytes, its notes); λ goes over ``lmb_range`` (as float32 values)."""
    if target_bytes <= 0:
        raise ValueError(f"the target must be a positive number of bytes, got {target_bytes}")
    files: dict = {}

    def size_at(log_l):
        lmb = float(np.float32(math.exp(log_l)))
        if lmb not in files:
            files[lmb] = compress(lmb)
        return len(files[lmb][0])

    def hit(n):
        return target_bytes * (1 - how.tolerance) <= n <= target_bytes

    def brackets(a, b):
        return min(size_at(a), size_at(b)) <= target_bytes < max(size_at(a), size_at(b))

    lo, hi = (math.log(v) for v in lmb_range)
    points = [lo + (hi - lo) * i / (how.grid - 1) for i in range(how.grid)]
    for p in points:
        size_at(p)
    todo = [(a, b) for a, b in zip(points, points[1:]) if brackets(a, b)]
    while todo and len(files) < how.max_iter and not any(hit(len(d)) for d, _ in files.values()):
        # the bracket whose end under the target is closest to it
        todo.sort(key=lambda ab: -max(n for n in (size_at(ab[0]), size_at(ab[1])) if n <= target_bytes))
        a, b = todo.pop(0)
        if abs(b - a) < 1e-6:
            continue
        m = (a + b) / 2
        size_at(m)
        todo += [ab for ab in ((a, m), (m, b)) if brackets(*ab)]
    return _answer(files, lmb_range, target_bytes, how.tolerance)


def _answer(files: dict, lmb_range, target_bytes: int, tolerance: float) -> RateControlResult:
    trials = sorted((l, len(d)) for l, (d, _) in files.items())
    under = [(l, d) for l, (d, _) in files.items() if len(d) <= target_bytes]
    span = f"λ ∈ [{lmb_range[0]:g}, {lmb_range[1]:g}], {len(trials)} trials"
    if not under:
        lmb, (d, notes) = min(files.items(), key=lambda x: (len(x[1][0]), x[0]))
        return RateControlResult(d, lmb, trials, False,
                                 f"target {target_bytes} B is below the smallest file found for this "
                                 f"image ({len(d)} B at λ = {lmb:g}; {span})", notes)
    lmb, d = max(under, key=lambda x: (len(x[1]), -x[0]))
    ok = target_bytes * (1 - tolerance) <= len(d) <= target_bytes
    msg = f"{len(d)} B at λ = {lmb:g} ({100 * (len(d) - target_bytes) / target_bytes:+.2f} % of the target)"
    if not ok:
        biggest = max(len(v) for v, _ in files.values())
        msg += (f"; target {target_bytes} B is above the largest file found for this image "
                f"({biggest} B; {span})" if biggest <= target_bytes else
                f"; no file found within {100 * tolerance:g} % below the target ({span})")
    return RateControlResult(d, lmb, trials, ok, msg, files[lmb][1])
