"""External bases on pixel observations (the VLA path): the callable and remote adapters carry
image dicts, a served expoft pixel run answers over the websocket, and a pixel run fine-tunes
around an external base."""

import dataclasses

import numpy as np
import pytest

from expoft.bases import CallableBase, RemoteBase
from expoft.bases.interface import Normalization, check_obs
from expoft.bases.remote import RemoteBaseError
from expoft.bases.server import serve_policy
from expoft.obs import PIXELS, PROPRIO, PixelSpec
from expoft.train.config import preset
from expoft.train.finetune import finetune

SPEC = PixelSpec(image_size=16, proprio_dim=3)
A, H = 2, 3


def batch(n: int, seed: int = 0, spec: PixelSpec = SPEC) -> dict:
    rng = np.random.default_rng(seed)
    return {PIXELS: rng.integers(0, 256, (n, *spec.image_shape), dtype=np.uint8),
            PROPRIO: rng.normal(size=(n, 3)).astype(np.float32)}  # fmt: skip


def brightness_policy(obs: dict, rng) -> np.ndarray:
    """A toy 'VLA': the mean brightness of the image sets the action (plus a little noise)."""
    level = obs[PIXELS].reshape(len(obs[PIXELS]), -1).mean(axis=1) / 255.0 * 1.6 - 0.8  # [M] in [-0.8, 0.8]
    out = np.repeat(level[:, None, None], H, axis=1).repeat(A, axis=2)
    return (out + 0.01 * rng.standard_normal(out.shape)).astype(np.float32)


def pixel_base() -> CallableBase:
    return CallableBase(brightness_policy, SPEC, A, H, takes_rng=True)


def test_callable_base_takes_pixel_observations():
    base = pixel_base()
    obs = batch(4)
    chunks = base.sample(obs, 5, seed=1)
    assert chunks.shape == (4, 5, H, A) and chunks.dtype == np.float32
    expected = obs[PIXELS].reshape(4, -1).mean(axis=1) / 255.0 * 1.6 - 0.8
    np.testing.assert_allclose(chunks.mean(axis=(1, 2, 3)), expected, atol=0.02)
    with pytest.raises(ValueError, match="uint8"):
        base.sample({PIXELS: obs[PIXELS].astype(np.float32), PROPRIO: obs[PROPRIO]}, 1, 0)
    with pytest.raises(ValueError, match="keys"):
        base.sample(obs[PROPRIO], 1, 0)
    # normalisation statistics apply to the proprioception; the images pass unchanged
    norm = Normalization(obs_mean=np.ones(3), obs_std=2 * np.ones(3))
    norm.check_dims(SPEC, A)
    native = norm.obs_to_base(obs)
    np.testing.assert_allclose(native[PROPRIO], (obs[PROPRIO] - 1) / 2)
    assert native[PIXELS] is obs[PIXELS]
    assert check_obs(obs, SPEC)[PIXELS].dtype == np.uint8


def test_remote_base_carries_images_and_checks_the_spec():
    server = serve_policy(pixel_base(), port=0, block=False)
    try:
        obs = batch(6, seed=2)
        with RemoteBase(server.url, SPEC, A, H, timeout_s=10) as remote:
            chunks = remote.sample(obs, 4, seed=7)
            np.testing.assert_array_equal(chunks, pixel_base().sample(obs, 4, seed=7))
            assert remote.server_metadata["obs_dim"] == {"image_shape": [16, 16, 3], "proprio_dim": 3}
        other = dataclasses.replace(SPEC, image_size=32)
        with RemoteBase(server.url, other, A, H, retries=1) as remote:
            with pytest.raises(RemoteBaseError, match="obs_dim"):
                remote.sample(batch(1, spec=other), 1, 0)
    finally:
        server.close()


# slow: ~40 CPU s; its parts stay in the default suite (a pixel run end to end in test_pixel_run,
# external bases in test_external_base, pixel observations through both kinds of base above).
@pytest.mark.slow
def test_pixel_run_around_an_external_base(tmp_path, rendering, monkeypatch):
    monkeypatch.setenv("EXPOFT_DATA_DIR", str(tmp_path / "data"))
    cfg = preset("tiny-pixels", env_steps=120, eval_episodes=1)
    cfg = dataclasses.replace(cfg, agent=dataclasses.replace(cfg.agent, base_training="frozen"))
    spec = cfg.pixels
    base = CallableBase(lambda obs, rng: brightness_policy(obs, rng)[:, :1], spec, 5, 1, takes_rng=True)
    with pytest.raises(ValueError, match="action_dim"):
        finetune(cfg, tmp_path / "bad", progress=False, base=base)
    base = CallableBase(
        lambda obs, rng: np.repeat(brightness_policy(obs, rng)[:, :1, :1], 5, axis=2), spec, 5, 1, takes_rng=True
    )
    summary = finetune(cfg, tmp_path / "run", progress=False, base=base)
    latency = summary["external_base_latency_ms"]
    assert latency["act"]["calls"] >= 120 and latency["update"]["calls"] == summary["update_calls"] > 0
