"""Reading golden recordings of the official code: the set in ``tests/fixtures/parity`` (always), and
more from the directories in ``$LVAE_PARITY_DIR`` (``os.pathsep``-separated), e.g. the full set
of ``../shared/parity``.

Everything is derived from the files: the manifests give the official keys, shapes and the weight
recipe; recordings give inputs, λ, per-block tensors, stats and bitstreams. Any directory of
recordings in that format works (other seeds, inputs and λ).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import zlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


#: The recordings that ship with the repository (see its README.md).
FIXTURE_PARITY = REPO / "tests" / "fixtures" / "parity"


def parity_dirs() -> list[Path]:
    """The in-repository recordings, then every directory of ``$LVAE_PARITY_DIR``."""
    extra = [Path(p) for p in os.environ.get("LVAE_PARITY_DIR", "").split(os.pathsep) if p]
    return [FIXTURE_PARITY] + [d for d in extra if d.resolve() != FIXTURE_PARITY.resolve()]


def parity_dir() -> Path:
    """Where the recordings are looked for, for messages."""
    return FIXTURE_PARITY


def results_dir() -> Path:
    """The official RD curves and VTM anchors packaged with lvae-jax."""
    from lvae_jax.evaluation.official_results import results_dir as packaged
    return packaged()


@dataclass(frozen=True)
class Manifest:
    path: Path

    @cached_property
    def data(self) -> dict:
        return json.loads(self.path.read_text())

    @cached_property
    def digest(self) -> str:
        """SHA-256 of the manifest file: what identifies the weights (two directories with the same
        manifest hold recordings of the same weights; a cache of converted models is keyed by it)."""
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    @property
    def model(self) -> str:
        return self.data["model"]

    @property
    def args(self) -> dict:
        return self.data.get("args", {})

    def rebuild_state_dict(self) -> dict[str, np.ndarray]:
        """The official state_dict from the recipe in the parity README."""
        seed = self.data["seed"]
        gains = [(re.compile(rx), np.float32(g)) for rx, g in self.data.get("gains", [])]
        out = {}
        for key, info in self.data["keys"].items():
            shape = tuple(info["shape"])
            if info["kind"] == "buffer":
                if "value" in info:
                    out[key] = np.asarray(info["value"], dtype=np.dtype(info["dtype"])).reshape(shape)
                else:
                    out[key] = np.zeros(shape, dtype=np.dtype(info["dtype"]))
                continue
            rng = np.random.default_rng([seed, zlib.crc32(key.encode("utf-8"))])
            leaf = key.rsplit(".", 1)[-1]
            if leaf == "gamma":
                w = rng.uniform(0.5, 1.0, size=shape)
            elif leaf == "weight" and len(shape) >= 2:
                w = rng.standard_normal(size=shape) / math.sqrt(math.prod(shape[1:]))
            elif leaf == "weight":
                w = 1.0 + 0.1 * rng.standard_normal(size=shape)
            else:
                w = 0.1 * rng.standard_normal(size=shape)
            w = w.astype(np.float32)
            for rx, g in gains:
                if rx.match(key):
                    w = w * g
                    break
            out[key] = w.astype(np.float32)
        return out


@dataclass(frozen=True)
class Recording:
    npz_path: Path
    manifest: Manifest
    #: the test id; by default the file's stem (with the manifest's digest where two directories
    #: hold recordings of that name made with different weights)
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or self.npz_path.stem

    @cached_property
    def arrays(self):
        with np.load(self.npz_path) as z:
            return {k: z[k] for k in z.files}

    @cached_property
    def info(self) -> dict:
        return json.loads(self.npz_path.with_suffix(".json").read_text())

    @property
    def lmb(self) -> float | None:
        return self.info.get("lmb")

    def image_nhwc(self) -> np.ndarray:
        return self.arrays["input"].transpose(0, 2, 3, 1)

    def blocks(self, mode: str) -> list[dict[str, np.ndarray]]:
        """Per latent block (decoding order): {'pm','pv','qm','z','kl', ...} in NHWC."""
        out = []
        i = 0
        while f"{mode}/block{i:02d}/pm" in self.arrays:
            prefix = f"{mode}/block{i:02d}/"
            out.append({k[len(prefix):]: v.transpose(0, 2, 3, 1)
                        for k, v in self.arrays.items() if k.startswith(prefix)})
            i += 1
        return out

    def has(self, prefix: str) -> bool:
        return any(k.startswith(prefix) for k in self.arrays)

    def grads(self) -> dict[str, np.ndarray]:
        return {k[len("train/grad/"):]: v for k, v in self.arrays.items() if k.startswith("train/grad/")}

    def qres_latent_strings(self) -> list[bytes]:
        out, i = [], 0
        while f"compress/latent{i:02d}" in self.arrays:
            out.append(self.arrays[f"compress/latent{i:02d}"].tobytes())
            i += 1
        return out


def discover(dirs: list[Path] | None = None) -> tuple[list[Manifest], list[Recording]]:
    """Manifests and recordings of every directory of ``dirs`` (default :func:`parity_dirs`).

    Each recording is paired with the manifest **of its own directory** (the one whose model name
    is the longest prefix of the recording's name): directories may hold recordings of other
    weights (another seed or gains) of the same model. A recording found again under the same
    file name in a later directory with an identical manifest (the same weights) is a copy and is
    taken once; manifests are listed once per distinct content."""
    manifests: dict[str, Manifest] = {}
    recs: dict[tuple[str, str], Recording] = {}
    for d in (parity_dirs() if dirs is None else dirs):
        if not d.is_dir():
            continue
        own = {m.model: m for m in map(Manifest, sorted(d.glob("*.manifest.json")))}
        for m in own.values():
            manifests.setdefault(m.digest, m)
        by_length = sorted(own, key=len, reverse=True)
        for npz in sorted(d.glob("*.npz")):
            if not npz.with_suffix(".json").is_file():
                continue
            model = next((m for m in by_length if npz.stem.startswith(m + "_")), None)
            if model is not None:
                m = manifests[own[model].digest]
                recs.setdefault((m.digest, npz.name), Recording(npz, m))
    count: dict[str, int] = {}
    for r in recs.values():
        count[r.npz_path.stem] = count.get(r.npz_path.stem, 0) + 1
    out = [r if count[r.npz_path.stem] == 1 else
           Recording(r.npz_path, r.manifest, f"{r.npz_path.stem}@{r.manifest.digest[:8]}")
           for r in recs.values()]
    return list(manifests.values()), sorted(out, key=lambda r: (r.manifest.model, r.name))


def within(ours, ref, rel: float = 1e-4) -> tuple[bool, float, float]:
    """The parity criterion: max |ours − ref| <= rel · max(1, max |ref|) (over finite entries;
    non-finite entries must coincide)."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    if ours.shape != ref.shape:
        return False, float("inf"), 0.0
    fin = np.isfinite(ref)
    if not np.array_equal(fin, np.isfinite(ours)):
        return False, float("inf"), 0.0
    if not np.array_equal(ref[~fin], ours[~fin]) and not np.all(np.isnan(ref[~fin]) & np.isnan(ours[~fin])):
        return False, float("inf"), 0.0
    if not fin.any():
        return True, 0.0, 0.0
    err = float(np.max(np.abs(ours[fin] - ref[fin])))
    bound = rel * max(1.0, float(np.max(np.abs(ref[fin]))))
    return err <= bound, err, bound


def rel_error(ours, ref) -> float:
    """||ours − ref|| / ||ref|| (Frobenius); NaN patterns must coincide (else inf)."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    if not np.array_equal(np.isnan(ours), np.isnan(ref)):
        return float("inf")
    m = ~np.isnan(ref)
    denom = np.linalg.norm(ref[m])
    return float(np.linalg.norm(ours[m] - ref[m]) / max(denom, 1e-30))
