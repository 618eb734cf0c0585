"""Turntable animations as GIF (imageio/Pillow) and MP4 (imageio-ffmpeg, H.264), written atomically."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from toon3d.errors import Toon3dError
from toon3d.io.atomic import atomic_file
from toon3d.io.images import to_uint8

VIDEO_FORMATS = ("gif", "mp4")


def frames_to_uint8(frames: torch.Tensor | list[torch.Tensor]) -> list[np.ndarray]:
    """[N,3,H,W] (or a list of [3,H,W]) in [-1,1] → list of uint8 [H,W,3] arrays."""
    frames = list(frames)
    if not frames:
        raise Toon3dError("no frames to write; render at least one frame")
    return [to_uint8(f) for f in frames]


def write_gif(frames: list[np.ndarray], path: str | os.PathLike, fps: float = 12.0) -> Path:
    """Write uint8 [H,W,3] frames as a looping GIF, atomically."""
    import imageio.v3 as iio

    path = Path(path)
    with atomic_file(path) as tmp:
        iio.imwrite(tmp, np.stack(frames), extension=".gif", duration=1000.0 / fps, loop=0)
    return path


def write_mp4(frames: list[np.ndarray], path: str | os.PathLike, fps: float = 24.0) -> Path:
    """Write uint8 [H,W,3] frames as H.264 MP4 (yuv420p, sizes padded to even), atomically."""
    import imageio_ffmpeg

    path = Path(path)
    h, w = frames[0].shape[:2]
    # yuv420p needs even sizes; pad with the edge colour rather than rescale.
    ph, pw = h + h % 2, w + w % 2
    with atomic_file(path) as tmp:
        writer = imageio_ffmpeg.write_frames(str(tmp), (pw, ph), fps=fps, codec="libx264", quality=8,
                                             pix_fmt_out="yuv420p", macro_block_size=1,
                                             output_params=["-f", "mp4"], ffmpeg_log_level="error")
        writer.send(None)
        try:
            for frame in frames:
                if frame.shape[:2] != (h, w):
                    raise Toon3dError("all video frames must have the same size")
                padded = np.pad(frame, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")
                writer.send(np.ascontiguousarray(padded))
        finally:
            writer.close()
    return path


def write_video(frames: list[np.ndarray], path: str | os.PathLike, fps: float) -> Path:
    """Write frames as GIF or MP4 according to the path's extension."""
    ext = Path(path).suffix.lower().lstrip(".")
    if ext == "gif":
        return write_gif(frames, path, fps)
    if ext == "mp4":
        return write_mp4(frames, path, fps)
    raise Toon3dError(f"{path}: unknown video format {ext!r}; use one of {', '.join(VIDEO_FORMATS)}")
