"""``python -m eval rd / estimate / speed`` and :mod:`lvae_jax.evaluation.model_eval` on tiny
random models and small images: the results schema, bpp from the file bytes, the PSNR definition
(per image, then averaged) against an independent computation, lossless exactness, λ lists and
counts, the error paths, the plot, and the speed command's wiring to benchmarks/codec.py."""

from __future__ import annotations

import importlib.util
import io
import json
import math
import sys
from pathlib import Path

import numpy as np

from lvae_jax.entropy import hints
import pytest
from PIL import Image

import eval.__main__ as cli
from lvae_jax.evaluation import model_eval as me
from lvae_jax.evaluation.rd_json import load_rd
from lvae_jax.models import zoo
import tiny_models as T
from parity_support import REPO, results_dir

VTM_KODAK = results_dir() / "kodak" / "kodak-vtm18.0.json"
QARV_KODAK = results_dir() / "kodak" / "kodak-qarv_base.json"

TINY_QARV = T.config_args("qarv")
#: QRes with two latent blocks (at strides 64 and 4) and no encoder blocks: half the compilation.
TINY_QRES = T.config_args("qres2", name="tiny_qres")
del TINY_QRES["lmb"]
TINY_LOSSLESS = T.config_args("lossless2")
random_model = T.drawn


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Model directories: tiny QARV, two tiny QRes (λ 16 and 64), tiny QRes lossless."""
    from lvae_jax.checkpoint.model_dir import save_model
    from lvae_jax.runtime import enable_compilation_cache
    enable_compilation_cache()     # as the command line does: one compilation per shape
    root = tmp_path_factory.mktemp("models")
    configs = {"qarv": zoo.qarv_base_config(**TINY_QARV),
               "qres16": zoo.qres34m_config(lmb=16, **TINY_QRES),
               "qres64": zoo.qres34m_config(lmb=64, **TINY_QRES),
               "lossless": zoo.qres34m_lossless_config(**TINY_LOSSLESS)}
    return {k: save_model(random_model(c, seed=i), root / k) for i, (k, c) in enumerate(configs.items())}


def _write_png(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Image folders: ``small`` — a smooth 64×64 and a noisy 50×61 image (one padded size,
    different PSNRs); ``tall`` — 128×64 and 100×64 (one padded size); ``empty``.
    (Few architectures × padded sizes × batch sizes: each is a compilation.)"""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:64, 0:64]
    smooth = np.stack([2 * yy + 40, 2 * xx + 30, yy + xx + 50], -1).astype(np.uint8)
    _write_png(root / "small" / "a_smooth.png", smooth)
    _write_png(root / "small" / "sub" / "b_noisy.png", rng.integers(0, 256, (50, 61, 3), dtype=np.uint8))
    _write_png(root / "tall" / "tall.png", rng.integers(0, 256, (128, 64, 3), dtype=np.uint8))
    _write_png(root / "tall" / "short.png", np.repeat(smooth, 2, axis=0)[:100])
    (root / "empty").mkdir()
    (root / "empty" / "README.txt").write_text("no images here")
    return {k: root / k for k in ("small", "tall", "empty")}


