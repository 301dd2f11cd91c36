"""Rate–distortion results as JSON: the schema of the official lossy-vae result files.

A result file holds one RD curve: one value per operating point (a λ, a codec quality) of the
dataset averages of per-image statistics. The official files come in three spellings, all read
and written back unchanged in content:

* model results (``eval-var-rate.py`` / ``eval-fix-rate.py``)::

      {"name": "qarv_base", "test-set": "kodak", "platform": ..., "device": ...,
       "lambdas": [16.0, ...], "results": {"bpp": [...], "mse": [...], "psnr": [...]}}

* anchors (VTM 18.0)::

      {"name": "vtm18.0", "dataset_name": "kodak", "quality": [15, ...],
       "results": {"bpp": [...], "psnr": [...]}}

* bare lists (``kodak-vtm18.0.json``)::  ``{"bpp": [...], "psnr": [...]}``

Per-point values: ``bpp`` (bits per pixel of the real bitstream, averaged over images), ``psnr``
(RGB PSNR in dB, per image then averaged over images), optional ``mse`` (per-image MSE on [0, 1]
pixels, averaged), optional ``ms-ssim``, and any further per-point lists (``encoding_time``, …).
Top-level per-point settings: ``lambdas`` and the keys in :data:`SETTING_KEYS` (``quality``);
every other top-level field is kept verbatim as metadata.

A file may also hold a JSON list of such objects (several curves, e.g. one per classical codec);
:func:`load_curves` reads both forms.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence
from lvae_jax.files import atomic_write_text

#: Top-level keys naming the test set, in the order the official files use them.
TEST_SET_KEYS = ("test-set", "dataset_name")
#: Top-level per-point settings besides ``lambdas`` (VTM anchors: ``quality`` = QP).
SETTING_KEYS = ("quality", "qp")
#: Per-point result keys with their own :class:`RDCurve` attribute (JSON spelling).
NAMED_RESULT_KEYS = ("bpp", "psnr", "mse", "ms-ssim")


class RDFormatError(ValueError):
    """An RD results file or object does not follow the schema; the message names the file."""


@dataclass(frozen=True)
class _Layout:
    """How a file spelled the curve, so that writing it back keeps its shape and key order."""
    nested: bool = True
    test_set_key: str = "test-set"
    top_order: tuple[str, ...] = ()
    results_order: tuple[str, ...] = ()


#: New curves: name, test-set, metadata, lambdas, settings, results{bpp, mse, psnr, ms-ssim, ...}
#: (the order of the official eval-var-rate.py output).
_DEFAULT_LAYOUT = _Layout(nested=True, test_set_key="test-set")


@dataclass
class RDCurve:
    """One rate–distortion curve (values per operating point, in file order).

    Attributes:
        name: method name (``"qarv_base"``, ``"vtm18.0"``), or None when the file has none.
        bpp: bits per pixel, dataset average of per-image ``8 * bytes / (H * W)``.
        psnr: RGB PSNR in dB, dataset average of per-image PSNR.
        test_set: test-set name (``"kodak"``), or None.
        lambdas: λ of each point (rate–distortion trade-off of the model), or None.
        mse: dataset average of per-image MSE on [0, 1] pixels, or None.
        ms_ssim: dataset average of per-image MS-SSIM (JSON key ``ms-ssim``), or None.
        extra: further per-point results (``encoding_time``, …), one value per point.
        settings: further top-level per-point settings (``quality``), one value per point.
        meta: every other top-level field (``platform``, ``device``, ``description``, …).
        source: the file the curve was read from (for messages; not written).
    """

    name: str | None
    bpp: Sequence[float]
    psnr: Sequence[float]
    test_set: str | None = None
    lambdas: Sequence[float] | None = None
    mse: Sequence[float] | None = None
    ms_ssim: Sequence[float] | None = None
    extra: dict[str, Sequence[Any]] = field(default_factory=dict)
    settings: dict[str, Sequence[Any]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    source: str | None = field(default=None, compare=False)
    _layout: _Layout = field(default=_DEFAULT_LAYOUT, repr=False, compare=False)

    def __post_init__(self):
        where = self.source or "RD curve"
        self.bpp = _numbers(self.bpp, "bpp", where, positive=True)
        self.psnr = _numbers(self.psnr, "psnr", where)
        n = len(self.bpp)
        if n == 0:
            raise RDFormatError(f"{where}: the curve has no points (bpp is empty)")
        for attr, key, positive in (("mse", "mse", True), ("ms_ssim", "ms-ssim", False),
                                    ("lambdas", "lambdas", True)):
            if getattr(self, attr) is not None:
                setattr(self, attr, _numbers(getattr(self, attr), key, where, positive=positive))
        self.extra = {k: tuple(_as_list(v, k, where)) for k, v in self.extra.items()}
        self.settings = {k: tuple(_as_list(v, k, where)) for k, v in self.settings.items()}
        for key, values in self.per_point().items():
            if len(values) != n:
                raise RDFormatError(f"{where}: {key} has {len(values)} values but bpp has {n} "
                                    "(every per-point list needs one value per point)")
        clash = set(self.extra) & set(NAMED_RESULT_KEYS)
        if clash:
            raise RDFormatError(f"{where}: extra results may not use the reserved keys {sorted(clash)}")
        for label, value in (("name", self.name), ("test set", self.test_set)):
            if value is not None and not isinstance(value, str):
                raise RDFormatError(f"{where}: the {label} must be a string, got {value!r}")

    # ---------------------------------------------------------------- views
    def __len__(self) -> int:
        return len(self.bpp)

    @property
    def label(self) -> str:
        """A display name: ``name``, else the file's stem, else ``"curve"``."""
        if self.name:
            return self.name
        return Path(self.source).stem if self.source else "curve"

    def per_point(self) -> dict[str, tuple]:
        """Every per-point list by its JSON key (settings first, then results)."""
        out: dict[str, tuple] = {}
        if self.lambdas is not None:
            out["lambdas"] = tuple(self.lambdas)
        out.update(self.settings)
        out["bpp"] = tuple(self.bpp)
        out["psnr"] = tuple(self.psnr)
        if self.mse is not None:
            out["mse"] = tuple(self.mse)
        if self.ms_ssim is not None:
            out["ms-ssim"] = tuple(self.ms_ssim)
        out.update(self.extra)
        return out

    def sorted(self, by: str = "bpp") -> "RDCurve":
        """A copy with every per-point list reordered by increasing ``by`` (stable)."""
        values = self.per_point().get(by)
        if values is None:
            raise KeyError(f"{self.label}: no per-point values named {by!r}")
        order = sorted(range(len(values)), key=lambda i: values[i])
        def perm(seq):
            return None if seq is None else tuple(seq[i] for i in order)
        return dataclasses.replace(
            self, bpp=perm(self.bpp), psnr=perm(self.psnr), lambdas=perm(self.lambdas),
            mse=perm(self.mse), ms_ssim=perm(self.ms_ssim),
            extra={k: perm(v) for k, v in self.extra.items()},
            settings={k: perm(v) for k, v in self.settings.items()},
            meta=dict(self.meta))

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_points(cls, name: str | None, points: Iterable[Mapping[str, float]], *,
                    test_set: str | None = None, lambdas: Sequence[float] | None = None,
                    settings: Mapping[str, Sequence[Any]] | None = None,
                    meta: Mapping[str, Any] | None = None) -> "RDCurve":
        """Build a curve from one mapping per operating point, e.g. the per-λ averages
        ``{"bpp": ..., "mse": ..., "psnr": ...}``; keys besides bpp/psnr/mse/ms-ssim become
        ``extra``. Every point must have the same keys."""
        points = [dict(p) for p in points]
        if not points:
            raise RDFormatError(f"{name or 'RD curve'}: no points")
        keys = list(points[0])
        for i, p in enumerate(points):
            if set(p) != set(keys):
                raise RDFormatError(f"{name or 'RD curve'}: point {i} has keys {sorted(p)}, "
                                    f"point 0 has {sorted(keys)}")
        for required in ("bpp", "psnr"):
            if required not in keys:
                raise RDFormatError(f"{name or 'RD curve'}: points have no {required!r}")
        col = {k: [p[k] for p in points] for k in keys}
        extra = {k: v for k, v in col.items() if k not in NAMED_RESULT_KEYS}
        return cls(name=name, bpp=col["bpp"], psnr=col["psnr"], test_set=test_set,
                   lambdas=lambdas, mse=col.get("mse"), ms_ssim=col.get("ms-ssim"),
                   extra=extra, settings=dict(settings or {}), meta=dict(meta or {}))

    @classmethod
    def from_dict(cls, data: Any, source: str | None = None) -> "RDCurve":
        """Parse one curve object in any of the official spellings (see module docstring)."""
        where = source or "RD curve"
        if not isinstance(data, Mapping):
            raise RDFormatError(f"{where}: expected a JSON object, got {type(data).__name__}")
        nested = "results" in data
        results = data["results"] if nested else data
        if not isinstance(results, Mapping):
            raise RDFormatError(f"{where}: 'results' must be an object, got "
                                f"{type(results).__name__}")
        for key in ("bpp", "psnr"):
            if key not in results:
                where_key = "results" if nested else "the top level"
                raise RDFormatError(f"{where}: no {key!r} list in {where_key} "
                                    f"(keys: {sorted(results)})")
        present = [k for k in TEST_SET_KEYS if k in data]
        if len(present) > 1:
            raise RDFormatError(f"{where}: both {present[0]!r} and {present[1]!r} name the test set")
        test_set_key = present[0] if present else "test-set"
        named, extra, settings, meta = {}, {}, {}, {}
        for key, value in results.items():
            if key in NAMED_RESULT_KEYS:
                named[key] = value
            else:
                extra[key] = _as_list(value, f"results.{key}" if nested else key, where)
        if nested:
            for key, value in data.items():
                if key in ("results", "name", "lambdas", *TEST_SET_KEYS):
                    continue
                (settings if key in SETTING_KEYS else meta)[key] = value
        layout = _Layout(nested=nested, test_set_key=test_set_key,
                         top_order=tuple(data) if nested else (),
                         results_order=tuple(results))
        return cls(name=data.get("name") if nested else None,
                   bpp=named["bpp"], psnr=named["psnr"],
                   test_set=data.get(test_set_key) if nested else None,
                   lambdas=data.get("lambdas") if nested else None,
                   mse=named.get("mse"), ms_ssim=named.get("ms-ssim"),
                   extra=extra, settings=settings, meta=meta, source=source, _layout=layout)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, in the spelling and key order the curve was read with (new curves:
        the official model-results spelling)."""
        layout = self._layout
        results = {"bpp": list(self.bpp)}
        if self.mse is not None:
            results["mse"] = list(self.mse)
        results["psnr"] = list(self.psnr)
        if self.ms_ssim is not None:
            results["ms-ssim"] = list(self.ms_ssim)
        results.update({k: list(v) for k, v in self.extra.items()})
        results = _ordered(results, layout.results_order)
        flat_ok = (self.name is None and self.test_set is None and self.lambdas is None
                   and not self.settings and not self.meta)
        if not layout.nested and flat_ok:
            return results
        top: dict[str, Any] = {}
        if self.name is not None:
            top["name"] = self.name
        if self.test_set is not None:
            top[layout.test_set_key] = self.test_set
        top.update(self.meta)
        if self.lambdas is not None:
            top["lambdas"] = list(self.lambdas)
        top.update({k: list(v) for k, v in self.settings.items()})
        top["results"] = results
        return _ordered(top, layout.top_order)


# -------------------------------------------------------------------- files
def load_curves(path) -> list[RDCurve]:
    """Read a results file holding one curve object or a JSON list of them."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RDFormatError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise RDFormatError(f"{path}: cannot read ({e})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise RDFormatError(f"{path}: not valid JSON ({e})") from None
    if isinstance(data, list):
        if not data:
            raise RDFormatError(f"{path}: an empty list holds no RD curve")
        return [RDCurve.from_dict(d, source=f"{path}[{i}]") for i, d in enumerate(data)]
    return [RDCurve.from_dict(data, source=str(path))]


