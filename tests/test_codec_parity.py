"""Byte-for-byte parity of the codec with the official bitstreams (``compress/...`` recordings).

The rules of ``shared/parity/README.md`` ("Near-boundary scales"): table indexes must be identical
except at elements whose official prior scale lies within 1e-5 (relative) of a table boundary;
coding the official symbols with the official indexes must reproduce the official bytes exactly;
our bytes must equal the official bytes whenever indexes and symbols agree; each recording's
near-boundary and flipped counts are reported. The official bytes must decode to
``compress/decoded``.
"""

from __future__ import annotations

import numpy as np
import pytest

from parity_support import discover, parity_dir

_, RECORDINGS = discover()
CODED = [r for r in RECORDINGS if r.has("compress/")]
# Never skipped: the bitstream recordings ship with the repository.
assert CODED, f"no bitstream recordings in {parity_dir()}"

NEAR = 1e-5


@pytest.fixture
def codec(request, parity_models):
    """The codec of the official model of the manifest ``request.param`` (converted once per
    session, shared with test_parity.py)."""
    return parity_models.get(request.param).codec


def official_strings(rec):
    """(latent strings, pixel string or None) of the recording."""
    from lvae_jax.codec import official
    if "compress/bytes" in rec.arrays:
        return list(official.read_qarv_body(rec.arrays["compress/bytes"].tobytes()).strings), None
    pix = rec.arrays["compress/pixels"].tobytes() if "compress/pixels" in rec.arrays else None
    return rec.qres_latent_strings(), pix


def official_file(rec):
    from lvae_jax.codec import official
    h, w = rec.image_nhwc().shape[1:3]
    if "compress/bytes" in rec.arrays:
        return official.write_qarv_file((h, w), rec.arrays["compress/bytes"].tobytes())
    lat, pix = official_strings(rec)
    fs = tuple(int(v) for v in rec.arrays["compress/feature_shape"])
    return official.write_qres_file([[s] for s in lat], fs, (h, w), None if pix is None else [pix])


def _ids(recs):
    return [pytest.param(r.manifest, r, id=r.name) for r in recs]


@pytest.mark.parametrize("codec,rec", _ids(CODED), indirect=["codec"])
def test_bytes_match_the_official_bitstream(codec, rec):
    from lvae_jax.codec.engine import to_coder_order
    from lvae_jax.entropy import coder
    from lvae_jax.entropy.tables import boundary_distance
    coder_ = codec.coder
    lt = coder_.latent_tables
    enc = coder_.engine.encode(rec.image_nhwc(), rec.lmb)
    ours = coder_.encode(rec.image_nhwc(), rec.lmb)[0]
    theirs, _ = official_strings(rec)
    assert len(ours.latents) == len(theirs) == len(rec.blocks("eval"))
    near_total = flipped_idx = flipped_sym = 0
    for i, b in enumerate(rec.blocks("eval")):
        sym_ref = np.round(b["qm"] - b["pm"]).astype(np.int32)
        idx_ref = lt.build_indexes(b["pv"])
        # 1. The official symbols and indexes, through our coder and tables: the official bytes.
        assert coder.encode(to_coder_order(sym_ref[0]), to_coder_order(idx_ref[0]), lt) == theirs[i], \
            f"block {i}: coding the official symbols with the official indexes differs from the official bytes"
        # 2. Our indexes differ only where the official scale is within 1e-5 of a boundary.
        near = boundary_distance(b["pv"], lt.scale_table, lt.bound) < NEAR
        idx_diff = enc.indexes[i] != idx_ref
        assert not np.any(idx_diff & ~near), f"block {i}: index differs away from a table boundary"
        sym_diff = enc.symbols[i] != sym_ref
        d = (b["qm"] - b["pm"]).astype(np.float64)
        at_half = np.abs(np.abs(d - np.floor(d)) - 0.5) <= 1e-4 * max(1.0, float(np.abs(b["qm"]).max()))
        assert not np.any(sym_diff & ~at_half), f"block {i}: symbol differs away from a rounding boundary"
        near_total += int(near.sum())
        flipped_idx += int(idx_diff.sum())
        flipped_sym += int(sym_diff.sum())
        # 3. Identical bytes whenever indexes and symbols agree.
        if not idx_diff.any() and not sym_diff.any():
            assert ours.latents[i] == theirs[i], f"block {i}: same symbols and indexes, different bytes"
    print(f"{rec.name}: {near_total} near-boundary scales, {flipped_idx} index flips, "
          f"{flipped_sym} symbol flips")


@pytest.mark.parametrize("codec,rec", _ids(CODED), indirect=["codec"])
def test_official_bytes_decode_to_the_official_output(codec, rec):
    res = codec.decompress_details(official_file(rec))
    ref = rec.arrays["compress/decoded"][0].transpose(1, 2, 0)
    if not codec.model.lossless:
        assert np.abs(res.image - ref).max() <= 1e-4, "decoded image differs from the official decoding"
        return
    # Lossless: identical pixels except where a float32 difference is allowed to matter — the pixel
    # mean is snapped with round(m·127.5 + 127.5), and the official m lies at .5 within float error.
    off = np.abs(res.image - ref) > 0.5 / 255
    m = rec.arrays["eval/x_hat"][0].transpose(1, 2, 0).astype(np.float64) * 127.5 + 127.5
    at_half = np.abs(np.abs(m - np.floor(m)) - 0.5) <= 1e-3
    n_unexplained = int(np.sum(off & ~at_half))
    risk = sum((res.report.at_risk or {}).values()) if res.report else 0
    print(f"{rec.name}: {int(off.sum())} of {off.size} pixel values differ; {int(np.sum(off & at_half))} at a "
          f"pixel-mean rounding boundary; {risk} near-boundary scales reported")
    # The rest can only come from pixel scales at a table boundary, which the decoder reports.
    assert n_unexplained <= risk, f"{n_unexplained} pixel differences unexplained"
