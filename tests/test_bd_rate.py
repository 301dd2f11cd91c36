"""BD-rate / BD-PSNR: hand-computed cases and the shipped official RD curves."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lvae_jax.evaluation.bd_rate import METHODS, BDError, bd_psnr, bd_rate, compare
from lvae_jax.evaluation.rd_json import RDCurve, load_rd
from parity_support import results_dir

RESULTS = results_dir()
SETS = ("kodak", "tecnick-rgb-1200", "clic2022-test")


def curve(ds: str, method: str) -> RDCurve:
    return load_rd(RESULTS / ds / f"{ds}-{method}.json")


# Reference figures computed by an independent implementation, the `bjontegaard` package
# (FAU-LMS) 1.3.0, with require_matching_points=False; the 'cubic' BD-rates are also what the
# official lvae.utils.coding.bd_rate returns (checked to 9 decimals).
# (test set, model, method, BD-rate %, BD-PSNR dB) against VTM 18.0.
REFERENCE = [
    ("kodak", "qarv_base", "cubic", -5.898864992, 0.296481299),
    ("kodak", "qarv_base", "pchip", -5.894316479, 0.307256580),
    ("kodak", "qarv_base", "akima", -5.894344973, 0.307271664),
    ("kodak", "qres34m", "cubic", -4.086374791, 0.191589807),
    ("kodak", "qres34m", "pchip", -4.029611633, 0.205679396),
    ("kodak", "qres34m", "akima", -4.037053630, 0.206052649),
    ("tecnick-rgb-1200", "qarv_base", "cubic", -8.938101912, 0.416138134),
    ("tecnick-rgb-1200", "qarv_base", "pchip", -8.875652687, 0.413230482),
    ("tecnick-rgb-1200", "qarv_base", "akima", -8.875661131, 0.413227545),
    ("tecnick-rgb-1200", "qres34m", "cubic", -4.319105244, 0.192434072),
    ("tecnick-rgb-1200", "qres34m", "pchip", -4.529086511, 0.204231387),
    ("tecnick-rgb-1200", "qres34m", "akima", -4.530758939, 0.204043330),
    ("clic2022-test", "qarv_base", "cubic", -6.913781162, 0.349877746),
    ("clic2022-test", "qarv_base", "pchip", -6.873987091, 0.348813110),
    ("clic2022-test", "qarv_base", "akima", -6.873590691, 0.348767838),
    ("clic2022-test", "qres34m", "cubic", -3.471491603, 0.172784864),
    ("clic2022-test", "qres34m", "pchip", -3.611361916, 0.182681706),
    ("clic2022-test", "qres34m", "akima", -3.638866723, 0.183408156),
]


@pytest.mark.parametrize("ds,model,method,ref_rate,ref_psnr", REFERENCE)
def test_shipped_curves_match_independent_implementation(ds, model, method, ref_rate, ref_psnr):
    anchor, test = curve(ds, "vtm18.0"), curve(ds, model)
    assert bd_rate(anchor, test, method=method) == pytest.approx(ref_rate, abs=1e-7)
    assert bd_psnr(anchor, test, method=method) == pytest.approx(ref_psnr, abs=1e-7)


def test_qarv_base_matches_published_figures():
    # lvae/models/qarv/README.md: Kodak -5.9 %, Tecnick -8.9 %, CLIC -6.9 % w.r.t. VTM 18.0.
    got = [bd_rate(curve(ds, "vtm18.0"), curve(ds, "qarv_base")) for ds in SETS]
    assert got == pytest.approx([-5.9, -8.9, -6.9], abs=0.05)


def test_three_set_averages_match_published_figures():
    # README.md: BD-rate averaged on Kodak, Tecnick, CLIC: qres34m -3.95 %, qarv_base -7.26 %.
    qres = np.mean([bd_rate(curve(ds, "vtm18.0"), curve(ds, "qres34m")) for ds in SETS])
    qarv = np.mean([bd_rate(curve(ds, "vtm18.0"), curve(ds, "qarv_base")) for ds in SETS])
    assert qres == pytest.approx(-3.95, abs=0.015)
    assert qarv == pytest.approx(-7.26, abs=0.015)


def test_qres34m_per_set_figures_are_the_piecewise_cubic_ones():
    # The per-set qres34m figures -4.0 / -4.5 / -3.6 % come out with the JVET piecewise-cubic
    # fit; the official cubic fit gives -4.09 / -4.32 / -3.47 % (whose mean is the README's -3.95).
    pchip = [bd_rate(curve(ds, "vtm18.0"), curve(ds, "qres34m"), method="pchip") for ds in SETS]
    cubic = [bd_rate(curve(ds, "vtm18.0"), curve(ds, "qres34m"), method="cubic") for ds in SETS]
    assert pchip == pytest.approx([-4.0, -4.5, -3.6], abs=0.05)
    assert cubic[1] > -4.4 and cubic[2] > -3.5


def test_compressai_vtm_anchor_gives_nearly_the_same_kodak_figures():
    anchor = curve("kodak", "vtm-compressai")
    assert bd_rate(anchor, curve("kodak", "qarv_base")) == pytest.approx(-5.88, abs=0.01)
    assert bd_rate(anchor, curve("kodak", "qres34m")) == pytest.approx(-4.08, abs=0.01)


# -------------------------------------------------------------------- hand-computed math
PSNR = np.linspace(28.0, 42.0, 9)
RATE = np.exp(0.002 * (PSNR - 35.0) ** 3 + 0.2 * (PSNR - 35.0) - 0.5)


@pytest.mark.parametrize("method", METHODS)
def test_curve_against_itself_is_zero(method):
    assert bd_rate((RATE, PSNR), (RATE, PSNR), method=method) == pytest.approx(0.0, abs=1e-12)
    assert bd_psnr((RATE, PSNR), (RATE, PSNR), method=method) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_rates_scaled_by_0_9_give_minus_ten_percent(method):
    assert bd_rate((RATE, PSNR), (0.9 * RATE, PSNR), method=method) == pytest.approx(-10.0, abs=1e-9)
    assert bd_rate((0.9 * RATE, PSNR), (RATE, PSNR), method=method) == pytest.approx(100 / 9, abs=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_psnr_shifted_by_half_a_db_gives_half_a_db(method):
    assert bd_psnr((RATE, PSNR), (RATE, PSNR + 0.5), method=method) == pytest.approx(0.5, abs=1e-9)
    assert bd_rate((RATE, PSNR), (RATE, PSNR + 0.5), method=method) < 0


def test_cubic_integral_over_the_overlap_only():
    # Anchor log-rate a(p) is a cubic on [28, 42]; the test curve is a(p) + 0.05 - 0.01 (p - 36)
    # sampled on [30, 44]. Both are cubics, so the fits are exact; over the overlap [30, 42] the
    # linear term averages to 0 and BD-rate = exp(0.05) - 1.
    p_test = np.linspace(30.0, 44.0, 7)
    a = lambda p: 0.002 * (p - 35.0) ** 3 + 0.2 * (p - 35.0) - 0.5
    r_test = np.exp(a(p_test) + 0.05 - 0.01 * (p_test - 36.0))
    got = bd_rate((RATE, PSNR), (r_test, p_test))
    assert got == pytest.approx((math.exp(0.05) - 1) * 100, abs=1e-8)
    assert compare((RATE, PSNR), (r_test, p_test)).psnr_range == pytest.approx((30.0, 42.0))


@pytest.mark.parametrize("method", METHODS)
def test_point_order_does_not_matter(method):
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(PSNR))
    t_rate, t_psnr = 0.8 * RATE[::-1], PSNR[::-1] + 0.2
    ref = bd_rate((RATE, PSNR), (t_rate, t_psnr), method=method)
    assert bd_rate((RATE[perm], PSNR[perm]), (t_rate, t_psnr), method=method) == pytest.approx(ref, abs=1e-9)


def test_rate_unit_cancels():
    test = (0.93 * RATE, PSNR + 0.1)
    ref = bd_rate((RATE, PSNR), test)
    assert bd_rate((RATE * 768 * 512 / 1000, PSNR), (test[0] * 768 * 512 / 1000, test[1])) == \
        pytest.approx(ref, abs=1e-9)


def test_worse_codec_is_positive():
    assert bd_rate((RATE, PSNR), (1.25 * RATE, PSNR)) == pytest.approx(25.0, abs=1e-9)


# -------------------------------------------------------------------- errors
def test_too_few_points():
    with pytest.raises(BDError, match="3 points.*at least 4"):
        bd_rate((RATE, PSNR), (RATE[:3], PSNR[:3]))
    with pytest.raises(BDError, match="anchor 'tiny'.*at least 4"):
        bd_rate(RDCurve("tiny", RATE[:2], PSNR[:2]), (RATE, PSNR))


def test_no_overlap():
    with pytest.raises(BDError, match="PSNR ranges do not overlap"):
        bd_rate((RATE, PSNR), (RATE, PSNR + 20.0))
    with pytest.raises(BDError, match="log-rate ranges do not overlap"):
        bd_psnr((RATE, PSNR), (RATE * 1000.0, PSNR))


def test_bad_inputs():
    with pytest.raises(BDError, match="unknown BD method 'spline'"):
        bd_rate((RATE, PSNR), (RATE, PSNR), method="spline")
    with pytest.raises(BDError, match="rates must be > 0"):
        bd_rate((RATE, PSNR), (RATE - RATE[3], PSNR))
    with pytest.raises(BDError, match="9 rates but 8 PSNR"):
        bd_rate((RATE, PSNR), (RATE, PSNR[:8]))
    with pytest.raises(BDError, match="finite"):
        bd_rate((RATE, PSNR), (RATE, np.where(PSNR > 40, np.inf, PSNR)))
    with pytest.raises(BDError, match="RDCurve or a"):
        bd_rate((RATE, PSNR), 3.0)
    repeated = PSNR.copy()
    repeated[1] = repeated[0]
    with pytest.raises(BDError, match="distinct"):
        bd_rate((RATE, PSNR), (RATE, repeated), method="pchip")
    bd_rate((RATE, PSNR), (RATE, repeated), method="cubic")   # a least-squares fit takes it
    falling = PSNR.copy()
    falling[4], falling[5] = falling[5], falling[4]
    with pytest.raises(BDError, match="degenerate curve"):
        bd_rate((RATE, PSNR), (RATE, falling))
    with pytest.raises(BDError, match="degenerate curve"):
        bd_rate((RATE, PSNR), (RATE, np.full_like(PSNR, 35.0)))


def test_official_four_array_call_form():
    # lvae.utils.coding.bd_rate(r1, psnr1, r2, psnr2): anchor first.
    anchor, test = curve("kodak", "vtm18.0"), curve("kodak", "qres34m")
    four = bd_rate(anchor.bpp, anchor.psnr, test.bpp, test.psnr)
    assert four == bd_rate(anchor, test) == bd_rate((anchor.bpp, anchor.psnr), (test.bpp, test.psnr))
    assert bd_psnr(anchor.bpp, anchor.psnr, test.bpp, test.psnr, method="pchip") == \
        bd_psnr(anchor, test, method="pchip")
    with pytest.raises(TypeError, match="keyword-only"):
        bd_rate(anchor, test, "pchip")
