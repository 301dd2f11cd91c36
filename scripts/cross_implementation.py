"""Cross-implementation decoding, measured: official PyTorch bytes decoded by lvae-jax and
lvae-jax bytes decoded by the official code, on real images.

For each model (and λ for qarv_base) and image, both implementations encode the image with the
same weights (the parity recipe of ``../shared/parity``, converted by the real converter); then:

* encoder side: number of symbols, symbols and table indexes that differ between the two
  encoders, and prior scales (official) within 1e-5 / 1e-6 (relative) of a coder-table boundary;
  relative difference of the prior scales (lvae-jax vs official, same symbols);
* official -> lvae-jax: each latent string of the official file decoded with lvae-jax's own table
  indexes, given the correct previous latents (teacher forcing, so every block is judged on its
  own): plainly (re-encoding verification, what an official file gets), with
  ``decode_latent_robust`` without a symbol CRC, and with the symbol CRC lvae-jax's container
  stores; then the real end-to-end decodes (``Codec.decompress`` of the official file; the same
  strings with symbol CRCs through ``StringCoder.decode``) compared bit for bit with the correct decode;
* lvae-jax -> official: each of our strings decoded by the official code with its own indexes
  (teacher forcing, instrumented ``GaussianConditional``), and the official ``decompress`` of our
  bytes compared bit for bit with the correct decode;
* lvae-jax -> lvae-jax: index differences between lvae-jax's encoder pass and its decoder steps,
  and whether ``StringCoder.decode`` reproduces the correct decode.

A block is "exact" when its decoded symbols equal the encoder's; a whole file decodes exactly iff
every block is exact under teacher forcing (then the real decoder follows the same path).

    python scripts/cross_implementation.py --official-python ~/lvae-ref/bin/python \\
        --official-src ~/src/lossy-vae --json cross.json --markdown cross.md

The official side runs in a subprocess (``--official-python``, with ``--official-src`` on
PYTHONPATH); this file is also that worker (``--worker``) and then imports nothing of lvae_jax.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = ["house256.png", "motor256.png", "zebra256.png", "horse1.png", "horse2.png", "horse3.png"]
DEFAULT_QARV_LMBS = [16.0, 256.0, 2048.0]
#: Relative distances to a table boundary that are reported (1e-5 = the decoder's NEAR_BOUNDARY).
NEAR = (1e-5, 1e-6)


# ------------------------------------------------------------------------------------------------
# Official worker (runs in the reference interpreter; numpy + torch + lvae only)
# ------------------------------------------------------------------------------------------------


class _Recorder:
    """Instruments every CompressAI ``GaussianConditional`` of an official model: records, in call
    order, the scales handed to ``build_indexes``, the indexes, the symbols coded or decoded and
    the strings; in decoding, can replace the decoded symbols by given ones (teacher forcing)."""

    def __init__(self, model):
        from compressai.entropy_models import GaussianConditional
        self.events: list = []
        self.teacher: list | None = None
        for m in model.modules():
            if isinstance(m, GaussianConditional):
                self._wrap(m)

    def _wrap(self, dg):
        import torch
        rec = self
        build, compress, decompress = dg.build_indexes, dg.compress, dg.decompress
        dequantize = dg.dequantize

        def build_indexes(scales):
            rec._scales = scales.detach().float().reshape(-1).numpy().copy()
            return build(scales)

        def compress_(inputs, indexes, means=None):
            strings = compress(inputs, indexes, means=means)
            sym = dg.quantize(inputs, "symbols", means)
            rec.events.append({"scales": rec._scales, "idx": indexes[0].reshape(-1).int().numpy().copy(),
                               "sym": sym[0].reshape(-1).numpy().astype("int32"), "string": strings[0]})
            return strings

        def decompress_(strings, indexes, dtype=torch.float, means=None):
            seen = {}

            def deq(inputs, means=None, dtype=torch.float):
                seen["sym"] = inputs[0].reshape(-1).int().numpy().copy()
                k = len(rec.events)
                if rec.teacher is not None:
                    inputs = torch.from_numpy(rec.teacher[k].reshape(inputs.shape)).to(inputs.dtype)
                return dequantize(inputs, means, dtype)

            dg.dequantize = deq
            try:
                out = decompress(strings, indexes, dtype=dtype, means=means)
            finally:
                dg.dequantize = dequantize
            rec.events.append({"scales": rec._scales, "idx": indexes[0].reshape(-1).int().numpy().copy(),
                               "sym": seen["sym"]})
            return out

        dg.build_indexes, dg.compress, dg.decompress = build_indexes, compress_, decompress_


def _official_model(name: str, args: dict, ckpt: str):
    import torch
    import lvae.models.qarv.zoo  # noqa: F401  (registration side effects)
    import lvae.models.qresvae.zoo  # noqa: F401
    from lvae.models.registry import get_model
    model = get_model(name, **args)
    sd = torch.load(ckpt, map_location="cpu", weights_only=True)["model"]
    model.load_state_dict(sd, strict=True)
    model.eval()
    model.compress_mode(True)
    return model


def worker_official(job: dict) -> dict:
    """Encode every image (per λ), decode the official strings, and decode lvae-jax's strings
    (plainly and teacher-forced). Writes an npz; returns a summary."""
    import numpy as np
    import torch
    model = _official_model(job["model"], job["args"], job["ckpt"])
    rec = _Recorder(model)
    variable = hasattr(model, "lmb_range")
    out = {}
    jax = np.load(job["jax"]) if job.get("jax") else None

    def put(prefix, events, keys):
        for i, e in enumerate(events):
            for k in keys:
                v = e[k]
                out[f"{prefix}/{k}{i:02d}"] = np.frombuffer(v, np.uint8) if isinstance(v, bytes) else v

    with np.load(job["images"]) as imgs, torch.no_grad():
        for case in job["cases"]:
            tag, lmb = case["tag"], case["lmb"]
            im = torch.from_numpy(np.ascontiguousarray(imgs[case["image"]].transpose(2, 0, 1)))[None]
            rec.events, rec.teacher = [], None
            t0 = time.perf_counter()
            obj = model.compress(im, lmb=lmb) if variable else model.compress(im)
            out[f"{tag}/encode_s"] = np.float64(time.perf_counter() - t0)
            put(f"{tag}/off_enc", rec.events, ("scales", "idx", "sym", "string"))
            enc_syms = [e["sym"] for e in rec.events]
            rec.events = []
            x = model.decompress(obj)
            out[f"{tag}/off_dec_x"] = x[0].numpy().transpose(1, 2, 0)
            put(f"{tag}/off_dec", rec.events, ("idx", "sym"))
            if variable:
                out[f"{tag}/off_body"] = np.frombuffer(obj, np.uint8)
            if jax is None:
                continue
            # lvae-jax's strings, in the official object layout.
            n_lat = int(jax[f"{tag}/num_latents"])
            strings = [jax[f"{tag}/str{i:02d}"].tobytes() for i in range(n_lat)]
            if variable:
                jobj = jax[f"{tag}/body"].tobytes()
            else:
                jobj = [[s] for s in strings] + [tuple(obj[n_lat])]
                if f"{tag}/pixstr" in jax.files:
                    jobj.append([jax[f"{tag}/pixstr"].tobytes()])
            teacher = [jax[f"{tag}/sym{i:02d}"] for i in range(n_lat)]
            if f"{tag}/pixsym" in jax.files:
                teacher.append(jax[f"{tag}/pixsym"])
            rec.events, rec.teacher = [], None
            out[f"{tag}/jx_real_x"] = model.decompress(jobj)[0].numpy().transpose(1, 2, 0)
            put(f"{tag}/jx_real", rec.events, ("sym",))
            rec.events, rec.teacher = [], teacher
            out[f"{tag}/jx_tf_x"] = model.decompress(jobj)[0].numpy().transpose(1, 2, 0)
            put(f"{tag}/jx_tf", rec.events, ("scales", "idx", "sym"))
            rec.teacher = None
    np.savez(job["out"], **out)
    return {"ok": True, "torch_threads": torch.get_num_threads()}


# ------------------------------------------------------------------------------------------------
# lvae-jax side
# ------------------------------------------------------------------------------------------------


def _run_official(python: str, src: str | None, job: dict):
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([python, os.path.abspath(__file__), "--worker", json.dumps(job)],
                       capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"official worker failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _load_images(paths) -> dict:
    import numpy as np
    from PIL import Image
    out = {}
    for p in paths:
        im = np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / np.float32(255.0)
        h, w = im.shape[:2]
        if h % 64 or w % 64:
            raise SystemExit(f"{p}: {h}x{w} is not a multiple of 64 (use padded test images)")
        out[Path(p).stem] = im
    return out


def _converted_model(model: str, tmp: Path):
    """The parity recipe's official state_dict, written as an official checkpoint and converted
    by the real converter. -> (lvae-jax model, .pt path, official get_model kwargs)."""
    sys.path.insert(0, str(REPO / "tests"))
    from parity_support import Manifest, parity_dir
    from lvae_jax import load_model
    from lvae_jax.checkpoint.torch_io import convert_torch_to_model, write_torch_checkpoint
    manifest = Manifest(parity_dir() / f"{model}.manifest.json")
    pt = write_torch_checkpoint(manifest.rebuild_state_dict(), tmp / f"{model}.pt")
    res = convert_torch_to_model(pt, tmp / f"{model}_jax", lmb=manifest.args.get("lmb"))
    return load_model(res.out_dir), pt, manifest.args


class _Outcome:
    """Per-block decode outcomes of one strategy: exact / detected (an error was raised) /
    silent (wrong symbols returned without an error)."""

    def __init__(self):
        self.exact = self.detected = self.silent = 0
        self.wrong_symbols = 0
        self.flips = 0

    def judge(self, fn, expected):
        import numpy as np
        from lvae_jax.entropy.coder import BitstreamError
        try:
            got = fn()
        except BitstreamError:
            self.detected += 1
            return
        wrong = int(np.sum(np.asarray(got) != expected))
        if wrong:
            self.silent += 1
            self.wrong_symbols += wrong
        else:
            self.exact += 1

    def text(self) -> str:
        if not (self.detected or self.silent):
            return "exact"
        parts = []
        if self.detected:
            parts.append(f"error in {self.detected} block(s)")
        if self.silent:
            parts.append(f"SILENT: {self.wrong_symbols} wrong symbol(s) in {self.silent} block(s)")
        return "; ".join(parts)

    def as_dict(self) -> dict:
        return {"exact_blocks": self.exact, "detected_blocks": self.detected, "silent_blocks": self.silent,
                "wrong_symbols": self.wrong_symbols, "result": self.text()}


def _teacher_decode(codec, grid, lmb, strings, symbols, pixel_string, pixel_symbols, observe):
    """Decode with lvae-jax's decoder steps, feeding the *given* symbols (teacher forcing);
    ``observe(i, string, expected, idx, pv, tables)`` judges each string on the way.
    -> (image (H, W, 3), per-block lvae-jax decoder scales, indexes) in coder order."""
    import numpy as np
    from lvae_jax import numerics
    from lvae_jax.codec.engine import from_coder_order, to_coder_order
    coder_ = codec.coder
    engine = coder_.engine
    scales, indexes = [], []

    def decode_latent(i, pm, pv, idx):
        flat_idx, flat_pv = to_coder_order(idx[0]), to_coder_order(pv[0], np.float32)
        scales.append(flat_pv)
        indexes.append(flat_idx)
        observe(i, strings[i], symbols[i], flat_idx, flat_pv, coder_.latent_tables)
        return from_coder_order(symbols[i], pm.shape[1:]).astype(np.float32)[None] + pm

    def decode_pixels(pm, pv, idx, levels=None):
        flat_idx, flat_pv = to_coder_order(idx[0]), to_coder_order(pv[0], np.float32)
        scales.append(flat_pv)
        indexes.append(flat_idx)
        observe(codec.num_latents, pixel_string, pixel_symbols, flat_idx, flat_pv, coder_.pixel_tables)
        x = (from_coder_order(pixel_symbols, pm.shape[1:]).astype(np.float32)[None] + pm) \
            * np.float32(numerics.PIXEL_BIN_SIZE)
        return numerics.process_output_host(x)

    x = engine.decode((1, *grid), lmb, decode_latent, decode_pixels)
    return x[0], scales, indexes


def _count(a, b) -> int:
    import numpy as np
    return int(sum(int(np.sum(np.asarray(x) != np.asarray(y))) for x, y in zip(a, b)))


def analyse_case(codec, tag, lmb, image, jx, off) -> dict:
    """All measurements of one (model, λ, image); ``jx``: lvae-jax encoder arrays (dict),
    ``off``: the official worker's npz."""
    import numpy as np
    from lvae_jax.codec import official
    from lvae_jax.entropy.coder import symbols_crc
    from lvae_jax.codec.core import DecodeReport, decode_latent_robust
    from lvae_jax.codec.records import Checks, EncodedImage
    from lvae_jax.entropy import coder
    from lvae_jax.entropy.coder import BitstreamError
    from lvae_jax.entropy.tables import boundary_distance

    n_lat = codec.num_latents
    lossless = codec.model.lossless
    n_str = n_lat + lossless
    grid = tuple(int(v) for v in jx["grid"])

    def seq(prefix, key, n=n_str):
        return [off[f"{tag}/{prefix}/{key}{i:02d}"] for i in range(n)]

    o_sym, o_idx, o_scale = seq("off_enc", "sym"), seq("off_enc", "idx"), seq("off_enc", "scales")
    o_str = [a.tobytes() for a in seq("off_enc", "string")]
    j_sym, j_idx, j_str = jx["sym"], jx["idx"], jx["str"]
    tables = [codec.coder.latent_tables] * n_lat + ([codec.coder.pixel_tables] if lossless else [])

    # -- encoder side ---------------------------------------------------------------------------
    dist = [boundary_distance(s, t.scale_table, t.bound) for s, t in zip(o_scale, tables)]
    near = {f"{r:g}": int(sum(int(np.sum(d < r)) for d in dist)) for r in NEAR}
    below = int(sum(int(np.sum(s < np.float32(t.bound))) for s, t in zip(o_scale, tables)))
    idx_diff_at = [np.flatnonzero(a != b) for a, b in zip(o_idx, j_idx)]
    enc_idx_diff = int(sum(len(a) for a in idx_diff_at))
    enc_idx_diff_near = int(sum(int(np.sum(d[a] < NEAR[0])) for d, a in zip(dist, idx_diff_at)))
    row = {"tag": tag, "symbols": int(sum(a.size for a in o_sym)), "latent_blocks": n_lat,
           "enc_symbol_diff": _count(o_sym, j_sym), "enc_index_diff": enc_idx_diff,
           "enc_index_diff_near_boundary": enc_idx_diff_near,
           "near_boundary": near, "below_lower_bound": below,
           "bytes_identical": all(a == b for a, b in zip(o_str, j_str)),
           "bytes": {"official": sum(map(len, o_str)), "lvae_jax": sum(map(len, j_str))}}
    own = seq("off_dec", "sym")
    row["official_self_exact"] = _count(own, o_sym) == 0

    # -- official -> lvae-jax -------------------------------------------------------------------
    plain, robust_nocrc, robust_crc = _Outcome(), _Outcome(), _Outcome()
    report_nocrc, report_crc = DecodeReport(), DecodeReport()

    def observe(i, string, expected, idx, pv, tab):
        plain.judge(lambda: coder.decode(string, idx, tab, verify=True), expected)
        robust_nocrc.judge(lambda: decode_latent_robust(string, idx, pv, tab, report_nocrc, f"block {i}"),
                           expected)
        robust_crc.judge(lambda: decode_latent_robust(string, idx, pv, tab, report_crc, f"block {i}",
                                                      expected_crc=symbols_crc(expected)), expected)

    x_tf, j_dec_scales, j_dec_idx = _teacher_decode(
        codec, grid, lmb, o_str[:n_lat], o_sym[:n_lat], o_str[n_lat] if lossless else None,
        o_sym[n_lat] if lossless else None, observe)
    rel = np.concatenate([np.abs(a.astype(np.float64) - b) / np.abs(b.astype(np.float64))
                          for a, b in zip(j_dec_scales, o_scale)])
    row["scale_rel_diff"] = {"median": float(np.median(rel)), "max": float(np.max(rel))}
    dec_diff_at = [np.flatnonzero(a != b) for a, b in zip(o_idx, j_dec_idx)]
    row["off_to_jax"] = {
        "decoder_index_diff": int(sum(len(a) for a in dec_diff_at)),
        "decoder_index_diff_near_boundary": int(sum(int(np.sum(d[a] < NEAR[0])) for d, a in zip(dist, dec_diff_at))),
        "plain": plain.as_dict(), "robust_no_crc": robust_nocrc.as_dict(), "robust_crc": robust_crc.as_dict(),
        "robust_no_crc_flips": len(report_nocrc.flips), "robust_crc_flips": len(report_crc.flips)}

    # Real end-to-end decodes of the official file (no CRC) and of the official strings with CRCs.
    h, w = image.shape[:2]
    if codec.config.family == "qarv":
        data = official.write_qarv_file((h, w), off[f"{tag}/off_body"].tobytes())
    else:
        width = codec.config.dec_blocks[0].width
        data = official.write_qres_file([[s] for s in o_str[:n_lat]], (1, width, *grid), (h, w),
                                        pixel_strings=[o_str[n_lat]] if lossless else None)
    off_x = off[f"{tag}/off_dec_x"]
    e2e = {}
    try:
        res = codec.decompress_details(data)
        e2e["official_file"] = {"equals_correct_decode": bool(np.array_equal(res.image, x_tf)),
                                "notes": res.notes, "error": None,
                                "max_abs_diff_vs_official_output": float(np.max(np.abs(res.image - off_x))),
                                "uint8_values_differing_from_official": int(np.sum(
                                    np.round(res.image * 255) != np.round(off_x * 255)))}
    except BitstreamError as e:
        e2e["official_file"] = {"equals_correct_decode": False, "error": str(e), "notes": []}
    item = EncodedImage(o_str[:n_lat], o_str[n_lat] if lossless else None, grid,
                        Checks(tuple(symbols_crc(s) for s in o_sym)))
    rep = DecodeReport()
    try:
        x = codec.coder.decode([item], lmb, report=rep)[0]
        e2e["with_symbol_crcs"] = {"equals_correct_decode": bool(np.array_equal(x, x_tf)),
                                   "notes": rep.notes(), "error": None}
    except BitstreamError as e:
        e2e["with_symbol_crcs"] = {"equals_correct_decode": False, "error": str(e), "notes": rep.notes()}
    row["off_to_jax"]["end_to_end"] = e2e

    # -- lvae-jax -> official -------------------------------------------------------------------
    tf_sym, tf_idx = seq("jx_tf", "sym"), seq("jx_tf", "idx")
    blocks_wrong = [int(np.sum(a != b)) for a, b in zip(tf_sym, j_sym)]
    odiff_at = [np.flatnonzero(a != b) for a, b in zip(tf_idx, j_idx)]
    o_dist = [boundary_distance(s, t.scale_table, t.bound) for s, t in zip(seq("jx_tf", "scales"), tables)]
    row["jax_to_off"] = {
        "decoder_index_diff": int(sum(len(a) for a in odiff_at)),
        "decoder_index_diff_near_boundary": int(sum(int(np.sum(d[a] < NEAR[0])) for d, a in zip(o_dist, odiff_at))),
        "exact_blocks": sum(1 for b in blocks_wrong if b == 0),
        "silent_blocks": sum(1 for b in blocks_wrong if b), "wrong_symbols": int(sum(blocks_wrong)),
        "end_to_end_equals_correct_decode": bool(np.array_equal(off[f"{tag}/jx_real_x"], off[f"{tag}/jx_tf_x"])),
        "end_to_end_uint8_values_differing": int(np.sum(np.round(off[f"{tag}/jx_real_x"] * 255)
                                                        != np.round(off[f"{tag}/jx_tf_x"] * 255)))}
    jt = row["jax_to_off"]
    jt["result"] = ("exact" if not jt["silent_blocks"] else
                    f"SILENT: {jt['wrong_symbols']} wrong symbol(s) in {jt['silent_blocks']} block(s)")

    # -- lvae-jax -> lvae-jax -------------------------------------------------------------------
    self_plain = _Outcome()

    def observe_self(i, string, expected, idx, pv, tab):
        self_plain.judge(lambda: coder.decode(string, idx, tab, verify=True), expected)

    x_tf_j, _, jj_idx = _teacher_decode(codec, grid, lmb, j_str[:n_lat], j_sym[:n_lat],
                                        j_str[n_lat] if lossless else None,
                                        j_sym[n_lat] if lossless else None, observe_self)
    crcs = Checks(tuple(symbols_crc(s) for s in j_sym))
    x = codec.coder.decode([EncodedImage(j_str[:n_lat], j_str[n_lat] if lossless else None, grid,
                                         crcs)], lmb)[0]
    row["jax_to_jax"] = {"decoder_index_diff": _count(jj_idx, j_idx), "plain": self_plain.as_dict(),
                         "codec_decode_equals_correct_decode": bool(np.array_equal(x, x_tf_j))}
    if lossless:
        # A lossless file must give back the input exactly; compare 8-bit values.
        def off_by(x):
            return int(np.sum(np.round(np.asarray(x) * 255) != np.round(image * 255)))
        f = e2e["official_file"]
        row["lossless_values_differing_from_input"] = {
            "official_decodes_official": off_by(off_x),
            # correct symbols, lvae-jax's own pixel means (snapped with round(pm·127.5 + 127.5))
            "lvae_jax_decodes_official_symbols": off_by(x_tf),
            "lvae_jax_decodes_official": off_by(res.image) if f.get("error") is None else None,
            "lvae_jax_decodes_own": off_by(x),
            "official_decodes_lvae_jax": off_by(off[f"{tag}/jx_real_x"])}
    return row


