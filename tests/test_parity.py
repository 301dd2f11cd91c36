"""Parity with the official PyTorch implementation, on golden recordings.

For every manifest: rebuild the official state_dict from the recipe, write it as an official
``.pt``, convert it with the real converter, and check the reverse conversion reproduces every
official key, shape and value. For every recording: eval mode (teacher-forced per-block tensors,
free-running integer symbols, x̂, the official stats) and training mode with the recorded noise
(per-block rate, x̂, loss, gradient norm, recorded gradients).
"""

from __future__ import annotations

import json
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lvae_jax import numerics
from parity_support import FIXTURE_PARITY, discover, parity_dir, rel_error, within

MANIFESTS, RECORDINGS = discover()
# The suite that proves parity never skips: the recordings ship with the repository.
assert RECORDINGS and {m.model for m in MANIFESTS} >= {
    "qres34m", "qres34m_lossless", "qres17m", "qarv_base", "rd_model_base"}, (
    f"parity recordings missing from {parity_dir()}")

TENSOR_REL = 1e-4   # max abs diff <= 1e-4 * max(1, max|ref|)
GRAD_REL = 1e-3     # relative error of gradients / gradient norm


@pytest.fixture
def converted(request, parity_models):
    """The official model of the manifest ``request.param``, converted once per session."""
    return parity_models.get(request.param)


def _lmb(rec):
    return None if rec.lmb is None else jnp.float32(rec.lmb)


def _assert_close(what, ours, ref, rel=TENSOR_REL):
    ok, err, bound = within(ours, ref, rel)
    assert ok, f"{what}: max abs diff {err:.3g} > {bound:.3g}"


#: Unit roundoff of float32.
U32 = 2.0 ** -24


def prob_error_bound(ours, ref, train: bool) -> np.ndarray:
    """Per element, a bound on |P_ours − P_official| for a quantised latent's probability mass
    P = Φ(b) − Φ(a) computed in float32 by two correct implementations, derived from float32
    error analysis (nothing here is fitted to the recordings):

    * the inputs differ: μ, σ (and z in training mode) are ours vs the official ones, so the exact
      P at our inputs and at theirs differ by |P(a_o, b_o) − P(a_r, b_r)| (float64, exact CDF);
    * each implementation evaluates its own P in float32: each Φ = ½(1 + erf(t/√2)) (or
      ½·erfc(−t/√2)) is off by at most 4u absolute (erf/erfc within 4 ulp of values below 2,
      then one rounding), the subtraction by u·P, and the argument t = (x ± ½ − μ)/σ by
      4u·(|t| + (|x| + ½ + |μ|)/σ), which moves Φ by φ(t) times that;

    u = 2⁻²⁴. Training mode: a = (z − ½ − μ)/σ, b = (z + ½ − μ)/σ; evaluation (CompressAI's
    likelihood): v = |z − μ|, a = (−½ − v)/σ', b = (½ − v)/σ', σ' = max(σ, 0.11)."""
    from scipy.special import ndtr

    def args(block):
        pm, pv, z = (np.asarray(block[k], np.float64) for k in ("pm", "pv", "z"))
        if train:
            lo, hi, s = z - 0.5 - pm, z + 0.5 - pm, pv
        else:
            v = np.abs(z - pm)
            lo, hi, s = -0.5 - v, 0.5 - v, np.maximum(pv, numerics.SCALE_BOUND)
        return lo / s, hi / s, (np.abs(z) + 0.5 + np.abs(pm)) / s

    def phi(t):
        return np.exp(-0.5 * t * t) / np.sqrt(2 * np.pi)

    def float32_error(a, b, m):
        p = ndtr(b) - ndtr(a)
        return 8 * U32 + U32 * p + 4 * U32 * (phi(a) * (np.abs(a) + m) + phi(b) * (np.abs(b) + m))

    ao, bo, mo = args(ours)
    ar, br, mr = args(ref)
    inputs = np.abs((ndtr(bo) - ndtr(ao)) - (ndtr(br) - ndtr(ar)))
    return inputs + float32_error(ao, bo, mo) + float32_error(ar, br, mr)


