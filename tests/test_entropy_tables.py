"""Official entropy tables and table indexes against CompressAI's own (recorded) results.

The fixture ``tests/fixtures/compressai_tables.npz`` is written by
``scripts/record_compressai_tables.py`` from CompressAI's real ``GaussianConditional`` /
the official ``DiscretizedGaussian`` in a reference environment.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from lvae_jax.entropy import coder, tables as T

FIXTURE = Path(__file__).parent / "fixtures" / "compressai_tables.npz"
NAMES = list(T.SPECS)


@pytest.fixture(scope="module")
def recorded():
    with np.load(FIXTURE) as z:
        return {k: z[k] for k in z.files}


_LIVE_SCRIPT = r"""
import sys, json, numpy as np
out = sys.argv[1]
try:
    import torch
    from compressai.entropy_models import GaussianConditional
except Exception as e:
    print(json.dumps({"error": f"{type(e).__name__}: {e}"})); sys.exit(0)
from lvae_jax.entropy import tables as T
arrays = {}
for name, spec in T.SPECS.items():
    table = torch.from_numpy(np.array(T.official_scale_table(name)))
    if spec.cdf_form == "erf":
        try:
            from lvae.models.entropy_coding import DiscretizedGaussian
        except Exception as e:
            print(json.dumps({"error": f"official lvae package not importable: {e}"})); sys.exit(0)
        g = DiscretizedGaussian(scale_table=table)
    else:
        g = GaussianConditional(None, scale_bound=spec.bound)
        g.update_scale_table(table)
    g.update()
    for k in ("_quantized_cdf", "_offset", "_cdf_length"):
        arrays[f"{name}/{k}"] = getattr(g, k).numpy()
