"""RD results JSON: the official files round-trip unchanged; bad files fail naming the problem."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lvae_jax.evaluation.rd_json import (RDCurve, RDFormatError, dumps, load_curves, load_rd,
                                         save_rd)
from parity_support import results_dir

OFFICIAL = sorted(results_dir().glob("*/*.json"))


def test_official_files_are_there():
    assert len(OFFICIAL) >= 10, f"expected the official RD curves under {results_dir()}"


@pytest.mark.parametrize("path", OFFICIAL, ids=lambda p: p.name)
def test_official_files_round_trip_unchanged(path, tmp_path):
    original = json.loads(path.read_text())
    curve = load_rd(path)
    assert json.loads(dumps(curve)) == original
    # Same key order and number types (ints stay ints): the serialisations are identical.
    assert json.dumps(curve.to_dict()) == json.dumps(original)
    out = save_rd(curve, tmp_path / path.name)
    assert json.loads(out.read_text()) == original
    assert load_rd(out) == curve


def test_official_spellings_are_understood():
    res = results_dir()
    qarv = load_rd(res / "kodak" / "kodak-qarv_base.json")
    assert (qarv.name, qarv.test_set, len(qarv)) == ("qarv_base", "kodak", 16)
    assert qarv.lambdas[0] == 16.0 and qarv.mse is not None and qarv.ms_ssim is None
    assert set(qarv.meta) == {"platform", "device"}

    vtm = load_rd(res / "tecnick-rgb-1200" / "tecnick-rgb-1200-vtm18.0.json")
    assert (vtm.name, vtm.test_set, len(vtm)) == ("vtm18.0", "tecnick-rgb-1200", 36)
    assert vtm.settings["quality"][:2] == (15, 16) and vtm.mse is None and vtm.lambdas is None

    bare = load_rd(res / "kodak" / "kodak-vtm18.0.json")
    assert bare.name is None and bare.test_set is None and bare.label == "kodak-vtm18.0"

    cai = load_rd(res / "kodak" / "kodak-vtm-compressai.json")
    assert cai.ms_ssim is not None and len(cai.ms_ssim) == 8
    assert set(cai.extra) == {"encoding_time", "decoding_time"}
    assert cai.meta == {"description": "VTM"}


def test_sorted_moves_every_per_point_list_together():
    vtm = load_rd(results_dir() / "tecnick-rgb-1200" / "tecnick-rgb-1200-vtm18.0.json")
    assert vtm.bpp[0] > vtm.bpp[-1]                          # the file is high-rate first
    s = vtm.sorted("bpp")
    assert list(s.bpp) == sorted(vtm.bpp)
    before = dict(zip(vtm.bpp, zip(vtm.psnr, vtm.settings["quality"])))
    after = dict(zip(s.bpp, zip(s.psnr, s.settings["quality"])))
    assert before == after
    assert list(s.sorted("psnr").psnr) == sorted(vtm.psnr)
    with pytest.raises(KeyError, match="lambdas"):
        vtm.sorted("lambdas")


def test_new_curve_uses_the_official_model_spelling(tmp_path):
    c = RDCurve.from_points(
        "mine", [{"bpp": 0.5, "mse": 1e-3, "psnr": 30.0, "ms-ssim": 0.95, "enc_s": 1.5},
                 {"bpp": 0.25, "mse": 2e-3, "psnr": 27.0, "ms-ssim": 0.9, "enc_s": 1.2}],
        test_set="kodak", lambdas=np.array([64.0, 16.0]), meta={"device": "cpu"})
    d = c.to_dict()
    assert list(d) == ["name", "test-set", "device", "lambdas", "results"]
    assert list(d["results"]) == ["bpp", "mse", "psnr", "ms-ssim", "enc_s"]
    assert c.extra == {"enc_s": (1.5, 1.2)}
    back = load_rd(save_rd(c, tmp_path / "mine.json"))
    assert back == c and back.lambdas == (64.0, 16.0)


def test_several_curves_in_one_file(tmp_path):
    a = RDCurve("a", [0.1, 0.2], [30.0, 32.0])
    b = RDCurve("b", [0.1, 0.2], [31.0, 33.0])
    path = save_rd([a, b], tmp_path / "two.json")
    assert isinstance(json.loads(path.read_text()), list)
    assert [c.name for c in load_curves(path)] == ["a", "b"]
    assert load_rd(path, name="b") == b
    with pytest.raises(RDFormatError, match=r"two.json: holds 2 curves \('a', 'b'\)"):
        load_rd(path)
    with pytest.raises(RDFormatError, match="no curves named 'c'"):
        load_rd(path, name="c")


def write(tmp_path, data, name="bad.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


@pytest.mark.parametrize("data,message", [
    ({"name": "x", "results": {"bpp": [0.1, 0.2]}}, r"no 'psnr' list in results"),
    ({"psnr": [30.0]}, r"no 'bpp' list in the top level"),
    ({"name": "x", "results": {"bpp": [0.1, 0.2], "psnr": [30.0]}},
     r"psnr has 1 values but bpp has 2"),
    ({"name": "x", "lambdas": [1, 2, 3], "results": {"bpp": [0.1, 0.2], "psnr": [30.0, 31.0]}},
     r"lambdas has 3 values but bpp has 2"),
    ({"name": "x", "results": {"bpp": [0.1, "0.2"], "psnr": [30.0, 31.0]}},
     r"bpp\[1\] is '0.2', not a number"),
    ({"name": "x", "results": {"bpp": [0.1, -0.2], "psnr": [30.0, 31.0]}},
     r"bpp\[1\] is -0.2; values must be > 0"),
    ('{"results": {"bpp": [0.1, 0.2], "psnr": [30.0, NaN]}}', r"psnr\[1\] is nan; values must be finite"),
    ({"name": "x", "results": {"bpp": [], "psnr": []}}, r"has no points"),
    ({"name": "x", "results": {"bpp": [0.1], "psnr": [30.0], "time": 3.0}},
     r"results.time must be a list"),
    ({"name": "x", "results": [1, 2]}, r"'results' must be an object"),
    ({"name": 3, "results": {"bpp": [0.1], "psnr": [30.0]}}, r"the name must be a string"),
    ({"test-set": "a", "dataset_name": "b", "results": {"bpp": [0.1], "psnr": [30.0]}},
     r"both 'test-set' and 'dataset_name'"),
    ([1, 2], r"bad.json\[0\]: expected a JSON object"),
    ([], r"an empty list holds no RD curve"),
    ("{not json", r"not valid JSON"),
])
def test_invalid_files_name_the_file_and_the_problem(tmp_path, data, message):
    path = write(tmp_path, data)
    with pytest.raises(RDFormatError, match=message) as err:
        load_curves(path)
    assert "bad.json" in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(RDFormatError, match="nope.json: no such file"):
        load_rd(tmp_path / "nope.json")


def test_failed_write_keeps_the_existing_file(tmp_path):
    path = tmp_path / "keep.json"
    path.write_text("precious")
    bad = RDCurve("x", [0.1], [30.0], extra={"t": [float("nan")]})
    with pytest.raises(RDFormatError, match="non-finite"):
        save_rd(bad, path)
    assert path.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.json"]


def test_constructor_validates_and_accepts_arrays():
    c = RDCurve("x", np.array([0.1, 0.2], np.float32), np.array([30.0, 31.0]))
    assert all(type(v) is float for v in c.bpp)
    json.dumps(c.to_dict())
    with pytest.raises(RDFormatError, match="one-dimensional"):
        RDCurve("x", np.ones((2, 2)), [30.0, 31.0])
    with pytest.raises(RDFormatError, match="reserved keys"):
        RDCurve("x", [0.1], [30.0], extra={"psnr": [1.0]})
    with pytest.raises(RDFormatError, match="point 1 has keys"):
        RDCurve.from_points("x", [{"bpp": 0.1, "psnr": 30.0}, {"bpp": 0.2}])