def run(*argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _read_rgb(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


# -------------------------------------------------------------------- λ (no model passes)
def test_lambda_count_reproduces_the_official_grid_and_lists_are_checked():
    cfg = zoo.qarv_base_config(**TINY_QARV)            # trained range [16, 2048], as qarv_base
    official = load_rd(QARV_KODAK).lambdas             # eval-var-rate.py's 16 float32 values
    assert me.lambdas_for(cfg, num=16) == list(official)
    assert me.lambdas_for(cfg) == list(official)       # the official count is the default
    assert me.lambdas_for(cfg, [300, 20.5]) == [300.0, 20.5]
    three = me.lambdas_for(cfg, num=3, lmb_range=(32, 512))
    assert three[0] == 32 and three[-1] == 512 and three[1] == pytest.approx(128, rel=1e-6)
    with pytest.raises(me.EvalError, match="outside the range"):
        me.lambdas_for(cfg, [300, 4096])
    with pytest.raises(me.EvalError, match="outside the range"):
        me.lambdas_for(cfg, [math.nan])
    with pytest.raises(me.EvalError, match="not both"):
        me.lambdas_for(cfg, [300], num=3)
    with pytest.raises(me.EvalError, match=">= 1"):
        me.lambdas_for(cfg, num=0)
    with pytest.raises(me.EvalError, match="empty"):
        me.lambdas_for(cfg, [])
    with pytest.raises(me.EvalError, match="above its end"):
        me.lambdas_for(cfg, num=4, lmb_range=(512, 32))
    qres = zoo.qres34m_config(lmb=64, **TINY_QRES)
    assert me.lambdas_for(qres) == [] and me.fixed_lambda(qres) == 64
    with pytest.raises(me.EvalError, match="fixed-rate"):
        me.lambdas_for(qres, num=4)


# -------------------------------------------------------------------- rd, variable rate
@pytest.fixture(scope="module")
def readme_run(models, folders, tmp_path_factory):
    """The README's command as written, from the repository root (its anchor a packaged name),
    on the tiny QARV; plus --keep-bitstreams, --test-set and --batch-size 1 (one compilation)."""
    tmp = tmp_path_factory.mktemp("readme")
    paths = {"json": tmp / "kodak-qarv.json", "plot": tmp / "kodak.png", "keep": tmp / "bits"}
    argv = ["rd", "--ckpt", models["qarv"], folders["small"], "--num-lambdas", 8,
            "--out", paths["json"], "--plot", paths["plot"],
            "--anchor", "kodak/vtm18.0",
            "--keep-bitstreams", paths["keep"], "--test-set", "kodak", "--batch-size", 1]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)
        mp.setattr(sys, "stdout", io.StringIO())
        mp.setattr(sys, "stderr", io.StringIO())
        code = cli.main([str(a) for a in argv])
        out, err = sys.stdout.getvalue(), sys.stderr.getvalue()
    return code, out, err, paths


def test_rd_readme_command_on_a_tiny_qarv(readme_run, models, folders):
    """Every figure of the README command's results checked against the kept files and an
    independent PSNR computation."""
    code, out, err, paths = readme_run
    out_json, plot, keep = paths["json"], paths["plot"], paths["keep"]
    assert code == 0, err
    assert "tiny_qarv rd" in err and "16/16" in err          # the progress bar (stderr)
    assert "BD-rate vs kodak-vtm18.0: n/a" in out             # a random model is far below VTM
    assert f"wrote {plot}" in out

    data = json.loads(out_json.read_text())
    assert data["name"] == "tiny_qarv" and data["test-set"] == "kodak"
    lambdas = me.lambdas_for(zoo.qarv_base_config(**TINY_QARV), num=8)
    assert data["lambdas"] == lambdas
    res = data["results"]
    assert {"bpp", "mse", "psnr", "per-image"} <= set(res)
    assert all(len(res[k]) == 8 for k in ("bpp", "mse", "psnr", "per-image"))
    curve = load_rd(out_json)                                 # readable as an RD curve file
    assert curve.lambdas == tuple(lambdas) and len(curve) == 8

    from lvae_jax.checkpoint.model_dir import load_model
    from lvae_jax.codec.api import Codec
    codec = Codec(load_model(models["qarv"]))
    originals = {"a_smooth.png": _read_rgb(folders["small"] / "a_smooth.png"),
                 "sub/b_noisy.png": _read_rgb(folders["small"] / "sub" / "b_noisy.png")}
    for k in (0, 7):                                          # lowest and highest λ
        recs = res["per-image"][k]
        assert [r["image"] for r in recs] == sorted(originals)
        psnrs, mses = [], []
        for r in recs:
            x = originals[r["image"]]
            blob = (keep / r["file"]).read_bytes()
            assert r["bytes"] == len(blob) and r["bpp"] == 8 * len(blob) / (x.shape[0] * x.shape[1])
            dec = codec.decompress_details(blob)
            assert dec.lmb == np.float32(lambdas[k]) and dec.image.shape == x.shape
            err2 = (x.astype(np.float64) / 255 - dec.image.astype(np.float64)) ** 2
            mses.append(err2.mean())
            psnrs.append(-10 * math.log10(err2.mean()))
            assert r["psnr"] == pytest.approx(psnrs[-1], abs=1e-9)
        assert res["bpp"][k] == pytest.approx(np.mean([r["bpp"] for r in recs]), rel=1e-12)
        assert res["mse"][k] == pytest.approx(np.mean(mses), rel=1e-9)
        assert res["psnr"][k] == pytest.approx(np.mean(psnrs), abs=1e-9)
        # the definition is visible at the tolerance above: the PSNR of the mean MSE differs
        assert abs(res["psnr"][k] + 10 * math.log10(np.mean(mses))) > 1e-3
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000


# -------------------------------------------------------------------- rd, fixed rate and lossless
@pytest.fixture(scope="module")
def qres_run(models, folders, tmp_path_factory):
    """Two fixed-rate QRes directories (λ 64 and 16, given in that order) -> one curve."""
    out_json = tmp_path_factory.mktemp("qres") / "qres.json"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "stdout", io.StringIO())
        mp.setattr(sys, "stderr", io.StringIO())
        code = cli.main([str(a) for a in ("rd", "--ckpt", models["qres64"], "--ckpt",
                                          models["qres16"], folders["tall"], "--format", "lvae",
                                          "--out", out_json, "--quiet")])
        err = sys.stderr.getvalue()
    return code, err, out_json


