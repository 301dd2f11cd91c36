"""Model directories: the parameters of one model plus a JSON description.

Layout (version 2, written by :func:`save_params`)::

    DIR/lvae_model.json   {"format": "lvae-jax-model", "version": 2, "config": {...},
                           "weights_sha256": "...",            # digest of the parameters
                           "weights_file": {"name": "weights.bin", "size": N, "sha256": "..."},
                           "arrays": {"path.to.param": [byte offset, [shape...]], ...},
                           "meta": {...}}
    DIR/weights.bin       every parameter as little-endian float32, C order, 64-byte aligned

Version 1 directories (``DIR/params/``, an Orbax StandardCheckpointer of the same flat dict) are
still read. Parameters are keyed by their lvae-jax path (``dec_blocks.3.prior_net.c1.kernel``), in
lvae-jax layouts (NHWC / HWIO).

Loading a version-2 directory memory-maps ``weights.bin`` (no parsing, no copy until the arrays
move to the device) and verifies it **once**: the first load hashes the file and recomputes the
parameter digest, and records the verified file (path, size, mtime, inode, digests) under
``$LVAE_CACHE_DIR/..`` (``~/.cache/lvae_jax/verified-weights.json``); later loads of the unchanged
file skip hashing. A changed file, or a description whose digests changed, is verified again.

Writing is atomic: everything goes to a temporary sibling directory that is renamed into place at
the end (an existing model directory is moved aside first and removed last), so a failure leaves
the old directory or the new one, never half of either.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

META_FILE = "lvae_model.json"
WEIGHTS_FILE = "weights.bin"
FORMAT = "lvae-jax-model"
VERSION = 2
READABLE_VERSIONS = (1, 2)
_ALIGN = 64


from lvae_jax.checkpoint.errors import CheckpointError  # noqa: F401  (re-exported)
from lvae_jax.files import replace_dir


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
        h.update(a.tobytes())
    return h.hexdigest()


def save_params(path, config, params: dict[str, np.ndarray], meta: dict | None = None,
                overwrite: bool = False) -> Path:
    """Write a model directory (version 2) from a config and flat parameters (atomic)."""
    path = Path(path).absolute()
    if path.exists() and not path.is_dir():
        raise CheckpointError(f"{path} exists and is not a directory: not replaced")
    if path.exists() and not overwrite:
        raise CheckpointError(f"{path} already exists (pass overwrite=True / --overwrite)")
    if path.exists() and not is_model_dir(path):
        found = sorted(p.name for p in path.iterdir())[:5]
        raise CheckpointError(f"{path} is not an lvae-jax model directory (it holds "
                              f"{', '.join(found) or 'nothing'}{', …' if len(found) == 5 else ''}): "
                              "--overwrite replaces only a model directory; choose another --out")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)          # mkdtemp's 0700 would hide the model from others
    try:
        params = {k: np.asarray(v, np.float32) for k, v in params.items()}
        arrays, h, pos = {}, hashlib.sha256(), 0
        with open(tmp / WEIGHTS_FILE, "wb") as f:
            for k in sorted(params):
                a = np.ascontiguousarray(params[k], dtype="<f4")
                pad = -pos % _ALIGN
                if pad:
                    f.write(b"\0" * pad)
                    h.update(b"\0" * pad)
                    pos += pad
                arrays[k] = [pos, list(a.shape)]
                data = a.tobytes()
                f.write(data)
                h.update(data)
                pos += len(data)
            f.flush()
            os.fsync(f.fileno())
        info = {"format": FORMAT, "version": VERSION, "config": config.to_dict(),
                "weights_sha256": weights_digest(params),
                "weights_file": {"name": WEIGHTS_FILE, "size": pos, "sha256": h.hexdigest()},
                "arrays": arrays, "meta": meta or {}}
        with open(tmp / META_FILE, "w") as f:
            f.write(json.dumps(info, indent=1))
            f.flush()
            os.fsync(f.fileno())
        replace_dir(tmp, path)        # the old directory or the new one, at every moment
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


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
    """-> (ModelConfig, {path: np.ndarray}, info dict). Version 2: read-only memory-mapped
    arrays, verified once per file (module docstring)."""
    from lvae_jax.models.specs import ModelConfig
    path = Path(path).absolute()
    info = read_info(path)
    try:
        config = ModelConfig.from_dict(info["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path / META_FILE}: invalid model configuration ({e!r})") from None
    if info["version"] >= 2:
        return config, _load_flat(path, info), info
    import orbax.checkpoint as ocp
    try:
        restored = ocp.StandardCheckpointer().restore(path / "params")
    except Exception as e:  # orbax raises a variety of types for damaged directories
        raise CheckpointError(f"could not read parameters from {path / 'params'}: {e}") from e
    params = {k: np.asarray(v) for k, v in restored.items()}
    digest = weights_digest(params)
    if info.get("weights_sha256") and digest != info["weights_sha256"]:
        raise CheckpointError(f"{path}: parameters do not match the recorded sha256 (damaged?)")
    return config, params, info


def _load_flat(path: Path, info: dict) -> dict[str, np.ndarray]:
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
    # copy-on-write mapping: pages are read lazily; a buffer JAX aliases and a training step
    # later donates is written privately, never into the file
    mm = np.memmap(f, dtype="<f4", mode="c") if size else np.zeros(0, "<f4")
    params = {}
    for k, entry in arrays.items():
        try:
            offset, shape = int(entry[0]), tuple(int(d) for d in entry[1])
        except (TypeError, ValueError, IndexError):
            raise CheckpointError(f"{path / META_FILE}: bad index entry for {k}") from None
        n = math.prod(shape)
        if offset % 4 or offset < 0 or offset + 4 * n > size or min(shape, default=1) < 0:
            raise CheckpointError(f"{path / META_FILE}: index entry for {k} lies outside the "
                                  "weights file (damaged)")
        params[k] = mm[offset // 4: offset // 4 + n].reshape(shape)
    _verify_once(f, info, params)
    return params


def _verified_record() -> Path | None:
    from lvae_jax.runtime import cache_dir
    where = cache_dir()
    return None if where is None else where.parent / "verified-weights.json"


def _verify_once(f: Path, info: dict, params: dict) -> None:
    """Hash the weights file and the parameters unless this exact file was verified before."""
    st = f.stat()
    key = str(f.resolve())
    want = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino,
            "file_sha256": info["weights_file"].get("sha256"),
            "weights_sha256": info.get("weights_sha256")}
    rec_path = _verified_record()
    seen = {}
    if rec_path is not None:
        try:
            seen = json.loads(rec_path.read_text())
        except (OSError, ValueError):
            seen = {}
        if isinstance(seen, dict) and seen.get(key) == want:
            return
    h = hashlib.sha256()
    with open(f, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    if h.hexdigest() != want["file_sha256"]:
        raise CheckpointError(f"{f}: contents do not match the recorded sha256 (damaged?)")
    if want["weights_sha256"] and weights_digest(params) != want["weights_sha256"]:
        raise CheckpointError(f"{f.parent}: parameters do not match the recorded sha256 (damaged?)")
    if rec_path is not None:
        try:
            seen = seen if isinstance(seen, dict) else {}
            seen[key] = want
            rec_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = rec_path.with_name(f".{rec_path.name}.{os.getpid()}")
            tmp.write_text(json.dumps(seen))
            os.replace(tmp, rec_path)
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


def load_model(path):
    """Build the model recorded in ``path`` and load its parameters. The model carries the
    verified sha256 of its weights as ``model.weights_sha256`` (its identity in bitstreams)."""
    from lvae_jax.models import HierarchicalVAE
    from lvae_jax.nn.layers import HostInit
    config, params, info = load_params(path)
    # the module tree with zero-stride placeholder arrays (no init, no tracing), then the
    # file's arrays in their place
    model = assign_params(HierarchicalVAE(config, rngs=HostInit(0, abstract=True)), params)
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
