"""Light checks of the measurement scripts (benchmarks/codec.py, scripts/cross_implementation.py):
argument parsing, the official-availability probe, and the bookkeeping that turns decodes into
table cells. The measurements themselves are run by hand (docs/benchmarks.md,
docs/cross_implementation.md)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _load(rel: str, name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / rel)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def bench():
    return _load("benchmarks/codec.py", "bench_codec")


@pytest.fixture(scope="module")
def cross():
    return _load("scripts/cross_implementation.py", "cross_implementation")


def test_size_parsing(bench):
    assert bench.parse_size("512x768") == (512, 768)
    assert bench.parse_size("2176X3840") == (2176, 3840)
    for bad in ("512", "512x700", "0x64", "axb", "64x64x64"):
        with pytest.raises(argparse.ArgumentTypeError):
            bench.parse_size(bad)


def test_cli_rejects_bad_arguments(bench, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--size", "100x100"])
    with pytest.raises(SystemExit):
        bench.main(["--models", "rd_model_base"])          # no entropy coder
    with pytest.raises(SystemExit):
        bench.main(["--repeats", "0"])


def test_official_probe_is_false_without_lvae(bench, tmp_path):
    # This interpreter with an empty source dir cannot import the official package.
    assert bench.official_available(sys.executable, str(tmp_path)) is False
    assert bench.official_available(str(tmp_path / "no-python"), None) is False


def test_benchmark_image_has_requested_size(bench, tmp_path):
    what = bench.write_image(tmp_path / "im.npy", (64, 128), None)
    im = np.load(tmp_path / "im.npy")
    assert im.shape == (64, 128, 3) and im.dtype == np.uint8 and im.std() > 10
    assert "64x128" in what


def test_outcome_classification(cross):
    from lvae_jax.entropy.coder import BitstreamError
    o = cross._Outcome()
    expected = np.array([1, 2, 3], np.int32)
    o.judge(lambda: expected.copy(), expected)
    assert o.text() == "exact"
    o.judge(lambda: np.array([1, 2, 4]), expected)

    def fail():
        raise BitstreamError("bad")
    o.judge(fail, expected)
    d = o.as_dict()
    assert (d["exact_blocks"], d["detected_blocks"], d["silent_blocks"], d["wrong_symbols"]) == (1, 1, 1, 1)
    assert "SILENT" in d["result"] and "error in 1" in d["result"]
    with pytest.raises(ValueError):          # anything but a bitstream error is a bug, not an outcome
        o.judge(lambda: (_ for _ in ()).throw(ValueError("x")), expected)


def test_markdown_table_has_one_row_per_case(cross):
    outcome = cross._Outcome().as_dict()
    row = {"model": "qarv_base", "lmb": 256.0, "image": "house256", "size": [256, 256], "symbols": 10,
           "near_boundary": {"1e-05": 2, "1e-06": 1}, "scale_rel_diff": {"max": 3e-6, "median": 1e-7},
           "enc_symbol_diff": 0, "enc_index_diff": 1, "bytes_identical": False,
           "off_to_jax": {"decoder_index_diff": 1, "plain": outcome, "robust_no_crc": outcome,
                          "robust_crc": outcome},
           "jax_to_off": {"decoder_index_diff": 1, "result": "exact"}, "jax_to_jax": {"decoder_index_diff": 0}}
    md = cross.markdown([row, dict(row, model="qres34m", lmb=None)]).splitlines()
    assert len(md) == 4
    assert md[0].count("|") == md[1].count("|") == md[2].count("|") == md[3].count("|")
    assert "| qarv_base | 256 | house256 (256²) | 10 | 2 / 1 |" in md[2]
    assert md[3].startswith("| qres34m |  |")