def encode_jax(codec, image, lmb) -> dict:
    """lvae-jax's encoder output for one image: strings, symbols and indexes in coder order."""
    import numpy as np
    from lvae_jax.codec import official
    from lvae_jax.codec.engine import to_coder_order
    batch = image[None]
    enc = codec.coder.encode(batch, lmb)[0]
    lat = codec.coder.engine.encode(batch, lmb)
    sym = [to_coder_order(s[0]) for s in lat.symbols]
    idx = [to_coder_order(s[0]) for s in lat.indexes]
    strs = list(enc.latents)
    if lat.pixel_symbols is not None:
        sym.append(to_coder_order(lat.pixel_symbols[0]))
        idx.append(to_coder_order(lat.pixel_indexes[0]))
        strs.append(enc.pixels)
    out = {"sym": sym, "idx": idx, "str": strs, "grid": np.asarray(enc.grid)}
    if codec.config.variable_rate:
        out["body"] = official.write_qarv_body(lmb, enc.grid, enc.latents)
    return out


def _jax_npz(cases, encoded, num_latents) -> dict:
    import numpy as np
    out = {}
    for c in cases:
        e, tag = encoded[c["tag"]], c["tag"]
        out[f"{tag}/num_latents"] = np.int64(num_latents)
        for i in range(num_latents):
            out[f"{tag}/str{i:02d}"] = np.frombuffer(e["str"][i], np.uint8)
            out[f"{tag}/sym{i:02d}"] = e["sym"][i]
        if len(e["str"]) > num_latents:
            out[f"{tag}/pixstr"] = np.frombuffer(e["str"][num_latents], np.uint8)
            out[f"{tag}/pixsym"] = e["sym"][num_latents]
        if "body" in e:
            out[f"{tag}/body"] = np.frombuffer(e["body"], np.uint8)
    return out


