"""The research-fork example (examples/se_block.py, docs/extending.md) keeps working from its one
file: registered by LVAE_PLUGINS, trained by ``python -m train``, saved, and coded by
``compress``/``decompress``; a model directory of it without the plugin gives a clear error."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

#: Trains and codes in subprocesses: deselect locally with -m "not slow".
pytestmark = pytest.mark.slow

TINY = ["ch=8", "enc_dims=(16,16,16,16,16)", "enc_nums=(0,0,0,0,0)", "dec_nums=(1,0,0,1)",
        "z_dims=(4,4,4,4)", "embed_dim=16", "lmb_range=(4,128)", "se_ratio=0.5"]


PLUGIN = {"LVAE_PLUGINS": "examples/se_block.py"}


def test_the_fork_example_trains_and_codes_from_its_one_file(cli_processes, tmp_path):
    def run(module, *args, env=None):
        """``python -m MODULE ARGS`` as a process of its own (forked, conftest.py), ``env``
        applied to the session's environment."""
        return cli_processes.module(module, *args, env=env, text=True, timeout=900)

    rng = np.random.default_rng(0)
    (tmp_path / "data").mkdir()
    for k in range(3):
        Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(
            tmp_path / "data" / f"{k}.png")
    r = run("train", "--model", "qarv_se", "--model-arg", *TINY, "--data-dir", tmp_path / "data",
            "--crop", "64", "--batch-size", "2", "--iterations", "6", "--save-every", "6",
            "--out", tmp_path / "run", "--no-tensorboard", "--no-progress", env=PLUGIN)
    assert r.returncode == 0, r.stderr[-3000:]
    model = tmp_path / "run" / "model"
    info = (model / "lvae_model.json").read_text()
    assert '"se_adaln"' in info and '"qarv_se"' in info
    src = tmp_path / "data" / "0.png"
    r = run("lvae_jax", "compress", src, tmp_path / "a.lvae", "--ckpt", model, "--lmb", "32",
            env=PLUGIN)
    assert r.returncode == 0, r.stderr[-3000:]
    r = run("lvae_jax", "decompress", tmp_path / "a.lvae", tmp_path / "a.png", "--ckpt", model,
            "--original", src, env=PLUGIN)
    assert r.returncode == 0 and "PSNR" in r.stdout, r.stderr[-3000:]
    # without the plugin: one line that names the block type and the way to load it
    r = run("lvae_jax", "decompress", tmp_path / "a.lvae", tmp_path / "b.png", "--ckpt", model,
            env={"LVAE_PLUGINS": None})
    assert r.returncode == 2 and "se_adaln" in r.stderr and "LVAE_PLUGINS" in r.stderr, r.stderr
