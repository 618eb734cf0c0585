"""Reading a user's video: frames as [H,W,3] uint8 RGB through imageio-ffmpeg, subsampled to a frame-rate cap.

`open_video` reads the header (ffmpeg's own metadata), then yields every `step`-th decoded frame,
step = ceil(fps / max_fps), so a 60 fps phone clip is read at 30 fps and a 25 fps one at 25;
reading stops after `max_frames` kept frames (ffmpeg is stopped, the rest is never decoded). A
file ffmpeg cannot open, or one that yields no frame, is a one-line `Toon3dError`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from toon3d.errors import Toon3dError


@dataclass
class VideoInfo:
    """What the header says, and how the frames are subsampled."""

    path: str
    size: tuple[int, int]          # (width, height) of the decoded frames
    source_fps: float
    step: int                      # every step-th frame is kept
    duration_s: float | None
    notes: list[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        """Frame rate of the kept frames."""
        return self.source_fps / self.step

    def record(self) -> dict:
        """JSON-ready record."""
        return {"path": self.path, "size": list(self.size), "source_fps": self.source_fps, "step": self.step,
                "fps": self.fps, "duration_s": self.duration_s, "notes": list(self.notes)}


class VideoFrames:
    """An open video: `info`, then iterate for the kept frames [H,W,3] uint8; `close()` stops ffmpeg."""

    def __init__(self, path: str | os.PathLike, max_fps: float = 30.0, max_frames: int | None = None) -> None:
        import imageio_ffmpeg

        self.path = Path(path)
        if not self.path.exists():
            raise Toon3dError(f"video {self.path} not found; check the path")
        if not self.path.is_file():
            raise Toon3dError(f"{self.path} is not a file; pass a video (MP4, MOV, ...)")
        if self.path.stat().st_size == 0:
            raise Toon3dError(f"{self.path} is empty (0 bytes); pass a video")
        if not (math.isfinite(max_fps) and max_fps > 0):
            raise Toon3dError(f"the frame-rate cap must be a positive number, got {max_fps}")
        if max_frames is not None and max_frames < 1:
            raise Toon3dError(f"the frame cap must be at least 1, got {max_frames}")
        self.max_frames = max_frames
        self._reader = imageio_ffmpeg.read_frames(str(self.path), pix_fmt="rgb24")
        try:
            meta = next(self._reader)
        except (OSError, RuntimeError, StopIteration):
            self.close()
            raise Toon3dError(f"{self.path} is not a video ffmpeg can read (damaged, truncated or another kind of "
                              "file); pass an MP4/MOV/WebM video") from None
        notes: list[str] = []
        fps = meta.get("fps")
        if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
            notes.append(f"the video states no frame rate; {max_fps:g} fps assumed")
            fps = float(max_fps)
        step = max(1, math.ceil(float(fps) / max_fps - 1e-9))
        if step > 1:
            notes.append(f"{fps:g} fps read at {fps / step:g} fps (every {step}th frame)")
        width, height = (int(v) for v in meta["size"])
        duration = meta.get("duration")
        self.info = VideoInfo(str(self.path), (width, height), float(fps), step,
                              float(duration) if isinstance(duration, (int, float)) else None, notes)

    def __iter__(self) -> Iterator[np.ndarray]:
        width, height = self.info.size
        kept = 0
        try:
            for i, raw in enumerate(self._reader):
                if i % self.info.step:
                    continue
                if len(raw) != width * height * 3:
                    raise Toon3dError(f"{self.path}: a frame of {len(raw)} bytes where {width}x{height} RGB was "
                                      "announced; the video is damaged")
                yield np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3)
                kept += 1
                if self.max_frames is not None and kept >= self.max_frames:
                    break
        except (OSError, RuntimeError) as err:
            if kept == 0:
                raise Toon3dError(f"{self.path}: ffmpeg could not decode a frame ({str(err).splitlines()[0]}); "
                                  "the video is damaged") from None
            self.info.notes.append(f"decoding stopped after {kept} frames: the rest of the file is damaged")
        finally:
            self.close()
        if kept == 0:
            raise Toon3dError(f"{self.path} has no readable frames; pass a video with at least one frame")

    def close(self) -> None:
        """Stop ffmpeg (safe to call twice)."""
        reader, self._reader = getattr(self, "_reader", None), None
        if reader is not None:
            reader.close()

    def __enter__(self) -> "VideoFrames":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_video(path: str | os.PathLike, max_fps: float = 30.0, max_frames: int | None = None) -> VideoFrames:
    """Open a video for reading (see `VideoFrames`); bad files are a one-line Toon3dError."""
    return VideoFrames(path, max_fps, max_frames)
