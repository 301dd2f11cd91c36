"""Generative tools (lvae_jax.generative): sampling, interpolation, inpainting, progressive
decoding, estimated R(D) curves and their CLI, on tiny random-weight models.

Every test image is 64×128 (latent grid 1×2) and every pass runs on one image, so the whole
module compiles one inference and one decoding program per model (and the command line, loading
the same models from disk, reuses them). Compilation dominates the run time: the tests that build
a model family of their own are marked slow.
"""

from __future__ import annotations

import json
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import lvae_jax
from lvae_jax.models.lambdas import LambdaError
from lvae_jax import generative as G
import tiny_models as T

H, W = 64, 128


def _perturbed(kind: str, name: str, seed: int = 0, gains=()):
    """The tiny ``kind`` (tests/tiny_models.py) with every parameter moved off its initial value
    by 0.05·N(0, 1) (the official init zeroes the prior's last layer, which would make every
    prior mean 0); ``gains``: (regex, factor) on parameter paths, to spread the latent symbols
    over several integers."""
    return T.perturbed(lvae_jax.build_model(T.config(kind, name=name), seed=seed), seed, 0.05,
                       fan_in=False, gains=gains)


#: QRes posterior gain: symbols round(qm − pm) reach ±2 (else they are all 0 at random init).
QRES_GAINS = ((r"posterior_net\.c4\.", 20.0),)


