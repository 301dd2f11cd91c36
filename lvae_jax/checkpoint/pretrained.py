"""The official published weights in one line: downloaded with the hub's own client, verified,
converted once into the lvae-jax model cache and loaded from there, with no network, afterwards.

    >>> model = lvae_jax.get_model("qres34m", lmb=64, pretrained=True)

Downloads go through ``huggingface_hub.hf_hub_download`` (one file at a time), so the hub's
settings apply: its cache (``HF_HOME``), resumed downloads, ``HF_ENDPOINT`` for a mirror,
``HF_HUB_OFFLINE``. A downloaded file is checked against the SHA-256 the hub announced (the ETag
of a large file, which names its blob in the hub's cache).

The model cache (``$LVAE_MODELS_DIR``, default ``~/.cache/lvae_jax/models``)::

    index.json     {"<repo>@<revision>/<path>": {"sha256": "<file sha256>", "commit": "..."}}
    <sha256>/      a model directory (lvae_jax.checkpoint.model_dir) named by the file's SHA-256;
                   its meta["origin"] says where it came from (repository, revision, path, digest)
    .lock          held while a file is downloaded and converted

Two processes asking at once convert once (the second waits on the lock and finds the entry);
the entry is written atomically and the index after it, so a kill at any point leaves either no
entry or a complete one (a complete directory missing from the index is adopted on the next call).
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from lvae_jax.checkpoint.errors import CheckpointError
from lvae_jax.checkpoint.model_dir import file_sha256, is_model_dir, load_model, read_info
from lvae_jax.models.registry import (MODELS, OFFICIAL_REPO, OFFICIAL_REVISION, WeightsFile,
                                      get_config, parse_spec, weights_file)
from lvae_jax.checkpoint.torch_io import convert_torch_to_model

INDEX = "index.json"
LOCK = ".lock"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class PretrainedError(CheckpointError):
    """The official weights could not be fetched, verified or converted (the message says why)."""


def models_dir() -> Path:
    """The lvae-jax model cache: ``$LVAE_MODELS_DIR`` or ``~/.cache/lvae_jax/models``."""
    where = os.environ.get("LVAE_MODELS_DIR")
    return Path(where) if where else Path.home() / ".cache" / "lvae_jax" / "models"


@dataclass(frozen=True)
class Source:
    """One published file: ``repo`` at ``revision``, ``path`` inside it."""
    repo: str
    revision: str
    path: str

    @property
    def key(self) -> str:
        return f"{self.repo}@{self.revision}/{self.path}"

    @classmethod
    def official(cls, file: WeightsFile) -> "Source":
        return cls(OFFICIAL_REPO, os.environ.get("LVAE_WEIGHTS_REVISION") or OFFICIAL_REVISION,
                   file.path)


def _read_index(root: Path) -> dict:
    try:
        index = json.loads((root / INDEX).read_text())
    except (OSError, ValueError):
        return {}
    return index if isinstance(index, dict) else {}


def _write_index(root: Path, index: dict) -> None:
    tmp = root / f".{INDEX}.{os.getpid()}"
    tmp.write_text(json.dumps(index, indent=1, sort_keys=True))
    os.replace(tmp, root / INDEX)


def cached_dir(source: Source, root: Path | None = None) -> Path | None:
    """The cached model directory of ``source``, or None (no network)."""
    root = root or models_dir()
    entry = _read_index(root).get(source.key)
    if not (isinstance(entry, dict) and _SHA256.match(str(entry.get("sha256", "")))):
        return None
    d = root / entry["sha256"]
    return d if is_model_dir(d) else None


def download(source: Source) -> tuple[Path, str, str | None]:
    """Fetch one file with the hub's client -> (local path, its SHA-256, the hub's commit).
    The SHA-256 is checked against the one the hub announced for it (the ETag of a large file)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub import constants
    try:
        local = Path(hf_hub_download(source.repo, source.path, revision=source.revision))
    except Exception as e:  # network, HTTP, offline mode, missing entry: all end the same way
        where = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
        offline = " (HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE else ""
        raise PretrainedError(
            f"could not download {source.path} from {source.repo} at {where}{offline}: "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}\n"
            "  set HF_ENDPOINT to a mirror, or download the file by hand and convert it with "
            "`python -m convert --torch-ckpt FILE`") from None
    digest = file_sha256(local)
    announced = local.resolve().name          # the hub's cache names a blob by its ETag
    if _SHA256.match(announced) and announced != digest:
        raise PretrainedError(
            f"{local} (from {source.key}) has SHA-256 {digest}, the hub announced {announced}: "
            f"a damaged download; delete {local.resolve()} and try again")
    commit = local.parent.name if re.match(r"^[0-9a-f]{40}$", local.parent.name) else None
    return local, digest, commit


def _say(progress, message: str) -> None:
    (progress or (lambda m: print(m, file=sys.stderr, flush=True)))(message)


