"""Episode videos: frames rendered offscreen by MuJoCo, written as an animated GIF (Pillow) or an
H.264 MP4 (PyAV)."""

from __future__ import annotations

import io
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


VIDEO_FORMATS = ("gif", "mp4")


def check_video_path(path: str | Path) -> Path:
    """``path`` if it names a video format expoft writes (by its suffix), else a clear error."""
    path = Path(path)
    if path.suffix.lower().lstrip(".") not in VIDEO_FORMATS:
        raise ValueError(f"videos are written as .gif or .mp4; name the file *.gif or *.mp4, got {path.name}")
    return path


def write_video(frames: Sequence[np.ndarray], path: str | Path, fps: int = 20) -> Path:
    """Frames ``[H, W, 3] uint8`` -> ``path`` (written atomically), as an animated GIF or an MP4
    by the file's suffix."""
    path = check_video_path(path)
    if not len(frames):
        raise ValueError("no frames to write")
    return (write_mp4 if path.suffix.lower() == ".mp4" else write_gif)(frames, path, fps)


def encode_gif(frames: Sequence[np.ndarray], fps: int = 20) -> bytes:
    """Frames ``[H, W, 3] uint8`` -> the bytes of an animated GIF (Pillow)."""
    from PIL import Image

    if not len(frames):
        raise ValueError("no frames to write")
    images = [Image.fromarray(np.asarray(f, dtype=np.uint8)) for f in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:],
                   duration=max(1, round(1000 / fps)), loop=0)  # fmt: skip
    return buffer.getvalue()


def write_gif(frames: Sequence[np.ndarray], path: str | Path, fps: int = 20) -> Path:
    """Frames ``[H, W, 3] uint8`` -> an animated GIF at ``path`` (written atomically)."""
    path = Path(path)
    if path.suffix.lower() != ".gif":
        raise ValueError(f"write_gif writes animated GIFs; name the file *.gif, got {path.name}")
    data = encode_gif(frames, fps)
    return atomic_write(path, lambda f: f.write(data))


def write_mp4(frames: Sequence[np.ndarray], path: str | Path, fps: int = 20, crf: int = 18) -> Path:
    """Frames ``[H, W, 3] uint8`` -> an H.264 MP4 (yuv420p, what every player and LeRobot's
    video decoder read) at ``path``, written atomically. Odd sizes are padded by one pixel
    (yuv420p needs even ones) with the edge row/column; ``crf``: quality, 0 lossless .. 51."""
    import av

    path = Path(path)
    if path.suffix.lower() != ".mp4":
        raise ValueError(f"write_mp4 writes MP4 files; name the file *.mp4, got {path.name}")
    images = [np.asarray(f, dtype=np.uint8) for f in frames]
    if not images:
        raise ValueError("no frames to write")
    height, width = images[0].shape[:2]
    if any(f.shape != (height, width, 3) for f in images):
        raise ValueError(f"every frame must be [H, W, 3] uint8 of one size; the first is {images[0].shape}")
    pad = ((0, height % 2), (0, width % 2), (0, 0))

    def write(f):
        with av.open(f, mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height = width + width % 2, height + height % 2
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf)}
            for image in images:
                frame = av.VideoFrame.from_ndarray(np.pad(image, pad, mode="edge"), format="rgb24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode())  # flush the encoder

    return atomic_write(path, write)


def read_video(path: str | Path) -> np.ndarray:
    """Every frame of a GIF or MP4 as ``[T, H, W, 3] uint8`` (MP4 frames carry the codec's loss)."""
    path = check_video_path(path)
    if not path.exists():
        raise FileNotFoundError(f"no video at {path}")
    if path.suffix.lower() == ".gif":
        from PIL import Image, ImageSequence

        with Image.open(path) as gif:
            return np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(gif)])
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
