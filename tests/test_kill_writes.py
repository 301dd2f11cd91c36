"""A kill at any moment of any writer leaves the old output or the complete new one.

Each user-facing writer — a bitstream (``compress``), a PNG (``decompress``), an RD JSON, a plot, a
model directory (``convert`` / ``save_params``) and a PyTorch export — runs in a child process
that SIGKILLs itself at one of three moments of its final write:

* ``fsync``: the first ``fsync`` of a file next to the destination — the new content is written
  (to a temporary), nothing is renamed yet;
* ``rename``: just before the rename (or directory exchange) onto the destination;
* ``after``: just after it.

The destination must then hold the old content, byte for byte, in the first two cases, and a
complete, readable new output in the third — never a partial one. (Training checkpoints have
their own test: a SIGKILL during training resumes bit-identically, ``test_training.py``.)
"""

from __future__ import annotations

import json
import signal
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fork_server import ForkServer
from parity_support import REPO

#: Subprocesses that compile and run: deselect locally with -m "not slow".
pytestmark = pytest.mark.slow

_CHILD = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    writer, point, dst, inputs = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
    import lvae_jax.files as files

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    real_fsync, real_replace, real_exchange = os.fsync, os.replace, files._renameat2_exchange
    if point == "fsync":
        def fsync(fd):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                target = ""
            if target.startswith(str(dst.parent) + "/") and os.path.isfile(target):
                die()
            return real_fsync(fd)
        os.fsync = fsync
    else:
        def onto_dst(b):
            return Path(b).absolute() == dst.absolute()
        def replace(a, b, *args, **kw):
            if onto_dst(b) and point == "rename":
                die()
            real_replace(a, b, *args, **kw)
            if onto_dst(b) and point == "after":
                die()
        def exchange(a, b):
            if onto_dst(b) and point == "rename":
                die()
            ok = real_exchange(a, b)
            if ok and onto_dst(b) and point == "after":
                die()
            return ok
        os.replace = replace
        files._renameat2_exchange = exchange

    if writer in ("bitstream", "png"):
        from lvae_jax.__main__ import main
        if writer == "bitstream":
            argv = ["compress", inputs / "a.png", dst, "--ckpt", inputs / "model", "--lmb", "300"]
        else:
            argv = ["decompress", inputs / "a.lvae", dst, "--ckpt", inputs / "model"]
        main([str(a) for a in argv] + ["--overwrite"])
    elif writer in ("json", "plot"):
        from lvae_jax.evaluation.rd_json import RDCurve, save_rd
        curve = RDCurve.from_points("new", [{"bpp": 0.1 * i, "psnr": 25.0 + i} for i in range(1, 5)])
        if writer == "json":
            save_rd(curve, dst)
        else:
            from lvae_jax.evaluation.plot import plot_rd
            plot_rd(dst, [curve])
    elif writer == "model-dir":
        from lvae_jax.checkpoint.model_dir import load_model, save_model
        save_model(load_model(inputs / "model"), dst, overwrite=True)
    elif writer == "torch-export":
        import numpy as np
        from lvae_jax.checkpoint.torch_io import write_torch_checkpoint
        write_torch_checkpoint({"w": np.arange(1000, dtype=np.float32)}, dst, overwrite=True)
    print("finished without being killed")
""")

WRITERS = {"bitstream": "out.lvae", "png": "out.png", "json": "out.json", "plot": "out.png",
           "model-dir": "out_model", "torch-export": "out.pt"}
POINTS = ("fsync", "rename", "after")


#: What every writer imports, imported once by the fork server (each case's child is forked from
#: it: the writers run, and are killed, in processes of their own without a fresh interpreter's
#: start-up each).
PRELOAD = ("numpy", "PIL.Image", "jax", "lvae_jax.files", "lvae_jax.__main__", "lvae_jax.cli",
           "lvae_jax.codec.api", "lvae_jax.checkpoint.model_dir", "lvae_jax.checkpoint.torch_io",
           "lvae_jax.evaluation.rd_json", "lvae_jax.evaluation.plot")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ForkServer(PRELOAD, tmp_path_factory.mktemp("kill_logs"), REPO) as s:
        yield s


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A tiny random QARV model directory, an image and its bitstream (in their own directory)."""
    import lvae_jax
    from lvae_jax.checkpoint.model_dir import save_model
    from lvae_jax.codec import Codec
    import tiny_models
    d = tmp_path_factory.mktemp("inputs")
    model = lvae_jax.build_model(tiny_models.config("qarv"))
    save_model(model, d / "model")
    im = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(im).save(d / "a.png")
    (d / "a.lvae").write_bytes(Codec(model).compress(im, 300.0))
    return d


def _snapshot(path: Path) -> dict:
    if path.is_dir():
        return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*"))
                if p.is_file()}
    return {"": path.read_bytes()}


def _old_output(writer: str, dst: Path, inputs: Path) -> None:
    """A complete, valid old output of the same kind at ``dst``."""
    if writer == "model-dir":
        from lvae_jax.checkpoint.model_dir import load_model, save_model
        model = load_model(inputs / "model")
        save_model(model, dst, meta={"old": True})
    elif writer == "bitstream":
        dst.write_bytes((inputs / "a.lvae").read_bytes())
    elif writer == "png" or writer == "plot":
        Image.fromarray(np.full((8, 8, 3), 7, np.uint8)).save(dst)
    elif writer == "json":
        dst.write_text(json.dumps({"name": "old"}))
    else:
        dst.write_bytes(b"old export")


def _complete_new(writer: str, dst: Path) -> None:
    """Raise unless ``dst`` is a complete, readable output of ``writer``."""
    if writer == "bitstream":
        from lvae_jax.codec import container
        container.read_container(dst.read_bytes())
    elif writer in ("png", "plot"):
        with Image.open(dst) as im:
            im.load()
        assert im.size != (8, 8)
    elif writer == "json":
        from lvae_jax.evaluation.rd_json import load_rd
        assert load_rd(dst).name == "new"
    elif writer == "model-dir":
        from lvae_jax.checkpoint.model_dir import load_model, read_info
        assert "old" not in read_info(dst)["meta"]
        load_model(dst)
    else:
        import torch
        assert torch.load(dst, weights_only=True)["model"]["w"].shape == (1000,)


@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_kill_leaves_the_old_output_or_the_complete_new_one(tmp_path, server, inputs, writer,
                                                             point):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    dst = out_dir / WRITERS[writer]
    _old_output(writer, dst, inputs)
    before = _snapshot(dst)
    proc = server.run(_CHILD, writer, point, dst, inputs)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stdout,
                                                proc.stderr[-3000:].decode())
    assert dst.exists(), f"{writer} killed at {point}: the destination is gone"
    if point == "after":
        _complete_new(writer, dst)
    else:
        assert _snapshot(dst) == before, f"{writer} killed at {point}: the old output changed"
