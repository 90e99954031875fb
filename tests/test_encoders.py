"""Critic image encoder and image augmentation (expoft.encoders)."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from expoft.encoders import AugmentParams, EncoderConfig, PixelEncoder, apply_augment, augment, sample_augment_params
from expoft.obs import PIXELS, PROPRIO

TINY = EncoderConfig(channels=(4, 8), groups=2, feature_dim=16, proprio_dim_embed=8)
NO_AUG = dict(crop=1.0, rotation_deg=0.0, brightness=0.0, contrast=0.0, saturation=0.0)
PROPRIO_DIM = 5


def key(seed: int) -> jax.Array:
    """An RBG-based key: on CPU, XLA compiles the threefry hash of every parameter initialiser
    slowly (several seconds for the encoder), which would dominate this file's run time."""
    return jax.random.key(seed, impl="rbg")


# Jitted once per config and shape (op-by-op execution compiles every small op separately).
augment_jit = jax.jit(augment, static_argnames="config")
apply_augment_jit = jax.jit(apply_augment, static_argnames="config")


def pixel_obs(lead=(3,), size=32, cameras=1, seed=0):
    rng = np.random.default_rng(seed)
    return {
        PIXELS: rng.integers(0, 256, (*lead, size, size, 3 * cameras), dtype=np.uint8),
        PROPRIO: rng.normal(size=(*lead, PROPRIO_DIM)).astype(np.float32),
    }


def params_for(batch, cameras=1, shift=(0.0, 0.0), angle=0.0, brightness=1.0, contrast=1.0, saturation=1.0):
    """Hand-set augmentation draws, the same for every image of the batch."""
    per_cam = lambda v: jnp.full((batch, cameras), v, jnp.float32)  # noqa: E731
    return AugmentParams(
        shift=jnp.tile(jnp.asarray(shift, jnp.float32), (batch, 1)),
        angle=jnp.full((batch,), angle, jnp.float32),
        brightness=per_cam(brightness),
        contrast=per_cam(contrast),
        saturation=per_cam(saturation),
    )


def grey(x):
    """BT.601 luma of ``[..., 3]``."""
    return 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]


@pytest.fixture(scope="module")
def tiny_encoder():
    enc = PixelEncoder(TINY)
    variables = jax.jit(enc.init)(key(0), pixel_obs((1,)))
    return enc, variables, jax.jit(enc.apply)


# ------------------------------------------------------------------------------------------
# EncoderConfig
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("channels", ()),
        ("channels", (8, 0)),
        ("channels", (8, 12)),  # 12 is not divisible by groups=8
        ("groups", 0),
        ("feature_dim", 0),
        ("proprio_dim_embed", -1),
        ("crop", 0.5),
        ("crop", 1.01),
        ("crop", float("nan")),
        ("rotation_deg", -1.0),
        ("brightness", -0.1),
        ("contrast", 1.5),
        ("saturation", float("nan")),
    ],
)
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        EncoderConfig(**{field: value})


def test_config_is_hashable_and_reports_widths():
    cfg = EncoderConfig(channels=[8, 16], groups=4)  # a list is stored as a tuple
    assert cfg.channels == (8, 16) and hash(cfg) == hash(EncoderConfig(channels=(8, 16), groups=4))
    assert EncoderConfig().out_dim == 512 + 64
    assert not EncoderConfig(**NO_AUG).augments and EncoderConfig().augments


# ------------------------------------------------------------------------------------------
# PixelEncoder
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lead, cameras", [((3,), 1), ((2, 3), 1), ((3,), 2)])
def test_encoder_shapes_and_bounds(tiny_encoder, lead, cameras):
    enc, variables, apply = tiny_encoder
    obs = pixel_obs(lead, cameras=cameras)
    if cameras != 1:  # the first convolution's kernel depends on the channel count
        variables = jax.jit(enc.init)(key(1), obs)
    feats = apply(variables, obs)
    assert feats.shape == (*lead, TINY.out_dim) and feats.dtype == jnp.float32
    assert np.all(np.isfinite(feats)) and np.all(np.abs(feats) <= 1.0)
    if len(lead) == 2:  # leading axes are only flattened: the same as encoding the flat batch
        flat = {k: v.reshape(-1, *v.shape[2:]) for k, v in obs.items()}
        np.testing.assert_allclose(feats.reshape(-1, TINY.out_dim), apply(variables, flat), atol=1e-5)