np.savez(out, **arrays)
print(json.dumps({"ok": True}))
"""


@pytest.fixture(scope="module")
def live_compressai(tmp_path_factory):
    """CompressAI's tables built live in a subprocess (its import has side effects on torch and
    fails where compressai is installed without dependencies): (arrays or None, reason)."""
    import subprocess
    import sys
    out = tmp_path_factory.mktemp("live") / "live.npz"
    proc = subprocess.run([sys.executable, "-c", _LIVE_SCRIPT, str(out)], capture_output=True,
                          text=True, timeout=600, cwd=Path(__file__).parents[1])
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return None, f"live check failed to run: {proc.stderr.strip()[-500:]}"
    msg = json.loads(lines[-1])
    if "error" in msg:
        return None, msg["error"]
    with np.load(out) as z:
        return {k: z[k] for k in z.files}, None


@pytest.mark.parametrize("name", NAMES)
def test_tables_equal_compressai(name, recorded, live_compressai):
    """Scale table, bound, quantised CDFs, lengths and offsets equal CompressAI's, bit for bit;
    also against a live CompressAI instance when one can be imported here."""
    t = T.get_tables(name)
    assert t.scale_table.dtype == np.float32
    assert np.array_equal(t.scale_table, recorded[f"{name}/scale_table"])
    assert np.float32(t.bound) == recorded[f"{name}/bound"]
    for key in ("quantized_cdf", "cdf_length", "offset"):
        ours, ref = getattr(t, key), recorded[f"{name}/{key}"]
        assert ours.shape == ref.shape and ours.dtype == np.int32, key
        diff = np.argwhere(ours != ref)
        assert diff.size == 0, f"{name} {key}: {len(diff)} entries differ, first at {diff[:3].tolist()}"
    live, why = live_compressai
    if live is None:
        print(f"{name}: compared with the recorded CompressAI tables (live CompressAI not "
              f"importable here: {why})")
    else:
        assert np.array_equal(t.quantized_cdf, live[f"{name}/_quantized_cdf"])
        assert np.array_equal(t.offset, live[f"{name}/_offset"])
        assert np.array_equal(t.cdf_length, live[f"{name}/_cdf_length"])
        print(f"{name}: compared with the recorded tables and with live CompressAI")


def test_fixture_records_platform_dependence(recorded):
    """The fixture notes that torch's own exp() on the recording machine differs from the
    packaged official values in one entry per table, without changing any CDF row."""
    meta = json.loads(str(recorded["meta"]))
    for name in NAMES:
        assert meta["tables"][name]["native_update_cdf_equal"], name


@pytest.mark.parametrize("name", NAMES)
def test_build_indexes_match_compressai_sweep(name, recorded):
    """numpy and jitted jax.numpy indexes equal CompressAI's build_indexes on a dense sweep
    around every table boundary (exact values, ±1–3 float steps, ±1e-7..1e-5 relative), a
    log-uniform sweep and special values (0, negatives, denormals, ±inf, NaN)."""
    t = T.get_tables(name)
    scales, ref = recorded[f"{name}/sweep_scales"], recorded[f"{name}/sweep_indexes"].astype(np.int32)
    ours = T.build_indexes(scales, t.scale_table, t.bound)
    assert ours.dtype == np.int32
    bad = np.nonzero(ours != ref)[0]
    assert bad.size == 0, f"numpy: scales {scales[bad[:5]]} -> {ours[bad[:5]]}, CompressAI {ref[bad[:5]]}"
    jitted = jax.jit(T.build_indexes_jnp, static_argnums=())
    ours_j = np.asarray(jitted(scales, t.scale_table, t.bound))
    assert ours_j.dtype == np.int32
    bad = np.nonzero(ours_j != ref)[0]
    assert bad.size == 0, f"jnp: scales {scales[bad[:5]]} -> {ours_j[bad[:5]]}, CompressAI {ref[bad[:5]]}"
    assert np.array_equal(t.build_indexes(scales), ours)


def test_build_indexes_numpy_and_jnp_agree_on_random_shapes():
    t = T.get_tables("qres_latent")
    rng = np.random.default_rng(3)
    s = np.exp(rng.uniform(-4, 4, (2, 5, 7, 3))).astype(np.float32)
    s.flat[:4] = [np.nan, np.inf, -1.0, 0.0]
    a = T.build_indexes(s, t.scale_table, t.bound)
    b = np.asarray(jax.jit(lambda x: T.build_indexes_jnp(x, t.scale_table, t.bound))(s))
    assert a.shape == s.shape and np.array_equal(a, b)
    assert a.flat[0] == t.num_tables - 1  # NaN -> last table, as CompressAI
    assert a.flat[2] == a.flat[3] == T.build_indexes(np.float32(t.bound), t.scale_table, t.bound)


def test_qres_bound_makes_low_tables_unreachable():
    """QRes latents bound scales at 0.11 although their table starts at 0.1: tables 0 and 1 are
    never selected (official GaussianConditional(None) default scale_bound)."""
    t = T.get_tables("qres_latent")
    idx = T.build_indexes(np.geomspace(1e-4, 0.2, 1000).astype(np.float32), t.scale_table, t.bound)
    assert idx.min() == 2


def test_boundary_distance():
    t = T.get_tables("qarv_latent")
    thr = t.scale_table[10]
    scales = np.array([thr, thr * np.float32(1.001), np.nan], np.float32)
    d = T.boundary_distance(scales, t.scale_table, t.bound)
    assert d[0] == 0.0
    assert d[1] == pytest.approx(0.001, rel=1e-3)
    assert np.isnan(d[2])
    # A scale exactly at a threshold flips index one float step away; far from thresholds not.
    up = np.nextafter(thr, np.float32(np.inf))
    i0, i1 = T.build_indexes(np.array([thr, up]), t.scale_table, t.bound)
    assert i1 == i0 + 1
    # QRes: thresholds below the bound (0.1, 0.1088) are unreachable and not reported.
    q = T.get_tables("qres_latent")
    assert T.boundary_distance(np.float32(0.1), q.scale_table, q.bound) > 0.05
    # The raw scale counts: QARV's bound is its first threshold; a scale far below it is clamped
    # by every implementation and cannot flip (distance large), one just below can (+1).
    low = np.array([0.02, np.nextafter(np.float32(t.bound), np.float32(0))], np.float32)
    d, flip = T.nearest_threshold(low, t.scale_table, t.bound)
    assert d[0] > 0.5 and d[1] < 1e-6 and flip[1] == 1
    ib = T.build_indexes(np.array([low[1], np.nextafter(np.float32(t.bound), np.float32(1))]),
                         t.scale_table, t.bound)
    assert ib[1] == ib[0] + 1
    _, flip = T.nearest_threshold(scales[:2], t.scale_table, t.bound)
    assert flip[1] == -1


def test_official_scale_tables_are_the_packaged_float32_values():
    raw = json.loads((Path(T.__file__).parent / "scale_tables.json").read_text())["tables"]
    for name, spec in T.SPECS.items():
        table = T.official_scale_table(name)
        assert not table.flags.writeable
        hexes = raw[spec.json_key]["float32_hex"]
        assert [float(v).hex() for v in table] == [float.fromhex(h).hex() for h in hexes]
    assert T.official_scale_table("lossless_pixel").size == 128
    assert T.get_tables("qarv_latent").bound == float(T.official_scale_table("qarv_latent")[0])


def test_get_tables_is_cached_and_immutable():
    a, b = T.get_tables("qarv_latent"), T.get_tables("qarv_latent")
    assert a is b
    with pytest.raises(ValueError):
        a.quantized_cdf[0, 0] = 1
    with pytest.raises(ValueError, match="known: qres_latent, qarv_latent, lossless_pixel"):
        T.get_tables("nope")


def test_standardized_cdf_forms_agree_with_the_normal_cdf():
    from scipy import stats
    v = np.linspace(-6, 6, 101).astype(np.float32)
    for form in ("erf", "erfc"):
        got = T.standardized_cdf(v, form)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, stats.norm.cdf(v), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError):
        T.standardized_cdf(v, "logistic")


@pytest.mark.parametrize("mutate,match", [
    (lambda c, n, o: (c.at_zero(1), n, o), "start at 0"),
    (lambda c, n, o: (c.dup(), n, o), "strictly increasing"),
    (lambda c, n, o: (c.end(65535), n, o), "end at 65536"),
    (lambda c, n, o: (c.arr, n + 50, o), r"cdf_length must lie in \[3"),
    (lambda c, n, o: (c.arr, np.full_like(n, 2), o), r"cdf_length must lie in \[3"),
    (lambda c, n, o: (c.arr.astype(np.float64), n, o), "must be integer"),
    (lambda c, n, o: (c.arr, n[:-1], o), "one entry per table"),
    (lambda c, n, o: (c.arr[:0], n[:0], o[:0]), "non-empty 2-D"),
])
def test_cdf_tables_are_validated(mutate, match):
    """Tables that would crash or misdirect the C++ coder are refused with a clear message."""
    base = T.get_tables("qarv_latent")

    class Edit:
        def __init__(self):
            self.arr = np.array(base.quantized_cdf)

        def at_zero(self, v):
            self.arr[0, 0] = v
            return self.arr

        def dup(self):  # a zero-width symbol: the C++ coder would divide by zero (SIGFPE)
            self.arr[3, 2] = self.arr[3, 1]
            return self.arr

        def end(self, v):
            n = base.cdf_length[5]
            self.arr[5, n - 1] = v
            return self.arr

    cdf, n, o = mutate(Edit(), np.array(base.cdf_length), np.array(base.offset))
    with pytest.raises(ValueError, match=match):
        coder.CdfTables(cdf, n, o)