def clamp_branch_flips(rate_o, rate_r, p_o, p_r, allowed, ours, ref) -> np.ndarray:
    """Elements where the two implementations took different branches of the official
    training-mode rule (:func:`lvae_jax.numerics.gaussian_log_prob_mass`): ``−log P`` where the
    float32 mass ``P > PROB_CLAMP``, else the density ``−log φ``. Where the exact P lies within
    the two sides' float32 bound (``allowed``, :func:`prob_error_bound`) of PROB_CLAMP, each side may
    land on either side of it. Such an element is accepted when (1) the side that took the mass
    branch computed ``P ≤ PROB_CLAMP + allowed`` (consistent with the other side's ``P ≤
    PROB_CLAMP``) and (2) the other side's rate is the density formula ``½((z − μ)/σ)² + log σ +
    ½ log 2π`` at its own inputs, evaluated in float64, to 1e-5 relative (a float32 evaluation of
    three terms is within a few ulp, ≈ 1e-6 relative). ``ours``/``ref``: dicts of pm, pv, z."""
    def density_rate(blk):
        pm, pv, z = (np.asarray(blk[k], np.float64) for k in ("pm", "pv", "z"))
        return 0.5 * ((z - pm) / pv) ** 2 + np.log(pv) + 0.5 * np.log(2 * np.pi)
    clamp = numerics.PROB_CLAMP
    mass_o, mass_r = p_o > clamp, p_r > clamp
    p_mass = np.where(mass_o, p_o, p_r)
    dens = np.where(mass_o, rate_r, rate_o)
    want = np.where(mass_o, density_rate(ref), density_rate(ours))
    return ((mass_o != mass_r) & (p_mass - clamp <= allowed)
            & (np.abs(dens - want) <= 1e-5 * np.abs(want)))


#: Rates −log P with P below this are ill-conditioned in float32 (see prob_error_bound).
ILL_CONDITIONED_P = 1e-3


#: rd's KL grows like 1/pv² as the prior std pv -> 0: below this std the rate's *relative* error
#: is ~2x the relative error of pv, an exp() of a large negative pre-activation (each ulp of that
#: input is ~1e-6 relative), so such elements are compared with a relative tolerance.
TINY_STD = 1e-6
KL_REL = 1e-3