def test_encoder_unbatched_and_float_images(tiny_encoder):
    enc, variables, apply = tiny_encoder
    obs = pixel_obs((4,))
    feats = apply(variables, obs)
    single = apply(variables, {k: v[0] for k, v in obs.items()})
    assert single.shape == (TINY.out_dim,)
    np.testing.assert_allclose(single, feats[0], atol=1e-5)
    # Float images are on the same 0-255 scale as uint8 ones (what augment returns).
    as_float = apply(variables, {**obs, PIXELS: obs[PIXELS].astype(np.float32)})
    np.testing.assert_allclose(as_float, feats, atol=1e-6)


def test_encoder_without_proprio():
    cfg = dataclasses.replace(TINY, proprio_dim_embed=0)
    pixels = {PIXELS: pixel_obs((2,))[PIXELS]}  # no proprio key needed
    enc = PixelEncoder(cfg)
    feats = enc.apply(jax.jit(enc.init)(key(0), pixels), pixels)
    assert feats.shape == (2, cfg.feature_dim)


def test_encoder_gradients_finite_and_nonzero(tiny_encoder):
    enc, variables, _ = tiny_encoder
    obs = pixel_obs((4,), seed=1)
    weights = np.random.default_rng(1).normal(size=(4, TINY.out_dim)).astype(np.float32)
    grads = jax.jit(jax.grad(lambda v: jnp.sum(enc.apply(v, obs) * weights)))(variables)
    norms = {jax.tree_util.keystr(path): float(jnp.linalg.norm(g)) for path, g in jax.tree.leaves_with_path(grads)}
    assert all(np.isfinite(n) for n in norms.values()), norms
    assert all(n > 0 for n in norms.values()), norms  # every parameter is reached by the loss


# ------------------------------------------------------------------------------------------
# augment: geometry
# ------------------------------------------------------------------------------------------


def test_identity_augmentation_returns_input():
    pixels = pixel_obs((2, 3), cameras=2)[PIXELS]
    cfg = EncoderConfig(**NO_AUG)
    out = augment_jit(key(0), pixels, cfg)
    assert out.dtype == jnp.float32 and out.shape == pixels.shape
    np.testing.assert_array_equal(out, pixels.astype(np.float32))
    # The warp's own arithmetic is exact at zero angle without a crop (not only the shortcut).
    warp_cfg = EncoderConfig(**{**NO_AUG, "rotation_deg": 10.0})
    flat = pixels.reshape(-1, 32, 32, 6)
    out = apply_augment_jit(flat, params_for(6, cameras=2, shift=(1.0, -1.0)), warp_cfg)
    np.testing.assert_array_equal(out, flat.astype(np.float32))


def test_crop_and_shift_move_a_pixel_where_the_affine_map_says():
    # 33 x 33, centre c = 16. crop 0.75, shift (1, -0.5) of the largest offset (1 - 0.75) * 16 = 4:
    # the window centre moves by t = (4, -2), and output pixel p reads the source at
    # c + t + 0.75 (p - c). Source pixel (23, 11) is therefore read exactly by output (20, 12).
    size, crop, shift = 33, 0.75, (1.0, -0.5)
    image = np.zeros((1, size, size, 3), np.uint8)
    image[0, 23, 11] = 255
    cfg = EncoderConfig(**{**NO_AUG, "crop": crop})
    out = np.asarray(apply_augment_jit(image, params_for(1, shift=shift), cfg))[0, ..., 0]
    assert out[20, 12] == pytest.approx(255.0)
    # Neighbours sample 0.75 source pixels away along each axis: bilinear weight 0.25.
    for r, c in [(19, 12), (21, 12), (20, 11), (20, 13)]:
        assert out[r, c] == pytest.approx(0.25 * 255.0, abs=1e-3)
    # The whole image, from the same map written independently: value = 255 * tent(dy) * tent(dx).
    centre = (size - 1) / 2
    p = np.arange(size, dtype=np.float64)
    src_y = centre + shift[0] * (1 - crop) * centre + crop * (p - centre)
    src_x = centre + shift[1] * (1 - crop) * centre + crop * (p - centre)
    tent = lambda d: np.maximum(0.0, 1.0 - np.abs(d))  # noqa: E731
    expected = 255.0 * tent(src_y - 23)[:, None] * tent(src_x - 11)[None, :]
    np.testing.assert_allclose(out, expected, atol=1e-3)