def test_fixed_rate_directories_make_one_curve(qres_run, models, folders, capsys):
    code, err, out_json = qres_run
    assert code == 0, err
    data = json.loads(out_json.read_text())
    assert data["name"] == "tiny_qres" and data["lambdas"] == [16.0, 64.0]
    assert "lvae-jax container" in data["bitstream"]
    recs = data["results"]["per-image"]
    for k in range(2):
        assert sorted(r["image"] for r in recs[k]) == ["short.png", "tall.png"]
        for r in recs[k]:
            h, w = r["height"], r["width"]
            assert r["bpp"] == 8 * r["bytes"] / (h * w)
            n = r["hint_bytes"]        # the hint section: exponent, varint length, structure
            hint_section = 1 + len(hints.varint(n)) + n if n else 0
            assert r["header_bytes"] == 55 + len("tiny_qres") + 12 * 2 + hint_section  # docs/bitstream.md
        assert data["results"]["bpp"][k] == pytest.approx(np.mean([r["bpp"] for r in recs[k]]))
        assert data["results"]["psnr"][k] == pytest.approx(np.mean([r["psnr"] for r in recs[k]]))
    # a λ choice for fixed-rate models is refused
    code, _, err = run("rd", "--ckpt", models["qres16"], folders["tall"], "--lambdas", "32",
                       "--quiet", capsys=capsys)
    assert code == 2 and "fixed-rate" in err


def test_estimate_matches_the_real_bitstreams(qres_run, models, folders, tmp_path, capsys):
    """Estimated rates (no coder): the same reconstruction as the codec (equal PSNR) and a rate
    close to the coded strings without the header (bits, not nats; over the original H×W — the
    100×64 image pads to 128×64, which would move its rate by 28 %)."""
    est_json = tmp_path / "est.json"
    code, out, err = run("estimate", "--ckpt", models["qres16"], "--ckpt", models["qres64"],
                         folders["tall"], "--out", est_json, capsys=capsys)
    assert code == 0, err
    assert "tiny_qres estimate" in err                        # the progress bar
    real, est = json.loads(qres_run[2].read_text()), json.loads(est_json.read_text())
    assert est["name"] == "tiny_qres" and est["test-set"] == "tall"
    assert est["lambdas"] == real["lambdas"] == [16.0, 64.0]
    assert "estimated" in est["rate"] and "real bitstream" in real["rate"]
    for k in range(2):
        rk = {r["image"]: r for r in real["results"]["per-image"][k]}
        for e in est["results"]["per-image"][k]:
            r = rk[e["image"]]
            assert e["psnr"] == pytest.approx(r["psnr"], abs=1e-3)
            payload = 8 * (r["bytes"] - r["header_bytes"]) / (r["height"] * r["width"])
            assert e["bpp"] == pytest.approx(payload, rel=0.1)
    np.testing.assert_allclose(est["results"]["psnr"], real["results"]["psnr"], atol=1e-3)


