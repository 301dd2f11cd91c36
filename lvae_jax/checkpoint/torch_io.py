"""Official PyTorch checkpoints <-> lvae-jax parameters.

Reading never unpickles arbitrary objects: files are opened with ``torch.load(weights_only=True)``.
Accepted layouts: the published ``{"model": state_dict}``, the official trainer's checkpoints
(``{"model", "optimizer", "scaler", "epoch", "iter", "results"}``), a bare state_dict, and
state_dicts saved from ``DataParallel``/``DDP`` (a uniform ``module.`` prefix).

The model is detected from the keys and shapes by matching every registered official model's key
map (:mod:`lvae_jax.checkpoint.keymap`); every problem (missing or unexpected keys, shape
mismatches, unexpected buffer values) is reported at once in a :class:`ConversionError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lvae_jax.checkpoint.errors import CheckpointError
from lvae_jax.checkpoint.model_dir import dotted, file_sha256, load_params, save_params
from lvae_jax.checkpoint.keymap import (FILLED_BY_UPDATE, OPTIONAL_PREFIXES, BufferEntry, ParamEntry,
                                        key_map, to_jax, to_torch, torch_shape)
from lvae_jax.models.specs import ModelConfig
from lvae_jax.files import atomic_file
from lvae_jax.models import build_model
from lvae_jax.models.registry import MODELS


class ConversionError(CheckpointError):
    """The checkpoint cannot be converted; the message lists every problem found."""


# -- reading -----------------------------------------------------------------------------------


def read_torch_checkpoint(path) -> tuple[dict[str, np.ndarray], list[str]]:
    """Load an official checkpoint safely. Returns (state_dict as numpy, notes)."""
    import torch
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, zip errors, disallowed globals...
        raise ConversionError(
            f"{path}: not a loadable PyTorch checkpoint with weights_only=True "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). lvae-jax never "
            "unpickles arbitrary objects; re-save the state_dict with torch.save({'model': sd})") from None
    notes = []
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        extra = sorted(k for k in obj if k != "model")
        if extra:
            notes.append(f"using the 'model' entry; ignoring {', '.join(map(str, extra))}")
        sd = obj["model"]
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        notes.append("file is a bare state_dict")
        sd = obj
    else:
        raise ConversionError(f"{path}: expected {{'model': state_dict}} or a state_dict, got "
                              f"{type(obj).__name__} with keys {list(obj)[:8] if isinstance(obj, dict) else '-'}")
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ConversionError(f"{path}: state_dict entries that are not tensors: {bad[:10]}")
    if sd and all(k.startswith("module.") for k in sd):
        notes.append("stripped the 'module.' prefix (DataParallel/DDP state_dict)")
        sd = {k[len("module."):]: v for k, v in sd.items()}
    out = {}
    for k, v in sd.items():
        v = v.detach().cpu()
        if v.dtype == torch.bfloat16 or v.dtype == torch.float16:
            v = v.float()
        out[k] = v.numpy()      # shares the loaded tensor's memory (which it keeps alive): no copy
    return out, notes


# -- matching ----------------------------------------------------------------------------------


@dataclass
class MatchReport:
    config: ModelConfig
    missing: list = field(default_factory=list)
    unexpected: list = field(default_factory=list)
    wrong_shape: list = field(default_factory=list)
    bad_buffers: list = field(default_factory=list)
    filled_buffers: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.wrong_shape or self.bad_buffers)

    @property
    def n_problems(self) -> int:
        return len(self.missing) + len(self.unexpected) + len(self.wrong_shape) + len(self.bad_buffers)

    def describe(self, limit: int = 25) -> str:
        lines = [f"state_dict does not match {self.config.name}:"]
        for title, items in (("missing keys", self.missing), ("unexpected keys", self.unexpected),
                             ("shape mismatches", self.wrong_shape), ("unexpected buffer values", self.bad_buffers)):
            if items:
                lines.append(f"  {title} ({len(items)}):")
                lines.extend(f"    {x}" for x in items[:limit])
                if len(items) > limit:
                    lines.append(f"    ... and {len(items) - limit} more")
        return "\n".join(lines)


def match(sd: dict[str, np.ndarray], config: ModelConfig, abstract_shapes: dict | None = None,
          shapes_if_keys_missing: bool = True) -> MatchReport:
    """Compare a state_dict with a model's key map: keys, shapes, buffer values. With
    ``shapes_if_keys_missing=False`` shapes are compared only where every key of the model is
    present (building a model's shapes is the costly part of detecting which model a file holds,
    and one with missing keys is not it)."""
    rep = MatchReport(config)
    entries = key_map(config)
    rep.missing = [e.torch_key for e in entries if e.torch_key not in sd]
    shapes = None
    if shapes_if_keys_missing or not rep.missing:
        shapes = abstract_shapes if abstract_shapes is not None else param_shapes(config)
    seen = set()
    for e in entries:
        seen.add(e.torch_key)
        if e.torch_key not in sd:
            continue
        v = sd[e.torch_key]
        if isinstance(e, ParamEntry):
            if shapes is None:
                continue
            want = torch_shape(e.layout, shapes[e.jax_path])
            if tuple(v.shape) != tuple(want):
                rep.wrong_shape.append(f"{e.torch_key}: file {tuple(v.shape)}, {config.name} expects {tuple(want)}")
        else:
            suffix = e.torch_key.rsplit(".", 1)[-1]
            if suffix in FILLED_BY_UPDATE:
                if v.size:
                    rep.filled_buffers.append(e.torch_key)
            elif v.shape != e.value.shape or not np.array_equal(v.astype(e.value.dtype), e.value):
                rep.bad_buffers.append(f"{e.torch_key}: {v.reshape(-1)[:4]} (official {e.value})")
    for k in sd:
        if k not in seen and not k.startswith(OPTIONAL_PREFIXES):
            rep.unexpected.append(k)
    return rep


def param_shapes(config: ModelConfig) -> dict[str, tuple]:
    """lvae-jax parameter shapes of a config (no memory allocated)."""
    from flax import nnx
    model = build_model(config, abstract=True)
    return {dotted(path): tuple(v.shape)
            for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def detect(sd: dict[str, np.ndarray], candidates: dict[str, ModelConfig]) -> tuple[MatchReport, list]:
    """Pick the candidate whose key map matches; returns (best report, all reports sorted)."""
    reports = sorted((match(sd, c, shapes_if_keys_missing=False) for c in candidates.values()),
                     key=lambda r: r.n_problems)
    if not reports[0].ok:                      # the closest one, reported in full
        reports[0] = match(sd, reports[0].config)
    return reports[0], reports


def default_candidates(lmb: float | None = None, lmb_range=None) -> dict[str, ModelConfig]:
    out = {}
    for name, entry in MODELS.items():
        kwargs = {}
        if name in ("qres34m", "qres17m") and lmb is not None:
            kwargs["lmb"] = lmb
        if name in ("qarv_base", "rd_model_base") and lmb_range is not None:
            kwargs["lmb_range"] = tuple(lmb_range)
        out[name] = entry.build(**kwargs)
    return out


def lmb_from_filename(path) -> float | None:
    """``qres34m-lmb64.pt`` -> 64.0 (the published QRes weights are named this way)."""
    m = re.search(r"lmb[_-]?(\d+(?:\.\d+)?)", Path(path).name)
    return float(m.group(1)) if m else None


# -- converting ----------------------------------------------------------------------------------


def state_dict_to_params(sd: dict[str, np.ndarray], config: ModelConfig) -> dict[str, np.ndarray]:
    """Official state_dict -> flat lvae-jax parameters (float32). Call :func:`match` first."""
    return {e.jax_path: np.ascontiguousarray(to_jax(e.layout, sd[e.torch_key]).astype(np.float32))
            for e in key_map(config) if isinstance(e, ParamEntry)}


def params_to_state_dict(params: dict[str, np.ndarray], config: ModelConfig) -> dict[str, np.ndarray]:
    """Flat lvae-jax parameters -> the official state_dict (official key order, buffers at their
    values after construction, i.e. before ``compress_mode(True)``)."""
    out = {}
    for e in key_map(config):
        if isinstance(e, ParamEntry):
            if e.jax_path not in params:
                raise ConversionError(f"parameter {e.jax_path} (official {e.torch_key}) is missing")
            out[e.torch_key] = np.ascontiguousarray(to_torch(e.layout, np.asarray(params[e.jax_path], np.float32)))
        else:
            out[e.torch_key] = e.value.copy()
    return out


def write_torch_checkpoint(state_dict: dict[str, np.ndarray], path, overwrite: bool = False) -> Path:
    """``torch.save({"model": state_dict}, path)`` atomically (temporary file + rename)."""
    import torch
    path = Path(path)
    if path.exists() and not overwrite:
        raise ConversionError(f"{path} already exists (pass --overwrite)")
    if path.is_dir():
        raise ConversionError(f"{path} is a directory")
    sd = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state_dict.items()}
    with atomic_file(path) as tmp:
        torch.save({"model": sd}, tmp)
    return path


@dataclass
class ConversionResult:
    out_dir: Path
    config: ModelConfig
    notes: list


def convert_torch_to_model(torch_ckpt, out_dir, model: str | ModelConfig | None = None,
                           lmb: float | None = None, lmb_range=None, overwrite: bool = False,
                           allow_nonfinite: bool = False,
                           origin: dict | None = None) -> ConversionResult:
    """The whole forward conversion: read, detect (or check the named model), convert, write an
    lvae-jax model directory. Raises :class:`ConversionError` listing every problem, including
    NaN/Inf weights (unless ``allow_nonfinite``). ``origin``: where the file came from
    (repository, revision, path, sha256), recorded in the model's metadata."""
    sd, notes = read_torch_checkpoint(torch_ckpt)
    if lmb is None:
        lmb = lmb_from_filename(torch_ckpt)
        if lmb is not None:
            notes.append(f"λ = {lmb:g} taken from the file name")
    if isinstance(model, ModelConfig):      # a configuration of one's own (a narrower variant)
        candidates = {model.name: model}
    else:
        candidates = default_candidates(lmb, lmb_range)
        if model is not None:
            if model not in candidates:
                raise ConversionError(f"unknown model {model!r}; valid: {', '.join(sorted(candidates))}")
            candidates = {model: candidates[model]}
    best, reports = detect(sd, candidates)
    if not best.ok:
        msg = best.describe()
        if len(reports) > 1:
            msg = ("no official model matches this state_dict; the closest is "
                   f"{best.config.name} ({best.n_problems} problems):\n" + msg)
        raise ConversionError(msg)
    config = best.config
    if config.family == "qres" and config.head.type == "mse_head" and lmb is None:
        notes.append(f"λ not given and not in the file name: recorded the official default λ = "
                     f"{config.head.lmb:g} (it only affects the training loss; pass --lmb)")
    if best.filled_buffers:
        notes.append(f"{len(best.filled_buffers)} coder-table buffers were filled (saved after "
                     "compress_mode(True)); lvae-jax builds its own tables")
    params = state_dict_to_params(sd, config)
    bad = sorted(k for k, v in params.items() if not np.all(np.isfinite(v)))
    if bad and not allow_nonfinite:
        raise ConversionError(f"{len(bad)} parameter arrays hold NaN or Inf (e.g. {', '.join(bad[:3])}): "
                              "a damaged checkpoint; pass --allow-nonfinite to convert it anyway")
    if bad:
        notes.append(f"{len(bad)} parameter arrays hold NaN or Inf (converted as asked)")
    meta = {"source": str(Path(torch_ckpt).name), "source_sha256": file_sha256(torch_ckpt),
            "converted_from": "official PyTorch checkpoint", "notes": notes,
            "coder_buffers_filled": bool(best.filled_buffers)}
    if origin is not None:
        meta["origin"] = origin
    out = save_params(out_dir, config, params, meta=meta, overwrite=overwrite)
    return ConversionResult(out, config, notes)


def convert_model_to_torch(model_dir, out_path, overwrite: bool = False) -> Path:
    """The reverse conversion: an lvae-jax model directory -> an official ``.pt`` that the official
    code loads with ``strict=True``."""
    config, params, _ = load_params(model_dir)
    return write_torch_checkpoint(params_to_state_dict(params, config), out_path, overwrite)
