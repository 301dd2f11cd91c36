"""Record CompressAI's own entropy tables and coder outputs as a test fixture.

Runs in a reference environment where ``compressai`` and the official lossy-vae import (not in
the lvae-jax environment):

    PYTHONPATH=/path/to/lossy-vae /path/to/refenv/bin/python scripts/record_compressai_tables.py

For each official table (see ``lvae_jax/entropy/tables.py``) it builds CompressAI's real entropy
model exactly as the official code does, fed with the packaged official scale values
(``lvae_jax/entropy/scale_tables.json``):

* ``qres_latent``: ``GaussianConditional(None)`` + ``update_scale_table(table)`` + ``update()``
  (``QLatentBlockX.update``);
* ``qarv_latent``: the official ``DiscretizedGaussian(scale_table)`` + ``update()``;
* ``lossless_pixel``: ``GaussianConditional(None, scale_bound=0.11)`` + ``update_scale_table`` +
  ``update()`` (``GaussianNLLOutputNet.update``),

and saves their ``_quantized_cdf``/``_cdf_length``/``_offset``, ``build_indexes`` on a dense sweep
of scales around every table boundary, and ``compress`` outputs for random tensors (escapes
included). It also rebuilds each table with the official ``update()`` on this machine's torch
``exp`` and records whether those scale values and CDFs equal the packaged ones.

Output: ``tests/fixtures/compressai_tables.npz`` (a few tens of kB).

With ``--official-files`` it also writes ``tests/fixtures/official_bitstreams.npz``: files written
by the official ``compress_file`` of qres34m, qres34m_lossless and qarv_base, with the parity
weights rebuilt from ``<shared>/parity/<model>.manifest.json`` (the recipe in its README), for a
50×60 crop of ``<shared>/images/horse1.png`` (padded to 64×64 by the official code), plus the
official ``decompress_file`` output (NCHW, rounded to uint8).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TABLES_JSON = ROOT / "lvae_jax" / "entropy" / "scale_tables.json"
JSON_KEYS = {"qres_latent": "qres_latent", "qarv_latent": "qarv_latent",
             "lossless_pixel": "qres_lossless_pixels"}


def packaged_table(name: str) -> np.ndarray:
    entry = json.loads(TABLES_JSON.read_text())["tables"][JSON_KEYS[name]]
    return np.array([float.fromhex(h) for h in entry["float32_hex"]], dtype=np.float32)


def build_models(torch):
    """name -> (model built from the packaged table, model built by the official update())."""
    from compressai.entropy_models import GaussianConditional
    from lvae.models.entropy_coding import DiscretizedGaussian
    from lvae.models.qresvae.model import GaussianNLLOutputNet, QLatentBlockX

    models = {}
    g = GaussianConditional(None)
    g.update_scale_table(torch.from_numpy(packaged_table("qres_latent")))
    g.update()
    native = QLatentBlockX(8, 4)
    native.update()
    models["qres_latent"] = (g, native.discrete_gaussian)

    d = DiscretizedGaussian(scale_table=torch.from_numpy(packaged_table("qarv_latent")))
    d.update()
    native = DiscretizedGaussian()
    native.update()
    models["qarv_latent"] = (d, native)

    p = GaussianConditional(None, scale_bound=0.11)
    p.update_scale_table(torch.from_numpy(packaged_table("lossless_pixel")))
    p.update()
    head = GaussianNLLOutputNet(torch.nn.Conv2d(4, 3, 1), torch.nn.Conv2d(4, 3, 1))
    head.update()
    models["lossless_pixel"] = (p, head.discrete_gaussian)
    return models


def sweep_scales(table: np.ndarray, bound: float, rng) -> np.ndarray:
    """Scales around every table entry and the bound (exact value, ±1..3 float steps, relative
    ±1e-7..1e-5), a log-uniform sweep, and special values."""
    points = [np.float32(v) for v in table] + [np.float32(bound)]
    out = []
    for p in points:
        up = down = p
        out.append(p)
        for _ in range(3):
            up = np.nextafter(up, np.float32(np.inf))
            down = np.nextafter(down, np.float32(0))
            out += [up, down]
        for r in (1e-7, 1e-6, 1e-5):
            out += [np.float32(p * (1 + r)), np.float32(p * (1 - r))]
    out += list(np.exp(rng.uniform(math.log(1e-3), math.log(100.0), 1000)).astype(np.float32))
    out += [0.0, -0.0, -1.0, 1e-45, 1e-38, 1e30, np.inf, -np.inf, np.nan]
    return np.asarray(out, dtype=np.float32)


def record(out_path: Path, seed: int = 0) -> dict:
    import compressai
    import torch

    warnings.filterwarnings("ignore")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    arrays: dict[str, np.ndarray] = {}
    meta = {"torch": torch.__version__, "compressai": compressai.__version__,
            "python": platform.python_version(), "machine": platform.machine(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "seed": seed, "tables": {}}
    for name, (model, native) in build_models(torch).items():
        table = model.scale_table.numpy().astype(np.float32)
        assert np.array_equal(table, packaged_table(name))
        bound = float(model.lower_bound_scale.bound.item())
        arrays[f"{name}/scale_table"] = table
        arrays[f"{name}/bound"] = np.float32(bound)
        arrays[f"{name}/quantized_cdf"] = model._quantized_cdf.numpy().astype(np.int32)
        arrays[f"{name}/cdf_length"] = model._cdf_length.numpy().astype(np.int32)
        arrays[f"{name}/offset"] = model._offset.numpy().astype(np.int32)

        scales = sweep_scales(table, bound, rng)
        idx = model.build_indexes(torch.from_numpy(scales)).numpy()
        arrays[f"{name}/sweep_scales"] = scales
        arrays[f"{name}/sweep_indexes"] = idx.astype(np.int16)

        # compress() on random tensors: 2 images, 4x6x8 each; a few large deviations escape.
        shape = (2, 4, 6, 8)
        means = torch.from_numpy(rng.normal(0, 3, shape).astype(np.float32))
        sc = torch.from_numpy(np.exp(rng.uniform(math.log(0.05), math.log(30), shape)).astype(np.float32))
        x = means + sc * torch.from_numpy(rng.normal(0, 1, shape).astype(np.float32))
        outliers = torch.tensor([60.0, -75.0, 300.0, -2000.0, 1e5, 9.0])
        x.view(-1)[rng.choice(x.numel(), 6, replace=False)] += outliers
        indexes = model.build_indexes(sc)
        strings = model.compress(x, indexes, means=means)
        symbols = model.quantize(x, "symbols", means)
        decoded = model.decompress(strings, indexes, means=means)
        assert torch.equal(decoded, model.quantize(x, "dequantize", means))
        arrays[f"{name}/sample_symbols"] = symbols.reshape(shape[0], -1).numpy().astype(np.int32)
        arrays[f"{name}/sample_indexes"] = indexes.reshape(shape[0], -1).numpy().astype(np.int16)
        for b, s in enumerate(strings):
            arrays[f"{name}/sample_string{b}"] = np.frombuffer(s, dtype=np.uint8)

        native_table = native.scale_table.numpy().astype(np.float32)
        meta["tables"][name] = {
            "size": int(table.size), "bound": bound,
            "native_update_scale_table_equal": bool(np.array_equal(native_table, table)),
            "native_update_scale_entries_differing": np.nonzero(native_table != table)[0].tolist(),
            "native_update_cdf_equal": bool(np.array_equal(native._quantized_cdf.numpy(),
                                                           model._quantized_cdf.numpy())),
        }
    arrays["meta"] = np.array(json.dumps(meta))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out_path, **arrays)
    return meta


OFFICIAL_FILE_MODELS = ("qres34m", "qres34m_lossless", "qarv_base")


def record_official_files(out_path: Path, shared: Path) -> dict:
    """Official ``compress_file`` outputs (see the module docstring)."""
    import sys
    import tempfile

    import torch
    from PIL import Image
    from lvae.models.registry import get_model

    sys.path.insert(0, str(ROOT / "tests"))
    from parity_support import Manifest  # numpy-only reader of the weight recipe

    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    crop = Image.open(shared / "images" / "horse1.png").convert("RGB").crop((64, 128, 124, 178))
    assert crop.size == (60, 50)
    arrays, meta = {}, {"image": "horse1.png[128:178, 64:124]", "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        img_path = Path(tmp) / "crop.png"
        crop.save(img_path)
        for name in OFFICIAL_FILE_MODELS:
            man = Manifest(shared / "parity" / f"{name}.manifest.json")
            model = get_model(name, **man.args)
            state = {k: torch.from_numpy(np.ascontiguousarray(v))
                     for k, v in man.rebuild_state_dict().items()}
            missing, unexpected = model.load_state_dict(state, strict=False)
            assert not unexpected and all("_quantized_cdf" in k or "_offset" in k or "_cdf_length" in k
                                          or "scale_table" in k for k in missing), (missing, unexpected)
            model.eval()
            model.compress_mode(True)
            bits = Path(tmp) / f"{name}.bits"
            model.compress_file(str(img_path), str(bits))
            decoded = model.decompress_file(str(bits))
            data = bits.read_bytes()
            arrays[f"{name}/file"] = np.frombuffer(data, dtype=np.uint8)
            arrays[f"{name}/decoded_u8"] = np.clip(np.round(decoded.numpy() * 255), 0, 255).astype(np.uint8)
            meta["models"][name] = {"args": man.args, "bytes": len(data)}
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez_compressed(out_path, **arrays)
    return meta


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "compressai_tables.npz")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--official-files", action="store_true",
                    help="also record official compress_file outputs (official_bitstreams.npz)")
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared",
                    help="shared data directory (parity/ manifests, images/)")
    args = ap.parse_args(argv)
    meta = record(args.out, args.seed)
    print(json.dumps(meta, indent=1))
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    if args.official_files:
        out = args.out.parent / "official_bitstreams.npz"
        print(json.dumps(record_official_files(out, args.shared), indent=1))
        print(f"wrote {out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
