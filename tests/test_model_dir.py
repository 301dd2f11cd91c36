"""Model directories (lvae_jax.checkpoint.model_dir): version 3 holds an Orbax checkpoint that plain
``orbax.checkpoint`` restores; loads go through a verified memory-mapped copy; versions 1 and 2
still load; damage is refused or repaired, never loaded silently."""

from __future__ import annotations

import json

import numpy as np
import pytest

import tiny_models
from lvae_jax.checkpoint import model_dir as md


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private user cache (the memory-mapped copies and the verified record live beside it)."""
    monkeypatch.setenv("LVAE_CACHE_DIR", str(tmp_path / "cache" / "xla"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def model():
    return tiny_models.model("qarv")


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(np.asarray(a[k]), b[k]) for k in a)


def test_plain_orbax_restores_every_array_of_a_model_directory(model, tmp_path, cache):
    import orbax.checkpoint as ocp
    d = md.save_model(model, tmp_path / "m")
    info = json.loads((d / md.META_FILE).read_text())
    assert info["version"] == 3 and info["params"] == "params"
    with ocp.StandardCheckpointer() as ckptr:
        restored = ckptr.restore(d / "params")
    assert _same(restored, md.flat_params(model))


def test_loads_map_a_verified_copy_and_a_damaged_copy_is_replaced_from_orbax(model, tmp_path,
                                                                           cache):
    d = md.save_model(model, tmp_path / "m")
    digest = json.loads((d / md.META_FILE).read_text())["weights_sha256"]
    copy = cache / "weights" / f"{digest}.bin"
    assert copy.is_file()                                  # written by the save
    _, params, _ = md.load_params(d)
    assert isinstance(next(iter(params.values())).base, np.memmap)
    assert _same(params, md.flat_params(model))
    # damage the copy (same size): it no longer verifies, the Orbax checkpoint is restored and
    # the copy rewritten
    raw = bytearray(copy.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    copy.write_bytes(bytes(raw))
    _, params, _ = md.load_params(d)
    assert _same(params, md.flat_params(model))
    assert md.weights_digest(md._map(copy, *md._flat_layout(
        {k: v.shape for k, v in params.items()}))) == digest
    # no copy at all: restored from Orbax, copy written again
    copy.unlink()
    loaded = md.load_model(d)
    assert loaded.weights_sha256 == digest and copy.is_file()


def test_a_damaged_orbax_checkpoint_is_refused(model, tmp_path, cache):
    d = md.save_model(model, tmp_path / "m")
    for f in (cache / "weights").iterdir():
        f.unlink()
    for f in (d / "params").rglob("*"):
        if f.is_file() and f.parent.name == "d":
            f.write_bytes(b"\0" * f.stat().st_size)
    with pytest.raises(md.CheckpointError) as err:
        md.load_params(d)
    msg = str(err.value)          # where and why, without TensorStore's JSON spec of the store
    assert str(d / "params") in msg and "damaged" in msg and "tensorstore_spec" not in msg, msg


def _write_v2(d, config, params):
    """A version-2 directory (flat weights.bin inside), as lvae-jax 0.1 wrote them."""
    import hashlib
    d.mkdir()
    layout, size = md._flat_layout({k: v.shape for k, v in params.items()})
    buf = bytearray(size)
    for k, (o, _) in layout.items():
        b = np.ascontiguousarray(params[k], "<f4").tobytes()
        buf[o:o + len(b)] = b
    (d / "weights.bin").write_bytes(bytes(buf))
    info = {"format": md.FORMAT, "version": 2, "config": config.to_dict(),
            "weights_sha256": md.weights_digest(params),
            "weights_file": {"name": "weights.bin", "size": size,
                             "sha256": hashlib.sha256(bytes(buf)).hexdigest()},
            "arrays": {k: [o, list(s)] for k, (o, s) in layout.items()}, "meta": {}}
    (d / md.META_FILE).write_text(json.dumps(info))


def test_version_1_and_2_directories_still_load(model, tmp_path, cache):
    params = md.flat_params(model)
    _write_v2(tmp_path / "v2", model.config, params)
    v1 = md.save_model(model, tmp_path / "v1")
    info = json.loads((v1 / md.META_FILE).read_text())
    (v1 / md.META_FILE).write_text(json.dumps({"format": md.FORMAT, "version": 1,
                                                "config": info["config"],
                                                "weights_sha256": info["weights_sha256"]}))
    for d in (tmp_path / "v2", v1):
        _, loaded, _ = md.load_params(d)
        assert _same(loaded, params), d
    raw = bytearray((tmp_path / "v2" / "weights.bin").read_bytes())
    raw[100] ^= 1
    (tmp_path / "v2" / "weights.bin").write_bytes(bytes(raw))
    with pytest.raises(md.CheckpointError, match="do not match the recorded sha256"):
        md.load_params(tmp_path / "v2")


def test_load_model_takes_configuration_overrides(model, tmp_path, cache):
    import lvae_jax
    d = md.save_model(model, tmp_path / "m")
    m = lvae_jax.load_model(d, lmb_range=[32.0, 1024.0])
    assert m.config.lmb_range == (32.0, 1024.0) and m.weights_sha256 == lvae_jax.load_model(d).weights_sha256
    with pytest.raises(md.CheckpointError, match="fields"):
        lvae_jax.load_model(d, widht=3)
