"""The official entropy-coding tables: scale tables, CompressAI CDF tables, table indexes.

Every latent (and the lossless model's pixels) is coded with a discretised Gaussian whose scale
selects one CDF row of a fixed table ("scale table"). Three tables exist in the official models:

==================  ====  ===========  ==============  ====================================
name                size  scale range  lower bound     official source (CDF form)
==================  ====  ===========  ==============  ====================================
``qres_latent``      64   0.1 .. 20    0.11            ``QLatentBlockX.update``: CompressAI
                                                       ``GaussianConditional(None)`` (erfc)
``qarv_latent``      64   0.11 .. 20   table[0]        ``DiscretizedGaussian`` of
                                                       ``lvae/models/entropy_coding.py`` (erf)
``lossless_pixel``  128   0.11 .. 20   0.11            ``GaussianNLLOutputNet.update`` of
                                                       qres34m_lossless: ``GaussianConditional``
                                                       ``(None, scale_bound=0.11)`` (erfc)
==================  ====  ===========  ==============  ====================================

The scale values are the official float32 ``torch.exp(torch.linspace(...))`` results, packaged in
``scale_tables.json`` (numpy's exp/linspace differ from torch's by one float step in 21–80
entries, and torch's own result differs between CPU instruction sets by one step in one entry —
the packaged values are those the official recordings were made with).

CDF rows mirror ``GaussianConditional.update()`` (tail mass 1e-9, 16-bit precision): the pmf is
computed op by op in float32 like torch, with erf/erfc evaluated in float64 and rounded (the
official class's erf or erfc form; see :func:`standardized_cdf` — a plain float64 evaluation
misses one row, JAX float32 erf misses dozens), then quantised by CompressAI's own compiled
``pmf_to_quantized_cdf``. Tables are built once per process (:func:`get_tables` is cached).

Indexes mirror ``GaussianConditional.build_indexes``: lower-bound the scale, then
``index = (n - 1) - #{k < n - 1 : scale <= table[k]}``, all in float32 (a NaN scale gives n - 1).
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from importlib import resources

import numpy as np

from lvae_jax.entropy import coder

#: ``EntropyModel``/``GaussianConditional`` defaults used by every official model.
TAIL_MASS = 1e-9
PRECISION = coder.PRECISION
#: Relative distance of a prior scale to a table threshold below which its index may differ
#: between two correct float32 implementations (docs/cross_implementation.md): the band the
#: encoder counts as "at risk" and the decoder searches for flipped indexes.
NEAR_BOUNDARY = 1e-5


@dataclass(frozen=True)
class TableSpec:
    """How one official table is built. ``json_key``: entry of ``scale_tables.json``;
    ``bound``: the scale lower bound (None: the table's first entry); ``cdf_form``: ``"erfc"``
    (CompressAI's ``GaussianConditional._standardized_cumulative``) or ``"erf"``
    (``torch.distributions.Normal.cdf``, used by the official ``DiscretizedGaussian``)."""

    name: str
    json_key: str
    bound: float | None
    cdf_form: str
    mirrors: str


SPECS: dict[str, TableSpec] = {
    "qres_latent": TableSpec("qres_latent", "qres_latent", 0.11, "erfc",
                             "qresvae/model.py QLatentBlockX.update: GaussianConditional(None) + "
                             "update_scale_table(exp(linspace(log 0.1, log 20, 64)))"),
    "qarv_latent": TableSpec("qarv_latent", "qarv_latent", None, "erf",
                             "models/entropy_coding.py DiscretizedGaussian(): default table "
                             "exp(linspace(log 0.11, log 20, 64)), LowerBound(table[0])"),
    "lossless_pixel": TableSpec("lossless_pixel", "qres_lossless_pixels", 0.11, "erfc",
                                "qresvae/model.py GaussianNLLOutputNet.update: GaussianConditional"
                                "(None, scale_bound=0.11), exp(linspace(log 0.11, log 20, 128))"),
}


@dataclass(frozen=True, eq=False)
class CoderTables:
    """One official table, ready for the coder and for index computation.

    ``scale_table``: (n,) float32; ``bound``: the float32 scale lower bound (as a Python float);
    ``cdf``: the validated coder tables; ``quantized_cdf`` (n, max_len + 2) int32,
    ``cdf_length`` (n,) and ``offset`` (n,) are CompressAI's ``_quantized_cdf``, ``_cdf_length``
    and ``_offset`` buffers.
    """

    name: str
    scale_table: np.ndarray
    bound: float
    cdf_form: str
    cdf: coder.CdfTables

    @property
    def quantized_cdf(self) -> np.ndarray:
        return self.cdf.quantized_cdf

    @property
    def cdf_length(self) -> np.ndarray:
        return self.cdf.cdf_length

    @property
    def offset(self) -> np.ndarray:
        return self.cdf.offset

    @property
    def num_tables(self) -> int:
        return int(self.scale_table.shape[0])

    def build_indexes(self, scales) -> np.ndarray:
        """:func:`build_indexes` with this table."""
        return build_indexes(scales, self.scale_table, self.bound)


@functools.lru_cache(maxsize=None)
def official_scale_table(name: str) -> np.ndarray:
    """The official float32 scale table ``name`` (read-only array)."""
    spec = _spec(name)
    text = resources.files("lvae_jax.entropy").joinpath("scale_tables.json").read_text("utf-8")
    entry = json.loads(text)["tables"][spec.json_key]
    table = np.array([float.fromhex(h) for h in entry["float32_hex"]], dtype=np.float32)
    if table.shape != (entry["n"],) or np.any(np.diff(table) <= 0) or table[0] <= 0:
        raise ValueError(f"packaged scale table {name!r} is damaged")
    table.flags.writeable = False
    return table


def _spec(name: str) -> TableSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise ValueError(f"unknown table {name!r}; known: {', '.join(SPECS)}") from None


def standardized_cdf(v, form: str) -> np.ndarray:
    """Standard normal CDF of float32 ``v`` in the official algebraic form, mirroring the float32
    torch operations one by one with the special function evaluated in float64 and rounded to
    float32: ``"erfc"``: ``0.5·erfc(c·v)``, ``c = float32(-2^-0.5)`` (CompressAI
    ``GaussianConditional._standardized_cumulative``); ``"erf"``: ``0.5·(1 + erf(v / √2))``
    (``torch.distributions.Normal(0, 1).cdf``). Returns float32.

    Measured against torch 2.14 on the three official tables: 95–97 % of the pmf entries are
    bit-identical to torch's float32 pmf (the rest differ by torch's own erf rounding) and the
    quantised CDF tables are identical. Evaluating everything in float64 instead leaves one
    ``qarv_latent`` row (43) off by one unit in one symbol."""
    from scipy import special
    f32 = np.float32
    v = np.asarray(v, dtype=f32)
    if form == "erfc":
        arg = f32(-(2 ** -0.5)) * v
        return f32(0.5) * special.erfc(arg.astype(np.float64)).astype(f32)
    if form == "erf":
        arg = v / f32(math.sqrt(2.0))
        return f32(0.5) * (f32(1.0) + special.erf(arg.astype(np.float64)).astype(f32))
    raise ValueError(f"unknown CDF form {form!r}")


def cdf_tables_for(scale_table: np.ndarray, cdf_form: str, tail_mass: float = TAIL_MASS,
                   precision: int = PRECISION) -> coder.CdfTables:
    """``GaussianConditional.update()`` for a float32 scale table: the pmf in float32 as torch
    computes it (see :func:`standardized_cdf`), quantised by CompressAI's own compiled
    ``pmf_to_quantized_cdf``; rows zero-padded to ``max_length + 2``."""
    from scipy import special
    f32 = np.float32
    scales = np.asarray(scale_table, dtype=f32)
    # official: scipy.stats.norm.ppf(tail_mass / 2), float64; norm.ppf is special.ndtri (the same
    # float64 value), and importing scipy.stats alone costs ~0.9 s of every command's start-up
    multiplier = -special.ndtri(tail_mass / 2)
    # torch: float32 tensor * Python scalar -> float32 product, then ceil.
    pmf_center = np.ceil(scales * f32(multiplier)).astype(np.int64)
    pmf_length = 2 * pmf_center + 1
    max_length = int(pmf_length.max())
    samples = np.abs(np.arange(max_length)[None, :] - pmf_center[:, None]).astype(f32)
    upper = standardized_cdf((f32(0.5) - samples) / scales[:, None], cdf_form)
    lower = standardized_cdf((f32(-0.5) - samples) / scales[:, None], cdf_form)
    pmf = upper - lower
    tail = f32(2.0) * lower[:, 0]
    cdf = np.zeros((scales.size, max_length + 2), dtype=np.int32)
    for i in range(scales.size):
        prob = np.concatenate([pmf[i, : pmf_length[i]], tail[i : i + 1]])
        row = coder.pmf_to_quantized_cdf(prob, precision)
        cdf[i, : row.size] = row
    return coder.CdfTables(cdf, (pmf_length + 2).astype(np.int32), (-pmf_center).astype(np.int32))


@functools.lru_cache(maxsize=None)
def get_tables(name: str) -> CoderTables:
    """The official table ``name`` (``qres_latent``, ``qarv_latent``, ``lossless_pixel``), built
    once per process. Needs CompressAI's compiled ``_CXX`` module."""
    spec = _spec(name)
    table = official_scale_table(name)
    bound = float(np.float32(spec.bound)) if spec.bound is not None else float(table[0])
    return CoderTables(name, table, bound, spec.cdf_form, cdf_tables_for(table, spec.cdf_form))


#: Which scale table each model family's latents use (the official ``update()`` of each block);
#: the lossless pixel head's table.
LATENT_TABLE = {"qres": "qres_latent", "qarv": "qarv_latent"}
PIXEL_TABLE = "lossless_pixel"


def tables_for(config) -> tuple[CoderTables, CoderTables | None]:
    """(latent tables, pixel tables or None) of a model configuration with an entropy coder
    (``config.family`` in :data:`LATENT_TABLE`)."""
    latent = get_tables(LATENT_TABLE[config.family])
    return latent, (get_tables(PIXEL_TABLE) if config.lossless else None)


# ------------------------------------------------------------------------------------------------
# Table indexes
# ------------------------------------------------------------------------------------------------


def build_indexes(scales, scale_table, bound) -> np.ndarray:
    """CompressAI ``GaussianConditional.build_indexes`` in numpy: int32 indexes, same shape as
    ``scales``. ``scales`` are taken as float32 (as in the official models); ``bound`` is the
    scale lower bound (``LowerBound``: ``max(scale, bound)``, NaN propagates)."""
    table = np.asarray(scale_table, dtype=np.float32)
    s = np.maximum(np.asarray(scales, dtype=np.float32), np.float32(bound))
    thresholds = table[:-1]
    # #{k : s <= t_k} over the sorted thresholds = n-1 - #{k : t_k < s}; NaN compares false.
    below = np.searchsorted(thresholds, s, side="left")
    idx = np.where(np.isnan(s), table.size - 1, below)
    return idx.astype(np.int32)


def build_indexes_jnp(scales, scale_table, bound):
    """:func:`build_indexes` in ``jax.numpy`` (jit-able; bit-identical to the numpy version):
    ``(n - 1) - Σ_k [max(scale, bound) <= table[k]]`` in float32."""
    import jax.numpy as jnp
    table = jnp.asarray(scale_table, dtype=jnp.float32)
    s = jnp.maximum(jnp.asarray(scales, dtype=jnp.float32), jnp.float32(bound))
    hits = (s[..., None] <= table[:-1]).astype(jnp.int32)
    return (table.shape[0] - 1 - jnp.sum(hits, axis=-1)).astype(jnp.int32)


def nearest_threshold(scales, scale_table, bound) -> tuple[np.ndarray, np.ndarray]:
    """Where a float error in a prior scale could change its table index.

    For each *raw* scale (before the lower bound, float32): the relative distance
    ``|s - t_k| / t_k`` (float64) to the nearest index threshold that can change its index —
    ``t_k = table[k]``, k < n - 1, with ``t_k >= bound`` (thresholds below the bound are
    unreachable) — and the index change (int32, ±1) that crossing it means. The raw scale is what
    counts: a scale well below the bound is clamped to the bound by every implementation and
    cannot flip, however close the clamped value sits to a threshold. NaN gives NaN and 0."""
    table = np.asarray(scale_table, dtype=np.float32).astype(np.float64)
    thresholds = table[:-1][table[:-1] >= np.float64(np.float32(bound))]
    s = np.asarray(scales, dtype=np.float32).astype(np.float64)
    if thresholds.size == 0:
        return np.full(s.shape, np.inf), np.zeros(s.shape, np.int32)
    pos = np.clip(np.searchsorted(thresholds, s), 0, thresholds.size - 1)
    lower = thresholds[np.maximum(pos - 1, 0)]
    upper = thresholds[pos]
    nearest = np.where(np.abs(s - lower) / lower <= np.abs(upper - s) / upper, lower, upper)
    d = np.abs(s - nearest) / nearest
    # Above the threshold: index k+1 (`#{t < s}`); an error across it gives k, so -1; below: +1.
    flip = np.where(np.isnan(s), 0, np.where(s > nearest, -1, 1)).astype(np.int32)
    return np.where(np.isnan(s), np.nan, d), flip


def boundary_distance(scales, scale_table, bound) -> np.ndarray:
    """The distance part of :func:`nearest_threshold`: per raw scale, the relative distance to the
    nearest reachable index threshold (for diagnosing index flips between implementations)."""
    return nearest_threshold(scales, scale_table, bound)[0]