def _assert_rate_close(what, ours, ref, log_prob: bool, pv_ref=None, blocks=None,
                       train: bool = False) -> np.ndarray:
    """Per-element rates.

    Quantised latents' rates are −log P: where they differ by more than the tensor tolerance, P
    must be ill-conditioned (< 1e-3) and agree within :func:`prob_error_bound` of the two
    implementations' inputs ``blocks = (ours, official)`` (dicts of pm, pv, z), plus the float32
    rounding of the stored rates. rd's analytic KL: where it differs by
    more than the tensor tolerance, the prior std must be below TINY_STD and the relative error at
    most KL_REL. Returns |Δrate| at the accepted elements (0 elsewhere), which bounds what the
    rate-based stats may differ by."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    ok, err, bound = within(ours, ref, TENSOR_REL)
    if ok:
        return np.zeros_like(ref)
    fin = np.isfinite(ref)
    assert np.array_equal(fin, np.isfinite(ours)), f"{what}: non-finite rates differ"
    off = fin & (np.abs(np.where(fin, ours - ref, 0.0)) > bound)
    if not log_prob:
        assert pv_ref is not None and np.all(np.asarray(pv_ref)[off] < TINY_STD), (
            f"{what}: max abs diff {err:.3g} > {bound:.3g} at elements with a prior std >= {TINY_STD}")
        rel = np.abs(ours[off] - ref[off]) / np.abs(ref[off])
        assert rel.max() <= KL_REL, f"{what}: relative error {rel.max():.3g} > {KL_REL} (tiny prior std)"
        return np.where(off, np.abs(ours - ref), 0.0)
    p_ref, p_ours = np.exp(-ref[off]), np.exp(-ours[off])
    assert np.maximum(p_ref, p_ours).max() < ILL_CONDITIONED_P, (
        f"{what}: rates differ by up to {err:.3g} at elements with P up to {p_ref.max():.3g}")
    p_err = np.abs(p_ours - p_ref)
    ours_off, ref_off = ({k: np.asarray(v)[off] for k, v in blk.items()} for blk in blocks)
    allowed = prob_error_bound(ours_off, ref_off, train)
    allowed += U32 * (p_ours * (1 + ours[off]) + p_ref * (1 + ref[off]))   # the stored rates
    if train:  # the mass/density branch of the official rule, taken differently at PROB_CLAMP
        flips = clamp_branch_flips(ours[off], ref[off], p_ours, p_ref, allowed, ours_off, ref_off)
        p_err = np.where(flips, 0.0, p_err)
    worst = int(np.argmax(p_err - allowed))
    assert np.all(p_err <= allowed), (
        f"{what}: {off.sum()} elements differ by more than {bound:.3g}; their probabilities differ "
        f"by up to {p_err.max():.3g}, beyond the float32 bound at element {worst} "
        f"({p_err[worst]:.3g} > {allowed[worst]:.3g})")
    return np.where(off, np.abs(ours - ref), 0.0)


RATE_STATS = ("loss", "kl", "bppix")


def _assert_stats(ours: dict, official: dict, rate_slack_nats_per_dim: float, n_channels: int):
    """Official stats: non-rate stats to 1e-4; rate-based stats to 1e-4 plus what the accepted
    ill-conditioned per-element rate differences explain (given in nats per dimension)."""
    for k, v in official.items():
        assert k in ours, f"stat {k} missing"
        o = float(ours[k])
        slack = {"kl": 1.0, "loss": 1.0, "bppix": numerics.LOG2_E * n_channels}.get(k, 0.0) * rate_slack_nats_per_dim
        assert abs(o - v) <= 1e-4 * abs(v) + slack, f"stat {k}: ours {o}, official {v} (slack {slack:.3g})"


# ------------------------------------------------------------------------------------------------
# Conversion both ways
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("converted", MANIFESTS, ids=[m.model for m in MANIFESTS], indirect=True)
def test_conversion_round_trip(converted, tmp_path):
    """The converter recognises the official state_dict as its model, and official -> lvae-jax
    (the model directory the hub path wrote) -> official reproduces every manifest key, shape,
    dtype, order and value bit for bit."""
    from lvae_jax.checkpoint.torch_io import (convert_model_to_torch, default_candidates, detect,
                                              read_torch_checkpoint)
    man = converted.manifest
    best, _ = detect(converted.state_dict, default_candidates(lmb=man.args.get("lmb")))
    assert best.ok and best.config.name == man.model, "the converter detected the wrong model"
    back = convert_model_to_torch(converted.model_dir, tmp_path / "back.pt")
    sd, _ = read_torch_checkpoint(back)
    assert list(sd) == list(man.data["keys"]), "keys or their order differ from the official state_dict"
    for key, info in man.data["keys"].items():
        assert list(sd[key].shape) == info["shape"], key
        assert sd[key].dtype == np.dtype(info["dtype"]), key
        assert np.array_equal(sd[key], converted.state_dict[key]), f"{key} changed in the round trip"


@pytest.mark.parametrize("converted", MANIFESTS, ids=[m.model for m in MANIFESTS], indirect=True)
def test_official_weights_by_name_through_a_hub_mirror(converted):
    """``get_model(name, pretrained=True)`` in a process of its own, against a local stand-in of the
    Hugging Face hub (tests/hub_mirror.py) serving this model's rebuilt official checkpoint under
    its official path, with empty caches (done once per model by the session's store,
    tests/parity_models.py, whose model every parity test then checks): downloaded, converted into
    the models cache, loaded, and that cache entry holds the official weights
    (test_conversion_round_trip: bit for bit). (The download, lock, kill and error cases:
    test_pretrained.py.)"""
    from lvae_jax.checkpoint.model_dir import read_info
    fetch, man = converted.fetch, converted.manifest
    assert fetch.returncode == 0, fetch.stderr[-3000:]
    sha, name, where = fetch.printed
    assert name == man.model and where == converted.model_dir
    assert where.parent == fetch.models_cache, "not an entry of the session's models cache"
    info = read_info(where)
    assert sha == info["weights_sha256"] and info["config"]["name"] == man.model


# ------------------------------------------------------------------------------------------------
# Evaluation mode
# ------------------------------------------------------------------------------------------------


def _by_model(recs):
    return [pytest.param(r.manifest, r, id=r.name) for r in recs]


@pytest.mark.parametrize("converted,rec", _by_model(RECORDINGS), indirect=["converted"])
def test_eval_teacher_forced(converted, rec):
    """With the official z fed in, every block's prior mean/scale, posterior mean (and std), rate,
    the decoder output and the official eval stats match."""
    check_teacher_forced(converted, rec)


def check_teacher_forced(converted, rec):
    """The teacher-forced evaluation of ``rec`` by the converted model, against the recording."""
    ref = rec.blocks("eval")
    zs = [jnp.asarray(b["z"]) for b in ref]
    im = rec.image_nhwc()
    out = converted.fn("eval_tf")(converted.params, jnp.asarray(im), _lmb(rec), zs)
    assert len(out.latents) == len(ref)
    slack = 0.0
    for i, (st, b) in enumerate(zip(out.latents, ref)):
        _assert_close(f"block {i} pm", st.pm, b["pm"])
        _assert_close(f"block {i} pv", st.pv, b["pv"])
        _assert_close(f"block {i} qm", st.qm, b["qm"])
        if "qv" in b:
            _assert_close(f"block {i} qv", st.qv, b["qv"])
        slack += _assert_rate_close(f"block {i} rate", st.rate, b["kl"], log_prob="qv" not in b,
                                    pv_ref=b["pv"], blocks=({"pm": st.pm, "pv": st.pv, "z": st.z}, b),
                                    train=False).sum()
    _assert_close("x_hat", out.x_hat, rec.arrays["eval/x_hat"].transpose(0, 2, 3, 1))
    _assert_stats(out.metrics, rec.info.get("eval_stats", {}), slack / im[0].size, im.shape[-1])


QUANTIZED = [r for r in RECORDINGS if not r.blocks("eval") or "qv" not in r.blocks("eval")[0]]


@pytest.mark.parametrize("converted,rec", _by_model(QUANTIZED), indirect=["converted"])
def test_eval_free_running(converted, rec):
    """Our own deterministic evaluation gives the official integer symbols round(qm − pm) in every
    block — except where the official qm − pm lies within the tensor tolerance of a rounding
    boundary (x.5), where float32 differences between two correct implementations may pick the
    neighbour; such flips are counted and reported. Without flips x̂ matches too."""
    out = converted.fn("eval")(converted.params, jnp.asarray(rec.image_nhwc()), _lmb(rec))
    flips = []
    for i, (st, b) in enumerate(zip(out.latents, rec.blocks("eval"))):
        ours = np.asarray(jnp.round(st.qm - st.pm)).astype(np.int64)
        d_ref = (b["qm"] - b["pm"]).astype(np.float64)
        theirs = np.round(d_ref).astype(np.int64)
        diff = ours != theirs
        if diff.any():
            bound = TENSOR_REL * max(1.0, float(np.abs(b["qm"]).max()), float(np.abs(b["pm"]).max()))
            to_boundary = np.abs(np.abs(d_ref - np.floor(d_ref)) - 0.5)
            assert np.all(to_boundary[diff] <= bound) and np.all(np.abs(ours - theirs)[diff] == 1), (
                f"block {i}: {diff.sum()} symbols differ, not all at a rounding boundary "
                f"(distances {to_boundary[diff][:5]})")
            flips.append((i, int(diff.sum())))
    if flips:
        print(f"{rec.name}: symbols at a rounding boundary that flipped (block, count): {flips}")
        return
    _assert_close("x_hat", out.x_hat, rec.arrays["eval/x_hat"].transpose(0, 2, 3, 1))


# ------------------------------------------------------------------------------------------------
# Training mode
# ------------------------------------------------------------------------------------------------

TRAINED = [r for r in RECORDINGS if r.has("train/")]


def _recorded_noise(rec):
    noise = []
    for b in rec.blocks("train"):
        noise.append(jnp.asarray(b["eps"] if "eps" in b else b["u"]))
    return noise


@pytest.mark.parametrize("converted,rec", _by_model(TRAINED), indirect=["converted"])
def test_train_with_recorded_noise(converted, rec):
    """Training mode with the official noise: per-block rate, x̂, loss, global gradient norm and
    the recorded gradients."""
    from lvae_jax.checkpoint.keymap import ParamEntry, key_map, to_torch
    (loss, out), grads = converted.fn("train")(converted.params, jnp.asarray(rec.image_nhwc()),
                                               _lmb(rec), _recorded_noise(rec))
    slack = 0.0
    for i, (st, b) in enumerate(zip(out.latents, rec.blocks("train"))):
        slack += _assert_rate_close(f"block {i} rate", st.rate, b["kl"], log_prob="eps" not in b,
                                    pv_ref=b["pv"], blocks=({"pm": st.pm, "pv": st.pv, "z": st.z}, b),
                                    train=True).sum()
        _assert_close(f"block {i} z", st.z, b["z"])
    _assert_close("x_hat", out.x_hat, rec.arrays["train/x_hat"].transpose(0, 2, 3, 1))
    ts = rec.info["train_stats"]
    slack /= rec.image_nhwc()[0].size
    for ours, ref, what in ((float(loss), ts["loss"], "loss"), (float(out.metrics["kl"]), ts["rate_nats_per_dim"], "rate")):
        if np.isfinite(ref):
            assert abs(ours - ref) <= 1e-4 * abs(ref) + slack, f"{what}: ours {ours}, official {ref}"
        else:
            assert ours == ref, f"{what}: ours {ours}, official {ref}"

    flat = {".".join(str(p) for p in path): np.asarray(v.get_value())
            for path, v in nnx.to_flat_state(nnx.state(grads, nnx.Param))}
    norm = float(np.sqrt(sum(np.sum(np.square(g.astype(np.float64))) for g in flat.values())))
    if np.isfinite(ts["grad_global_norm"]):
        assert abs(norm - ts["grad_global_norm"]) <= GRAD_REL * ts["grad_global_norm"], \
            f"grad norm {norm} vs official {ts['grad_global_norm']}"
    else:
        assert not np.isfinite(norm), f"official grad norm is {ts['grad_global_norm']}, ours {norm}"
    to_jax_path = {e.torch_key: e for e in key_map(converted.model.config) if isinstance(e, ParamEntry)}
    for key, g_ref in rec.grads().items():
        e = to_jax_path[key]
        g = to_torch(e.layout, flat[e.jax_path])
        err = rel_error(g, g_ref)
        assert err <= GRAD_REL, f"gradient of {key}: relative error {err:.3g}"


def test_clamp_branch_flip_rule_rejects_what_it_should():
    """The branch-flip acceptance is narrow: a flip at PROB_CLAMP is accepted only with the mass
    side within the bound of the clamp and the density side on the density formula."""
    clamp = numerics.PROB_CLAMP
    blk = {"pm": np.array([-1.0278292] * 3), "pv": np.array([0.22008] * 3),
           "z": np.array([0.5191991] * 3)}
    dens = 0.5 * ((blk["z"] - blk["pm"]) / blk["pv"]) ** 2 + np.log(blk["pv"]) \
        + 0.5 * np.log(2 * np.pi)
    allowed = np.full(3, 1e-7)
    p_mass = np.array([clamp + 5e-8, clamp + 5e-7, clamp + 5e-8])   # 2nd: too far above the clamp
    rate_mass = -np.log(p_mass)
    rate_dens = dens.copy()
    rate_dens[2] *= 1.001                                             # 3rd: not the density rate
    got = clamp_branch_flips(rate_mass, rate_dens, p_mass, np.exp(-rate_dens), allowed, blk, blk)
    assert got.tolist() == [True, False, False]
    # no flip (both on the mass branch) is never accepted by this rule
    assert not clamp_branch_flips(rate_mass, rate_mass, p_mass, p_mass, allowed, blk, blk).any()


# ------------------------------------------------------------------------------------------------
# The harness: recordings of other weights
# ------------------------------------------------------------------------------------------------

_QRES17M = [m for m in MANIFESTS if m.model == "qres17m" and m.path.parent == FIXTURE_PARITY]


@pytest.mark.parametrize("converted", _QRES17M, ids=["qres17m"], indirect=True)
def test_recordings_pair_with_the_manifest_of_their_own_directory(converted, tmp_path):
    """Two directories with recordings of one model made with *different* weights (here: a
    manifest of another seed, and the in-repository recording with its own manifest, in that
    order): each recording is paired with the manifest of its directory — the recording of the
    second directory is checked against the weights it was made with, and passes."""
    other, own = tmp_path / "other_seed", tmp_path / "own"
    other.mkdir()
    own.mkdir()
    data = json.loads(converted.manifest.path.read_text())
    (other / "qres17m.manifest.json").write_text(json.dumps(dict(data, seed=data["seed"] + 1)))
    for f in FIXTURE_PARITY.glob("qres17m*"):
        shutil.copy(f, own / f.name)
    manifests, recs = discover([other, own])
    assert len({m.digest for m in manifests}) == 2            # two sets of weights of one model
    mine = {m.path.parent: m for m in manifests}
    assert recs and all(r.manifest is mine[own] for r in recs), [r.manifest.path for r in recs]
    assert mine[own].digest == converted.manifest.digest       # the weights converted here
    a, b = (m.rebuild_state_dict() for m in (mine[other], mine[own]))
    assert not all(np.array_equal(a[k], b[k]) for k in a)     # a wrong pairing would check other weights
    for rec in recs:
        check_teacher_forced(converted, rec)
    # the same recording name in two directories of different weights: two recordings, two ids
    shutil.copy(own / "qres17m_rand64x64s1.npz", other)
    shutil.copy(own / "qres17m_rand64x64s1.json", other)
    _, both = discover([other, own])
    assert len(both) == 2 and len({r.name for r in both}) == 2
    assert {r.manifest.path.parent for r in both} == {other, own}
