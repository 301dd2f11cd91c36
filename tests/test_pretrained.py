"""The official weights in one line (``get_model(name, pretrained=True)``, ``--model NAME``),
against a local stand-in for the Hugging Face hub (tests/hub_mirror.py) serving an official
checkpoint rebuilt from the qres17m parity manifest under its official path.

Each scenario runs in processes of their own — forked from a server that has not imported the hub
client, or fresh interpreters where two must run at once: ``huggingface_hub`` reads
``HF_ENDPOINT`` when imported.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from hub_mirror import HubMirror
from parity_support import REPO, Manifest, parity_dir

REPO_ID = "duanzh0/my-model-weights"
PATH = "qres17m/qres17m-lmb8.pt"       # qres17m's official default (lmb=8)


@pytest.fixture(scope="module")
def official_pt(tmp_path_factory):
    """qres17m's official checkpoint, rebuilt from the parity recipe: (.pt, its conversion)."""
    from lvae_jax.checkpoint.torch_io import convert_torch_to_model, write_torch_checkpoint
    d = tmp_path_factory.mktemp("official")
    man = Manifest(parity_dir() / "qres17m.manifest.json")
    pt = write_torch_checkpoint(man.rebuild_state_dict(), d / "qres17m-lmb8.pt")
    return pt, convert_torch_to_model(pt, d / "direct", lmb=8).out_dir


def _env(tmp_path: Path, hub: HubMirror | None, **extra) -> dict:
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf"), LVAE_MODELS_DIR=str(tmp_path / "models"),
               HF_HUB_DISABLE_TELEMETRY="1", **extra)
    env["HF_ENDPOINT"] = hub.url if hub else "http://127.0.0.1:9"     # nothing listens on 9
    return env


@pytest.fixture(scope="module")
def python(cli_processes):
    """``python(code, env, *argv)``: ``python -c CODE ARGV`` with ``env`` as a process of its own
    (forked from the module's fork server, conftest.py; the hub client is not preloaded, so it
    reads ``env``'s HF_* settings) -> returncode, stdout, stderr (text)."""
    def run(code: str, env: dict, *argv, timeout: int = 240):
        return cli_processes.run(textwrap.dedent(code), *argv, env=env, timeout=timeout, text=True)
    return run


LOAD = """
    import json, lvae_jax
    m = lvae_jax.get_model("qres17m", pretrained=True)
    from lvae_jax.checkpoint.pretrained import pretrained_dir
    d = pretrained_dir("qres17m")
    print(json.dumps({"sha": m.weights_sha256, "dir": str(d), "lmb": m.config.args.get("lmb")}))
"""


def _result(r) -> dict:
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_pretrained_downloads_verifies_converts_once_then_loads_with_no_network(python,
                                                                              official_pt,
                                                                              tmp_path):
    pt, direct = official_pt
    from lvae_jax.checkpoint.model_dir import read_info
    with HubMirror({REPO_ID: {PATH: pt}}) as hub:
        first = _result(python(LOAD, _env(tmp_path, hub)))
        assert any(m == "GET" and p.endswith("/resolve/main/" + PATH) for m, p in hub.requests)
    # the same weights as the converter's, with their origin recorded
    assert first["sha"] == read_info(direct)["weights_sha256"] and first["lmb"] == 8
    info = read_info(first["dir"])
    digest = __import__("hashlib").sha256(pt.read_bytes()).hexdigest()
    assert Path(first["dir"]).name == digest
    assert info["meta"]["origin"] == {"repo": REPO_ID, "revision": "main", "path": PATH,
                                      "sha256": digest, "commit": info["meta"]["origin"]["commit"]}
    # the mirror is gone: the cache alone serves the second process
    second = _result(python(LOAD, _env(tmp_path, None)))
    assert second == first


def test_a_download_that_does_not_match_the_announced_sha256_is_refused(python, official_pt,
                                                                         tmp_path):
    pt, _ = official_pt
    with HubMirror({REPO_ID: {PATH: pt}}, announce={PATH: "ab" * 32}) as hub:
        r = python(LOAD, _env(tmp_path, hub))
    assert r.returncode != 0
    assert "announced" in r.stderr and "damaged download" in r.stderr, r.stderr[-2000:]
    assert not list((tmp_path / "models").glob("[0-9a-f]*"))          # nothing converted


