"""Portable bitstreams, measured: files with portable-index hints (container version 2) decoded
by decoders whose float paths differ from the encoder's, and what the hints cost.

For each model (parity-recipe weights, converted by the real converter: qarv_base at λ = 16, 256
and 2048, qres34m, qres34m_lossless; and the embedded demo model, trained weights, at λ = 4, 32
and 128, its range) and each image of ``shared/images`` of 256² and 512², the
encoder (this process, lvae-jax defaults) writes the file with hints (default bound) and without
(version 1). Each decoder — a fresh process per float path — then decodes every file:

* ``default``: the encoder's float path (native depthwise kernel, YNNPACK fusions off);
* ``grouped`` / ``shift``: the other depthwise kernels (``LVAE_DEPTHWISE``);
* ``ynnpack``: XLA:CPU's default YNNPACK fusions back on (``LVAE_XLA_DEFAULTS=0``);
* ``hook``: every prior scale perturbed by a deterministic relative error uniform in ± the
  default bound, and every lossless pixel mean by an absolute error uniform in ± the bound
  (:class:`lvae_jax.codec.core.Perturbation`, ``Codec.with_perturbation``).

Per decoder: files decoded exactly (every symbol the encoder coded; lossless: also the input
image), refused (an error) and silently wrong (no error, but a symbol or a lossless pixel off); indexes set from hints; and the largest relative difference between its prior
scales and the encoder's, and for the lossless model the largest absolute difference of its pixel
means (``pm``, [-1, 1] units) — the figures the bound must exceed. Per model: the hints' size as a
share of the file (median, max). Prints a table; ``--json`` keeps the figures.

    python scripts/portable_bitstreams.py --json portable.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

CASES = (("qarv_base", 16.0), ("qarv_base", 256.0), ("qarv_base", 2048.0), ("qres34m", None),
         ("qres34m_lossless", None), ("qarv_demo", 4.0), ("qarv_demo", 32.0),
         ("qarv_demo", 128.0))
DECODERS = {"default": {}, "grouped": {"LVAE_DEPTHWISE": "grouped"},
            "shift": {"LVAE_DEPTHWISE": "shift"}, "ynnpack": {"LVAE_XLA_DEFAULTS": "0"},
            "hook": {}}


def _images(shared: Path) -> list[Path]:
    from PIL import Image
    out = []
    for p in sorted(shared.glob("*.png")):
        with Image.open(p) as im:
            if im.size in ((256, 256), (512, 512)):
                out.append(p)
    return out


def encode_all(work: Path, shared: Path, models, bound_exp: int | None = None) -> dict:
    from cross_implementation import _converted_model
    from lvae_jax.codec.api import Codec
    from lvae_jax.codec.engine import to_coder_order
    from lvae_jax.image import load_rgb8, pad_to_multiple, to_float
    files, built = [], {}
    for name, lmb in CASES:
        if name not in models:
            continue
        if name not in built:
            if name == "qarv_demo":              # the embedded demo model: trained weights
                import lvae_jax
                from lvae_jax.assets import demo_model_dir
                built[name] = (Codec(lvae_jax.load_model(demo_model_dir())), str(demo_model_dir()))
            else:
                model, _, _ = _converted_model(name, work)
                built[name] = (Codec(model), str(work / f"{name}_jax"))
        codec, mdir = built[name]
        for img in _images(shared):
            im = load_rgb8(img)[0]
            tag = f"{name}_{'lossless' if lmb is None and 'lossless' in name else lmb}_{img.stem}"
            v2 = codec.compress(im, lmb, **({} if bound_exp is None else {"hint_bound_exp": bound_exp}))
            v1 = codec.compress(im, lmb, hint_bound_exp=None)
            (work / f"{tag}.v2").write_bytes(v2)
            (work / f"{tag}.v1").write_bytes(v1)
            enc = codec.coder.engine.encode(pad_to_multiple(to_float(im), 64)[None], lmb)
            scales = [to_coder_order(s[0], np.float32) for s in enc.scales]
            symbols = [to_coder_order(s[0]) for s in enc.symbols]
            if enc.pixel_scales is not None:
                scales.append(to_coder_order(enc.pixel_scales[0], np.float32))
                symbols.append(to_coder_order(enc.pixel_symbols[0]))
            if enc.pixel_levels is not None:
                np.save(work / f"{tag}.levels.npy", enc.pixel_levels[0])
            np.savez(work / f"{tag}.scales.npz", *scales)
            np.savez(work / f"{tag}.symbols.npz", *symbols)
            from lvae_jax.codec import container
            h = container.read_header(v2)
            files.append({"tag": tag, "model": name, "lmb": lmb, "dir": mdir, "image": str(img),
                          "v1": len(v1), "v2": len(v2), "hints": len(h.checks.hints or b"") + 2,
                          "lossless": "lossless" in name})
            print(f"encoded {tag}: {len(v1)} -> {len(v2)} bytes", flush=True)
    return {"work": str(work), "files": files}


def worker(job_path: str, decoder: str) -> int:
    job = json.loads(Path(job_path).read_text())
    import lvae_jax
    from lvae_jax.codec import core
    from lvae_jax.codec.api import Codec
    from lvae_jax.entropy import hints
    from lvae_jax.image import load_rgb8, to_uint8
    perturbation = None
    if decoder == "hook":
        b = hints.bound(hints.DEFAULT_BOUND_EXP)
        perturbation = core.Perturbation(scale=b, level=b)
    # What the decoder computes, observed through the decoding's own steps (a measurement tool
    # may look inside): the scales it indexes, the symbols it decodes, the pixel levels it rounds.
    seen: list = []
    levels: list = []
    decoded: list = []
    real_m, real_i, real_s = core._perturbed_means, core._Decoding._indexes, core._Decoding._string

    def spy_m(mean, lv, delta):
        out = real_m(mean, lv, delta)
        levels.append(np.asarray(out[1]))
        return out

    def spy_i(self, *a):
        out = real_i(self, *a)
        seen.append(out[1])
        return out

    def spy_s(self, *a):
        decoded.append(real_s(self, *a))
        return decoded[-1]
    core._perturbed_means, core._Decoding._indexes, core._Decoding._string = spy_m, spy_i, spy_s
    work, codecs, rows = Path(job["work"]), {}, []
    for f in job["files"]:
        if f["dir"] not in codecs:
            codecs[f["dir"]] = Codec(lvae_jax.load_model(f["dir"]))
            if perturbation is not None:
                codecs[f["dir"]] = codecs[f["dir"]].with_perturbation(perturbation)
        codec = codecs[f["dir"]]
        enc_scales = list(np.load(work / f"{f['tag']}.scales.npz").values())
        enc_symbols = list(np.load(work / f"{f['tag']}.symbols.npz").values())
        row = {"tag": f["tag"], "decoder": decoder}
        for v in ("v2", "v1"):
            seen.clear()
            decoded.clear()
            levels.clear()
            try:
                res = codec.decompress_details((work / f"{f['tag']}.{v}").read_bytes())
                exact = len(decoded) == len(enc_symbols) and all(
                    np.array_equal(a, b) for a, b in zip(decoded, enc_symbols))
                if f["lossless"]:
                    exact = exact and bool(np.array_equal(to_uint8(res.image),
                                                          load_rgb8(f["image"])[0]))
                row[v] = "exact" if exact else "silent"
                row[f"{v}_hinted"] = sum(n for _, n in res.report.hinted)
                row[f"{v}_flips"] = sum(n for _, n, _ in res.report.flips)
            except Exception as e:  # noqa: BLE001 - an error is an outcome here
                row[v] = "error"
                row[f"{v}_error"] = str(e)[:200]
            if v == "v2" and len(seen) == len(enc_scales):
                rel = max(float(np.max(np.abs(d.astype(np.float64) / e.astype(np.float64) - 1)))
                          for d, e in zip(seen, enc_scales) if e.size)
                row["max_rel_scale_diff"] = rel
            lv_file = work / f"{f['tag']}.levels.npy"
            if v == "v2" and levels and lv_file.is_file():
                enc_lv = np.load(lv_file).astype(np.float64)
                row["max_mean_diff"] = float(np.max(np.abs(levels[0][0] - enc_lv))) / 127.5
        rows.append(row)
        print(json.dumps(row), flush=True)
    Path(job_path + f".{decoder}.out").write_text(json.dumps(rows))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shared-images", type=Path,
                   default=Path(os.environ.get("LVAE_SHARED_DIR", REPO.parent / "shared")) / "images")
    p.add_argument("--models", nargs="+", default=sorted({m for m, _ in CASES}))
    p.add_argument("--decoders", nargs="+", default=list(DECODERS))
    p.add_argument("--bound-exp", type=int, help="hint bound exponent (default: the library's)")
    p.add_argument("--sizes-only", action="store_true", help="encode and report sizes, no decoders")
    p.add_argument("--json")
    p.add_argument("--worker", nargs=2, metavar=("JOB", "DECODER"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(*args.worker)
    with tempfile.TemporaryDirectory(prefix="lvae_portable_") as d:
        job = encode_all(Path(d), args.shared_images, args.models, args.bound_exp)
        if args.sizes_only:
            args.decoders = []
        jp = Path(d) / "job.json"
        jp.write_text(json.dumps(job))
        results = {}
        for dec in args.decoders:
            env = dict(os.environ, **DECODERS[dec])
            r = subprocess.run([sys.executable, __file__, "--worker", str(jp), dec], env=env,
                               capture_output=True, text=True)
            if r.returncode != 0:
                print(f"decoder {dec} failed:\n{r.stderr[-3000:]}", file=sys.stderr)
                return 1
            results[dec] = json.loads(Path(str(jp) + f".{dec}.out").read_text())
    files = job["files"]
    print("\n| model | λ | files | hints: median / max share of the file | bytes (median) |")
    print("|---|---|---:|---:|---:|")
    groups: dict = {}
    for f in files:
        groups.setdefault((f["model"], f["lmb"]), []).append(f)
    for (m, lmb), fs in groups.items():
        share = [100 * (f["v2"] - f["v1"]) / f["v1"] for f in fs]
        print(f"| {m} | {lmb if lmb is not None else '—'} | {len(fs)} | {np.median(share):.2f} % / "
              f"{max(share):.2f} % | {int(np.median([f['v2'] - f['v1'] for f in fs]))} |")
    print("\n| decoder | max rel. scale diff | max pixel-mean diff | v2 exact / refused / silent | "
          "hinted indexes and levels | v1 exact / refused / silent |")
    print("|---|---:|---:|---|---:|---|")
    for dec, rows in results.items():
        def count(v):
            return "/".join(str(sum(r[v] == k for r in rows)) for k in ("exact", "error", "silent"))
        rel = max((r.get("max_rel_scale_diff", 0.0) for r in rows), default=0.0)
        mean = [r["max_mean_diff"] for r in rows if "max_mean_diff" in r]
        print(f"| {dec} | {rel:.2e} | {max(mean):.2e} | " if mean else f"| {dec} | {rel:.2e} | — | ",
              end="")
        print(f"{count('v2')} | {sum(r.get('v2_hinted', 0) for r in rows)} | {count('v1')} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"files": files, "decoders": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