def test_rotation_by_known_angles():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (1, 32, 32, 6), dtype=np.uint8)  # even size: centre between pixels
    cfg = EncoderConfig(**{**NO_AUG, "rotation_deg": 180.0})
    quarter = np.asarray(apply_augment_jit(image, params_for(1, 2, angle=math.pi / 2), cfg))[0]
    # A positive angle turns the content clockwise as displayed: np.rot90 with k=-1.
    np.testing.assert_allclose(quarter, np.rot90(image[0], k=-1), atol=1e-3)
    half = np.asarray(apply_augment_jit(image, params_for(1, 2, angle=math.pi), cfg))[0]
    np.testing.assert_allclose(half, image[0, ::-1, ::-1], atol=1e-3)
    # Odd size: the centre pixel is the rotation's fixed point for any angle.
    odd = rng.integers(0, 256, (1, 33, 33, 3), dtype=np.uint8)
    out = np.asarray(apply_augment_jit(odd, params_for(1, angle=0.7), cfg))[0]
    np.testing.assert_allclose(out[16, 16], odd[0, 16, 16], atol=1e-3)


def test_small_rotation_of_a_symmetric_pattern():
    # A bright ring centred in the image is (almost) unchanged by a small rotation, while a bar
    # through the centre turns: its end pixel at radius 12 moves by ~12 * angle pixels.
    size, centre = 33, 16
    yy, xx = np.mgrid[:size, :size] - centre
    bar = np.zeros((1, size, size, 3), np.uint8)
    bar[0, centre, :, :] = 255  # horizontal bar
    cfg = EncoderConfig(**{**NO_AUG, "rotation_deg": 10.0})
    angle = math.radians(5.0)
    out = np.asarray(apply_augment_jit(bar, params_for(1, angle=angle), cfg))[0, ..., 0]
    # Clockwise turn (rows down): the bar's right end goes down, its left end up; mass is kept.
    cols = np.arange(size)
    centroid_rows = (out * yy).sum(axis=0) / np.maximum(out.sum(axis=0), 1e-6)
    right, left = cols > centre + 4, cols < centre - 4
    np.testing.assert_allclose(centroid_rows[right], np.tan(angle) * xx[0, right], atol=0.15)
    np.testing.assert_allclose(centroid_rows[left], np.tan(angle) * xx[0, left], atol=0.15)
    assert out[centre, centre] == pytest.approx(255.0)


# ------------------------------------------------------------------------------------------
# augment: colour jitter
# ------------------------------------------------------------------------------------------


def test_colour_jitter_stays_in_range():
    pixels = pixel_obs((8,), cameras=2)[PIXELS]
    cfg = EncoderConfig(crop=0.8, rotation_deg=20.0, brightness=0.9, contrast=0.9, saturation=0.9)
    out = np.asarray(augment_jit(key(0), pixels, cfg))
    assert out.dtype == np.float32 and out.min() >= 0.0 and out.max() <= 255.0
    assert out.min() == 0.0 and out.max() == 255.0  # strong jitter does hit the clip


