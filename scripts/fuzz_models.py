"""Files written by real (tiny, random-weight) models, and a whole-file decoder that checks them:
the end-to-end half of ``scripts/fuzz_bitstreams.py``.

    python scripts/fuzz_bitstreams.py --corpus fuzz_models:build_corpus \\
        --decoder fuzz_models:decode_file --cases 10000 --seed 0

(``scripts/`` is the script's own folder, so ``fuzz_models`` imports as a plain module.)

:func:`build_corpus` builds three tiny models of the official families — QARV (variable rate),
QRes (fixed rate) and QRes lossless, parameters moved off their initialisation by a seeded
perturbation — compresses a few seeded synthetic images (not multiples of 64, so padding and
cropping are exercised) into the lvae-jax container and the official layouts with the real codec
(:meth:`lvae_jax.codec.api.Codec.compress`), and records for every file its strings, the table indexes
and symbols of each string (from the encoder pass, for the coder-level checks of the fuzz script)
and the image the valid file decodes to.

:func:`decode_file` decodes a (mutated) file with :meth:`lvae_jax.codec.api.Codec.decompress` and the
model that wrote it. Besides "succeed or raise ``BitstreamError``/``ValueError``" (checked by
the fuzz script) it asserts:

* the unmodified file decodes to exactly the recorded image;
* **no undetected corruption in the lvae-jax container**: a modified container that still
  decodes must give exactly the recorded image — except a header that was deliberately
  re-signed (a field changed *and* its CRC recomputed: a forgery, not corruption), whose
  output only has to match the size its header states;
* any decoded image has the size its file states and finite pixels in [0, 1].

The official layouts carry no checksum, so a modified official file may decode into another
image (e.g. a flipped image-size bit within the same 64-pixel padding, or a string that still
re-encodes to itself); those are counted (``qarv-official-undetected-change``, ...), not failures — they
measure what the container's CRCs add.
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: Codecs of the corpus models, by key; filled by :func:`build_corpus` in the process that decodes.
_CODECS: dict = {}

#: Image sizes (H, W) of the corpus: padded to 64×64 and 64×128, so each model compiles two shapes.
IMAGE_SIZES = ((50, 61), (64, 100))
#: λ of the QARV files (within the tiny model's range, [16, 2048]).
QARV_LAMBDAS = (64.0, 1024.0)


def tiny_configs() -> dict:
    """key -> (ModelConfig, λ values or (None,)): tiny versions of the three coded families."""
    from lvae_jax.models import zoo
    return {
        "qarv": (zoo.qarv_base_config(ch=16, enc_dims=(16,) * 5, enc_nums=(1,) * 5,
                                      dec_nums=(1, 1, 1, 1), z_dims=(4, 4, 4, 4), embed_dim=16,
                                      name="fuzz_qarv"), QARV_LAMBDAS),
        # two latent blocks (strides 64 and 4), no encoder blocks: half the compilation
        "qres": (zoo.qres34m_config(ch=8, enc_nums=(0,) * 5, dec_nums=(1, 0, 0, 0, 1),
                                    name="fuzz_qres"), (None,)),
        "lossless": (zoo.qres34m_lossless_config(ch=8, enc_nums=(0,) * 5, dec_nums=(1, 0, 0, 0, 1),
                                                 name="fuzz_lossless"), (None,)),
    }


def random_model(config, seed: int):
    """``config`` with seeded random parameters, drawn on the host (an eager or jitted
    initialisation of even a tiny model costs tens of seconds of compilation on CPU): kernels
    N(0, 0.75 / fan-in), biases and layer scales 0.5·N(0, 1) — about an initialised model moved
    off its initialisation, so that latents differ from their prior means and strings are not
    trivial."""
    import jax
    from flax import nnx

    import lvae_jax
    graphdef, state = nnx.split(lvae_jax.build_model(config, abstract=True))
    rng = np.random.default_rng([seed, 0x5EED])

    def draw(x):
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f"unexpected non-float model state of dtype {x.dtype}")
        if len(x.shape) >= 2:
            std = np.sqrt(0.75 / np.prod(x.shape[:-1]))
        else:
            std = 0.5
        return (std * rng.standard_normal(x.shape)).astype(x.dtype)

    return nnx.merge(graphdef, jax.tree.map(draw, state))


def synthetic_image(rng, h: int, w: int) -> np.ndarray:
    """(H, W, 3) uint8: smooth colour gradients plus noise (compresses to short, non-trivial
    strings)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    a = rng.uniform(-2, 2, (3, 3))
    base = 128 + 60 * np.sin(a[:, 0, None, None] * yy / h * np.pi + a[:, 1, None, None] * xx / w
                             * np.pi + a[:, 2, None, None])
    noise = rng.normal(0, 12, (3, h, w))
    return np.clip(np.round(base + noise), 0, 255).astype(np.uint8).transpose(1, 2, 0).copy()


