"""Model configurations as data.

A model is a :class:`ModelConfig`: a tuple of encoder block specs, a tuple of decoder block specs
(positions matter: they are the official ``enc_blocks.N`` / ``dec_blocks.N`` indices), the output
head and the image scaling. Presets for the official models live in :mod:`lvae_jax.models.zoo`;
a research fork builds a custom width or depth by calling the same preset builders with other
arguments, or by writing its own tuple of specs — no library code changes.

Configs round-trip through JSON (:meth:`ModelConfig.to_dict` / :meth:`ModelConfig.from_dict`), which
is how checkpoints remember the model they hold.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from lvae_jax.models import latents as L
from lvae_jax.nn import blocks as B

# ------------------------------------------------------------------------------------------------
# Block specs. Each names the official block it stands for.
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PatchDownSpec:
    """``common.patch_downsample(in_ch, out_ch, rate)``."""
    in_ch: int
    out_ch: int
    rate: int
    type: ClassVar[str] = "patch_down"

    def build(self, *, rngs, num_latents: int = 1):
        return B.PatchDown(self.in_ch, self.out_ch, self.rate, rngs=rngs)


@dataclass(frozen=True)
class PatchUpSpec:
    """``common.patch_upsample(in_ch, out_ch, rate)`` (1×1 conv + PixelShuffle)."""
    in_ch: int
    out_ch: int
    rate: int
    type: ClassVar[str] = "patch_up"

    def build(self, *, rngs, num_latents: int = 1):
        return B.PatchUp(self.in_ch, self.out_ch, self.rate, rngs=rngs)


@dataclass(frozen=True)
class ConvNeXtSpec:
    """QRes ``MyConvNeXtBlock`` (timm ConvNeXt block, affine LayerNorm)."""
    dim: int
    kernel_size: int = 7
    mlp_ratio: float = 2.0
    type: ClassVar[str] = "convnext"

    def build(self, *, rngs, num_latents: int = 1):
        return B.ConvNeXtBlock(self.dim, self.kernel_size, self.mlp_ratio, rngs=rngs)


@dataclass(frozen=True)
class ConvNeXtDownSpec:
    """QRes ``MyConvNeXtPatchDown``."""
    in_ch: int
    out_ch: int
    rate: int = 2
    kernel_size: int = 7
    mlp_ratio: float = 2.0
    type: ClassVar[str] = "convnext_down"

    def build(self, *, rngs, num_latents: int = 1):
        return B.ConvNeXtPatchDown(self.in_ch, self.out_ch, self.rate, self.kernel_size,
                                   self.mlp_ratio, rngs=rngs)


@dataclass(frozen=True)
class AdaLNSpec:
    """``common.ConvNeXtBlockAdaLN`` (λ-conditioned)."""
    dim: int
    kernel_size: int = 7
    mlp_ratio: float = 2.0
    embed_dim: int = 256
    type: ClassVar[str] = "adaln"

    def build(self, *, rngs, num_latents: int = 1):
        return B.AdaLNConvNeXtBlock(self.dim, self.embed_dim, self.kernel_size, self.mlp_ratio,
                                    rngs=rngs)


@dataclass(frozen=True)
class AdaLNDownSpec:
    """rd ``ConvNeXtAdaLNPatchDown``."""
    in_ch: int
    out_ch: int
    rate: int = 2
    kernel_size: int = 7
    mlp_ratio: float = 2.0
    embed_dim: int = 256
    type: ClassVar[str] = "adaln_down"

    def build(self, *, rngs, num_latents: int = 1):
        return B.AdaLNConvNeXtPatchDown(self.in_ch, self.out_ch, self.rate, self.embed_dim,
                                        self.kernel_size, self.mlp_ratio, rngs=rngs)


@dataclass(frozen=True)
class NearestUpSpec:
    """``nn.Upsample(scale_factor=rate)``."""
    rate: int
    type: ClassVar[str] = "nearest_up"

    def build(self, *, rngs, num_latents: int = 1):
        return B.NearestUp(self.rate)


@dataclass(frozen=True)
class DeconvSpec:
    """``common.deconv(in_ch, out_ch, kernel_size, stride)`` (ConvTranspose2d)."""
    in_ch: int
    out_ch: int
    kernel_size: int = 5
    stride: int = 2
    type: ClassVar[str] = "deconv"

    def build(self, *, rngs, num_latents: int = 1):
        return B.Deconv(self.in_ch, self.out_ch, self.kernel_size, self.stride, rngs=rngs)


@dataclass(frozen=True)
class TapSpec:
    """``common.SetKey(key)``: a named encoder tap (QARV)."""
    key: str
    type: ClassVar[str] = "tap"

    def build(self, *, rngs, num_latents: int = 1):
        return B.Tap(self.key)


@dataclass(frozen=True)
class StopSpec:
    """``common.CompresionStopFlag``: encoding needs nothing past this point."""
    type: ClassVar[str] = "stop"

    def build(self, *, rngs, num_latents: int = 1):
        return B.StopFlag()


@dataclass(frozen=True)
class QResLatentSpec:
    """QRes ``QLatentBlockX(width, zdim, kernel_size)``; encoder feature looked up by resolution."""
    width: int
    zdim: int
    kernel_size: int = 7
    type: ClassVar[str] = "qres_latent"
    latent: ClassVar[bool] = True

    def build(self, *, rngs, num_latents: int = 1):
        return L.QResLatentBlock(self.width, self.zdim, self.kernel_size, rngs=rngs,
                                 num_latents=num_latents)


@dataclass(frozen=True)
class QARVLatentSpec:
    """QARV ``VRLVBlockBase``; encoder feature taken from the named tap ``enc_key``."""
    width: int
    zdim: int
    enc_key: str
    enc_width: int
    kernel_size: int = 7
    mlp_ratio: float = 2.0
    embed_dim: int = 256
    type: ClassVar[str] = "qarv_latent"
    latent: ClassVar[bool] = True

    def build(self, *, rngs, num_latents: int = 1):
        return L.QARVLatentBlock(self.width, self.zdim, self.enc_width, self.kernel_size,
                                 self.mlp_ratio, self.embed_dim, rngs=rngs)


@dataclass(frozen=True)
class RDLatentSpec:
    """rd ``LatentVariableBlock``; encoder feature looked up by resolution."""
    width: int
    zdim: int
    enc_width: int
    kernel_size: int = 7
    mlp_ratio: float = 2.0
    embed_dim: int = 256
    type: ClassVar[str] = "rd_latent"
    latent: ClassVar[bool] = True

    def build(self, *, rngs, num_latents: int = 1):
        return L.RDLatentBlock(self.width, self.zdim, self.enc_width, self.kernel_size,
                               self.mlp_ratio, self.embed_dim, rngs=rngs)


#: Block specs by type name: the official ones, and those a research fork registers
#: (:func:`register_block`, docs/extending.md).
BLOCK_SPECS: dict[str, type] = {cls.type: cls for cls in (
    PatchDownSpec, PatchUpSpec, ConvNeXtSpec, ConvNeXtDownSpec, AdaLNSpec, AdaLNDownSpec,
    NearestUpSpec, DeconvSpec, TapSpec, StopSpec, QResLatentSpec, QARVLatentSpec, RDLatentSpec)}


def register_block(cls):
    """Class decorator: make a block spec known to configurations (and so to model directories)
    by its ``type``. A spec is a frozen dataclass with ``type: ClassVar[str]``, its fields, and
    ``build(*, rngs, num_latents=1)`` returning the Flax module; a latent block's spec also has
    ``latent: ClassVar[bool] = True`` (docs/extending.md)."""
    kind = getattr(cls, "type", None)
    if not isinstance(kind, str) or not callable(getattr(cls, "build", None)):
        raise TypeError(f"{cls.__name__}: a block spec needs a ClassVar `type` and a `build` method")
    if BLOCK_SPECS.get(kind, cls) is not cls:
        raise ValueError(f"block type {kind!r} is already registered by "
                         f"{BLOCK_SPECS[kind].__module__}.{BLOCK_SPECS[kind].__name__}")
    BLOCK_SPECS[kind] = cls
    return cls


def is_latent(spec) -> bool:
    return bool(getattr(spec, "latent", False))


# ------------------------------------------------------------------------------------------------
# Output heads (QRes only; QARV and rd decode straight to the image)
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MSEHeadSpec:
    """QRes ``MSEOutputNet(mse_lmb)``: loss = λ · MSE in [-1, 1] units."""
    lmb: float
    type: ClassVar[str] = "mse_head"


@dataclass(frozen=True)
class NLLHeadSpec:
    """QRes ``GaussianNLLOutputNet`` (lossless): ``conv_mean``/``conv_scale`` are patch up-samples
    from ``in_ch`` to the image at ``rate``; loss = discretised Gaussian NLL (nats per dim)."""
    in_ch: int
    rate: int = 4
    im_channels: int = 3
    type: ClassVar[str] = "nll_head"


HEAD_SPECS = {cls.type: cls for cls in (MSEHeadSpec, NLLHeadSpec)}


# ------------------------------------------------------------------------------------------------
# The model
# ------------------------------------------------------------------------------------------------

FAMILIES = ("qres", "qarv", "rd")


@dataclass(frozen=True)
class ModelConfig:
    """A whole model. ``family`` picks the top-level behaviour:

    - ``qres``: fixed rate (λ in ``head``), encoder features by resolution, ``head`` MSE or NLL.
    - ``qarv``: variable rate (λ embedding), encoder features from named taps.
    - ``rd``: variable rate, Gaussian latents (the R-D upper-bound model), no entropy coder.
    """
    name: str
    family: str
    enc_blocks: tuple
    dec_blocks: tuple
    im_shift: float
    im_scale: float
    max_stride: int = 64
    im_channels: int = 3
    head: Any = None
    lmb_range: tuple[float, float] | None = None
    lmb_embed_dim: tuple[int, int] = (256, 256)
    sin_period: float = 64.0
    #: How training draws λ: ``cube_root`` (QARV) or ``log_uniform`` (rd).
    lmb_sampling: str | None = None
    #: Official constructor arguments, for the record (``get_model(name, **args)``).
    args: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        if self.family == "qres" and self.head is None:
            raise ValueError("a qres model needs a head (MSEHeadSpec or NLLHeadSpec)")
        if self.family in ("qarv", "rd") and self.lmb_range is None:
            raise ValueError(f"a {self.family} model needs lmb_range")

    @property
    def variable_rate(self) -> bool:
        return self.family in ("qarv", "rd")

    @property
    def lossless(self) -> bool:
        """The lossless QRes model: its head is the pixel NLL (``qres34m_lossless``)."""
        return self.head is not None and self.head.type == "nll_head"

    @property
    def latent_specs(self) -> list:
        return [s for s in self.dec_blocks if is_latent(s)]

    @property
    def num_latents(self) -> int:
        return len(self.latent_specs)

    @property
    def default_lmb(self) -> float | None:
        """The official default λ: QRes's fixed λ, the *top* of the range for QARV/rd
        (``default_lmb = lmb_range[1]``)."""
        if self.family == "qres":
            return getattr(self.head, "lmb", None)
        return float(self.lmb_range[1])

    # -- serialisation ------------------------------------------------------------------------

    def to_dict(self) -> dict:
        def spec(s):
            if s is None:
                return None
            return {"type": s.type, **dataclasses.asdict(s)}
        return {
            "name": self.name, "family": self.family,
            "enc_blocks": [spec(s) for s in self.enc_blocks],
            "dec_blocks": [spec(s) for s in self.dec_blocks],
            "im_shift": self.im_shift, "im_scale": self.im_scale, "max_stride": self.max_stride,
            "im_channels": self.im_channels, "head": spec(self.head),
            "lmb_range": list(self.lmb_range) if self.lmb_range else None,
            "lmb_embed_dim": list(self.lmb_embed_dim), "sin_period": self.sin_period,
            "lmb_sampling": self.lmb_sampling, "args": dict(self.args),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        def spec(x, table):
            if x is None:
                return None
            x = dict(x)
            kind = x.pop("type")
            if kind not in table:
                raise ValueError(f"unknown block type {kind!r} (a research fork's block? load "
                                 f"its module with LVAE_PLUGINS=module; docs/extending.md); "
                                 f"known: {sorted(table)}")
            return table[kind](**x)
        d = dict(d)
        d["enc_blocks"] = tuple(spec(s, BLOCK_SPECS) for s in d["enc_blocks"])
        d["dec_blocks"] = tuple(spec(s, BLOCK_SPECS) for s in d["dec_blocks"])
        d["head"] = spec(d.get("head"), HEAD_SPECS)
        if d.get("lmb_range") is not None:
            d["lmb_range"] = tuple(float(v) for v in d["lmb_range"])
        d["lmb_embed_dim"] = tuple(d.get("lmb_embed_dim", (256, 256)))
        return cls(**d)

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON of the architecture (name and args excluded)."""
        d = self.to_dict()
        d.pop("name")
        d.pop("args")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()
