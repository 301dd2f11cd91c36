"""Bjøntegaard delta rate and PSNR between two RD curves.

BD-rate (G. Bjøntegaard, VCEG-M33, 2001) is the average bit-rate difference of a test curve
against an anchor at equal quality:

    f_a, f_t = fits of log R as a function of PSNR (anchor, test)
    [lo, hi] = the overlap of the two PSNR ranges
    BD-rate  = (exp( (∫_lo^hi f_t - ∫_lo^hi f_a) / (hi - lo) ) - 1) · 100      [percent]

Negative means the test codec needs fewer bits than the anchor for the same PSNR. BD-PSNR is the
mirror image: fits of PSNR as a function of log R, averaged over the overlapping log-rate range,
in dB (positive: the test codec is better). The base of the logarithm cancels out.

``method`` chooses the fit:

* ``"cubic"`` (default) — one least-squares cubic polynomial per curve, integrated exactly
  (``numpy.polyfit`` / ``numpy.polyint``). This is the definition the official lossy-vae code
  uses for every BD-rate it reports (``lvae/utils/coding.py: bd_rate``, VCEG-M33 style).
* ``"pchip"`` — piecewise cubic Hermite interpolation through the points (the JCT-VC/JVET
  common-test-conditions spreadsheet), via ``scipy.interpolate.PchipInterpolator``.
* ``"akima"`` — Akima interpolation (``scipy.interpolate.Akima1DInterpolator``).

The three differ by a few tenths of a percent on real curves (on the shipped Kodak/Tecnick/CLIC
curves the qres34m BD-rates are −4.09/−4.32/−3.47 % with ``cubic`` and −4.03/−4.53/−3.61 % with
``pchip``), so always say which one a figure used.

This is implemented here rather than with the ``bjontegaard`` package (FAU-LMS, 1.3.0): its
``cubic`` method is the same formula, but the package requires equal point counts by default
(anchors have 36 points, models 8 or 16), imports ``matplotlib.pyplot`` at import time and adds
nothing the few lines below do not. The test suite checks these functions against figures
computed with that package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np

from lvae_jax.evaluation.rd_json import RDCurve

METHODS = ("cubic", "pchip", "akima")
#: Bjøntegaard's cubic needs four points; the interpolating methods are held to the same minimum.
MIN_POINTS = 4

CurveLike = Union[RDCurve, "tuple[Sequence[float], Sequence[float]]"]


class BDError(ValueError):
    """BD metrics cannot be computed for these curves (too few points, no overlap, bad values)."""


@dataclass(frozen=True)
class BDResult:
    """BD-rate (percent) and BD-PSNR (dB) of a test curve against an anchor."""
    bd_rate: float
    bd_psnr: float
    method: str
    psnr_range: tuple[float, float]       # dB, the interval BD-rate averages over
    rate_range: tuple[float, float]       # bpp, the interval BD-PSNR averages over


def bd_rate(*curves, method: str = "cubic") -> float:
    """BD-rate of a test curve against an anchor in percent (negative: the test saves bits).

    ``bd_rate(anchor, test)`` with :class:`RDCurve` objects or ``(rates, psnrs)`` pairs, or
    ``bd_rate(anchor_rates, anchor_psnrs, test_rates, test_psnrs)`` like the official
    ``lvae.utils.coding.bd_rate``. Any rate unit works (bpp, kbps) as long as both curves use the
    same one; point order does not matter. ``method`` is keyword-only.
    """
    anchor, test = _two_curves(curves)
    _check_method(method)
    (ra, pa, la), (rt, pt, lt) = _prepare(anchor, "anchor"), _prepare(test, "test")
    lo, hi = _overlap(pa, pt, la, lt, "PSNR", "dB")
    diff = (_integral(pt, np.log(rt), lo, hi, method)
            - _integral(pa, np.log(ra), lo, hi, method)) / (hi - lo)
    return float((np.exp(diff) - 1.0) * 100.0)


def bd_psnr(*curves, method: str = "cubic") -> float:
    """BD-PSNR of a test curve against an anchor in dB (positive: the test has higher PSNR);
    called like :func:`bd_rate`."""
    anchor, test = _two_curves(curves)
    _check_method(method)
    (ra, pa, la), (rt, pt, lt) = _prepare(anchor, "anchor"), _prepare(test, "test")
    lra, lrt = np.log(ra), np.log(rt)
    lo, hi = _overlap(lra, lrt, la, lt, "log-rate", "")
    return float((_integral(lrt, pt, lo, hi, method) - _integral(lra, pa, lo, hi, method))
                 / (hi - lo))


def compare(*curves, method: str = "cubic") -> BDResult:
    """Both BD metrics and the ranges they average over; called like :func:`bd_rate`."""
    anchor, test = _two_curves(curves)
    (ra, pa, _), (rt, pt, _) = _prepare(anchor, "anchor"), _prepare(test, "test")
    return BDResult(
        bd_rate=bd_rate(anchor, test, method=method), bd_psnr=bd_psnr(anchor, test, method=method),
        method=method,
        psnr_range=(float(max(pa.min(), pt.min())), float(min(pa.max(), pt.max()))),
        rate_range=(float(max(ra.min(), rt.min())), float(min(ra.max(), rt.max()))))


# -------------------------------------------------------------------- internals
def _two_curves(curves: tuple) -> tuple[CurveLike, CurveLike]:
    if len(curves) == 2:
        return curves[0], curves[1]
    if len(curves) == 4:
        return (curves[0], curves[1]), (curves[2], curves[3])
    raise TypeError(f"expected (anchor, test) or (anchor_rates, anchor_psnrs, test_rates, "
                    f"test_psnrs), got {len(curves)} positional arguments (method= is keyword-only)")


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise BDError(f"unknown BD method {method!r}; choose one of {', '.join(METHODS)}")


def _prepare(curve: CurveLike, role: str) -> tuple[np.ndarray, np.ndarray, str]:
    if isinstance(curve, RDCurve):
        label = f"{role} {curve.label!r}"
        rates, psnrs = curve.bpp, curve.psnr
    else:
        label = role
        try:
            rates, psnrs = curve
        except (TypeError, ValueError):
            raise BDError(f"{role}: expected an RDCurve or a (rates, psnrs) pair") from None
    r = np.asarray(rates, dtype=np.float64).reshape(-1)
    p = np.asarray(psnrs, dtype=np.float64).reshape(-1)
    if r.shape != p.shape:
        raise BDError(f"{label}: {r.size} rates but {p.size} PSNR values")
    if r.size < MIN_POINTS:
        raise BDError(f"{label}: has {r.size} points; BD metrics need at least {MIN_POINTS}")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(p))):
        raise BDError(f"{label}: rates and PSNR values must be finite")
    if np.any(r <= 0):
        raise BDError(f"{label}: rates must be > 0 (they are compared on a log scale)")
    order = np.argsort(r, kind="stable")
    if np.any(np.diff(p[order]) < 0) or np.ptp(p) == 0 or np.ptp(r) == 0:
        raise BDError(f"{label}: degenerate curve: PSNR must rise with rate (a falling point or a "
                      "flat curve makes the fit meaningless)")
    return r, p, label


#: The overlap a BD metric averages over must cover at least this share of each curve's span:
#: below it the result is an extrapolation of the fits (figures like −100 % or +1000 %).
MIN_OVERLAP_SHARE = 0.1


def _overlap(xa, xt, la, lt, what: str, unit: str) -> tuple[float, float]:
    lo, hi = max(xa.min(), xt.min()), min(xa.max(), xt.max())
    if hi > lo and (hi - lo) < MIN_OVERLAP_SHARE * min(np.ptp(xa), np.ptp(xt)):
        u = f" {unit}" if unit else ""
        raise BDError(f"the {what} ranges barely overlap ({lo:.4g}–{hi:.4g}{u}, less than "
                      f"{MIN_OVERLAP_SHARE:.0%} of a curve's span): {la} spans "
                      f"{xa.min():.4g}–{xa.max():.4g}{u}, {lt} spans {xt.min():.4g}–{xt.max():.4g}{u}")
    if not hi > lo:
        u = f" {unit}" if unit else ""
        raise BDError(f"the {what} ranges do not overlap: {la} spans "
                      f"{xa.min():.4g}–{xa.max():.4g}{u}, {lt} spans {xt.min():.4g}–{xt.max():.4g}{u}")
    return float(lo), float(hi)


def _integral(x: np.ndarray, y: np.ndarray, lo: float, hi: float, method: str) -> float:
    """∫_lo^hi f(x) dx for the fit ``f`` of ``y(x)`` chosen by ``method``."""
    if method == "cubic":
        antiderivative = np.polyint(np.polyfit(x, y, deg=3))
        return float(np.polyval(antiderivative, hi) - np.polyval(antiderivative, lo))
    if method in ("pchip", "akima"):
        from scipy import interpolate
        order = np.argsort(x, kind="stable")
        xs, ys = x[order], y[order]
        if np.any(np.diff(xs) <= 0):
            raise BDError(f"method {method!r} interpolates through the points and needs distinct "
                          "x values; this curve repeats one (use method='cubic')")
        f = (interpolate.PchipInterpolator(xs, ys) if method == "pchip"
             else interpolate.Akima1DInterpolator(xs, ys))
        return float(f.integrate(lo, hi))
    _check_method(method)
    raise AssertionError(method)