def test_lossless_reports_bits_per_subpixel_and_exactness(models, folders, tmp_path, capsys):
    out_json = tmp_path / "lossless.json"
    code, out, err = run("rd", "--ckpt", models["lossless"], folders["small"], "--out",
                         out_json, "--quiet", "--batch-size", 1, capsys=capsys)
    assert code == 0, err
    assert "every image decoded exactly" in out and "bits per sub-pixel" in out
    data = json.loads(out_json.read_text())
    assert data["lossless"] is True and data["results"]["exact"] == [True]
    recs = data["results"]["per-image"][0]
    assert sorted(r["image"] for r in recs) == ["a_smooth.png", "sub/b_noisy.png"]
    for r in recs:
        assert r["exact"] is True and r["bpp"] == 8 * r["bytes"] / (r["height"] * r["width"])
        assert r["bpsp"] == pytest.approx(r["bpp"] / 3)
    bpp = np.mean([r["bpp"] for r in recs])
    assert data["results"]["bpp"] == [pytest.approx(bpp)]
    assert data["results"]["bpsp"] == [pytest.approx(bpp / 3)]
    # a lossless model has no RD curve to plot
    code, _, err = run("rd", "--ckpt", models["lossless"], folders["small"], "--plot",
                       tmp_path / "x.png", capsys=capsys)
    assert code == 2 and "lossless" in err


def test_an_inexact_lossless_decode_is_reported(models, folders, monkeypatch):
    """The exactness check compares the decoded pixels with the originals (here a decoder that
    is off by one level in one pixel must be caught)."""
    from lvae_jax.checkpoint.model_dir import load_model
    from lvae_jax.evaluation.images import iter_folder
    from lvae_jax.codec.api import Codec
    real, calls = Codec.decompress_batch, []

    def off_by_one(codec, files):          # the first image decoded is off in one sample
        images, parsed, notes = real(codec, files)
        if not calls:
            images[0] = images[0].copy()
            images[0][0, 0, 0] = np.float32((round(float(images[0][0, 0, 0]) * 255) ^ 1) / 255)
        calls.append(len(files))
        return images, parsed, notes

    monkeypatch.setattr(Codec, "decompress_batch", off_by_one)
    result = me.evaluate_bitstreams(load_model(models["lossless"]), iter_folder(folders["small"]),
                                    me.RDOptions(batch_size=1))
    assert result.exact is False
    assert sorted(r["exact"] for r in result.per_image) == [False, True]


# -------------------------------------------------------------------- errors
def test_bad_input_is_refused_before_any_work(models, folders, tmp_path, capsys):
    out_json = tmp_path / "never.json"
    cases = [
        (["rd", "--ckpt", models["qarv"], folders["empty"]], "no image files"),
        (["rd", "--ckpt", models["qarv"], tmp_path / "missing"], "no such folder"),
        (["rd", "--ckpt", tmp_path, folders["small"]], "lvae_model.json"),
        (["rd", "--ckpt", models["qarv"], "--ckpt", models["qres16"], folders["small"]],
         "variable-rate"),
        (["rd", "--ckpt", models["qres16"], "--ckpt", models["lossless"], folders["small"]],
         "lossy and lossless"),
        (["rd", "--ckpt", models["qres16"], "--ckpt", models["qres16"], folders["small"]],
         "same point"),
        (["rd", "--ckpt", models["qarv"], folders["small"], "--model", "qarv_base"],
         "not 'qarv_base'"),
        (["rd", "--ckpt", models["qarv"], folders["small"], "--lambdas", "300", "5000"],
         "outside the range"),
        (["rd", "--ckpt", models["qarv"], folders["small"], "--lambdas", "300",
          "--num-lambdas", "3"], "not both"),
        (["rd", "--ckpt", models["qarv"], folders["small"], "--ms-ssim"], "too small for MS-SSIM"),
        (["rd", "--ckpt", models["qarv"], folders["small"], "--compare", VTM_KODAK], "--plot"),
        (["estimate", "--ckpt", models["qarv"], folders["small"], "--draws", "2"], "draws"),
        (["estimate", "--ckpt", models["qarv"], folders["empty"]], "no image files"),
    ]
    for argv, message in cases:
        code, out, err = run(*argv, "--out", out_json, "--quiet", capsys=capsys)
        assert code == 2, (argv, out, err)
        assert message in err, (argv, err)
        assert not out_json.exists(), argv


