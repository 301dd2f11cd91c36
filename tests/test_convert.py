"""The converter on bad and unusual inputs (the official-weight parity lives in test_parity.py)."""

from __future__ import annotations

import json
import functools

import numpy as np
import pytest
import torch

from lvae_jax.checkpoint import model_dir
from lvae_jax.checkpoint.keymap import BufferEntry, ParamEntry, key_map, torch_shape
from lvae_jax.checkpoint.torch_io import (ConversionError, convert_model_to_torch, convert_torch_to_model,
                                          param_shapes, read_torch_checkpoint)
from lvae_jax.models import get_config

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


def random_state_dict(config, seed=0):
    """An official-layout state_dict for ``config`` with random weights (numpy, fast)."""
    rng = np.random.default_rng(seed)
    shapes = param_shapes(config)
    sd = {}
    for e in key_map(config):
        if isinstance(e, ParamEntry):
            sd[e.torch_key] = rng.standard_normal(torch_shape(e.layout, shapes[e.jax_path])).astype(np.float32)
        else:
            sd[e.torch_key] = e.value.copy()
    return sd


def save_pt(obj, path):
    torch.save(obj, path)
    return path


def as_torch(sd):
    return {k: torch.from_numpy(v) for k, v in sd.items()}


@pytest.fixture(scope="module")
def qres17m_sd():
    return random_state_dict(get_config("qres17m"))


@pytest.fixture(scope="module")
def run_cli(cli_processes):
    """``run_cli(*args)``: ``python -m convert ARGS`` as a process of its own (the real entry
    point, run as ``-m`` runs it, in a child forked from the module's fork server, conftest.py)."""
    return functools.partial(cli_processes.module, "convert", text=True)


def run_main(capsys, *args):
    """``convert.__main__.main(ARGS)`` in this process (the same command line and error rule,
    without a fresh interpreter's imports): (exit status, stdout, stderr)."""
    from convert.__main__ import main
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_round_trip_is_bit_exact(run_cli, qres17m_sd, tmp_path):
    pt = save_pt({"model": as_torch(qres17m_sd)}, tmp_path / "qres17m-lmb16.pt")
    r = run_cli("--torch-ckpt", pt, "--out", tmp_path / "jax")
    assert r.returncode == 0, r.stderr
    assert "detected model: qres17m" in r.stdout and "λ = 16" in r.stdout
    info = json.loads((tmp_path / "jax" / "lvae_model.json").read_text())
    assert info["config"]["head"]["lmb"] == 16.0
    r = run_cli("--from-model", tmp_path / "jax", "--to-torch", tmp_path / "back.pt")
    assert r.returncode == 0, r.stderr
    back, _ = read_torch_checkpoint(tmp_path / "back.pt")
    assert list(back) == list(qres17m_sd)
    for k in qres17m_sd:
        assert back[k].dtype == qres17m_sd[k].dtype and np.array_equal(back[k], qres17m_sd[k]), k


def test_trainer_checkpoint_and_ddp_prefix(qres17m_sd, tmp_path):
    sd = {f"module.{k}": v for k, v in as_torch(qres17m_sd).items()}
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(3))])
    pt = save_pt({"model": sd, "optimizer": opt.state_dict(), "epoch": 3, "iter": 100,
                  "results": {"loss": 1.0}}, tmp_path / "last.pt")
    res = convert_torch_to_model(pt, tmp_path / "out")
    assert res.config.name == "qres17m"
    assert any("module." in n for n in res.notes) and any("optimizer" in n for n in res.notes)


def test_filled_coder_buffers_are_accepted(qres17m_sd, tmp_path):
    sd = dict(qres17m_sd)
    key = next(k for k in sd if k.endswith("discrete_gaussian._quantized_cdf"))
    sd[key] = np.ones((64, 100), np.int32)
    sd[key.replace("_quantized_cdf", "scale_table")] = np.linspace(0.1, 20, 64).astype(np.float32)
    pt = save_pt({"model": as_torch(sd)}, tmp_path / "x.pt")
    res = convert_torch_to_model(pt, tmp_path / "out")
    assert any("coder-table" in n for n in res.notes)


def test_all_problems_reported_at_once_and_nothing_written(qres17m_sd, tmp_path, capsys):
    sd = dict(qres17m_sd)
    keys = list(sd)
    del sd[keys[5]]                                            # missing
    sd["decoder.extra.weight"] = np.zeros(3, np.float32)        # unexpected
    sd[keys[10]] = np.zeros((7, 7), np.float32)                 # wrong shape
    bound = next(k for k in sd if k.endswith("scale_bound"))
    sd[bound] = np.array([0.2], np.float32)                     # unexpected buffer value
    pt = save_pt({"model": as_torch(sd)}, tmp_path / "bad.pt")
    code, _, err = run_main(capsys, "--torch-ckpt", pt, "--model", "qres17m", "--out", tmp_path / "out")
    assert code == 2
    for needle in (keys[5], "decoder.extra.weight", keys[10], bound):
        assert needle in err, needle
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")], "temporary files left"


def test_detection_reports_the_closest_model(qres17m_sd, tmp_path):
    sd = dict(qres17m_sd)
    del sd["decoder.bias"]
    pt = save_pt({"model": as_torch(sd)}, tmp_path / "x.pt")
    with pytest.raises(ConversionError, match="closest is qres17m"):
        convert_torch_to_model(pt, tmp_path / "out")


class Evil:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_malicious_pickle_is_refused_without_executing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pt = tmp_path / "evil.pt"
    torch.save({"model": {"x": torch.zeros(1)}, "payload": Evil()}, pt)
    with pytest.raises(ConversionError, match="weights_only"):
        read_torch_checkpoint(pt)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", b"PK\x03\x04garbage"])
def test_garbage_files(tmp_path, content, capsys):
    pt = tmp_path / "g.pt"
    pt.write_bytes(content)
    code, _, err = run_main(capsys, "--torch-ckpt", pt, "--out", tmp_path / "out")
    assert code == 2 and err.startswith("error:") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_missing_file_and_existing_output(tmp_path, qres17m_sd, capsys):
    code, _, err = run_main(capsys, "--torch-ckpt", tmp_path / "nope.pt")
    assert code == 2 and "no such file" in err
    pt = save_pt({"model": as_torch(qres17m_sd)}, tmp_path / "a.pt")
    (tmp_path / "out").mkdir()
    code, _, err = run_main(capsys, "--torch-ckpt", pt, "--out", tmp_path / "out")
    assert code == 2 and "already exists" in err


def test_damaged_model_directory_is_detected(tmp_path):
    import lvae_jax
    import tiny_models
    cfg = tiny_models.config("qres2")
    params = model_dir.flat_params(lvae_jax.build_model(cfg))
    model_dir.save_params(tmp_path / "m", cfg, params)
    info = json.loads((tmp_path / "m" / "lvae_model.json").read_text())
    info["weights_sha256"] = "0" * 64
    (tmp_path / "m" / "lvae_model.json").write_text(json.dumps(info))
    with pytest.raises(model_dir.CheckpointError, match="sha256"):
        model_dir.load_model(tmp_path / "m")
    with pytest.raises(model_dir.CheckpointError, match="not an lvae-jax model directory"):
        model_dir.load_model(tmp_path)


def test_help_describes_real_use(run_cli):
    r = run_cli("--help")
    assert r.returncode == 0
    for needle in ("--torch-ckpt", "--from-model", "huggingface.co/duanzh0", "weights_only"):
        assert needle in r.stdout
