"""Episode videos: frames rendered offscreen by MuJoCo, written as an animated GIF (Pillow)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from expoft.fileio import atomic_write

RENDER_HELP = (
    "offscreen rendering failed ({error}). expoft renders with EGL by default: install it "
    "(Debian/Ubuntu: apt-get install libegl1), or set MUJOCO_GL=osmesa with libosmesa6 installed"
)


class RenderError(RuntimeError):
    """Offscreen rendering is unavailable; the message says what to install."""


def render_error(error: Exception) -> RenderError:
    """The error to raise when MuJoCo could not render (it raises several types)."""
    return RenderError(RENDER_HELP.format(error=f"{type(error).__name__}: {error}"))


def render_frame(env) -> np.ndarray:
    """One ``[H, W, 3] uint8`` frame of an env made with ``render=True``; a clear error when the
    machine cannot render offscreen."""
    try:
        frame = env.render()
    except Exception as error:  # MuJoCo raises several types when no GL context can be made
        raise render_error(error) from error
    if frame is None:
        raise RuntimeError("the environment returned no frame; create it with make_env(..., render=True)")
    return np.asarray(frame, dtype=np.uint8)


def write_gif(frames: Sequence[np.ndarray], path: str | Path, fps: int = 20) -> Path:
    """Frames ``[H, W, 3] uint8`` -> an animated GIF at ``path`` (written atomically)."""
    from PIL import Image

    if not frames:
        raise ValueError("no frames to write")
    path = Path(path)
    if path.suffix.lower() != ".gif":
        raise ValueError(f"videos are written as animated GIFs; name the file *.gif, got {path.name}")
    images = [Image.fromarray(np.asarray(f, dtype=np.uint8)) for f in frames]
    duration = max(1, round(1000 / fps))

    def write(f):
        images[0].save(f, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0)

    return atomic_write(path, write)