def test_mismatched_model_sets_in_the_library():
    """One curve: one variable-rate model, or fixed-rate models of one architecture."""
    class Fake:
        def __init__(self, config):
            self.config, self.lossless = config, config.head.__class__.__name__ == "NLLHeadSpec"
    qres = Fake(zoo.qres34m_config(lmb=16, **TINY_QRES))
    other = Fake(zoo.qres34m_config(lmb=64, **dict(TINY_QRES, name="other_qres")))
    with pytest.raises(me.EvalError, match="one architecture"):
        me.check_model_set([qres, other])
    with pytest.raises(me.EvalError, match="no model"):
        me.check_model_set([])
    me.check_model_set([qres, Fake(zoo.qres34m_config(lmb=64, **TINY_QRES))])


# -------------------------------------------------------------------- speed
def _load_benchmark():
    path = REPO / "benchmarks" / "codec.py"
    spec = importlib.util.spec_from_file_location("codec_benchmark_under_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_speed_forwards_its_options_to_the_codec_benchmark(monkeypatch, tmp_path, capsys):
    """``eval speed`` runs benchmarks/codec.py; the arguments it builds must parse with that
    script's own parser into the values asked for (the run stops right after parsing)."""
    import subprocess
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda cmd, **kw: calls.append((cmd, kw)) or 0)
    code, _, err = run("speed", "--models", "qres34m", "qarv_base", "--size", 128, 192,
                       "--repeats", 3, "--official-python", "/opt/ref/bin/python",
                       "--official-src", tmp_path, "--json", tmp_path / "speed.json",
                       "--", "--image", "photo.png", capsys=capsys)
    assert code == 0, err
    (cmd, kw), = calls
    assert cmd[:2] == [sys.executable, str(cli.benchmark_script())]
    assert kw["cwd"] == REPO

    bench = _load_benchmark()
    parsed = {}

    class Parsed(Exception):
        pass

    def stop(python, src):
        parsed.update(python=python, src=src)
        raise Parsed
    monkeypatch.setattr(bench, "official_available", stop)
    monkeypatch.setattr(sys, "argv", ["codec.py"])
    with pytest.raises(Parsed):
        bench.main(cmd[2:])
    assert parsed == {"python": "/opt/ref/bin/python", "src": str(tmp_path)}
    assert "--skip-4k" in cmd and cmd[cmd.index("--size") + 1] == "128x192"
    assert cmd[-2:] == ["--image", "photo.png"]
    # --memory-4k keeps the 4K measurement
    calls.clear()
    assert run("speed", "--memory-4k", capsys=capsys)[0] == 0
    assert "--skip-4k" not in calls[0][0]


def test_speed_errors(monkeypatch, tmp_path, capsys):
    import subprocess
    monkeypatch.setattr(subprocess, "call", lambda *a, **k: pytest.fail("must not run"))
    for argv, message in [(["--size", "500", "768"], "multiples of 64"),
                          (["--repeats", "0"], "--repeats"),
                          (["--official-src", tmp_path / "nope"], "not a directory")]:
        code, _, err = run("speed", *argv, capsys=capsys)
        assert code == 2 and message in err, (argv, err)
    with pytest.raises(SystemExit) as e:
        cli.main(["speed", "--models", "resnet50"])
    assert e.value.code == 2
    monkeypatch.setattr(cli, "benchmark_script", lambda: tmp_path / "benchmarks" / "codec.py")
    code, _, err = run("speed", capsys=capsys)
    assert code == 2 and "from the repository's root" in err
