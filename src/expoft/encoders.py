"""Image encoder and image augmentation for the EXPO-FT critic on pixel observations.

ALGORITHMS.md, EXPO-FT step 3: the critic has its own image encoder (ResNet-style, GroupNorm,
cameras stacked on the channel axis, -> 512-d + LayerNorm + tanh), trained by the critic loss,
plus a small proprioception embedding; the edit policy reads these features with the gradient
stopped. Training images are augmented by a random crop (95 % of the side), a small rotation and
colour jitter.

Value convention: images are on the **0-255 scale** everywhere. Observations carry ``uint8``
pixels; :func:`augment` returns ``float32`` pixels still in ``[0, 255]``; :class:`PixelEncoder`
accepts either dtype and maps both the same way (``x / 255 - 0.5``), so an augmented batch and a
raw one can go through the same encoder call and a ``uint8`` image and its ``float32`` copy give
identical features.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple, cast

import flax.linen as nn
import jax
import jax.numpy as jnp

from expoft.obs import PIXELS, PROPRIO

# ITU-R BT.601 luma weights: the grey image used by contrast and saturation jitter.
_LUMA = (0.299, 0.587, 0.114)
# Full float32 for the colour contractions (accelerators may default to reduced-precision dots).
_EXACT = jax.lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """Critic image encoder and its training augmentation (hashable: a static config field)."""

    channels: tuple[int, ...] = (32, 32, 64, 64)
    """Width of each stage; every stage halves the resolution (strided 3x3 conv + one residual block)."""
    groups: int = 8
    """GroupNorm groups; every entry of ``channels`` must be divisible by it."""
    feature_dim: int = 512
    """Image features after Dense -> LayerNorm -> tanh."""
    proprio_dim_embed: int = 64
    """Proprioception embedding width (Dense -> LayerNorm -> tanh); 0 ignores the proprioception."""
    crop: float = 0.95
    """Fraction of the image side kept by the random crop (1.0 = no crop)."""
    rotation_deg: float = 5.0
    """Largest absolute rotation, in degrees (0 = no rotation)."""
    brightness: float = 0.1
    """Largest relative brightness change: pixels times ``1 + U(-b, b)`` (0 disables)."""
    contrast: float = 0.1
    """Largest relative contrast change: blend with the mean grey level by ``1 + U(-c, c)`` (0 disables)."""
    saturation: float = 0.1
    """Largest relative saturation change: blend with the grey image by ``1 + U(-s, s)`` (0 disables)."""

    def __post_init__(self):
        channels = self.channels
        if isinstance(channels, int) or not channels:
            raise ValueError(f"channels must be a non-empty tuple of positive ints, got {channels!r}")
        if not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in channels):
            raise ValueError(f"channels must be a non-empty tuple of positive ints, got {channels!r}")
        object.__setattr__(self, "channels", tuple(channels))  # a list would make the config unhashable
        _check_int("groups", self.groups, minimum=1)
        bad = [c for c in self.channels if c % self.groups]
        if bad:
            raise ValueError(f"channels must all be divisible by groups={self.groups}, got {self.channels}")
        _check_int("feature_dim", self.feature_dim, minimum=1)
        _check_int("proprio_dim_embed", self.proprio_dim_embed, minimum=0)
        # Written as "not (inside)" so that NaN is rejected too.
        if not (0.5 < self.crop <= 1.0):
            raise ValueError(f"crop must be in (0.5, 1], got {self.crop}")
        if not (0.0 <= self.rotation_deg <= 180.0):
            raise ValueError(f"rotation_deg must be in [0, 180], got {self.rotation_deg}")
        for name in ("brightness", "contrast", "saturation"):
            value = getattr(self, name)
            if not (0.0 <= value <= 1.0):
                raise ValueError(f"{name} must be in [0, 1] (a relative jitter), got {value}")

    @property
    def out_dim(self) -> int:
        """Width of :class:`PixelEncoder`'s output."""
        return self.feature_dim + self.proprio_dim_embed

    @property
    def warps(self) -> bool:
        return self.crop < 1.0 or self.rotation_deg > 0.0

    @property
    def jitters(self) -> bool:
        return self.brightness > 0.0 or self.contrast > 0.0 or self.saturation > 0.0

    @property
    def augments(self) -> bool:
        """False when :func:`augment` is the identity."""
        return self.warps or self.jitters