def run_model(model_name, lmbs, images, args, tmp: Path) -> list[dict]:
    import numpy as np
    from lvae_jax.codec.api import Codec
    t0 = time.perf_counter()
    model, pt, margs = _converted_model(model_name, tmp)
    codec = Codec(model)
    variable = model.config.variable_rate
    cases = [{"tag": f"{name}@{lmb:g}" if variable else name, "image": name, "lmb": lmb if variable else None}
             for lmb in (lmbs if variable else [None]) for name in images]
    img_npz = tmp / f"{model_name}_images.npz"
    np.savez(img_npz, **images)
    encoded = {c["tag"]: encode_jax(codec, images[c["image"]], c["lmb"]) for c in cases}
    jax_npz = tmp / f"{model_name}_jax.npz"
    np.savez(jax_npz, **_jax_npz(cases, encoded, codec.num_latents))
    off_npz = tmp / f"{model_name}_official.npz"
    _run_official(args.official_python, args.official_src,
                  {"model": model_name, "args": margs, "ckpt": str(pt), "images": str(img_npz),
                   "jax": str(jax_npz), "cases": cases, "out": str(off_npz)})
    rows = []
    with np.load(off_npz) as off:
        off = {k: off[k] for k in off.files}
    for c in cases:
        r = analyse_case(codec, c["tag"], c["lmb"], images[c["image"]], encoded[c["tag"]], off)
        r.update(model=model_name, image=c["image"], lmb=c["lmb"], size=list(images[c["image"]].shape[:2]))
        rows.append(r)
        print(f"  {model_name} {c['tag']}: " + _summary(r), flush=True)
    print(f"  ({model_name}: {time.perf_counter() - t0:.0f} s)", flush=True)
    return rows