def test_brightness_scales_each_cameras_mean_by_its_factor():
    rng = np.random.default_rng(4)
    pixels = rng.integers(0, 180, (4, 32, 32, 6), dtype=np.uint8)  # 1.3 * 180 < 255: no clipping
    cfg = EncoderConfig(**{**NO_AUG, "brightness": 0.3})
    rng = key(7)
    drawn = sample_augment_params(rng, 4, 2, cfg).brightness  # [B, K]: what augment draws
    assert np.all(np.abs(drawn - 1.0) <= 0.3) and np.ptp(drawn) > 0
    out = np.asarray(augment_jit(rng, pixels, cfg)).reshape(4, -1, 2, 3)
    src = pixels.astype(np.float64).reshape(4, -1, 2, 3)
    np.testing.assert_allclose(out.mean(axis=(1, 3)), drawn * src.mean(axis=(1, 3)), rtol=1e-5)


def test_contrast_and_saturation_keep_grey_levels():
    rng = np.random.default_rng(5)
    pixels = rng.integers(70, 186, (2, 32, 32, 3), dtype=np.uint8)  # mid-range: no clipping at 1.4
    src = pixels.astype(np.float64)
    # Contrast: the mean grey level stays, deviations from it scale by the factor.
    contrast = EncoderConfig(**{**NO_AUG, "contrast": 0.4})
    out = np.asarray(apply_augment_jit(pixels, params_for(2, contrast=1.4), contrast))
    np.testing.assert_allclose(grey(out).mean(axis=(1, 2)), grey(src).mean(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(grey(out).std(axis=(1, 2)), 1.4 * grey(src).std(axis=(1, 2)), rtol=1e-4)
    # Saturation: every pixel keeps its grey level; a grey image is left as it is.
    saturation = EncoderConfig(**{**NO_AUG, "saturation": 0.4})
    out = np.asarray(apply_augment_jit(pixels, params_for(2, saturation=0.6), saturation))
    np.testing.assert_allclose(grey(out), grey(src), atol=1e-3)
    assert np.abs(out - src).max() > 1.0
    grey_image = np.repeat(pixels[..., :1], 3, axis=-1)
    out = np.asarray(apply_augment_jit(grey_image, params_for(2, saturation=0.6), saturation))
    np.testing.assert_allclose(out, grey_image, atol=1e-3)


# ------------------------------------------------------------------------------------------
# augment: randomness and batching
# ------------------------------------------------------------------------------------------


def test_augment_randomness_and_leading_axes():
    pixels = pixel_obs((2, 3))[PIXELS]
    cfg = EncoderConfig()
    rng = jax.random.key(0)  # the default (threefry) keys that training uses
    a = augment_jit(rng, pixels, cfg)
    assert a.shape == pixels.shape and a.dtype == jnp.float32
    np.testing.assert_array_equal(a, augment_jit(rng, pixels, cfg))
    b = augment_jit(jax.random.key(1), pixels, cfg)
    assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1.0
    # Leading axes are only flattened, and every image gets its own draw.
    flat = augment_jit(rng, pixels.reshape(6, 32, 32, 3), cfg)
    np.testing.assert_array_equal(a.reshape(flat.shape), flat)
    copies = np.asarray(augment_jit(rng, np.repeat(pixels[0, :1], 6, axis=0), cfg))  # one image, 6 times
    assert np.abs(copies[0] - copies[1]).max() > 1.0


def test_sampled_params_respect_the_config():
    cfg = EncoderConfig(rotation_deg=7.0, brightness=0.2, contrast=0.1, saturation=0.05)
    p = sample_augment_params(key(2), 512, 2, cfg)
    assert p.shift.shape == (512, 2) and p.angle.shape == (512,) and p.brightness.shape == (512, 2)
    assert np.all(np.abs(p.shift) <= 1.0) and np.abs(p.shift).max() > 0.9
    assert np.all(np.abs(p.angle) <= math.radians(7.0) + 1e-7) and np.abs(p.angle).max() > math.radians(6.0)
    for name, mag in [("brightness", 0.2), ("contrast", 0.1), ("saturation", 0.05)]:
        f = np.asarray(getattr(p, name))
        assert np.all(np.abs(f - 1.0) <= mag + 1e-6) and np.abs(f - 1.0).max() > 0.8 * mag
