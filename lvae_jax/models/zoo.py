"""Configurations of the official models, as parameterised builders.

``qres34m_config()`` etc. return exactly the official architecture; their keyword arguments let a
fork build a narrower or shallower variant with the same code (e.g. ``qres34m_config(ch=16,
enc_nums=(1, 1, 1, 1, 1), dec_nums=(1, 1, 1, 1, 1))``).
"""

from __future__ import annotations

from lvae_jax.models.specs import (AdaLNDownSpec, AdaLNSpec, ConvNeXtDownSpec, ConvNeXtSpec,
                                   DeconvSpec, MSEHeadSpec, ModelConfig, NearestUpSpec,
                                   NLLHeadSpec, PatchDownSpec, PatchUpSpec, QARVLatentSpec,
                                   QResLatentSpec, RDLatentSpec, StopSpec, TapSpec)

#: ImageNet mean/std shift-and-scale used by qres34m, qarv_base and rd_model_base.
IMAGENET_SHIFT, IMAGENET_SCALE = -0.4546259594901961, 3.67572653978347
#: CelebA shift-and-scale used by qres17m.
CELEBA_SHIFT, CELEBA_SCALE = -0.4356, 3.397893306150187


def _qres34m_body(ch, enc_nums, dec_nums, z_dims, im_channels=3):
    enc = [PatchDownSpec(im_channels, ch * 2, 4),
           *[ConvNeXtSpec(ch * 2, 7) for _ in range(enc_nums[0])],
           ConvNeXtDownSpec(ch * 2, ch * 4),
           *[ConvNeXtSpec(ch * 4, 7) for _ in range(enc_nums[1])],
           ConvNeXtDownSpec(ch * 4, ch * 4),
           *[ConvNeXtSpec(ch * 4, 5) for _ in range(enc_nums[2])],
           ConvNeXtDownSpec(ch * 4, ch * 4),
           *[ConvNeXtSpec(ch * 4, 3) for _ in range(enc_nums[3])],
           ConvNeXtDownSpec(ch * 4, ch * 4),
           *[ConvNeXtSpec(ch * 4, 1) for _ in range(enc_nums[4])]]
    dec = [*[QResLatentSpec(ch * 4, z_dims[0], 1) for _ in range(dec_nums[0])],
           PatchUpSpec(ch * 4, ch * 4, 2),
           *[QResLatentSpec(ch * 4, z_dims[1], 3) for _ in range(dec_nums[1])],
           PatchUpSpec(ch * 4, ch * 4, 2),
           *[QResLatentSpec(ch * 4, z_dims[2], 5) for _ in range(dec_nums[2])],
           PatchUpSpec(ch * 4, ch * 4, 2),
           *[QResLatentSpec(ch * 4, z_dims[3], 7) for _ in range(dec_nums[3])],
           PatchUpSpec(ch * 4, ch * 2, 2),
           *[QResLatentSpec(ch * 2, z_dims[4], 7) for _ in range(dec_nums[4])]]
    return enc, dec


def qres34m_config(lmb: float = 32, ch: int = 96, enc_nums=(6, 6, 6, 4, 2), dec_nums=(1, 2, 3, 3, 3),
                   z_dims=(16, 14, 12, 10, 8), name: str = "qres34m") -> ModelConfig:
    """QRes-VAE (34M), fixed rate λ (official weights: λ ∈ {16, 32, …, 2048})."""
    enc, dec = _qres34m_body(ch, enc_nums, dec_nums, z_dims)
    dec.append(PatchUpSpec(ch * 2, 3, 4))
    return ModelConfig(name=name, family="qres", enc_blocks=tuple(enc), dec_blocks=tuple(dec),
                       im_shift=IMAGENET_SHIFT, im_scale=IMAGENET_SCALE, head=MSEHeadSpec(float(lmb)),
                       args={"lmb": lmb})


def qres34m_lossless_config(ch: int = 96, enc_nums=(6, 6, 6, 4, 2), dec_nums=(1, 2, 3, 3, 3),
                            z_dims=(16, 14, 12, 10, 8), name: str = "qres34m_lossless") -> ModelConfig:
    """QRes-VAE (34M) lossless: the same latents, a discretised-Gaussian pixel head."""
    enc, dec = _qres34m_body(ch, enc_nums, dec_nums, z_dims)
    return ModelConfig(name=name, family="qres", enc_blocks=tuple(enc), dec_blocks=tuple(dec),
                       im_shift=IMAGENET_SHIFT, im_scale=IMAGENET_SCALE,
                       head=NLLHeadSpec(ch * 2, 4), args={})


