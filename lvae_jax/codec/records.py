"""What flows between the codec's steps: one image's strings and the checks that travel with
them, and what identifies the file they are written into.

The encoder (:class:`lvae_jax.codec.core.StringCoder`) creates an :class:`EncodedImage` — one rANS
string per latent block (and the lossless pixel string) plus its :class:`Checks`; the container
(:mod:`lvae_jax.codec.container`) writes the checks into its header and reads them back into the
same record; the decoder consumes it. A new check is a field of :class:`Checks` and its bytes in
the container: nothing copies the checks field by field.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Checks:
    """What a file carries besides its strings so that decoding is checked and exact.

    ``symbol_crcs``: CRC32 of each string's decoded symbols (latents in decoding order, then the
    pixel string; :func:`lvae_jax.entropy.coder.symbols_crc`) — confirms, or recovers, the
    encoder's table indexes. ``hints`` / ``hint_bound_exp``: the portable-index hints
    (:mod:`lvae_jax.entropy.hints`) for decoders whose prior scales lie within 2^-exp (relative)
    of the encoder's. ``image_crc``: lossless files with hints, CRC32 of the decoded 8-bit
    (padded) image. ``level_hints``: the hints also hold the lossless pixel levels' rounding
    sides. A file of the official layouts carries none of them (``Checks()``)."""

    symbol_crcs: tuple[int, ...] | None = None
    hints: bytes | None = None
    hint_bound_exp: int | None = None
    image_crc: int | None = None
    level_hints: bool = False

    def symbol_crc(self, i: int) -> int | None:
        """The CRC of string ``i`` (latents, then pixels), or None when not recorded."""
        crcs = self.symbol_crcs
        return None if crcs is None or i >= len(crcs) else crcs[i]


@dataclass
class EncodedImage:
    """The strings of one image: one per latent block (decoding order; a prefix of them for a
    truncated file) and, for the lossless model, the pixel string. ``grid``: (h, w) of the first
    latent = padded size / 64. ``at_risk``: latent elements whose prior scale lies within
    :data:`lvae_jax.entropy.tables.NEAR_BOUNDARY` of a table threshold (known after encoding):
    where a decoder with other floats may pick the other table."""

    latents: list
    pixels: bytes | None
    grid: tuple
    checks: Checks = field(default_factory=Checks)
    at_risk: int = 0


@dataclass(frozen=True)
class FileMeta:
    """What names a file's model and image: the model's name and 16-byte id (config fingerprint +
    weights, :func:`lvae_jax.codec.container.model_id`; None where the layout has none), λ (None
    for fixed-rate models), the original image size (H, W) and the model's stride."""

    model_name: str | None
    model_id: bytes | None
    lmb: float | None
    image_size: tuple[int, int]
    stride: int = 64
