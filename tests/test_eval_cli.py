"""``python -m eval``: bd-rate, plot and baselines end to end; the subcommand registry."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lvae_jax.evaluation.bd_rate import METHODS, bd_rate
from sample_images import images_dir
from lvae_jax.evaluation.plot import legend_label
from lvae_jax.evaluation.rd_json import RDCurve, load_curves, load_rd
from parity_support import results_dir

import eval.__main__ as cli

REPO = Path(__file__).resolve().parents[1]
RESULTS = results_dir()
KODAK = RESULTS / "kodak"


def run(*argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# -------------------------------------------------------------------- process level
def test_help_describes_real_use_and_imports_nothing_heavy():
    proc = subprocess.run([sys.executable, "-m", "eval", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for word in ("bd-rate", "plot", "baselines", "examples:", "kodak/vtm18.0", "anchors"):
        assert word in proc.stdout
    code = ("import sys, eval.__main__ as m; m.build_parser(); "
            "print(sorted(k for k in ('jax', 'matplotlib', 'imagecodecs', 'tensorflow', 'PIL', "
            "'scipy') if k in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_bd_rate_as_a_process():
    proc = subprocess.run([sys.executable, "-m", "eval", "bd-rate", KODAK / "kodak-vtm18.0.json",
                           KODAK / "kodak-qarv_base.json"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "qarv_base" in proc.stdout and "-5.90%" in proc.stdout


# -------------------------------------------------------------------- bd-rate
def test_bd_rate_table(capsys):
    code, out, _ = run("bd-rate", KODAK / "kodak-vtm18.0.json", KODAK / "kodak-qarv_base.json",
                       KODAK / "kodak-qres34m.json", capsys=capsys)
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "-5.90%" in lines["qarv_base"] and "+0.296 dB" in lines["qarv_base"]
    assert "-4.09%" in lines["qres34m"] and "+0.192 dB" in lines["qres34m"]
    assert "method: cubic" in out


def test_bd_rate_json_and_methods(capsys):
    code, out, _ = run("bd-rate", RESULTS / "tecnick-rgb-1200" / "tecnick-rgb-1200-vtm18.0.json",
                       RESULTS / "tecnick-rgb-1200" / "tecnick-rgb-1200-qres34m.json",
                       "--method", "pchip", "--json", capsys=capsys)
    assert code == 0
    data = json.loads(out)
    row, = data["results"]
    assert data["anchor"]["name"] == "vtm18.0" and row["candidate"] == "qres34m"
    assert row["bd_rate"] == pytest.approx(-4.529, abs=1e-3) and row["method"] == "pchip"
    assert cli.BD_METHODS == METHODS


def test_bd_rate_reports_what_cannot_be_computed(tmp_path, capsys):
    few = tmp_path / "few.json"
    few.write_text(json.dumps({"name": "few", "test-set": "kodak",
                               "results": {"bpp": [0.1, 0.2], "psnr": [30.0, 31.0]}}))
    flat = tmp_path / "flat.json"             # PSNR falls with rate at one point: degenerate
    flat.write_text(json.dumps({"name": "flat", "test-set": "kodak", "results": {
        "bpp": [0.1, 0.2, 0.4, 0.8], "psnr": [30.0, 32.0, 31.0, 34.0]}}))
    edge = tmp_path / "edge.json"             # touches the anchor's range only at its top
    edge.write_text(json.dumps({"name": "edge", "test-set": "kodak", "results": {
        "bpp": [1.5, 2.0, 3.0, 4.0], "psnr": [44.0, 46.0, 48.0, 50.0]}}))
    code, out, _ = run("bd-rate", KODAK / "kodak-qarv_base.json", KODAK / "kodak-qres34m.json",
                       few, flat, edge, capsys=capsys)
    assert code == 2
    assert "few" in out and "n/a" in out and "at least 4" in out
    assert "degenerate curve" in out and "barely overlap" in out
    # the valid row is still printed (qres34m needs 1.73 % more bits than qarv_base)
    expected = bd_rate(load_rd(KODAK / "kodak-qarv_base.json"), load_rd(KODAK / "kodak-qres34m.json"))
    assert f"{expected:+.2f}%" in out and expected == pytest.approx(1.73, abs=0.01)


def test_bd_rate_refuses_another_test_set(tmp_path, capsys):
    code, _, err = run("bd-rate", "kodak/vtm18.0", "clic2022-test/qarv_base", capsys=capsys)
    assert code == 2 and "test set" in err and "--allow-mixed-test-sets" in err
    code, out, _ = run("bd-rate", "kodak/vtm18.0", "clic2022-test/qarv_base",
                       "--allow-mixed-test-sets", capsys=capsys)
    assert code == 0 and "%" in out


def test_bd_rate_bad_input(tmp_path, capsys):
    bad = tmp_path / "broken.json"
    bad.write_text("{")
    code, _, err = run("bd-rate", bad, KODAK / "kodak-qres34m.json", capsys=capsys)
    assert code == 2 and "broken.json: not valid JSON" in err
    several = tmp_path / "two.json"
    several.write_text(json.dumps([load_rd(KODAK / "kodak-qres34m.json").to_dict(),
                                   load_rd(KODAK / "kodak-qarv_base.json").to_dict()]))
    code, _, err = run("bd-rate", several, KODAK / "kodak-vtm18.0.json", capsys=capsys)
    assert code == 2 and "--anchor-name" in err
    code, out, _ = run("bd-rate", several, KODAK / "kodak-qarv_base.json", "--anchor-name",
                       "qres34m", capsys=capsys)
    assert code == 0 and "anchor: qres34m" in out


# -------------------------------------------------------------------- plot
def test_plot_writes_a_png(tmp_path, capsys):
    out_png = tmp_path / "figs" / "kodak.png"
    code, out, _ = run("plot", out_png, KODAK / "kodak-qarv_base.json", KODAK / "kodak-qres34m.json",
                       "--anchor", KODAK / "kodak-vtm18.0.json",
                       "--anchor", KODAK / "kodak-vtm-compressai.json", capsys=capsys)
    assert code == 0 and str(out_png) in out
    with Image.open(out_png) as im:
        assert im.format == "PNG" and im.size[0] > 500
        pixels = np.asarray(im.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10      # not a blank canvas


def test_plot_needs_something_to_draw(tmp_path, capsys):
    code, _, err = run("plot", tmp_path / "x.png", capsys=capsys)
    assert code == 2 and "at least one CURVE.json" in err
    assert not (tmp_path / "x.png").exists()


def test_legend_labels_carry_bd_rates():
    vtm, qarv = load_rd(KODAK / "kodak-vtm18.0.json"), load_rd(KODAK / "kodak-qarv_base.json")
    assert legend_label(qarv, vtm, "cubic") == "qarv_base (BD-rate -5.90 %)"
    assert legend_label(qarv, None, "cubic") == "qarv_base"
    assert legend_label(vtm, vtm, "cubic", "BD anchor") == "kodak-vtm18.0 (BD anchor)"
    few = RDCurve("few", [0.1, 0.2], [30.0, 31.0])
    assert legend_label(few, vtm, "cubic") == "few (BD-rate n/a)"


# -------------------------------------------------------------------- baselines
@pytest.fixture
def image_dir(tmp_path):
    d = tmp_path / "mini-set"
    d.mkdir()
    for name in ("cat128.png", "rocket128.png"):
        shutil.copy(images_dir() / name, d / name)
    return d


def test_baselines_end_to_end(image_dir, tmp_path, capsys):
    out_json = tmp_path / "out" / "classical.json"
    code, out, err = run("baselines", image_dir, "--out", out_json, "--codecs", "jpeg,webp",
                         "--qualities", "30", "70", capsys=capsys)
    assert code == 0, err
    curves = load_curves(out_json)
    assert [c.name for c in curves] == ["jpeg", "webp"]
    assert all(c.test_set == "mini-set" and c.settings["quality"] == (30, 70) for c in curves)
    assert "cat128.png" in err and "wrote" in out
    # and the written file feeds the other subcommands
    code, out, _ = run("plot", tmp_path / "b.png", "--anchor", out_json, capsys=capsys)
    assert code == 0


def test_baselines_single_codec_writes_one_object(image_dir, tmp_path, capsys):
    out_json = tmp_path / "jpeg.json"
    code, _, _ = run("baselines", image_dir, "--out", out_json, "--codecs", "jpeg",
                     "--qualities", "50", "--test-set", "mine", "--quiet", capsys=capsys)
    assert code == 0
    data = json.loads(out_json.read_text())
    assert isinstance(data, dict) and data["name"] == "jpeg" and data["test-set"] == "mine"


def test_baselines_skips_unavailable_codecs(image_dir, tmp_path, capsys, monkeypatch):
    import imagecodecs
    from types import SimpleNamespace
    monkeypatch.setattr(imagecodecs, "AVIF", SimpleNamespace(available=False))
    code, _, err = run("baselines", image_dir, "--out", tmp_path / "r.json", "--codecs",
                       "avif,jpeg", "--qualities", "50", "--quiet", capsys=capsys)
    assert code == 0 and "skipping avif" in err
    assert [c.name for c in load_curves(tmp_path / "r.json")] == ["jpeg"]
    code, _, err = run("baselines", image_dir, "--out", tmp_path / "s.json", "--codecs", "avif",
                       capsys=capsys)
    assert code == 2 and "none of the requested codecs" in err
    assert not (tmp_path / "s.json").exists()


def test_baselines_bad_input(image_dir, tmp_path, capsys):
    code, _, err = run("baselines", image_dir, "--out", tmp_path / "r.json", "--codecs", "gif",
                       capsys=capsys)
    assert code == 2 and "unknown codec" in err
    code, _, err = run("baselines", tmp_path / "nowhere", "--out", tmp_path / "r.json",
                       capsys=capsys)
    assert code == 2 and "no such folder" in err
    code, _, err = run("baselines", image_dir, "--out", tmp_path / "r.json", "--codecs", "jpeg",
                       "--qualities", "120", capsys=capsys)
    assert code == 2 and "quality 120" in err


# -------------------------------------------------------------------- registry
def test_registry_holds_the_real_commands_only():
    assert list(cli.COMMANDS) == ["bd-rate", "anchors", "plot", "baselines", "rd", "estimate", "speed"]
    for name, cmd in cli.COMMANDS.items():
        assert cmd.help and cmd.run.__doc__, name


def test_a_new_subcommand_is_one_registered_function(capsys):
    try:
        @cli.command("echo-test", "print a word", cli.arg("word"), cli.arg("--times", type=int,
                                                                              default=1))
        def echo(args) -> int:
            """Print WORD."""
            print(args.word * args.times)
            return 0

        assert run("echo-test", "ab", "--times", "2", capsys=capsys)[:2] == (0, "abab\n")
        with pytest.raises(ValueError, match="registered twice"):
            cli.command("echo-test", "again")(echo)
    finally:
        cli.COMMANDS.pop("echo-test", None)


# -------------------------------------------------------------------- packaged official results
def test_anchors_lists_the_packaged_results(capsys):
    from lvae_jax.evaluation.official_results import TEST_SETS, names, resolve
    code, out, _ = run("anchors", capsys=capsys)
    assert code == 0
    for test_set in TEST_SETS:
        assert f"{test_set}/vtm18.0" in out
        assert load_rd(resolve(f"{test_set}/vtm18.0")).bpp       # figures, in the official schema
    assert set(names()) <= set(out.split())


def test_bd_rate_by_name_equals_by_path(capsys):
    code, by_name, _ = run("bd-rate", "kodak/vtm18.0", "kodak/qarv_base", capsys=capsys)
    assert code == 0
    code, by_path, _ = run("bd-rate", results_dir() / "kodak" / "kodak-vtm18.0.json",
                           results_dir() / "kodak" / "kodak-qarv_base.json", capsys=capsys)
    assert code == 0 and by_name.split("\n")[1:] == by_path.split("\n")[1:]


def test_unknown_anchor_fails_before_any_work(image_dir, tmp_path, capsys, monkeypatch):
    def no_work(*a, **k):
        raise AssertionError("a model was loaded before the anchor was checked")
    monkeypatch.setattr(cli, "_load_models", no_work)
    code, _, err = run("rd", "--ckpt", tmp_path / "nope", image_dir, "--anchor", "kodak/vtm99",
                       capsys=capsys)
    assert code == 2 and "kodak/vtm99" in err and "kodak/vtm18.0" in err
