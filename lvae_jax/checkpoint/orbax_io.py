"""Model checkpoints: an Orbax checkpoint of the parameters plus a JSON description.

Layout of a model directory::

    DIR/lvae_model.json   {"format": "lvae-jax-model", "version": 1, "config": {...},
                           "weights_sha256": "...", "meta": {...}}
    DIR/params/           Orbax StandardCheckpointer: {"path.to.param": array, ...}

Parameters are stored flat, keyed by their lvae-jax path (``dec_blocks.3.prior_net.c1.kernel``),
in lvae-jax layouts (NHWC / HWIO). Writing is atomic: everything goes to a temporary sibling
directory that is renamed into place at the end, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

META_FILE = "lvae_model.json"
FORMAT = "lvae-jax-model"
VERSION = 1


class CheckpointError(ValueError):
    """A model directory is missing, malformed, or does not match the model."""


def flat_params(model) -> dict[str, np.ndarray]:
    """``{dotted lvae-jax path: numpy array}`` of a model's parameters."""
    from flax import nnx
    return {".".join(str(p) for p in path): np.asarray(v.get_value() if hasattr(v, "get_value") else v)
            for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def weights_digest(params: dict[str, np.ndarray]) -> str:
    """sha256 over the parameters (sorted keys, shapes, float32 bytes): identifies the weights."""
    h = hashlib.sha256()
    for k in sorted(params):
        a = np.ascontiguousarray(params[k], dtype=np.float32)
        h.update(k.encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_params(path, config, params: dict[str, np.ndarray], meta: dict | None = None,
                overwrite: bool = False) -> Path:
    """Write a model directory from a config and flat parameters (atomic)."""
    import orbax.checkpoint as ocp
    path = Path(path).absolute()
    if path.exists() and not overwrite:
        raise CheckpointError(f"{path} already exists (pass overwrite=True / --overwrite)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        params = {k: np.asarray(v, np.float32) for k, v in params.items()}
        ckptr = ocp.StandardCheckpointer()
        ckptr.save(tmp / "params", params)
        ckptr.wait_until_finished()
        info = {"format": FORMAT, "version": VERSION, "config": config.to_dict(),
                "weights_sha256": weights_digest(params), "meta": meta or {}}
        (tmp / META_FILE).write_text(json.dumps(info, indent=1))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def save_model(model, path, meta: dict | None = None, overwrite: bool = False) -> Path:
    """Save a :class:`~lvae_jax.models.HierarchicalVAE` (its config and parameters)."""
    return save_params(path, model.config, flat_params(model), meta, overwrite)


def read_info(path) -> dict:
    path = Path(path)
    f = path / META_FILE
    if not f.is_file():
        raise CheckpointError(f"{path} is not an lvae-jax model directory (no {META_FILE}); "
                              "convert an official checkpoint with `python -m convert --torch-ckpt X.pt`")
    try:
        info = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{f} is not valid JSON: {e}") from None
    if info.get("format") != FORMAT or info.get("version") != VERSION:
        raise CheckpointError(f"{f}: unsupported format {info.get('format')!r} "
                              f"version {info.get('version')!r}")
    return info


def load_params(path) -> tuple:
    """-> (ModelConfig, {path: np.ndarray}, info dict)."""
    import orbax.checkpoint as ocp
    from lvae_jax.models.specs import ModelConfig
    path = Path(path).absolute()
    info = read_info(path)
    config = ModelConfig.from_dict(info["config"])
    try:
        restored = ocp.StandardCheckpointer().restore(path / "params")
    except Exception as e:  # orbax raises a variety of types for damaged directories
        raise CheckpointError(f"could not read parameters from {path / 'params'}: {e}") from e
    params = {k: np.asarray(v) for k, v in restored.items()}
    digest = weights_digest(params)
    if info.get("weights_sha256") and digest != info["weights_sha256"]:
        raise CheckpointError(f"{path}: parameters do not match the recorded sha256 (damaged?)")
    return config, params, info


def assign_params(model, params: dict[str, np.ndarray]):
    """Load flat parameters into a (possibly abstract) model; all keys and shapes must match."""
    from flax import nnx
    import jax.numpy as jnp
    graphdef, state = nnx.split(model)
    flat = dict(nnx.to_flat_state(state))
    expected = {".".join(str(p) for p in k): k for k, v in flat.items() if isinstance(v, nnx.Param)}
    missing = sorted(set(expected) - set(params))
    unexpected = sorted(set(params) - set(expected))
    wrong = [f"{k}: model {tuple(flat[expected[k]].shape)} vs file {tuple(params[k].shape)}"
             for k in sorted(set(expected) & set(params))
             if tuple(flat[expected[k]].shape) != tuple(params[k].shape)]
    if missing or unexpected or wrong:
        raise CheckpointError(_mismatch_report(missing, unexpected, wrong))
    for k, path in expected.items():
        flat[path] = flat[path].replace(jnp.asarray(params[k], jnp.float32))
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


def _mismatch_report(missing, unexpected, wrong, limit: int = 20) -> str:
    lines = ["parameters do not match the model:"]
    for title, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong)):
        if items:
            lines.append(f"  {title} ({len(items)}): " + ", ".join(items[:limit])
                         + (" ..." if len(items) > limit else ""))
    return "\n".join(lines)


def load_model(path):
    """Build the model recorded in ``path`` and load its parameters. The model carries the
    verified sha256 of its weights as ``model.weights_sha256`` (its identity in bitstreams)."""
    from lvae_jax import build_model
    config, params, info = load_params(path)
    model = assign_params(build_model(config, abstract=True), params)
    model.weights_sha256 = info.get("weights_sha256") or weights_digest(params)
    return model