def load_rd(path, name: str | None = None) -> RDCurve:
    """Read one curve: the only curve of the file, or the one called ``name`` (needed when the
    file holds several)."""
    curves = load_curves(path)
    if name is not None:
        found = [c for c in curves if c.name == name]
        if len(found) != 1:
            names = ", ".join(repr(c.name) for c in curves)
            raise RDFormatError(f"{path}: {'no' if not found else len(found)} curves named "
                                f"{name!r} (curves: {names})")
        return found[0]
    if len(curves) != 1:
        names = ", ".join(repr(c.name) for c in curves)
        raise RDFormatError(f"{path}: holds {len(curves)} curves ({names}); choose one by name")
    return curves[0]


def dumps(curves: RDCurve | Sequence[RDCurve], indent: int = 4) -> str:
    """JSON text of one curve (an object) or several (a list)."""
    if isinstance(curves, RDCurve):
        data: Any = curves.to_dict()
    else:
        data = [c.to_dict() for c in curves]
    try:
        return json.dumps(data, indent=indent, allow_nan=False) + "\n"
    except ValueError as e:
        raise RDFormatError(f"cannot write non-finite numbers as JSON ({e})") from None


def save_rd(curves: RDCurve | Sequence[RDCurve], path, indent: int = 4) -> Path:
    """Write one curve (a JSON object) or several (a JSON list) to ``path``; the text is built
    before the file is opened, so a bad curve leaves an existing file untouched."""
    return write_text_atomic(path, dumps(curves, indent=indent))