def _image(seed: int, h: int = H, w: int = W) -> np.ndarray:
    """A smooth test image (1, h, w, 3) in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / 32.0
    f = rng.uniform(0.5, 3.0, (3, 2))
    ph = rng.uniform(0, 6.3, 3)
    im = np.stack([0.5 + 0.4 * np.sin(f[c, 0] * xx + f[c, 1] * yy + ph[c]) for c in range(3)], -1)
    return im[None].astype(np.float32)


@pytest.fixture(scope="module")
def qres_model():
    return _perturbed("qres", "tiny", gains=QRES_GAINS)


@pytest.fixture(scope="module")
def qres(qres_model):
    return G.GenerativeModel(qres_model)


@pytest.fixture(scope="module")
def lossless():
    return G.GenerativeModel(_perturbed("lossless", "tinyll", seed=1, gains=QRES_GAINS))


@pytest.fixture(scope="module")
def rd():
    return G.GenerativeModel(_perturbed("rd", "trd", seed=2))


@pytest.fixture(scope="module")
def qarv():
    return G.GenerativeModel(_perturbed("qarv", "tq", seed=3))


def _max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


# ------------------------------------------------------------------------------------ sampling


def test_sample_shapes_determinism_and_temperature(qres, qres_model):
    k0, k1 = jax.random.key(0), jax.random.key(1)
    a = np.asarray(G.sample(qres, k0, 1, 1, 2, temperature=1.0))
    assert a.shape == (1, H, W, 3) and a.dtype == np.float32
    assert 0.0 <= a.min() and a.max() <= 1.0
    assert _max_diff(a, G.sample(qres, k0, 1, 1, 2, temperature=1.0)) == 0.0   # same key
    assert _max_diff(a, G.sample(qres, k1, 1, 1, 2, temperature=1.0)) > 1e-3   # other key
    # t = 0 is the prior mean: no randomness left.
    m0 = np.asarray(G.sample(qres, k0, 1, 1, 2, temperature=0.0))
    assert _max_diff(m0, G.sample(qres, k1, 1, 1, 2, temperature=0.0)) == 0.0
    assert _max_diff(m0, a) > 1e-3
    # The official rule, written out here: QRes z = pm + t·pv·ε + t·u with
    # (k_normal, k_uniform) = split(fold_in(key, i)), run through the model's own steps.
    graphdef, state = nnx.split(qres_model)

    def oracle(s, key, t):
        m = nnx.merge(graphdef, s)
        feature = m.initial_feature(1, 1, 2)
        for i in range(m.num_latents):
            feature, pm, pv = m.prior_step(i, feature, None)
            kn, ku = jax.random.split(jax.random.fold_in(key, i))
            z = pm + t * pv * jax.random.normal(kn, pm.shape) + t * jax.random.uniform(ku, pm.shape, minval=-0.5, maxval=0.5)
            feature = m.fuse_step(i, feature, z, None)
        return jnp.clip(m.tail(feature, None), -1, 1) * 0.5 + 0.5

    ref = jax.jit(oracle)
    for t in (0.0, 0.7):
        ours = G.sample(qres, k0, 1, 1, 2, temperature=t)
        assert _max_diff(ours, ref(state, k0, jnp.float32(t))) < 1e-5


def test_sampling_needs_a_key_unless_t_is_zero(qres):
    with pytest.raises(G.GenerativeError, match="PRNG key"):
        G.sample(qres, None, 1, 1, 2, temperature=0.5)
    with pytest.raises(G.GenerativeError, match="temperature"):
        G.sample(qres, jax.random.key(0), 1, 1, 2, temperature=-1.0)


def test_progressive_frames_and_prefix_decoding(qres):
    im = _image(1)
    res = G.progressive(qres, im)
    L = qres.num_latents
    assert res.ks == tuple(range(L + 1))
    assert res.frames.shape == (L + 1, 1, H, W, 3)
    # all latents from the image: the eval reconstruction
    assert _max_diff(res.frames[-1], res.inference.recon) < 1e-6
    # no latent from the image: the prior-mean sample
    assert _max_diff(res.frames[0], G.sample(qres, None, 1, 1, 2, temperature=0.0)) < 1e-6
    # the image's latents matter: every earlier frame differs from the reconstruction
    assert all(_max_diff(f, res.frames[-1]) > 1e-3 for f in res.frames[:-1])
    # bpp of the first k latents (padded H·W): 0 for k = 0, growing with k
    assert res.bpp[0, 0] == 0.0 and np.all(np.diff(res.bpp[:, 0]) >= 0) and res.bpp[-1, 0] > 0
    expected = float(np.sum(np.asarray(res.inference.rates, np.float64))) * math.log2(math.e) / (H * W)
    assert res.bpp[-1, 0] == pytest.approx(expected, rel=1e-9)
    # the reusable entry point: given the first k latents as arrays
    k = 2
    frame = G.decode_prefix(qres, res.inference.latents[:k], 1, 1, 2)
    assert _max_diff(frame, res.frames[k]) == 0.0
    # temperature > 0 for the untransmitted latents changes the frame, deterministically per key
    warm = G.progressive(qres, im, ks=[k], temperature=1.0, key=jax.random.key(5))
    assert _max_diff(warm.frames[0], res.frames[k]) > 1e-3
    again = G.progressive(qres, im, ks=[k], temperature=1.0, key=jax.random.key(5))
    assert _max_diff(warm.frames, again.frames) == 0.0


def test_decode_with_latents_checks_shapes(qres):
    inf = qres.infer(_image(1))
    bad = list(inf.latents)
    bad[1] = bad[1][:, :1]
    with pytest.raises(G.GenerativeError, match="latent 1 has shape"):
        G.decode_with_latents(qres, bad)
    with pytest.raises(G.GenerativeError, match="first latent"):
        G.decode_with_latents(qres, [None] * qres.num_latents)
    # all latents given: the reconstruction
    assert _max_diff(G.decode_with_latents(qres, inf.latents), inf.recon) < 1e-6


@pytest.mark.slow
def test_lossless_head_samples_pixels_at_the_temperature(lossless):
    L = lossless.num_latents
    res = G.progressive(lossless, _image(1), ks=[0, L])
    inf = res.inference
    # t = 0: the pixel mean, i.e. the eval reconstruction of the lossless model
    assert _max_diff(res.frames[-1], inf.recon) < 1e-6
    # t > 0: pixels drawn around the mean (official GaussianNLLOutputNet.sample), per key
    a = G.decode_with_latents(lossless, inf.latents, temperature=1.0, key=jax.random.key(0))
    assert _max_diff(a, inf.recon) > 1e-3
    assert _max_diff(a, G.decode_with_latents(lossless, inf.latents, temperature=1.0,
                                              key=jax.random.key(0))) == 0.0
    assert _max_diff(a, G.decode_with_latents(lossless, inf.latents, temperature=1.0,
                                              key=jax.random.key(1))) > 1e-3
    u = np.asarray(G.sample(lossless, jax.random.key(0), 1, 1, 2, temperature=1.0))
    assert u.shape == (1, H, W, 3) and 0 <= u.min() and u.max() <= 1


# ------------------------------------------------------------------------------- interpolation


def test_interpolation_endpoints_are_the_reconstructions(qres):
    a, b = _image(1), _image(2)
    res = G.interpolate(qres, a, b, steps=4)
    assert res.frames.shape == (4, H, W, 3)
    assert res.alphas == (0.0, pytest.approx(1 / 3), pytest.approx(2 / 3), 1.0)
    assert _max_diff(res.frames[0], qres.infer(a).recon[0]) < 1e-6
    assert _max_diff(res.frames[-1], qres.infer(b).recon[0]) < 1e-6
    mid = res.frames[1]
    assert _max_diff(mid, res.frames[0]) > 1e-3 and _max_diff(mid, res.frames[-1]) > 1e-3
    strip = res.strip(a, b)
    assert len(strip) == 6 and _max_diff(strip[0], a[0]) == 0.0
    with pytest.raises(G.GenerativeError, match="differ in size"):
        G.interpolate(qres, a, _image(1, 64, 64))


# ---------------------------------------------------------------------------------- inpainting


def test_box_rounding_follows_the_official_rule():
    rows, cols = G.box_slices((0.4, 0.4, 0.8, 0.8), 64, 64)
    assert (rows, cols) == (slice(26, 51), slice(26, 51))          # round(25.6), round(51.2)
    rows, cols = G.box_slices((0.5, 0.1, 0.9, 0.5), 2, 5)
    # Python's round is half to even: round(2.5) == 2, round(4.5) == 4
    assert (rows, cols) == (slice(0, 1), slice(2, 4))
    masks = G.latent_keep_masks([(1, 1, 2, 4), (1, 4, 8, 4)], (0.25, 0.25, 0.75, 0.75))
    assert masks[0].all()                                          # min(h, w) == 1: kept whole
    assert masks[1].shape == (1, 4, 8, 1)
    assert np.array_equal(~masks[1][0, :, :, 0], np.pad(np.ones((2, 4), bool), ((1, 1), (2, 2))))
    with pytest.raises(G.GenerativeError, match="x1 < x2"):
        G.box_slices((0.5, 0.1, 0.4, 0.3), 8, 8)
    with pytest.raises(G.GenerativeError, match=r"\[0, 1\]"):
        G.box_slices((0.5, 0.1, 1.4, 0.3), 8, 8)


def test_inpainting_changes_the_box_and_keeps_the_rest(qres):
    im = _image(3)
    box = (0.25, 0.25, 0.75, 0.75)
    res = G.inpaint(qres, im, box, key=jax.random.key(0), steps=2, temperature=1.0)
    rows, cols = G.box_slices(box, H, W)
    inside = np.zeros((H, W), bool)
    inside[rows, cols] = True
    assert res.masked.shape == res.samples.shape == (1, H, W, 3)
    assert np.all(res.masked[0][inside] == 0.5) and np.array_equal(res.masked[0][~inside], im[0][~inside])
    # against the reconstruction of the input the model saw: the box changes about as much as
    # when every latent is redrawn, the rest much less
    recon = np.asarray(qres.infer(res.masked).recon)[0]
    diff = np.abs(res.samples[0] - recon).mean(-1)
    redrawn = np.abs(np.asarray(G.sample(qres, jax.random.key(0), 1, 1, 2))[0] - recon).mean(-1)
    assert diff[inside].mean() > 0.5 * redrawn[inside].mean()
    assert diff[~inside].mean() < 0.5 * redrawn[~inside].mean()
    yy, xx = np.mgrid[0:H, 0:W]
    far = (np.maximum(rows.start - yy, yy - rows.stop + 1) >= 16) | \
          (np.maximum(cols.start - xx, xx - cols.stop + 1) >= 16)
    assert diff[far].mean() < 0.25 * diff[inside].mean()
    # same key -> same result
    again = G.inpaint(qres, im, box, key=jax.random.key(0), steps=2, temperature=1.0)
    assert _max_diff(res.samples, again.samples) == 0.0


# ----------------------------------------------------------------------------- other families


@pytest.mark.slow
def test_variable_rate_families_sample_and_infer(qarv, rd):
    im = _image(4)
    for gm in (qarv, rd):
        s = np.asarray(G.sample(gm, jax.random.key(0), 1, 1, 2, lmb=64.0, temperature=1.0))
        assert s.shape == (1, H, W, 3) and 0 <= s.min() and s.max() <= 1
        m0 = G.sample(gm, jax.random.key(0), 1, 1, 2, lmb=64.0, temperature=0.0)
        assert _max_diff(m0, G.sample(gm, jax.random.key(9), 1, 1, 2, lmb=64.0, temperature=0.0)) == 0
        # λ changes the decoding
        assert _max_diff(m0, G.sample(gm, None, 1, 1, 2, lmb=16.0, temperature=0.0)) > 1e-6
    # QARV eval latents are deterministic; rd draws them (a key is required)
    a, b = qarv.infer(im, 64.0), qarv.infer(im, 64.0, jax.random.key(3))
    assert all(_max_diff(x, y) == 0 for x, y in zip(a.latents, b.latents))
    with pytest.raises(G.GenerativeError, match="PRNG key"):
        rd.infer(im, 64.0)
    r1, r2 = rd.infer(im, 64.0, jax.random.key(1)), rd.infer(im, 64.0, jax.random.key(2))
    assert _max_diff(r1.latents[0], r2.latents[0]) > 1e-4
    assert _max_diff(r1.recon, rd.infer(im, 64.0, jax.random.key(1)).recon) == 0
    # progressive decoding of an rd model ends at (the decoding of) its posterior draw
    res = G.progressive(rd, im, ks=[rd.num_latents], lmb=64.0, key=jax.random.key(1))
    assert res.frames.shape == (1, 1, H, W, 3)
    # QARV's theoretical rate (self_evaluate): deterministic, bpp over the *original* H·W
    from lvae_jax.image import pad_to_multiple, to_float, to_uint8
    px = to_uint8(_image(6, 50, 70)[0])
    curve = G.estimate_rd_curve(qarv, [px], [64.0])
    rates = qarv.infer(pad_to_multiple(to_float(px), 64)[None], 64.0).rates
    expected = float(np.sum(np.asarray(rates, np.float64))) * math.log2(math.e) / (50 * 70)
    assert curve.bpp[0] == pytest.approx(expected, rel=1e-9)
    assert curve.meta["bpp_pixels"] == "original" and curve.lambdas == (64.0,)
    recon = np.asarray(qarv.infer(pad_to_multiple(to_float(px), 64)[None], 64.0).recon)[0, :50, :70]
    mse = float(np.mean((recon.astype(np.float64) - px / 255.0) ** 2))
    assert curve.mse[0] == pytest.approx(mse, rel=1e-6)
    assert curve.psnr[0] == pytest.approx(-10 * math.log10(mse), rel=1e-6)
    with pytest.raises(G.GenerativeError, match="deterministic"):
        G.estimate_rd_curve(qarv, [px], [64.0], draws=2)


def test_bad_inputs_are_refused(qarv, rd, qres):
    im = _image(1)
    with pytest.raises(G.GenerativeError, match="QRes"):
        G.inpaint(qarv, im, (0.1, 0.1, 0.5, 0.5), key=jax.random.key(0))
    with pytest.raises(G.GenerativeError, match="outside the range"):
        G.sample(rd, jax.random.key(0), 1, 1, 1, lmb=4096.0)
    with pytest.raises(G.GenerativeError, match="outside the range"):
        qarv.infer(im, 8.0)
    with pytest.raises(G.GenerativeError, match="fixed-rate"):
        G.sample(qres, jax.random.key(0), 1, 1, 1, lmb=64.0)
    with pytest.raises(G.GenerativeError, match="multiple of 64"):
        qres.infer(np.zeros((1, 32, 32, 3), np.float32))
    with pytest.raises(G.GenerativeError, match="multiple of 64"):
        qres.infer(np.zeros((1, 64, 100, 3), np.float32))
    with pytest.raises(G.GenerativeError, match=r"\[0, 1\]"):
        qres.infer(np.full((1, 64, 64, 3), 2.0, np.float32))
    with pytest.raises(G.GenerativeError, match="covers no pixel"):
        G.inpaint(qres, im, (0.1, 0.1, 0.1 + 1e-4, 0.5), key=jax.random.key(0))
    with pytest.raises(G.GenerativeError, match="fixed-rate"):
        G.estimate_rd_curve(qres, [np.zeros((64, 64, 3), np.uint8)])


# ----------------------------------------------------------------------------------- R(D) curve

#: Recorded from the official formulas with torch 2.14.1:
#: ``torch.linspace(math.log(a), math.log(b), steps=n).exp().tolist()`` (rd evaluate.py, QARV
#: self_evaluate) and ``torch.linspace(a ** (1/3), b ** (1/3), steps=n).pow(3).tolist()``
#: (rd_model_base self_evaluate).
TORCH_LOG_4_2048_16 = [
    4.0, 6.0628662109375, 9.189586639404297, 13.92880916595459, 21.11212730407715, 32.0,
    48.5029296875, 73.51669311523438, 111.43047332763672, 168.8970184326172, 256.0,
    388.0234375, 588.133544921875, 891.4437866210938, 1351.1761474609375, 2048.0]
TORCH_LOG_16_2048_8 = [16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0]
TORCH_CUBE_4_2048_8 = [4.0, 32.0, 108.0, 256.0, 499.99993896484375, 864.0, 1371.999755859375,
                       2048.0]


def test_lambda_grids_match_the_official_formulas():
    assert G.lambda_grid(4, 2048, 16) == TORCH_LOG_4_2048_16
    assert G.official_lambdas("rd") == TORCH_LOG_4_2048_16
    assert G.official_lambdas("qarv") == TORCH_LOG_16_2048_8
    assert G.lambda_grid(4, 2048, 8, "cube-root") == TORCH_CUBE_4_2048_8
    with pytest.raises(LambdaError, match="spacing"):
        G.lambda_grid(4, 2048, 8, "linear")
    with pytest.raises(LambdaError, match="0 < start"):
        G.lambda_grid(0, 2048, 8)


@pytest.mark.slow
def test_rd_curve_padded_rate_cropped_psnr_and_json(rd, tmp_path):
    from lvae_jax.evaluation import load_rd
    from lvae_jax.evaluation.metrics import psnr
    from lvae_jax.image import pad_to_multiple, to_float, to_uint8

    big = to_uint8(_image(5)[0])                       # 64×128: no padding
    small = to_uint8(_image(6, 50, 70)[0])             # padded to 64×128, cropped back
    key = jax.random.key(7)
    lambdas = [4.0, 2048.0]
    curve = G.estimate_rd_curve(rd, [big, small], lambdas, key=key, draws=2, test_set="toy")
    # recompute every number by hand: image i, λ j, draw d use fold_in(key, i, j, d)
    for j, lmb in enumerate(lambdas):
        bpps, psnrs = [], []
        for i, px in enumerate((big, small)):
            x = pad_to_multiple(to_float(px), 64)[None]
            b = p = 0.0
            for d in range(2):
                k = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(key, i), j), d)
                inf = rd.infer(x, lmb, k)
                b += float(np.sum(np.asarray(inf.rates, np.float64))) * math.log2(math.e) / (64 * 128) / 2
                p += psnr(px, np.asarray(inf.recon)[0, :px.shape[0], :px.shape[1]]) / 2
            bpps.append(b)
            psnrs.append(p)
        assert curve.bpp[j] == pytest.approx(np.mean(bpps), rel=1e-9)
        assert curve.psnr[j] == pytest.approx(np.mean(psnrs), rel=1e-9)
    # stochastic: another key gives other numbers; the same key the same numbers
    other = G.estimate_rd_curve(rd, [big, small], lambdas, key=jax.random.key(8), draws=2)
    assert other.bpp[0] != curve.bpp[0]
    # official JSON schema, written and read back
    paths = G.write_rd_curve(curve, tmp_path / "toy-trd.json", tmp_path / "toy-trd.png")
    data = json.loads(paths[0].read_text())
    assert data["name"] == "trd" and data["test-set"] == "toy" and data["lambdas"] == lambdas
    assert set(data["results"]) == {"bpp", "psnr", "mse"} and len(data["results"]["bpp"]) == 2
    back = load_rd(paths[0])
    assert list(back.bpp) == list(curve.bpp) and back.meta["draws"] == 2
    assert paths[1].stat().st_size > 1000
    with pytest.raises(G.GenerativeError, match="PRNG key"):
        G.estimate_rd_curve(rd, [big], lambdas)
    with pytest.raises(G.GenerativeError, match="outside the range"):
        G.estimate_rd_curve(rd, [big], [1.0], key=key)


# -------------------------------------------------------------------------------------- figures


def test_grid_layout_matches_make_grid_convention(tmp_path):
    from PIL import Image
    ims = np.stack([np.full((4, 6, 3), v, np.float32) for v in (0.2, 0.4, 0.6)])
    g = G.make_grid(ims, nrow=2, padding=2, pad_value=1.0)
    assert g.shape == (2 * 6 + 2, 2 * 8 + 2, 3)
    assert np.all(g[2:6, 2:8] == 0.2) and np.all(g[2:6, 10:16] == 0.4) and np.all(g[8:12, 2:8] == 0.6)
    assert np.all(g[8:12, 10:16] == 1.0) and np.all(g[0:2] == 1.0)        # empty cell, border
    path = G.save_strip(tmp_path / "s.png", list(ims))
    assert Image.open(path).size == (3 * 8 + 2, 6 + 2)
    with pytest.raises(ValueError, match="one size"):
        G.make_grid([np.zeros((4, 6, 3)), np.zeros((4, 5, 3))])


# ------------------------------------------------------------------------------------------ CLI


@pytest.mark.slow
def test_cli_end_to_end(qres_model, rd, tmp_path, capsys):
    from PIL import Image
    from lvae_jax.checkpoint.model_dir import save_model
    from lvae_jax.generative.cli import main
    from lvae_jax.image import to_uint8

    qdir = save_model(qres_model, tmp_path / "tiny")
    rdir = save_model(nnx.merge(rd.graphdef, rd.state), tmp_path / "trd")
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.fromarray(to_uint8(_image(1)[0])).save(a)
    Image.fromarray(to_uint8(_image(2)[0])).save(b)
    odd = tmp_path / "imgs" / "odd.png"                 # 50×70: padded to 64×128 and cropped
    odd.parent.mkdir()
    Image.fromarray(to_uint8(_image(6, 50, 70)[0])).save(odd)
    out = tmp_path / "out"

    def run(*argv) -> int:
        return main([str(x) for x in argv])

    assert run("sample", "--ckpt", qdir, "--num", 1, "--size", H, W, "--out", out / "s.png") == 0
    assert Image.open(out / "s.png").size == (W + 4, H + 4)
    assert run("interpolate", a, b, "--ckpt", qdir, "--model", "tiny", "--steps", 3,
               "--out", out / "i.png") == 0
    assert Image.open(out / "i.png").size == (5 * (W + 2) + 2, H + 4)
    assert run("inpaint", odd, "--ckpt", qdir, "--steps", 1, "--samples", 1,
               "--out", out / "p.png") == 0
    assert Image.open(out / "p.png").size == (3 * (70 + 2) + 2, 50 + 4)
    assert run("progressive", odd, "--ckpt", qdir, "--out", out / "g.png") == 0
    assert Image.open(out / "g.png").size == (6 * (70 + 2) + 2, 50 + 4)
    assert "bpp" in capsys.readouterr().out
    assert run("rd-curve", odd.parent, "--ckpt", rdir, "--lambdas", 8, 512, "--draws", 1,
               "--out", out / "rd.json", "--plot", out / "rd.png") == 0
    data = json.loads((out / "rd.json").read_text())
    assert data["test-set"] == "imgs" and data["lambdas"] == [8.0, 512.0]
    assert (out / "rd.png").is_file()
    capsys.readouterr()
    # bad input: one line on stderr, exit status 2, nothing written
    assert run("inpaint", a, "--ckpt", rdir, "--out", out / "x.png") == 2
    assert "QRes" in capsys.readouterr().err
    assert run("sample", "--ckpt", rdir, "--lmb", 9999, "--out", out / "x.png") == 2
    assert "outside the range" in capsys.readouterr().err
    assert run("sample", "--ckpt", qdir, "--model", "qres34m", "--out", out / "x.png") == 2
    assert "not 'qres34m'" in capsys.readouterr().err
    assert run("sample", "--ckpt", qdir, "--size", 32, 64, "--out", out / "x.png") == 2
    assert run("progressive", tmp_path / "missing.png", "--ckpt", qdir) == 2
    assert run("sample", "--ckpt", tmp_path / "nope", "--out", out / "x.png") == 2
    assert not (out / "x.png").exists()


@pytest.mark.slow
def test_cli_defaults_to_the_demo_model(tmp_path, capsys):
    from PIL import Image
    from lvae_jax.generative.cli import main
    out = tmp_path / "s.png"
    assert main(["sample", "--num", "2", "--size", "64", "64", "--out", str(out)]) == 0
    assert "DEMO MODEL" in capsys.readouterr().err
    assert Image.open(out).size[0] >= 64
    # a packaged anchor by name is accepted; an unknown one fails before the model loads
    assert main(["rd-curve", str(tmp_path), "--anchor", "kodak/nope"]) == 2
    err = capsys.readouterr().err
    assert "kodak/vtm18.0" in err and "DEMO MODEL" not in err


def test_cli_import_is_light():
    import subprocess
    import sys
    code = ("import sys, lvae_jax.generative.cli as c; "
            "assert set(c.COMMANDS) == {'sample', 'interpolate', 'inpaint', 'progressive', "
            "'rd-curve'}; print('jax' in sys.modules, 'flax' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"