def test_offline_and_not_cached_says_what_to_do(python, tmp_path):
    r = python(LOAD, _env(tmp_path, None, HF_HUB_OFFLINE="1"))
    assert r.returncode != 0
    err = r.stderr.strip().splitlines()[-2:]
    assert "could not download qres17m/qres17m-lmb8.pt" in r.stderr, r.stderr[-2000:]
    assert "HF_HUB_OFFLINE" in r.stderr and "HF_ENDPOINT" in r.stderr, err


def test_two_processes_asking_at_once_convert_once(official_pt, tmp_path):
    pt, _ = official_pt
    with HubMirror({REPO_ID: {PATH: pt}}) as hub:
        env = _env(tmp_path, hub)
        procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(LOAD)], env=env, cwd=REPO,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
        outs = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-2000:] for _, e in outs]
    results = [json.loads(o.strip().splitlines()[-1]) for o, _ in outs]
    assert results[0] == results[1]
    assert sum(e.count("converting ") for _, e in outs) == 1


KILLED = """
    import os, signal, sys
    import lvae_jax.checkpoint.model_dir as md
    import lvae_jax.checkpoint.pretrained as pre
    point = sys.argv[1]
    real_replace_dir, real_write_index = md.replace_dir, pre._write_index
    def die():
        os.kill(os.getpid(), signal.SIGKILL)
    def replace_dir(a, b):
        if point == "rename":
            die()
        real_replace_dir(a, b)
    def write_index(root, index):
        if point == "index":
            die()
        real_write_index(root, index)
    md.replace_dir, pre._write_index = replace_dir, write_index
    import lvae_jax
    lvae_jax.get_model("qres17m", pretrained=True)
"""


@pytest.mark.parametrize("point", ["rename", "index"])
def test_a_kill_while_converting_leaves_no_entry_or_a_complete_one(python, official_pt, tmp_path,
                                                                 point):
    from lvae_jax.checkpoint.model_dir import is_model_dir
    pt, direct = official_pt
    with HubMirror({REPO_ID: {PATH: pt}}) as hub:
        env = _env(tmp_path, hub)
        r = python(KILLED, env, point)
        assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
        entries = [p for p in (tmp_path / "models").iterdir() if not p.name.startswith(".")
                   and p.name != "index.json"]
        # killed before the rename: no entry; after it, before the index: a complete one
        assert all(is_model_dir(p) for p in entries) and len(entries) == (point == "index")
        again = python(LOAD, env)
    res = _result(again)
    assert ("converting " in again.stderr) == (point == "rename")      # a complete entry is adopted
    from lvae_jax.checkpoint.model_dir import read_info
    assert res["sha"] == read_info(direct)["weights_sha256"]


def test_the_command_line_takes_an_official_model_by_name(cli, official_pt, tmp_path):
    """``compress``/``decompress --model qres17m`` with no --ckpt; ``models`` lists it cached."""
    from PIL import Image
    pt, _ = official_pt
    im = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(im).save(tmp_path / "face.png")
    with HubMirror({REPO_ID: {PATH: pt}}) as hub:
        env = _env(tmp_path, hub)
        r = cli("compress", tmp_path / "face.png", tmp_path / "f.lvae", "--model", "qres17m-lmb8",
                env=env)
        assert r.returncode == 0, r.stderr[-2000:]
    env = _env(tmp_path, None)
    r = cli("decompress", tmp_path / "f.lvae", tmp_path / "f.png", "--model", "qres17m", env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert Image.open(tmp_path / "f.png").size == (64, 64)
    r = cli("models", env=env, timeout=120)
    line = next(l for l in r.stdout.splitlines() if l.strip().startswith("qres17m-lmb8 "))
    assert "cached" in line and "official default" in line
    assert "cached" not in next(l for l in r.stdout.splitlines()
                                if l.strip().startswith("qres17m-lmb16 "))


def test_names_and_arguments_without_published_weights_are_refused_with_the_choices(
        tmp_path, monkeypatch):
    import lvae_jax
    from lvae_jax.checkpoint.pretrained import PretrainedError
    monkeypatch.setenv("LVAE_MODELS_DIR", str(tmp_path / "models"))
    with pytest.raises(PretrainedError, match=r"published: lmb ∈ \{16, 32, 64"):
        lvae_jax.get_model("qres34m", lmb=100, pretrained=True)
    with pytest.raises(PretrainedError, match="valid names: qarv_base"):
        lvae_jax.get_model("qarv", pretrained=True)
    with pytest.raises(PretrainedError, match="no such model directory.*qres34m-lmb64"):
        lvae_jax.load_model("qres34m-lmb65")