def write_text_atomic(path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file and a rename, so a reader never
    sees a half-written file and an existing one stays intact if writing fails."""
    return atomic_write_text(path, text)


# -------------------------------------------------------------------- helpers
def _as_list(value, key: str, where: str) -> list:
    if hasattr(value, "ndim") and hasattr(value, "tolist"):      # numpy / jax arrays
        if value.ndim != 1:
            raise RDFormatError(f"{where}: {key} must be one-dimensional, got shape "
                                f"{tuple(value.shape)}")
        return value.tolist()
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise RDFormatError(f"{where}: {key} must be a list with one value per point, "
                            f"got {type(value).__name__}")
    return list(value)


def _numbers(values, key: str, where: str, positive: bool = False) -> tuple:
    """Validate a per-point list of finite numbers; ints stay ints (written back as they were)."""
    values = _as_list(values, key, where)
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:   # numpy / jax scalar
                v = v.item()
                values[i] = v
            else:
                raise RDFormatError(f"{where}: {key}[{i}] is {v!r}, not a number")
        if not math.isfinite(v):
            raise RDFormatError(f"{where}: {key}[{i}] is {v!r}; values must be finite")
        if positive and v <= 0:
            raise RDFormatError(f"{where}: {key}[{i}] is {v!r}; values must be > 0")
    return tuple(values)


def _ordered(d: dict, order: Sequence[str]) -> dict:
    """``d`` with the keys named in ``order`` first (in that order), then the rest as they are."""
    out = {k: d[k] for k in order if k in d}
    out.update({k: v for k, v in d.items() if k not in out})
    return out