def _check_int(name: str, value, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


# --------------------------------------------------------------------------------------------
# Encoder
# --------------------------------------------------------------------------------------------


class ResidualStage(nn.Module):
    """One stride-2 stage: ``h = Conv_s2(x)``, then ``h + Conv(swish(GN(Conv(swish(GN(h))))))``.

    Pre-activation residual block (GroupNorm, not BatchNorm: no batch statistics, so the critic's
    online and target passes and any batch composition see the same function).
    """

    channels: int
    groups: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = nn.Conv(self.channels, (3, 3), strides=(2, 2), padding="SAME")(x)  # [N, ceil(H/2), ceil(W/2), ch]
        y = nn.swish(nn.GroupNorm(num_groups=self.groups)(h))
        y = nn.Conv(self.channels, (3, 3), padding="SAME")(y)
        y = nn.swish(nn.GroupNorm(num_groups=self.groups)(y))
        y = nn.Conv(self.channels, (3, 3), padding="SAME")(y)
        return h + y


class PixelEncoder(nn.Module):
    """Pixel observation -> features ``[..., feature_dim + proprio_dim_embed]``.

    ``obs[PIXELS]``: ``[..., H, W, C]`` (``C = 3 * cameras``), ``uint8`` or ``float32`` on the same
    0-255 scale (the output of :func:`augment`); ``obs[PROPRIO]``: ``[..., P]`` (not read when
    ``proprio_dim_embed == 0``). Any number of leading axes, including none.
    """

    config: EncoderConfig

    @nn.compact
    def __call__(self, obs: dict) -> jax.Array:
        cfg = self.config
        pixels = obs[PIXELS]
        lead, frame = pixels.shape[:-3], pixels.shape[-3:]
        x = jnp.reshape(pixels, (-1, *frame)).astype(jnp.float32) / 255.0 - 0.5  # [N, H, W, C]
        for width in cfg.channels:
            x = ResidualStage(width, cfg.groups)(x)
        x = nn.swish(nn.GroupNorm(num_groups=cfg.groups)(x))  # the last block ends on a residual sum
        x = jnp.reshape(x, (x.shape[0], -1))  # [N, h * w * channels[-1]]
        x = jnp.tanh(nn.LayerNorm()(nn.Dense(cfg.feature_dim)(x)))
        feats = jnp.reshape(x, (*lead, cfg.feature_dim))
        if cfg.proprio_dim_embed == 0:
            return feats
        proprio = jnp.asarray(obs[PROPRIO], jnp.float32)
        if proprio.shape[:-1] != lead:
            raise ValueError(f"{PROPRIO!r} has leading axes {proprio.shape[:-1]}, {PIXELS!r} has {lead}")
        p = jnp.tanh(nn.LayerNorm()(nn.Dense(cfg.proprio_dim_embed)(proprio)))  # [..., proprio_dim_embed]
        return jnp.concatenate([feats, p], axis=-1)


def encode(config: EncoderConfig, params, obs: dict, rng: jax.Array | None = None) -> jax.Array:
    """Features of pixel observations with :class:`PixelEncoder` parameters ``params``; ``rng``:
    augment the images first (training). The critic and the base both encode this way."""
    pixels = obs[PIXELS] if rng is None else augment(rng, obs[PIXELS], config)
    return cast(jax.Array, PixelEncoder(config).apply(params, {PIXELS: pixels, PROPRIO: obs[PROPRIO]}))


# --------------------------------------------------------------------------------------------
# Augmentation
# --------------------------------------------------------------------------------------------


class AugmentParams(NamedTuple):
    """The random draws of one :func:`augment` call, for a batch of ``B`` images of ``K`` cameras.

    The warp is shared by the cameras of one observation (they are stacked on the channel axis);
    the colour factors are drawn per camera.
    """

    shift: jax.Array
    """``[B, 2]`` in [-1, 1]: (row, col) offset of the crop window's centre, as a fraction of the
    largest offset that keeps the (unrotated) window inside the image."""
    angle: jax.Array
    """``[B]`` rotation in radians; positive turns the content clockwise as displayed (rows down)."""
    brightness: jax.Array
    """``[B, K]`` multiplicative factors ``1 + U(-b, b)``."""
    contrast: jax.Array
    """``[B, K]`` factors ``1 + U(-c, c)``."""
    saturation: jax.Array
    """``[B, K]`` factors ``1 + U(-s, s)``."""


def sample_augment_params(rng: jax.Array, batch: int, cameras: int, config: EncoderConfig) -> AugmentParams:
    """Draw the augmentation of ``batch`` observations (what :func:`augment` draws with ``rng``)."""
    k_shift, k_angle, k_b, k_c, k_s = jax.random.split(rng, 5)

    def factors(key, magnitude):
        return 1.0 + jax.random.uniform(key, (batch, cameras), minval=-magnitude, maxval=magnitude)

    return AugmentParams(
        shift=jax.random.uniform(k_shift, (batch, 2), minval=-1.0, maxval=1.0),
        angle=jax.random.uniform(k_angle, (batch,), minval=-1.0, maxval=1.0) * math.radians(config.rotation_deg),
        brightness=factors(k_b, config.brightness),
        contrast=factors(k_c, config.contrast),
        saturation=factors(k_s, config.saturation),
    )


def augment(rng: jax.Array, pixels: jax.Array, config: EncoderConfig) -> jax.Array:
    """Random crop + rotation (one affine warp) and colour jitter, independently per image.

    ``pixels``: ``[..., H, W, C]`` ``uint8`` (or float on the 0-255 scale), ``C = 3 * cameras``.
    Returns ``float32 [..., H, W, C]`` in ``[0, 255]``. Pure and jittable with ``config`` static
    (``jax.jit(augment, static_argnames="config")``). With ``crop == 1`` and every magnitude 0 it
    returns ``pixels`` unchanged (as float32) without drawing anything.
    """
    pixels = jnp.asarray(pixels)
    if not config.augments:
        return pixels.astype(jnp.float32)
    lead, frame = pixels.shape[:-3], pixels.shape[-3:]
    flat = jnp.reshape(pixels, (-1, *frame))  # [B, H, W, C]
    cameras = frame[-1] // 3 if frame[-1] % 3 == 0 else 1
    params = sample_augment_params(rng, flat.shape[0], cameras, config)
    out = apply_augment(flat, params, config)
    return jnp.reshape(out, (*lead, *frame))


def apply_augment(pixels: jax.Array, params: AugmentParams, config: EncoderConfig) -> jax.Array:
    """Deterministic part of :func:`augment`: ``[B, H, W, C]`` (0-255) -> ``float32 [B, H, W, C]``.

    Steps whose magnitude in ``config`` is 0 (or ``crop == 1`` with no rotation) are skipped, so
    their entries of ``params`` are not read.
    """
    x = pixels
    if config.warps:
        x = jax.vmap(_warp_one, in_axes=(0, 0, 0, None))(x, params.shift, params.angle, config.crop)
    x = x.astype(jnp.float32)
    if config.jitters:
        x = _colour_jitter(x, params, config)
    return x


def _warp_one(image: jax.Array, shift: jax.Array, angle: jax.Array, crop: float) -> jax.Array:
    """Affine warp of one ``[H, W, C]`` image by bilinear sampling, back to full resolution.

    Output pixel centre ``p`` (row, col) reads the source at ``c + t + crop * R(angle) (p - c)``,
    ``c = ((H - 1) / 2, (W - 1) / 2)`` the image centre and ``t = shift * (1 - crop) * c`` the crop
    window's offset (at ``|shift| <= 1`` every unrotated sample lies inside the image). Samples
    that fall outside (rotated corners) take the nearest edge value. Crop, shift and rotation are
    one sampling pass (no intermediate image).
    """
    h, w, ch = image.shape
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    dy = jnp.arange(h, dtype=jnp.float32)[:, None] - cy  # [H, 1]
    dx = jnp.arange(w, dtype=jnp.float32)[None, :] - cx  # [1, W]
    cos, sin = jnp.cos(angle) * crop, jnp.sin(angle) * crop
    ty, tx = shift[0] * (1.0 - crop) * cy, shift[1] * (1.0 - crop) * cx
    sy = jnp.clip(cy + ty + (cos * dy - sin * dx), 0.0, h - 1.0)  # [H, W] source rows
    sx = jnp.clip(cx + tx + (sin * dy + cos * dx), 0.0, w - 1.0)  # [H, W] source cols
    # Lower neighbour capped at size - 2 so the upper one is in range; the weight then reaches 1
    # at the last row/col, so an integer source coordinate reproduces that pixel exactly.
    y0 = jnp.clip(jnp.floor(sy), 0, max(h - 2, 0)).astype(jnp.int32)
    x0 = jnp.clip(jnp.floor(sx), 0, max(w - 2, 0)).astype(jnp.int32)
    wy = (sy - y0)[..., None]  # [H, W, 1]
    wx = (sx - x0)[..., None]
    y1, x1 = jnp.minimum(y0 + 1, h - 1), jnp.minimum(x0 + 1, w - 1)
    flat = jnp.reshape(image, (h * w, ch))

    def at(y, x):  # [H, W] indices (in range by construction) -> [H, W, C] float32
        return flat.at[y * w + x].get(mode="promise_in_bounds").astype(jnp.float32)

    # Four gathers, one per bilinear neighbour: XLA fuses each into the blend below, which
    # measured ~3.5x faster on CPU than one gather of the stacked [4, H, W] indices.
    top = (1.0 - wx) * at(y0, x0) + wx * at(y0, x1)
    bottom = (1.0 - wx) * at(y1, x0) + wx * at(y1, x1)
    return (1.0 - wy) * top + wy * bottom


def _colour_jitter(x: jax.Array, params: AugmentParams, config: EncoderConfig) -> jax.Array:
    """Brightness, then contrast, then saturation, per camera, then one clip to [0, 255].

    With ``l`` the luma weights (``l . 1 = 1``), ``m`` the mean grey level of the camera's frame
    and ``fb, fc, fs`` the drawn factors, the three steps are

        x1 = fb x;   x2 = m1 + fc (x1 - m1), m1 = fb m;   x3 = g2 + fs (x2 - g2), g2 = l . x2,

    all affine in ``x``, so they fold into one per-camera colour transform
    ``x3 = fb fc S x + (1 - fc) fb m``, with ``S = fs I + (1 - fs) 1 l^T`` (``S 1 = 1``). Applying
    that as one contraction over the colour axis (and the mean as another) measured 3-8x faster on
    CPU, after the warp, than the three steps written out or than per-channel sums.
    """
    b, h, w, ch = x.shape
    if ch % 3:
        raise ValueError(f"colour jitter needs 3 channels per camera, got {ch} channels")
    k = ch // 3
    x = jnp.reshape(x, (b, h, w, k, 3))
    luma = jnp.asarray(_LUMA, jnp.float32)
    fb = params.brightness if config.brightness > 0 else jnp.ones((b, k), jnp.float32)  # [B, K]
    fc = params.contrast if config.contrast > 0 else jnp.ones((b, k), jnp.float32)
    fs = params.saturation if config.saturation > 0 else jnp.ones((b, k), jnp.float32)
    eye = jnp.eye(3, dtype=jnp.float32)
    sat = fs[..., None, None] * eye + (1.0 - fs)[..., None, None] * luma  # [B, K, 3, 3]; rows: out channel
    mat = (fb * fc)[..., None, None] * sat  # [B, K, 3, 3]
    out = jnp.einsum("bhwkd,bkcd->bhwkc", x, mat, precision=_EXACT)  # [B, H, W, K, 3]
    if config.contrast > 0:
        flat = jnp.reshape(x, (b, h * w, k, 3))
        mean = jnp.einsum("bpkc,c->bk", flat, luma, precision=_EXACT) / (h * w)  # [B, K] mean grey level
        out = out + ((1.0 - fc) * fb * mean)[:, None, None, :, None]
    return jnp.reshape(jnp.clip(out, 0.0, 255.0), (b, h, w, ch))
