"""SynFace faces with known expressions for the expression-transfer tests: renders, a calibrated table, a video.

The calibrated table is a `DirectionTable` whose "directions" are SynFace's own expression
parameters (0 smile, 1 mouth_open, 2 eyes_closed; strength 1 = the parameter going 0 → 1),
measured with dlib's landmarks on frontal renders, so strengths solved through it are estimates of
the parameters themselves. brows_raised is left out and `brows_up` unnamed: dlib's brow points
follow SynFace's brow-ridge shading, not its raised brows (`toon3d.edit.landmarks`), so that
column would only soak up the other expressions' side effects.
"""

from __future__ import annotations

import numpy as np
import torch

from toon3d.edit.landmarks import MEASURES
from toon3d.edit.naming import DirectionTable
from toon3d.synth.face_params import SynFaceParams
from toon3d.synth.synface import render_synface

EXPRESSIONS = ("smile", "mouth_open", "eyes_closed")
NAMES = {"smile": 0, "mouth_open": 1, "eyes_closed": 2}
SIZE = 128
# Frontal, even light, no glasses: dlib's HOG detector finds every one of these faces at 128 px.
FRONTAL = dict(yaw_deg=0.0, pitch_deg=0.0, roll_deg=0.0, glasses=0.0, light_dx=0.0, light_dy=0.0,
               light_ambient=0.55, light_diffuse=0.5, smile=0.0, mouth_open=0.0, eyes_closed=0.0, brows_raised=0.0)


def faces(n: int, seed: int) -> SynFaceParams:
    """n neutral, frontal faces of data set `seed`."""
    return SynFaceParams.sample(n, seed=seed).replace(**FRONTAL)


def render_uint8(params: SynFaceParams, size: int = SIZE) -> np.ndarray:
    """[B,H,W,3] uint8 renders."""
    with torch.no_grad():
        image = render_synface(params, size)["image"]
    return ((image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def measure_all(pixels: np.ndarray, reader) -> np.ndarray:
    """[B,6] measures by an `ExpressionReader` (NaN rows where dlib finds no face)."""
    out = np.full((len(pixels), len(MEASURES)), np.nan)
    for i, image in enumerate(pixels):
        face = reader.measure(image)  # one cut, as video frames are read
        if face is not None:
            out[i] = face.measures
    return out


def calibrated_table(reader, n: int = 8, seed: int = 7, values=(0.5, 1.0)) -> DirectionTable:
    """The SynFace expression table (see the module docstring): slope per unit parameter by least squares
    through the origin over `values`, std and mean over the n neutral faces."""
    base = faces(n, seed)
    neutral = measure_all(render_uint8(base), reader)
    std, mean = np.nanstd(neutral, 0), np.nanmean(neutral, 0)
    slope = np.zeros((len(EXPRESSIONS), len(MEASURES)))
    for k, name in enumerate(EXPRESSIONS):
        change = [np.nanmean(measure_all(render_uint8(base.replace(**{name: v})), reader) - neutral, 0)
                  for v in values]
        v = np.asarray(values)[:, None]
        slope[k] = (v * np.stack(change)).sum(0) / (v ** 2).sum()
    z = np.stack([slope / std, -slope / std], 1)  # [K,2,M]: symmetric about the neutral face
    names = {name: {"index": k, "sign": 1, "score": 1.0, "measure": "constructed"} for name, k in NAMES.items()}
    names.update(brows_up=None, yaw=None, pitch=None)  # see the module docstring
    return DirectionTable(indices=list(range(len(EXPRESSIONS))), strength=1.0, truncation=1.0, samples=n, seed=seed,
                          confirmed=n, named=True, reason="", std=std, effect=z * std, z=z,
                          agreement=np.ones((len(EXPRESSIONS), len(MEASURES))), names=names, mean=mean)


def expression_sequence() -> np.ndarray:
    """[T,3] known expression per frame (EXPRESSIONS order): neutral, smile, open mouth, eyes closed, neutral."""
    keys = [  # frame, smile, mouth_open, eyes_closed
        (0, 0, 0, 0), (3, 0, 0, 0), (7, 1, 0, 0), (10, 1, 0, 0), (13, 0, 0, 0), (17, 0, 1, 0), (20, 0, 1, 0),
        (23, 0, 0, 0), (26, 0, 0, 1), (28, 0, 0, 1), (31, 0, 0, 0), (35, 0, 0, 0)]
    keys = np.array(keys, dtype=np.float64)
    t = np.arange(int(keys[-1, 0]) + 1)
    return np.stack([np.interp(t, keys[:, 0], keys[:, 1 + j]) for j in range(len(EXPRESSIONS))], 1)


def expression_video(path, face_seed: int = 5, size: int = SIZE, fps: float = 12.0, blank=()) -> np.ndarray:
    """Write an MP4 of one face following `expression_sequence()` (frames in `blank` replaced by plain grey,
    no face); returns the sequence [T,3]."""
    from toon3d.io.video import write_mp4

    seq = expression_sequence()
    params = faces(1, face_seed)
    table = params.to_tensor().repeat(len(seq), 1)
    frames_params = SynFaceParams.from_tensor(table).replace(
        **{name: torch.as_tensor(seq[:, j], dtype=torch.float32) for j, name in enumerate(EXPRESSIONS)})
    frames = list(render_uint8(frames_params, size))
    for t in blank:
        frames[t] = np.full_like(frames[t], 128)
    write_mp4(frames, path, fps)
    return seq