def _summary(r) -> str:
    o = r["off_to_jax"]
    return (f"{r['symbols']} symbols, enc idx diff {r['enc_index_diff']}, near {r['near_boundary']}, "
            f"off->jax {o['plain']['result']} / crc {o['robust_crc']['result']}, "
            f"jax->off {r['jax_to_off']['result']}")


def markdown(rows) -> str:
    head = ("| model | λ | image | symbols | near boundary (<1e-5 / <1e-6) | max rel. scale diff | "
            "enc. symbols ≠ | enc. indexes ≠ | bytes equal | official→lvae-jax: indexes ≠ | plain decode "
            "| robust, no CRC | robust + symbol CRC | lvae-jax→official: indexes ≠ | official decode | "
            "lvae-jax own: indexes ≠ (enc vs dec) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        o, j, s = r["off_to_jax"], r["jax_to_off"], r["jax_to_jax"]
        nb = r["near_boundary"]
        lmb = "" if r["lmb"] is None else f"{r['lmb']:g}"
        lines.append(
            f"| {r['model']} | {lmb} | "
            f"{r['image']} ({r['size'][0]}²) | {r['symbols']} | {nb['1e-05']} / {nb['1e-06']} | "
            f"{r['scale_rel_diff']['max']:.1e} | {r['enc_symbol_diff']} | {r['enc_index_diff']} | "
            f"{'yes' if r['bytes_identical'] else 'no'} | {o['decoder_index_diff']} | {o['plain']['result']} | "
            f"{o['robust_no_crc']['result']} | {o['robust_crc']['result']} | {j['decoder_index_diff']} | "
            f"{j['result']} | {s['decoder_index_diff']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["qres34m", "qarv_base"],
                   choices=["qres34m", "qres34m_lossless", "qres17m", "qarv_base"])
    p.add_argument("--lmbs", type=float, nargs="+", default=DEFAULT_QARV_LMBS, help="λ values for qarv_base")
    p.add_argument("--images", nargs="+", type=Path,
                   help="images (sides multiples of 64); default: the 256² and 512² images of ../shared/images")
    p.add_argument("--max-images", type=int, default=None, help="use only the first N images")
    p.add_argument("--official-python", default=sys.executable)
    p.add_argument("--official-src", default=os.environ.get("LVAE_OFFICIAL_SRC"))
    p.add_argument("--json", type=Path, help="write all measurements here")
    p.add_argument("--markdown", type=Path, help="write the table here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker_official(json.loads(args.worker))))
        return 0
    paths = args.images or [REPO.parent / "shared" / "images" / n for n in DEFAULT_IMAGES]
    paths = paths[: args.max_images] if args.max_images else paths
    images = _load_images(paths)
    rows = []
    with tempfile.TemporaryDirectory(prefix="lvae-cross-") as tmp:
        for m in args.models:
            rows += run_model(m, args.lmbs, images, args, Path(tmp))
            if args.json:  # keep what is done so far
                args.json.write_text(json.dumps(rows, indent=1))
    table = markdown(rows)
    print(table)
    if args.markdown:
        args.markdown.write_text(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
