"""dlib's 68 facial landmarks on aligned toon3d images, and expression/pose measures read from them.

dlib's HOG detector finds nothing in a 64 px face, and our faces never need finding: every
toon3d image holds its face at `toon3d.synth.layout`'s place. So images are resized to
256 px and the 68-point shape predictor (`shape_predictor_68_face_landmarks.dat`, the model
FFHQ's alignment used, shipped by `face-recognition-models`) runs inside one fixed
rectangle, `FACE_RECT`.

Where `FACE_RECT` comes from: dlib's detector on 30 SynFace renders at 256 px (48 drawn,
30 found); each detected rectangle was mapped into our layout by the similarity taking that
face's own predicted eye centres and outer-lip centre onto the layout's, then averaged
(frontal faces: left .231, top .299, right .760, bottom .828; all poses: .226 .285 .768 .820;
std ≈ .03). `FACE_RECT` is that average, made symmetric about the face centre line.

Whether an image shows a face at all is decided by the detector itself, once per image, on
the 256 px image upsampled once more (`detector(img, 1)`; at 256 px without upsampling it
found 3 of 48 SynFace faces rendered at 64 px, with it 28): an image counts as a face when
a detection overlaps `FACE_RECT` with IoU ≥ `CONFIRM_IOU`. The shape predictor itself
always returns 68 points, face or not.

Measures (`MEASURES`), lengths in units of the inter-ocular distance (IOD, between the
centroids of the two eye contours), in the face frame (x along the eye line, y down):

  - mouth_width: outer mouth corners 48-54;
  - mouth_open: mean inner-lip gap 61-67, 62-66, 63-65;
  - eye_open: mean lid gap (37-41, 38-40; 43-47, 44-46) of both eyes;
  - brow_height: mean height of the brow points 17-26 above the eye line;
  - yaw: (nose-tip-to-left-contour − nose-tip-to-right-contour) / contour width, along x
    (points 0, 16, 30); + = nose toward the image's right;
  - pitch: upper-face over lower-face height, (nose base 33 − mean brow 17-26) / (chin 8 − nose
    base 33) along y; + = head tilted down (the chin foreshortens).

Checked on SynFace renders at 64 px (24 faces, each expression 0 → 1 or pose 0 → ±15° with
everything else fixed; mean change in units of the neutral spread, and the fraction of
faces moving that way): smile → mouth_width +0.90 (92%); mouth_open → mouth_open +1.55
(88%); eyes_closed → eye_open −2.16 (96%); yaw +15° → yaw −3.88 (96%); pitch +15° / −15° →
pitch +1.64 (96%) / −0.83 (75%). SynFace's brows_raised moves brow_height the WRONG way
(−1.07, 79%; −1.1 at 256 px): dlib's brow points follow SynFace's brow-ridge shading, not its
raised brows, so `brows_up` is not trustworthy on SynFace-like faces.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from toon3d.errors import Toon3dError

PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
MODEL_PACKAGE = "face_recognition_models"
LANDMARK_SIZE = 256
# left, top, right, bottom edges as fractions of the image (see the module docstring).
FACE_RECT = (0.235, 0.29, 0.765, 0.825)
CONFIRM_IOU = 0.3
DETECT_UPSAMPLE = 1
MEASURES = ("mouth_width", "mouth_open", "eye_open", "brow_height", "yaw", "pitch")


def find_shape_predictor(path: str | os.PathLike | None = None) -> Path:
    """dlib's 68-point predictor: `path`, else $TOON3D_MODELS (~/.cache/toon3d/models), else the
    face-recognition-models package, found without importing it (its import needs pkg_resources)."""
    from toon3d.models import find_packaged_file

    return find_packaged_file(PREDICTOR_FILE, "dlib landmark model", "pip install face-recognition-models (ships it)",
                              path, MODEL_PACKAGE)


def load_dlib_models(predictor_path: str | os.PathLike | None = None) -> tuple:
    """(dlib module, predictor path, 68-point shape predictor, HOG frontal-face detector); one-line errors."""
    try:
        import dlib
    except ImportError:
        raise Toon3dError("dlib is not installed; pip install dlib-bin (prebuilt dlib wheels)") from None
    path = find_shape_predictor(predictor_path)
    try:
        predictor = dlib.shape_predictor(str(path))
    except RuntimeError as err:
        raise Toon3dError(f"{path} is not a readable dlib shape predictor ({err}); "
                          "reinstall face-recognition-models") from None
    return dlib, path, predictor, dlib.get_frontal_face_detector()


def face_rect_pixels(size: int = LANDMARK_SIZE) -> tuple[int, int, int, int]:
    """`FACE_RECT` as dlib's inclusive pixel rectangle (left, top, right, bottom) of a size×size image."""
    left, top, right, bottom = FACE_RECT
    return (round(left * size), round(top * size), round(right * size) - 1, round(bottom * size) - 1)