def qres17m_config(lmb: float = 8, ch: int = 72, enc_nums=(6, 6, 4, 2), dec_nums=(1, 2, 4, 5),
                   z_dims=(16, 8, 6, 4), name: str = "qres17m") -> ModelConfig:
    """QRes-VAE (17M) for 64×64 faces (CelebA); nearest and transposed-conv up-sampling."""
    enc = [PatchDownSpec(3, ch * 2, 4),
           *[ConvNeXtSpec(ch * 2, 7) for _ in range(enc_nums[0])],
           ConvNeXtDownSpec(ch * 2, ch * 4),
           *[ConvNeXtSpec(ch * 4, 5) for _ in range(enc_nums[1])],
           ConvNeXtDownSpec(ch * 4, ch * 4),
           *[ConvNeXtSpec(ch * 4, 3) for _ in range(enc_nums[2])],
           ConvNeXtDownSpec(ch * 4, ch * 4, rate=4),
           *[ConvNeXtSpec(ch * 4, 1) for _ in range(enc_nums[3])]]
    dec = [*[QResLatentSpec(ch * 4, z_dims[0], 1) for _ in range(dec_nums[0])],
           NearestUpSpec(4),
           *[QResLatentSpec(ch * 4, z_dims[1], 3) for _ in range(dec_nums[1])],
           DeconvSpec(ch * 4, ch * 4, kernel_size=3),
           *[QResLatentSpec(ch * 4, z_dims[2], 5) for _ in range(dec_nums[2])],
           DeconvSpec(ch * 4, ch * 2),
           *[QResLatentSpec(ch * 2, z_dims[3], 7) for _ in range(dec_nums[3])],
           PatchUpSpec(ch * 2, 3, 4)]
    return ModelConfig(name=name, family="qres", enc_blocks=tuple(enc), dec_blocks=tuple(dec),
                       im_shift=CELEBA_SHIFT, im_scale=CELEBA_SCALE, head=MSEHeadSpec(float(lmb)),
                       args={"lmb": lmb})


def qarv_base_config(lmb_range=(16, 2048), ch: int = 128, enc_dims=None,
                     z_dims=(32, 32, 96, 8), enc_nums=(6, 6, 6, 4, 4), dec_nums=(1, 2, 3, 3),
                     embed_dim: int = 256, name: str = "qarv_base") -> ModelConfig:
    """QARV (variable rate, λ ∈ lmb_range). Encoder taps ``enc_s8``…``enc_s64`` are taken *before*
    the extra AdaLN block of each stage. The decoder's widths follow ``ch`` as in the official
    builder (4, 4, 3, 2, 1 × ch)."""
    e = tuple(enc_dims or (192, ch * 3, ch * 4, ch * 4, ch * 4))
    d = (ch * 4, ch * 4, ch * 3, ch * 2, ch * 1)
    A = lambda dim, k=7, r=2.0: AdaLNSpec(dim, k, r, embed_dim)  # noqa: E731
    enc = [PatchDownSpec(3, e[0], 4),
           *[A(e[0], 7) for _ in range(enc_nums[0])], A(e[0]), PatchDownSpec(e[0], e[1], 2),
           *[A(e[1], 7) for _ in range(enc_nums[1])], TapSpec("enc_s8"), A(e[1]),
           PatchDownSpec(e[1], e[2], 2),
           *[A(e[2], 5) for _ in range(enc_nums[2])], TapSpec("enc_s16"), A(e[2]),
           PatchDownSpec(e[2], e[3], 2),
           *[A(e[3], 3) for _ in range(enc_nums[3])], TapSpec("enc_s32"), A(e[3]),
           PatchDownSpec(e[3], e[4], 2),
           *[A(e[4], 1) for _ in range(enc_nums[4])], TapSpec("enc_s64")]
    Q = lambda w, z, key, ew, k, r: QARVLatentSpec(w, z, key, ew, k, r, embed_dim)  # noqa: E731
    dec = [*[Q(d[0], z_dims[0], "enc_s64", e[-1], 1, 4.0) for _ in range(dec_nums[0])],
           A(d[0], 1, 4.0), PatchUpSpec(d[0], d[1], 2),
           A(d[1], 3, 3.0),
           *[Q(d[1], z_dims[1], "enc_s32", e[-2], 3, 3.0) for _ in range(dec_nums[1])],
           A(d[1], 3, 3.0), PatchUpSpec(d[1], d[2], 2),
           A(d[2], 5, 2.0),
           *[Q(d[2], z_dims[2], "enc_s16", e[-3], 5, 2.0) for _ in range(dec_nums[2])],
           A(d[2], 5, 2.0), PatchUpSpec(d[2], d[3], 2),
           A(d[3], 7, 1.75),
           *[Q(d[3], z_dims[3], "enc_s8", e[-4], 7, 1.75) for _ in range(dec_nums[3])],
           StopSpec(),
           A(d[3], 7, 1.75), PatchUpSpec(d[3], d[4], 2),
           *[A(d[4], 7, 1.5) for _ in range(8)],
           PatchUpSpec(d[4], 3, 4)]
    lo, hi = float(lmb_range[0]), float(lmb_range[1])
    return ModelConfig(name=name, family="qarv", enc_blocks=tuple(enc), dec_blocks=tuple(dec),
                       im_shift=IMAGENET_SHIFT, im_scale=IMAGENET_SCALE, lmb_range=(lo, hi),
                       lmb_embed_dim=(embed_dim, embed_dim), sin_period=64.0,
                       lmb_sampling="cube_root", args={"lmb_range": [lo, hi]})


