"""The key map between official PyTorch state_dicts and lvae-jax parameters, as tables.

For every block type a table lists, in the official ``state_dict`` order,
``(torch suffix, lvae-jax suffix, layout)``. :func:`key_map` expands the tables over a model's
block list into one entry per official key, so the same data drives both directions of the
converter and the check that every official key is produced.

Layouts (PyTorch -> lvae-jax):

========== ====================== ====================== =====================================
layout     PyTorch                lvae-jax               transform
========== ====================== ====================== =====================================
``same``   (…)                    (…)                    none (biases, LayerNorm, QRes gamma)
``conv``   (out, in, kh, kw)      (kh, kw, in, out)      transpose (2, 3, 1, 0)
``dw``     (C, 1, k, k)           (k, k, C)              drop axis 1, transpose (1, 2, 0)
``deconv`` (in, out, kh, kw)      (kh, kw, in, out)      transpose (2, 3, 0, 1); not flipped
``linear`` (out, in)              (in, out)              transpose
``chan4d`` (1, C, 1, 1)           (C,)                   reshape (AdaLN gamma, decoder bias)
========== ====================== ====================== =====================================

Buffers (CompressAI's bounds and coder tables) have no lvae-jax counterpart: their official
values are fixed by the model family and are checked on import, re-created on export.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lvae_jax import numerics
from lvae_jax.models.specs import ModelConfig

# -- per-block tables -------------------------------------------------------------------------

CONVNEXT = (  # timm ConvNeXtBlock (QRes MyConvNeXtBlock)
    ("gamma", "gamma", "same"),
    ("conv_dw.weight", "conv_dw.kernel", "dw"),
    ("conv_dw.bias", "conv_dw.bias", "same"),
    ("norm.weight", "norm.scale", "same"),
    ("norm.bias", "norm.bias", "same"),
    ("mlp.fc1.weight", "mlp.fc1.kernel", "linear"),
    ("mlp.fc1.bias", "mlp.fc1.bias", "same"),
    ("mlp.fc2.weight", "mlp.fc2.kernel", "linear"),
    ("mlp.fc2.bias", "mlp.fc2.bias", "same"),
)

ADALN = (  # common.ConvNeXtBlockAdaLN
    ("gamma", "gamma", "chan4d"),
    ("conv_dw.weight", "conv_dw.kernel", "dw"),
    ("conv_dw.bias", "conv_dw.bias", "same"),
    ("embedding_layer.1.weight", "embedding_layer.kernel", "linear"),
    ("embedding_layer.1.bias", "embedding_layer.bias", "same"),
    ("mlp.fc1.weight", "mlp.fc1.kernel", "linear"),
    ("mlp.fc1.bias", "mlp.fc1.bias", "same"),
    ("mlp.fc2.weight", "mlp.fc2.kernel", "linear"),
    ("mlp.fc2.bias", "mlp.fc2.bias", "same"),
)


def _conv(torch_name: str, jax_name: str, layout: str = "conv"):
    return ((f"{torch_name}.weight", f"{jax_name}.kernel", layout),
            (f"{torch_name}.bias", f"{jax_name}.bias", "same"))


def _sub(table, torch_prefix: str, jax_prefix: str):
    return tuple((f"{torch_prefix}{t}", f"{jax_prefix}{j}", lay) for t, j, lay in table)


VDBLOCK = _conv("c1", "c1") + _conv("c2", "c2") + _conv("c3", "c3") + _conv("c4", "c4")

_ADALN_POSTERIOR = (_sub(ADALN, "posterior0.", "posterior0.") + _sub(ADALN, "posterior1.", "posterior1.")
                    + _sub(ADALN, "posterior2.", "posterior2."))

BLOCK_TABLES = {
    "patch_down": (("weight", "conv.kernel", "conv"), ("bias", "conv.bias", "same")),
    "patch_up": _conv("0", "conv"),                       # Sequential(conv1x1, PixelShuffle)
    "convnext": CONVNEXT,
    "convnext_down": _sub(CONVNEXT, "", "block.") + _conv("downsapmle", "downsample"),  # (sic)
    "adaln": ADALN,
    "adaln_down": _sub(ADALN, "", "block.") + _conv("downsapmle", "downsample"),
    "nearest_up": (),
    "deconv": (("weight", "conv.kernel", "deconv"), ("bias", "conv.bias", "same")),
    "tap": (),
    "stop": (),
    "qres_latent": (_sub(CONVNEXT, "resnet_front.", "resnet_front.")
                    + _sub(CONVNEXT, "resnet_end.", "resnet_end.")
                    + _sub(VDBLOCK, "posterior.", "posterior_net.")
                    + _sub(VDBLOCK, "prior.", "prior_net.")
                    + _conv("z_proj.0", "z_proj_in") + _conv("z_proj.2", "z_proj_out")),
    "qarv_latent": (_sub(ADALN, "resnet_front.", "resnet_front.") + _sub(ADALN, "resnet_end.", "resnet_end.")
                    + _ADALN_POSTERIOR + _conv("post_merge", "post_merge")
                    + _conv("posterior", "posterior_conv") + _conv("z_proj", "z_proj")
                    + _conv("prior", "prior_conv")),
    "rd_latent": (_sub(ADALN, "resnet_front.", "resnet_front.") + _sub(ADALN, "resnet_end.", "resnet_end.")
                  + _ADALN_POSTERIOR + _conv("post_merge", "post_merge")
                  + _conv("posterior", "posterior_conv") + _conv("prior", "prior_conv")
                  + _conv("z_proj", "z_proj")),
}

# -- buffers -----------------------------------------------------------------------------------

_F32 = lambda v: np.array([v], np.float32)  # noqa: E731
_EMPTY_I32 = np.zeros((0,), np.int32)

#: CompressAI buffers of a latent block: (torch suffix, official value at construction).
#: ``_offset/_quantized_cdf/_cdf_length`` (and QRes ``scale_table``) are filled by ``update()``;
#: checkpoints may carry either state.
BUFFER_TABLES = {
    "qres_latent": (  # GaussianConditional(None)
        ("discrete_gaussian._offset", _EMPTY_I32),
        ("discrete_gaussian._quantized_cdf", _EMPTY_I32),
        ("discrete_gaussian._cdf_length", _EMPTY_I32),
        ("discrete_gaussian.scale_table", np.zeros((0,), np.float32)),
        ("discrete_gaussian.scale_bound", _F32(numerics.SCALE_BOUND)),
        ("discrete_gaussian.likelihood_lower_bound.bound", _F32(numerics.LIKELIHOOD_BOUND)),
        ("discrete_gaussian.lower_bound_scale.bound", _F32(numerics.SCALE_BOUND)),
    ),
    "qarv_latent": (  # entropy_coding.DiscretizedGaussian (scale_table is not persistent)
        ("discrete_gaussian._offset", _EMPTY_I32),
        ("discrete_gaussian._quantized_cdf", _EMPTY_I32),
        ("discrete_gaussian._cdf_length", _EMPTY_I32),
        ("discrete_gaussian.likelihood_lower_bound.bound", _F32(numerics.LIKELIHOOD_BOUND)),
        ("discrete_gaussian.lower_bound_scale.bound", _F32(numerics.SCALE_BOUND)),
    ),
}

#: Buffers the official code fills in ``update()``/``compress_mode(True)``: any size accepted.
FILLED_BY_UPDATE = ("_offset", "_quantized_cdf", "_cdf_length", "scale_table")

#: Keys that exist only in checkpoints saved after ``compress_mode(True)`` (the lossless pixel
#: head creates its ``GaussianConditional`` in ``update()``).
OPTIONAL_PREFIXES = ("out_net.discrete_gaussian.",)


@dataclass(frozen=True)
class ParamEntry:
    torch_key: str
    jax_path: str
    layout: str


@dataclass(frozen=True)
class BufferEntry:
    torch_key: str
    value: np.ndarray


def key_map(config: ModelConfig) -> list:
    """All official state_dict keys of ``config`` in the official order, as
    :class:`ParamEntry` / :class:`BufferEntry`."""
    qres = config.family == "qres"
    enc_t, dec_t = "encoder.enc_blocks.", ("decoder.dec_blocks." if qres else "dec_blocks.")
    out = []

    def blocks(specs, torch_prefix, jax_prefix):
        for i, spec in enumerate(specs):
            for t, j, lay in BLOCK_TABLES[spec.type]:
                out.append(ParamEntry(f"{torch_prefix}{i}.{t}", f"{jax_prefix}{i}.{j}", lay))
            for t, value in BUFFER_TABLES.get(spec.type, ()):
                out.append(BufferEntry(f"{torch_prefix}{i}.{t}", value))

    if qres:  # HierarchicalVAE: encoder, decoder (its own bias first), out_net
        blocks(config.enc_blocks, enc_t, "encoder_blocks.")
        out.append(ParamEntry("decoder.bias", "bias", "chan4d"))
        blocks(config.dec_blocks, dec_t, "dec_blocks.")
        if config.head.type == "nll_head":
            for name in ("conv_mean", "conv_scale"):
                out.extend(ParamEntry(f"out_net.{name}.{t}", f"head.{name}.{j}", lay)
                           for t, j, lay in BLOCK_TABLES["patch_up"])
    else:  # VariableRateLossyVAE: own bias first, encoder, dec_blocks, lmb_embedding
        out.append(ParamEntry("bias", "bias", "chan4d"))
        blocks(config.enc_blocks, enc_t, "encoder_blocks.")
        blocks(config.dec_blocks, dec_t, "dec_blocks.")
        out.extend(ParamEntry(f"lmb_embedding.{t}", f"lmb_embedding.{j}", lay)
                   for t, j, lay in _conv("0", "fc1", "linear") + _conv("2", "fc2", "linear"))
    return out


# -- layouts -----------------------------------------------------------------------------------


def to_jax(layout: str, w: np.ndarray) -> np.ndarray:
    """PyTorch layout -> lvae-jax layout."""
    if layout == "same":
        return w
    if layout == "conv":
        return w.transpose(2, 3, 1, 0)
    if layout == "dw":
        return w[:, 0].transpose(1, 2, 0)
    if layout == "deconv":
        return w.transpose(2, 3, 0, 1)
    if layout == "linear":
        return w.T
    if layout == "chan4d":
        return w.reshape(-1)
    raise ValueError(layout)


def to_torch(layout: str, w: np.ndarray) -> np.ndarray:
    """lvae-jax layout -> PyTorch layout."""
    if layout == "same":
        return w
    if layout == "conv":
        return w.transpose(3, 2, 0, 1)
    if layout == "dw":
        return w.transpose(2, 0, 1)[:, None]
    if layout == "deconv":
        return w.transpose(2, 3, 0, 1)
    if layout == "linear":
        return w.T
    if layout == "chan4d":
        return w.reshape(1, -1, 1, 1)
    raise ValueError(layout)


def torch_shape(layout: str, jax_shape: tuple) -> tuple:
    """The PyTorch shape an lvae-jax parameter of ``jax_shape`` has."""
    return to_torch(layout, np.empty(jax_shape, np.uint8)).shape