def ensure(source: Source, model: str, root: Path | None = None, progress=None) -> Path:
    """The cached model directory of ``source`` (an official checkpoint of ``model``):
    downloaded, verified and converted on first use, under a lock."""
    from filelock import FileLock
    root = root or models_dir()
    hit = cached_dir(source, root)
    if hit is not None:
        return hit
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PretrainedError(f"cannot create the model cache {root}: {e.strerror or e} "
                              "(set LVAE_MODELS_DIR)") from None
    with FileLock(str(root / LOCK)):
        hit = cached_dir(source, root)       # another process may have finished meanwhile
        if hit is not None:
            return hit
        local, digest, commit = download(source)
        out = root / digest
        if not is_model_dir(out):
            _say(progress, f"converting {source.path} ({digest[:12]}) into {out}")
            origin = {"repo": source.repo, "revision": source.revision, "path": source.path,
                      "sha256": digest, "commit": commit}
            convert_into(local, out, model, origin)
        index = _read_index(root)
        index[source.key] = {"sha256": digest, "commit": commit}
        _write_index(root, index)
        return out


def convert_into(pt: Path, out: Path, model: str, origin: dict) -> Path:
    """Convert an official checkpoint into ``out`` (atomic), recording its origin."""
    try:
        return convert_torch_to_model(pt, out, model=model, origin=origin, overwrite=True).out_dir
    except CheckpointError as e:
        raise PretrainedError(f"{pt} (from {origin['repo']}/{origin['path']}) does not convert "
                              f"to {model}: {e}") from None


def ensure_local(pt, model: str, root: Path | None = None, progress=None) -> Path:
    """Convert a local official ``.pt`` once into the cache (named by its SHA-256)."""
    from filelock import FileLock
    pt = Path(pt)
    if not pt.is_file():
        raise PretrainedError(f"{pt}: not a file")
    digest = file_sha256(pt)
    root = root or models_dir()
    out = root / digest
    if is_model_dir(out):
        return out
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / LOCK)):
        if not is_model_dir(out):
            _say(progress, f"converting {pt} ({digest[:12]}) into {out}")
            convert_into(pt, out, model, {"repo": None, "revision": None, "path": str(pt.absolute()),
                                          "sha256": digest, "commit": None})
    return out


def pretrained_dir(name: str, pretrained=True, progress=None, **kwargs) -> Path:
    """The model directory holding the official weights of ``name`` for ``kwargs``."""
    if name not in MODELS:
        raise PretrainedError(f"unknown model {name!r}; valid names: {', '.join(sorted(MODELS))}")
    if pretrained is True:
        try:
            file = weights_file(name, **kwargs)
        except KeyError as e:
            raise PretrainedError(e.args[0]) from None
        return ensure(Source.official(file), name, progress=progress)
    return ensure_local(pretrained, name, progress=progress)


def load_pretrained(name: str, pretrained=True, progress=None, **kwargs):
    """``get_model(name, pretrained=True, **kwargs)``: the model with the official weights.
    ``kwargs`` are the official builder's (``lmb`` picks a QRes file; ``lmb_range`` re-targets
    QARV's λ embedding, as the official zoo allows)."""
    d = pretrained_dir(name, pretrained, progress=progress, **kwargs)
    try:
        config = get_config(name, **kwargs) if kwargs else None
    except TypeError as e:
        raise PretrainedError(f"{name}: {e}") from None
    return load_model(d, config=config)


def load_spec(spec: str, progress=None, **kwargs):
    """An official model by spec (``"qarv_base"``, ``"qres34m-lmb64"``) with its official weights."""
    try:
        name, args = parse_spec(spec)
    except KeyError as e:
        raise PretrainedError(f"{spec}: no such model directory, and {e.args[0]}") from None
    return load_pretrained(name, True, progress=progress, **{**args, **kwargs})


def spec_dir(spec: str, progress=None) -> Path:
    """The cached model directory of an official spec (downloaded and converted if needed)."""
    try:
        name, args = parse_spec(spec)
    except KeyError as e:
        raise PretrainedError(e.args[0]) from None
    return pretrained_dir(name, True, progress=progress, **args)


def model_dirs(ckpts, models, progress=None) -> list[Path]:
    """The model directories a command means: each ``--ckpt DIR`` (checked against ``--model
    NAME`` when both are given), else each ``--model SPEC`` with its official weights (downloaded
    and converted on first use). Empty when neither is given (the caller's default applies)."""
    ckpts = [c for c in ([ckpts] if isinstance(ckpts, (str, Path)) else ckpts or []) if c]
    models = [m for m in ([models] if isinstance(models, str) else models or []) if m]
    if not ckpts:
        return [spec_dir(m, progress) for m in models]
    if len(models) > 1:
        raise PretrainedError("give --model once to check --ckpt directories, or --model "
                              "alone (repeatable) for official weights")
    for c in ckpts:
        name = read_info(c)["config"]["name"]
        want = models[0] if models else None
        if want and name != want and name != _name_of(want):
            raise CheckpointError(f"{c} holds the model {name!r}, not {want!r}")
    return [Path(c) for c in ckpts]


def _name_of(spec: str) -> str | None:
    try:
        return parse_spec(spec)[0]
    except KeyError:
        return None


def model_table(root: Path | None = None) -> list[dict]:
    """One row per published file: spec, model, file, cached (no network)."""
    root = root or models_dir()
    rows = []
    for name in sorted(n for n in MODELS if MODELS[n].weights):
        default = MODELS[name].file_for()
        for file in MODELS[name].files():
            d = cached_dir(Source.official(file), root)
            rows.append({"spec": file.spec, "model": name, "path": file.path,
                         "default": file == default, "cached": str(d) if d else None})
    return rows