def rd_model_base_config(lmb_range=(4, 2048), enc_dims=(256, 512, 640, 768, 768),
                         dec_dims=(768, 768, 640, 512, 256), z_dims=(32, 32, 32, 32, 32),
                         enc_nums=(6, 6, 6, 4, 4), dec_nums=(1, 2, 3, 4, 5), embed_dim: int = 256,
                         name: str = "rd_model_base") -> ModelConfig:
    """The ICIP'23 rate–distortion upper-bound model: Gaussian latents, variable rate, no coder.
    (As in the official code, the 2×2 stage down-samples to ``enc_dims[3]``; ``enc_dims[4]`` is
    kept for symmetry only.)"""
    e, d = enc_dims, dec_dims
    A = lambda dim: AdaLNSpec(dim, 7, 2.0, embed_dim)  # noqa: E731
    D = lambda i, o: AdaLNDownSpec(i, o, 2, 7, 2.0, embed_dim)  # noqa: E731
    enc = [PatchDownSpec(3, e[0], 4),
           *[A(e[0]) for _ in range(enc_nums[0])], D(e[0], e[1]),
           *[A(e[1]) for _ in range(enc_nums[1])], D(e[1], e[2]),
           *[A(e[2]) for _ in range(enc_nums[2])], D(e[2], e[3]),
           *[A(e[3]) for _ in range(enc_nums[3])], D(e[3], e[3]),
           *[A(e[3]) for _ in range(enc_nums[4])]]
    R = lambda w, z, ew: RDLatentSpec(w, z, ew, 7, 2.0, embed_dim)  # noqa: E731
    dec = [*[R(d[0], z_dims[0], e[3]) for _ in range(dec_nums[0])], PatchUpSpec(d[0], d[1], 2),
           *[R(d[1], z_dims[1], e[3]) for _ in range(dec_nums[1])], PatchUpSpec(d[1], d[2], 2),
           *[R(d[2], z_dims[2], e[2]) for _ in range(dec_nums[2])], PatchUpSpec(d[2], d[3], 2),
           *[R(d[3], z_dims[3], e[1]) for _ in range(dec_nums[3])], PatchUpSpec(d[3], d[4], 2),
           *[R(d[4], z_dims[4], e[0]) for _ in range(dec_nums[4])], PatchUpSpec(d[4], 3, 4)]
    lo, hi = float(lmb_range[0]), float(lmb_range[1])
    return ModelConfig(name=name, family="rd", enc_blocks=tuple(enc), dec_blocks=tuple(dec),
                       im_shift=IMAGENET_SHIFT, im_scale=IMAGENET_SCALE, lmb_range=(lo, hi),
                       lmb_embed_dim=(embed_dim, embed_dim), sin_period=64.0,
                       lmb_sampling="log_uniform", args={"lmb_range": [lo, hi]})