def to_landmark_images(images: torch.Tensor, size: int = LANDMARK_SIZE) -> np.ndarray:
    """[B,3,S,S] in [-1,1] → [B,size,size,3] uint8 RGB: bicubic up, area down, clipped."""
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        raise Toon3dError(f"images must be [B,3,S,S] in [-1,1], got {tuple(images.shape)}")
    x = images.detach().float().cpu()
    if x.shape[-1] < size:
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
    elif x.shape[-1] > size:
        x = F.interpolate(x, size=(size, size), mode="area")
    x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0]) + 1
    h = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if w <= 0 or h <= 0:
        return 0.0
    area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)  # noqa: E731
    inter = w * h
    return inter / (area(a) + area(b) - inter)


class FaceLandmarks:
    """dlib's 68 landmarks of aligned toon3d images inside `FACE_RECT`, and detector confirmation."""

    def __init__(self, predictor_path: str | os.PathLike | None = None) -> None:
        self._dlib, self.predictor_path, self._predictor, self._detector = load_dlib_models(predictor_path)
        self.rect = face_rect_pixels()

    def landmarks(self, images: torch.Tensor) -> np.ndarray:
        """[B,3,S,S] in [-1,1] → [B,68,2] landmark positions as fractions of the image (pixel centres)."""
        pixels = to_landmark_images(images)
        rect = self._dlib.rectangle(*self.rect)
        out = np.empty((len(pixels), 68, 2), dtype=np.float64)
        for i, image in enumerate(pixels):
            shape = self._predictor(image, rect)
            out[i] = [(p.x + 0.5, p.y + 0.5) for p in shape.parts()]
        return out / LANDMARK_SIZE

    def confirmed(self, images: torch.Tensor) -> np.ndarray:
        """[B] bool: dlib's detector finds a face overlapping `FACE_RECT` (IoU ≥ CONFIRM_IOU)."""
        pixels = to_landmark_images(images)
        found = np.zeros(len(pixels), dtype=bool)
        for i, image in enumerate(pixels):
            for r in self._detector(image, DETECT_UPSAMPLE):
                if _iou((r.left(), r.top(), r.right(), r.bottom()), self.rect) >= CONFIRM_IOU:
                    found[i] = True
                    break
        return found


def face_measures(points: np.ndarray) -> np.ndarray:
    """68 landmarks [...,68,2] (any unit) → `MEASURES` [...,6] (lengths in inter-ocular distances)."""
    p = np.asarray(points, dtype=np.float64)
    left_eye, right_eye = p[..., 36:42, :].mean(-2), p[..., 42:48, :].mean(-2)
    axis = right_eye - left_eye
    iod = np.linalg.norm(axis, axis=-1).clip(1e-12)
    ex = axis / iod[..., None]
    ey = np.stack([-ex[..., 1], ex[..., 0]], -1)  # x right → y down, as in the image
    mid = (left_eye + right_eye) / 2
    rel = p - mid[..., None, :]
    u = (rel * ex[..., None, :]).sum(-1) / iod[..., None]
    v = (rel * ey[..., None, :]).sum(-1) / iod[..., None]

    def dist(a: int, b: int) -> np.ndarray:
        return np.hypot(u[..., a] - u[..., b], v[..., a] - v[..., b])

    mouth_width = dist(48, 54)
    mouth_open = (dist(61, 67) + dist(62, 66) + dist(63, 65)) / 3
    eye_open = (dist(37, 41) + dist(38, 40) + dist(43, 47) + dist(44, 46)) / 4
    brow_height = -v[..., 17:27].mean(-1)
    width = (u[..., 16] - u[..., 0])
    yaw = ((u[..., 30] - u[..., 0]) - (u[..., 16] - u[..., 30])) / np.where(np.abs(width) < 1e-12, 1e-12, width)
    brows = v[..., 17:27].mean(-1)
    lower = v[..., 8] - v[..., 33]
    pitch = (v[..., 33] - brows) / np.where(np.abs(lower) < 1e-12, 1e-12, lower)
    return np.stack([mouth_width, mouth_open, eye_open, brow_height, yaw, pitch], -1)
