"""A few hundred cases of scripts/fuzz_bitstreams.py (the full run is 10,000+ cases).

Every case must end in success or BitstreamError/ValueError — no other exception, crash or hang —
the container must never return altered data, and the C++ decoder's reads must stay inside the
padding (checked by its Python emulation)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fuzz_bitstreams.py"


def _load():
    spec = importlib.util.spec_from_file_location("fuzz_bitstreams", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_fuzz_sample():
    fuzz = _load()
    summary = fuzz.run_fuzz(cases=400, seed=2026, time_limit=30.0)
    print(summary.report())
    assert not summary.failures, summary.report()
    assert summary.cases == 400
    assert set(summary.by_mutation) == set(fuzz.MUTATIONS), "every mutation kind must be exercised"
    assert summary.outcomes["refused"] > 50 and summary.outcomes["ok"] > 10
    assert summary.stats["partial-prefix"] > 0 and summary.stats["coder-verified"] > 0
    assert summary.stats["coder-refused"] > 0 and summary.stats["max-overread-words"] > 0


def test_fuzz_reports_a_crashing_or_hanging_decoder(tmp_path, monkeypatch):
    """The watchdog turns a crash or a hang of a plugged-in whole-file decoder into a reported
    failure of that case and carries on with the next one (here: the first call misbehaves)."""
    fuzz = _load()
    (tmp_path / "bad_decoder.py").write_text(
        "import os, time\n"
        "from pathlib import Path\n"
        "def _first(tag):\n"
        "    marker = Path(os.environ['BAD_DECODER_DIR']) / tag\n"
        "    if marker.exists():\n"
        "        return False\n"
        "    marker.touch()\n"
        "    return True\n"
        "def crash(data):\n"
        "    if _first('crash'):\n"
        "        os.abort()\n"
        "def hang(data):\n"
        "    if _first('hang'):\n"
        "        time.sleep(600)\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("BAD_DECODER_DIR", str(tmp_path))
    crash = fuzz.run_fuzz(cases=30, seed=1, time_limit=20.0, decoder="bad_decoder:crash")
    assert crash.cases == 30 and len(crash.failures) == 1
    assert "worker died" in crash.failures[0]["error"] and "signal 6" in crash.failures[0]["error"]
    hang = fuzz.run_fuzz(cases=30, seed=1, time_limit=2.0, decoder="bad_decoder:hang")
    assert hang.cases == 30 and len(hang.failures) == 1
    assert "time limit" in hang.failures[0]["error"]


def test_fuzz_sample_files_of_real_models():
    """End to end: files written by tiny real models (QARV, QRes lossless) through the readers,
    the coder checks and the whole-file decoder, which must never return another image from a
    corrupted container (scripts/fuzz_models.py)."""
    fuzz = _load()
    summary = fuzz.run_fuzz(cases=150, seed=11, time_limit=60.0,
                            corpus="fuzz_models:build_small_corpus",
                            decoder="fuzz_models:decode_file")
    print(summary.report())
    assert not summary.failures, summary.report()
    assert summary.cases == 150
    assert summary.stats["decoded-unmodified"] > 5 and summary.stats["decoder-refused"] > 50
    assert summary.stats["coder-verified"] > 50 and summary.stats["partial-prefix"] > 0


def test_fuzz_real_models_notices_a_wrong_decoded_image(tmp_path, monkeypatch):
    """The decoder's image check can fail: with the recorded images altered by one level in one
    pixel, every successful decode of an unmodified file is reported."""
    fuzz = _load()
    (tmp_path / "altered_corpus.py").write_text(
        "import fuzz_models\n"
        "def build(seed):\n"
        "    corpus = fuzz_models.build_small_corpus(seed)\n"
        "    for e in corpus:\n"
        "        e.meta['decoded'] = e.meta['decoded'].copy()\n"
        "        e.meta['decoded'][0, 0, 0] = (round(float(e.meta['decoded'][0, 0, 0]) * 255) ^ 1) / 255\n"
        "    return corpus\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    summary = fuzz.run_fuzz(cases=40, seed=11, time_limit=60.0, corpus="altered_corpus:build",
                            decoder="fuzz_models:decode_file")
    assert summary.failures, summary.report()
    assert all("another image" in f["error"] for f in summary.failures), summary.report()
    assert summary.cases == 40


def test_fuzz_sample_of_image_inputs():
    """The image class (scripts/fuzz_images.py): mutated PNG/JPEG/TIFF/GIF/WebP/BMP files and
    forged header sizes through the image loader — each loads as the size its header states or
    is refused, never a crash, a hang or an allocation beyond the harness's memory bound."""
    fuzz = _load()
    summary = fuzz.run_fuzz(cases=400, seed=2026, time_limit=30.0,
                            corpus="fuzz_images:build_corpus", decoder="fuzz_images:load_file")
    print(summary.report())
    assert not summary.failures, summary.report()
    assert set(summary.by_mutation) == set(fuzz.MUTATIONS)
    assert summary.stats["image-unmodified"] > 10 and summary.stats["decoder-refused"] > 50
    assert summary.stats["image-accepted-modified"] > 10
