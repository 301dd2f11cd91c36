"""Model directories: one model's configuration and parameters (what ``python -m convert``,
training and the pretrained cache write, and every command loads).

Layout (version 3, written by :func:`save_params`)::

    DIR/lvae_model.json   {"format": "lvae-jax-model", "version": 3, "config": {...},
                           "weights_sha256": "...",            # digest of the parameters
                           "params": "params",                 # the Orbax checkpoint below
                           "arrays": {"path.to.param": [shape...], ...},
                           "meta": {...}}
    DIR/params/           an Orbax ``StandardCheckpointer`` checkpoint of the flat dict
                          {"path.to.param": float32 array}; plain ``orbax.checkpoint`` restores it

Parameters are keyed by their lvae-jax path (``dec_blocks.3.prior_net.c1.kernel``), in lvae-jax
layouts (NHWC / HWIO).

Loading is fast after the first time: an Orbax restore of a large model takes seconds, so the
first load also writes a flat, memory-mapped copy of the parameters into the user cache
(``weights/<weights_sha256>.bin`` beside the compilation cache, ``~/.cache/lvae_jax``), checked
against ``weights_sha256``; later loads map that copy (no parsing, no copy until the arrays move to
the device) and skip hashing while the copy's size, mtime and inode are those recorded when it was
verified (``verified-weights.json``). Without a writable cache every load restores the Orbax
checkpoint.

Older directories still load: version 2 (``DIR/weights.bin``, the flat layout itself, verified
once the same way) and version 1 (``DIR/params/`` without an index).

Writing is atomic: everything goes to a temporary sibling directory that is renamed into place at
the end (an existing model directory is moved aside first and removed last), so a failure leaves
the old directory or the new one, never half of either.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from lvae_jax.checkpoint.errors import CheckpointError
from lvae_jax.files import replace_dir
from lvae_jax.runtime import cache_dir
from lvae_jax.models import HierarchicalVAE
from lvae_jax.models.specs import ModelConfig
from lvae_jax.nn.layers import HostInit

META_FILE = "lvae_model.json"
PARAMS_DIR = "params"
WEIGHTS_FILE = "weights.bin"        # version 2
FORMAT = "lvae-jax-model"
VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
_ALIGN = 64


def dotted(path) -> str:
    """The dotted name of an nnx state path, e.g. ``dec_blocks.3.prior_net.c1.kernel``."""
    return ".".join(str(p) for p in path)


def flat_params(model) -> dict[str, np.ndarray]:
    """``{dotted lvae-jax path: numpy array}`` of a model's parameters."""
    from flax import nnx
    return {dotted(path): np.asarray(v.get_value() if hasattr(v, "get_value") else v)
            for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def weights_digest(params: dict[str, np.ndarray]) -> str:
    """sha256 over the parameters (sorted keys, shapes, float32 bytes): identifies the weights."""
    h = hashlib.sha256()
    for k in sorted(params):
        a = np.ascontiguousarray(params[k], dtype=np.float32)
        h.update(k.encode())
        h.update(str(a.shape).encode())
        h.update(a)                      # its C-contiguous bytes, without a copy
    return h.hexdigest()


def save_params(path, config, params: dict[str, np.ndarray], meta: dict | None = None,
                overwrite: bool = False) -> Path:
    """Write a model directory (version 3) from a config and flat parameters (atomic)."""
    path = Path(path).absolute()
    _check_target(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)          # mkdtemp's 0700 would hide the model from others
    try:
        params = {k: np.ascontiguousarray(v, np.float32) for k, v in params.items()}
        _save_orbax(tmp / PARAMS_DIR, params)
        info = {"format": FORMAT, "version": VERSION, "config": config.to_dict(),
                "weights_sha256": weights_digest(params), "params": PARAMS_DIR,
                "arrays": {k: list(params[k].shape) for k in sorted(params)}, "meta": meta or {}}
        with open(tmp / META_FILE, "w") as f:
            f.write(json.dumps(info, indent=1))
            f.flush()
            os.fsync(f.fileno())
        replace_dir(tmp, path)        # the old directory or the new one, at every moment
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _write_flat_copy(info, params)    # the next load is a memory map
    return path


def _check_target(path: Path, overwrite: bool) -> None:
    if path.exists() and not path.is_dir():
        raise CheckpointError(f"{path} exists and is not a directory: not replaced")
    if path.exists() and not overwrite:
        raise CheckpointError(f"{path} already exists (pass overwrite=True / --overwrite)")
    if path.exists() and not is_model_dir(path):
        found = sorted(p.name for p in path.iterdir())[:5]
        raise CheckpointError(f"{path} is not an lvae-jax model directory (it holds "
                              f"{', '.join(found) or 'nothing'}{', …' if len(found) == 5 else ''}): "
                              "--overwrite replaces only a model directory; choose another --out")


def _save_orbax(where: Path, params: dict[str, np.ndarray]) -> None:
    import orbax.checkpoint as ocp
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(where, params)
        ckptr.wait_until_finished()
    for p in [where, *where.rglob("*")]:   # Orbax writes with its own I/O: make it durable
        if p.is_file():
            with open(p, "rb+") as f:
                os.fsync(f.fileno())


def save_model(model, path, meta: dict | None = None, overwrite: bool = False) -> Path:
    """Save a :class:`~lvae_jax.models.HierarchicalVAE` (its config and parameters)."""
    return save_params(path, model.config, flat_params(model), meta, overwrite)


def is_model_dir(path) -> bool:
    """Whether ``path`` is an lvae-jax model directory (its description file parses as one)."""
    try:
        read_info(path)
        return True
    except CheckpointError:
        return False


def read_info(path) -> dict:
    path = Path(path)
    f = path / META_FILE
    if not f.is_file():
        raise CheckpointError(f"{path} is not an lvae-jax model directory (no {META_FILE}); "
                              "convert an official checkpoint with `python -m convert --torch-ckpt X.pt`")
    try:
        info = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{f} is not valid JSON: {e}") from None
    if not isinstance(info, dict):
        raise CheckpointError(f"{f}: not an lvae-jax model description")
    if info.get("format") != FORMAT or info.get("version") not in READABLE_VERSIONS:
        raise CheckpointError(f"{f}: unsupported format {info.get('format')!r} "
                              f"version {info.get('version')!r}")
    if not isinstance(info.get("config"), dict):
        raise CheckpointError(f"{f}: no model configuration (\"config\"): damaged or not written "
                              "by lvae-jax")
    return info


def load_params(path) -> tuple:
    """-> (ModelConfig, {path: np.ndarray}, info dict). Version 3: the verified memory-mapped copy
    when there is one, else an Orbax restore (which writes that copy); module docstring."""
    path = Path(path).absolute()
    info = read_info(path)
    try:
        config = ModelConfig.from_dict(info["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path / META_FILE}: invalid model configuration ({e!r})") from None
    if info["version"] == 2:
        return config, _load_v2(path, info), info
    if info["version"] == 3:
        params = _load_flat_copy(path, info)
        if params is not None:
            return config, params, info
    params = _restore_orbax(path / str(info.get("params", PARAMS_DIR)))
    digest = weights_digest(params)
    if info.get("weights_sha256") and digest != info["weights_sha256"]:
        raise CheckpointError(f"{path}: parameters do not match the recorded sha256 (damaged?)")
    if info["version"] == 3:
        _check_index(path, info, params)
        _write_flat_copy(info, params)
    return config, params, info


def _storage_reason(e: Exception) -> str:
    """The reason a storage library gave, without TensorStore's JSON spec of the store (a
    screenful of driver settings after the actual reason, `` [tensorstore_spec='…']``)."""
    return re.sub(r"\s*\[tensorstore_spec=.*\]\s*$", "", str(e), flags=re.S)


def _restore_orbax(where: Path) -> dict[str, np.ndarray]:
    import orbax.checkpoint as ocp
    if not where.is_dir():
        raise CheckpointError(f"{where}: no parameters (missing Orbax checkpoint)")
    try:
        with ocp.StandardCheckpointer() as ckptr:
            restored = ckptr.restore(where)
    except Exception as e:  # orbax raises a variety of types for damaged directories
        raise CheckpointError(f"could not read parameters from {where} (damaged?): "
                              f"{_storage_reason(e)}") from e
    if not isinstance(restored, dict):
        raise CheckpointError(f"{where}: not a flat dict of parameters")
    return {k: np.asarray(v, np.float32) for k, v in restored.items()}


def _check_index(path: Path, info: dict, params: dict) -> None:
    arrays = info.get("arrays")
    if not isinstance(arrays, dict):
        raise CheckpointError(f"{path / META_FILE}: no parameter index (damaged)")
    if {k: list(v.shape) for k, v in params.items()} != {k: list(v) for k, v in arrays.items()}:
        raise CheckpointError(f"{path}: the parameters do not match the description's index "
                              "(damaged?)")


# -- the flat layout: version 2's weights.bin and version 3's memory-mapped copy -----------------


def _flat_layout(shapes: dict) -> tuple[dict, int]:
    """Sorted keys, little-endian float32, C order, each array 64-byte aligned ->
    ({key: (byte offset, shape)}, total bytes)."""
    layout, pos = {}, 0
    for k in sorted(shapes):
        pos += -pos % _ALIGN
        shape = tuple(int(d) for d in shapes[k])
        layout[k] = (pos, shape)
        pos += 4 * math.prod(shape)
    return layout, pos


def _flat_copy_path(digest: str) -> Path | None:
    where = cache_dir()
    if where is None or not isinstance(digest, str) or len(digest) != 64:
        return None
    return where.parent / "weights" / f"{digest}.bin"


def _write_flat_copy(info: dict, params: dict) -> None:
    """Best effort: a read-only or full cache only means the next load restores Orbax again."""
    f = _flat_copy_path(info.get("weights_sha256"))
    if f is None:
        return
    layout, _ = _flat_layout({k: v.shape for k, v in params.items()})
    tmp = f.with_name(f".{f.name}.{os.getpid()}")
    try:
        f.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as out:
            for k, (offset, _) in layout.items():
                out.write(b"\0" * (offset - out.tell()))
                out.write(np.ascontiguousarray(params[k], "<f4").tobytes())
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, f)
        _record_verified(f, info["weights_sha256"])
    except OSError:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


def _load_flat_copy(path: Path, info: dict) -> dict[str, np.ndarray] | None:
    f = _flat_copy_path(info.get("weights_sha256"))
    arrays = info.get("arrays")
    if f is None or not f.is_file() or not isinstance(arrays, dict):
        return None
    try:
        layout, size = _flat_layout(arrays)
    except (TypeError, ValueError):
        raise CheckpointError(f"{path / META_FILE}: bad parameter index (damaged)") from None
    if f.stat().st_size != size:
        return None
    params = _map(f, layout, size)
    if not _was_verified(f, info["weights_sha256"]):
        if weights_digest(params) != info["weights_sha256"]:
            return None                    # a stale or damaged copy: restore from Orbax instead
        _record_verified(f, info["weights_sha256"])
    return params


def _map(f: Path, layout: dict, size: int) -> dict[str, np.ndarray]:
    # copy-on-write mapping: pages are read lazily; a buffer JAX aliases and a training step
    # later donates is written privately, never into the file
    mm = np.memmap(f, dtype="<f4", mode="c") if size else np.zeros(0, "<f4")
    return {k: mm[o // 4: o // 4 + math.prod(s)].reshape(s) for k, (o, s) in layout.items()}


def _load_v2(path: Path, info: dict) -> dict[str, np.ndarray]:
    wf, arrays = info.get("weights_file"), info.get("arrays")
    if not (isinstance(wf, dict) and isinstance(arrays, dict)):
        raise CheckpointError(f"{path / META_FILE}: no weights index (damaged)")
    f = path / str(wf.get("name", WEIGHTS_FILE))
    if f.parent != path:
        raise CheckpointError(f"{path / META_FILE}: weights file outside the directory")
    try:
        size = f.stat().st_size
    except OSError as e:
        raise CheckpointError(f"{f}: cannot read ({e.strerror or e})") from None
    if size != wf.get("size"):
        raise CheckpointError(f"{f}: {size} bytes, the description says {wf.get('size')} "
                              "(truncated or damaged)")
    layout = {}
    for k, entry in arrays.items():
        try:
            offset, shape = int(entry[0]), tuple(int(d) for d in entry[1])
        except (TypeError, ValueError, IndexError):
            raise CheckpointError(f"{path / META_FILE}: bad index entry for {k}") from None
        if offset % 4 or offset < 0 or offset + 4 * math.prod(shape) > size or min(shape, default=1) < 0:
            raise CheckpointError(f"{path / META_FILE}: index entry for {k} lies outside the "
                                  "weights file (damaged)")
        layout[k] = (offset, shape)
    params = _map(f, layout, size)
    if not _was_verified(f, info.get("weights_sha256")):
        if file_sha256(f) != wf.get("sha256"):
            raise CheckpointError(f"{f}: contents do not match the recorded sha256 (damaged?)")
        if info.get("weights_sha256") and weights_digest(params) != info["weights_sha256"]:
            raise CheckpointError(f"{path}: parameters do not match the recorded sha256 (damaged?)")
        _record_verified(f, info.get("weights_sha256"))
    return params


def file_sha256(f) -> str:
    """The SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(f, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


# -- verified once: which flat files were hashed, as they were then ------------------------------


def _verified_record() -> Path | None:
    where = cache_dir()
    return None if where is None else where.parent / "verified-weights.json"


def _stamp(f: Path, digest) -> dict:
    st = f.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino,
            "weights_sha256": digest}


def _read_record() -> dict:
    rec = _verified_record()
    try:
        seen = json.loads(rec.read_text()) if rec is not None else {}
    except (OSError, ValueError):
        seen = {}
    return seen if isinstance(seen, dict) else {}


def _was_verified(f: Path, digest) -> bool:
    return _read_record().get(str(f.resolve())) == _stamp(f, digest)


def _record_verified(f: Path, digest) -> None:
    rec = _verified_record()
    if rec is None:
        return
    try:
        seen = _read_record()
        seen[str(f.resolve())] = _stamp(f, digest)
        rec.parent.mkdir(parents=True, exist_ok=True)
        tmp = rec.with_name(f".{rec.name}.{os.getpid()}")
        tmp.write_text(json.dumps(seen))
        os.replace(tmp, rec)
    except OSError:
        pass                           # read-only home: verify again next time


def assign_params(model, params: dict[str, np.ndarray]):
    """Load flat parameters into a model skeleton (abstract, or built with placeholders); all keys
    and shapes must match. The arrays move to the device as float32, in one transfer."""
    import jax
    from flax import nnx
    graphdef, state = nnx.split(model)
    flat = dict(nnx.to_flat_state(state))
    expected = {dotted(k): k for k, v in flat.items() if isinstance(v, nnx.Param)}
    _check_keys(expected, flat, params)
    moved = jax.device_put({path: np.asarray(params[k], np.float32) for k, path in expected.items()})
    for path, v in moved.items():
        flat[path] = flat[path].replace(v)
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


def _mismatch_report(missing, unexpected, wrong, limit: int = 20) -> str:
    lines = ["parameters do not match the model:"]
    for title, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong)):
        if items:
            lines.append(f"  {title} ({len(items)}): " + ", ".join(items[:limit])
                         + (" ..." if len(items) > limit else ""))
    return "\n".join(lines)


def load_model(path, config=None, **overrides):
    """Build the model recorded in ``path`` (or ``config``, which must have the same parameter
    shapes) and load its parameters. ``overrides``: fields of the recorded
    :class:`~lvae_jax.models.specs.ModelConfig` to change, e.g. ``lmb_range=(16, 2048)`` (the
    official zoo's λ range argument). The model carries the verified sha256 of its weights as
    ``model.weights_sha256`` (its identity in bitstreams)."""
    import dataclasses
    recorded, params, info = load_params(path)
    if overrides:
        try:
            recorded = dataclasses.replace(config or recorded, **{
                k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()})
        except TypeError as e:
            fields = ", ".join(f.name for f in dataclasses.fields(recorded) if f.init)
            raise CheckpointError(f"{path}: {e}; a model directory's configuration has the "
                                  f"fields {fields}") from None
        config = None
    # the module tree with zero-stride placeholder arrays (no init, no tracing), then the
    # file's arrays in their place
    model = assign_params(HierarchicalVAE(config or recorded, rngs=HostInit(0, abstract=True)),
                          params)
    model.weights_sha256 = info.get("weights_sha256") or weights_digest(params)
    return model


def _check_keys(expected, flat, params) -> None:
    missing = sorted(set(expected) - set(params))
    unexpected = sorted(set(params) - set(expected))
    wrong = [f"{k}: model {tuple(flat[expected[k]].shape)} vs file {tuple(params[k].shape)}"
             for k in sorted(set(expected) & set(params))
             if tuple(flat[expected[k]].shape) != tuple(params[k].shape)]
    if missing or unexpected or wrong:
        raise CheckpointError(_mismatch_report(missing, unexpected, wrong))