def _positions(codec, pixels: np.ndarray, lmb, tables_by_kind: dict) -> dict:
    """position -> (table name, coder-order indexes, coder-order symbols) of every string of one
    image, from the encoder pass (the strings in the file are the coding of exactly these)."""
    from lvae_jax import image as imageio
    from lvae_jax.codec.engine import to_coder_order
    x = imageio.pad_to_multiple(imageio.to_float(pixels), codec.config.max_stride)[None]
    enc = codec.coder.engine.encode(x, codec.coder.check_lmb(lmb))
    out = {}
    for i, (sym, idx) in enumerate(zip(enc.symbols, enc.indexes)):
        out[("latent", i, 0)] = (tables_by_kind["latent"], to_coder_order(idx[0]),
                                 to_coder_order(sym[0]))
    if enc.pixel_symbols is not None:
        out[("pixel", 0)] = (tables_by_kind["pixel"], to_coder_order(enc.pixel_indexes[0]),
                             to_coder_order(enc.pixel_symbols[0]))
    return out


def build_corpus(seed: int = 0, models=("qarv", "qres", "lossless"), sizes=IMAGE_SIZES) -> list:
    """Entries (``fuzz_bitstreams.Entry``) of files written by the tiny models: per model, image
    size and λ one lvae container and one official-layout file. Deterministic in ``seed``.
    Turns on the persistent compilation cache (:func:`lvae_jax.runtime.enable_compilation_cache`):
    a worker restarted after a crash, or the next run, skips most of the compilation."""
    from fuzz_bitstreams import Entry

    from lvae_jax.codec import formats
    from lvae_jax.codec.api import Codec
    from lvae_jax.entropy.tables import LATENT_TABLE, PIXEL_TABLE
    from lvae_jax.runtime import enable_compilation_cache

    enable_compilation_cache()
    rng = np.random.default_rng([seed, 0x3D])
    images = [synthetic_image(rng, h, w) for h, w in sizes]
    configs = tiny_configs()
    corpus = []
    for k, key in enumerate(models):
        config, lambdas = configs[key]
        codec = Codec(random_model(config, seed=1000 * seed + k))
        _CODECS[key] = codec
        tables = {"latent": LATENT_TABLE[config.family], "pixel": PIXEL_TABLE}
        for im in images:
            for lmb in lambdas:
                positions = _positions(codec, im, lmb, tables)
                for fmt in ("lvae", "official"):
                    data = codec.compress(im, lmb, fmt=fmt)
                    enc = formats.parse(data).encoded
                    chunks = [*enc.latents, *([enc.pixels] if enc.pixels else [])]
                    strings = dict(zip(sorted(positions, key=_order), chunks))
                    decoded = codec.decompress(data)
                    kind = "lvae" if fmt == "lvae" else ("qarv" if config.family == "qarv" else "qres")
                    name = f"{key}-{im.shape[0]}x{im.shape[1]}" + (f"-lmb{lmb:g}" if lmb else "") + f"-{kind}"
                    meta = {"model": key, "lmb": lmb, "decoded": decoded, "image": im}
                    if kind == "qres":
                        meta.update(protocol=4, batch=1, lossless=codec.model.lossless)
                    corpus.append(Entry(name, kind, data, strings, positions, meta))
    return corpus


def build_small_corpus(seed: int = 0) -> list:
    """The QARV and lossless models on one image size (CI's sample: fewer compilations; with the
    persistent compilation cache shared, the tiny models of tests/test_eval_model.py compile the
    same programs)."""
    return build_corpus(seed, models=("qarv", "lossless"), sizes=IMAGE_SIZES[:1])


def _order(pos):
    return (0, pos[1], pos[2]) if pos[0] == "latent" else (1, 0, 0)


def decode_file(data: bytes, entry, stats: collections.Counter, mutation: str = "",
                detail: str = ""):
    """Decode ``data`` (a mutation of ``entry``'s file) with the model that wrote the entry and
    check the invariants of the module docstring (``AssertionError`` when one is violated).
    Counts outcomes in ``stats``. Raises whatever the decoder raises on refusal."""
    from lvae_jax.codec import formats
    from lvae_jax.codec.formats import sniff

    codec = _CODECS[entry.meta["model"]]
    expected = entry.meta["decoded"]
    try:
        img = codec.decompress(data)
    except Exception:
        assert data != entry.data, f"{entry.name}: the unmodified file was refused"
        raise
    size = formats.parse(data).meta.image_size
    assert img.shape == (*size, 3), f"{entry.name}: decoded {img.shape}, the file states {size}"
    assert np.all(np.isfinite(img)) and img.min() >= 0.0 and img.max() <= 1.0, (
        f"{entry.name}: decoded pixels outside [0, 1]")
    same = img.shape == expected.shape and np.array_equal(img, expected)
    if data == entry.data:
        assert same, f"{entry.name}: the unmodified file decoded to another image"
        stats["decoded-unmodified"] += 1
        return img
    forged = mutation in ("header", "size") and "CRC recomputed" in detail
    kind = sniff(data)
    if kind == "lvae":
        if forged:
            stats["container-forged-header-decoded" + ("" if same else "-differently")] += 1
        else:
            assert same, (f"{entry.name}: a corrupted container ({mutation}: {detail}) decoded "
                          "without an error into another image")
            stats["container-modified-decoded-identically"] += 1
    else:   # "qarv-official" / "qres-official"
        stats[f"{kind}-{'undetected-change' if not same else 'modified-decoded-identically'}"] += 1
        if not same:
            stats[f"{kind}-undetected-change-{mutation}"] += 1
    return img


#: ``scripts/fuzz_bitstreams.py`` passes (data, entry, stats, mutation, detail).
decode_file.wants_entry = True
