"""A face's expression in a photo or video frame: dlib's detector and 68 landmarks → landmark measures.

The measures are `toon3d.edit.landmarks.face_measures`: mouth width and opening, eye opening,
brow height, yaw and pitch, lengths in inter-ocular distances in the face's own frame, so they
do not depend on the face's size, place or in-plane rotation.

dlib's shape predictor starts from a face rectangle, and its landmarks depend on that rectangle
more than on the face's size: on one SynFace face rendered at 128-256 px, or pasted into larger
pictures, the mouth width read inside the detector's own box varied by 0.13 IOD (over two of
the population's standard deviations), because the detector's box moves with the context. So a
face is measured the way the direction table measured the generator's faces
(`toon3d.edit.naming`): cut to the generator's layout at 256 px (`toon3d.faces.align`), and the
68 points predicted inside the fixed rectangle `FACE_RECT` (`toon3d.edit.landmarks`). The cut
comes from the detector box's landmarks, then once more from the landmarks found in the cut
(`PASSES`), which leaves the detector box out. What remains is the predictor's own sensitivity
to sub-pixel shifts of the cut (it does not settle to a fixed point over more passes), so the
last pass averages the landmarks of `cuts` slightly shifted and scaled cuts (`JITTER`, ±2 px,
±3% at 256 px): on the face above the spread fell to 0.017 IOD (0.026 with one cut). Photos
use all 9 cuts; video frames one, their jitter being averaged over time instead. A photo and
the table's images are thereby read by the same instrument.

The largest face is measured unless another is chosen. A face narrower than `MIN_FACE_PX`
(the alignment's limit) counts as no face: dlib's landmarks are unreliable below it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from toon3d.edit.landmarks import LANDMARK_SIZE, MEASURES, FaceLandmarks, face_measures
from toon3d.errors import Toon3dError
from toon3d.faces.align import (MIN_FACE_PX, FaceDetector, Layout, apply_affine, crop_quad, detect_faces,
                                get_layout, layout_quad)
from toon3d.io.photos import Photo

PASSES = 2
# The cut is sampled directly at 256 px (FFHQ's 4x supersampling changed the landmarks by less than
# the predictor's jitter at 5x the cost), without reflection padding: the predictor only looks
# inside the face.
TRANSFORM_SIZE = LANDMARK_SIZE
# (dx, dy) in output pixels along the cut's axes, relative scale: the cuts of the last pass.
JITTER = ((0.0, 0.0, 0.0), (2.0, 0.0, 0.0), (-2.0, 0.0, 0.0), (0.0, 2.0, 0.0), (0.0, -2.0, 0.0),
          (0.0, 0.0, 0.03), (0.0, 0.0, -0.03), (2.0, 2.0, 0.015), (-2.0, -2.0, -0.015))


@dataclass
class FaceExpression:
    """One measured face."""

    measures: np.ndarray                       # [6] in `MEASURES` order (IOD units; yaw, pitch ratios)
    landmarks: np.ndarray                      # [68,2] pixel centres in the measured image (last pass)
    box: tuple[float, float, float, float]     # detector box (left, top, right, bottom), pixel edges
    face_index: int                            # 0 = largest
    faces_found: int

    def record(self) -> dict:
        """JSON-ready record: the measures by name, the box and the face chosen."""
        return {"measures": dict(zip(MEASURES, map(float, self.measures))),
                "box": [round(float(v), 1) for v in self.box], "face": self.face_index,
                "faces_found": self.faces_found}


class ExpressionReader:
    """Measures faces in pixels: dlib's detector, then landmarks in the layout's cut (see the module docstring)."""

    def __init__(self, layout: str | Layout = "synface", detector: FaceDetector | None = None,
                 landmarks: FaceLandmarks | None = None) -> None:
        self.layout = get_layout(layout)
        self.detector = detector or FaceDetector()
        self.landmarks = landmarks or FaceLandmarks()

    def _cut_landmarks(self, pixels: np.ndarray, quad: np.ndarray) -> np.ndarray:
        """Landmarks [68,2] (pixel centres of `pixels`) predicted in the cut of `quad` [4,2]."""
        crop = crop_quad(pixels, quad, LANDMARK_SIZE, TRANSFORM_SIZE, padding=False)
        image = torch.from_numpy(crop.image.copy()).permute(2, 0, 1).float()[None] / 127.5 - 1.0
        edges = self.landmarks.landmarks(image)[0] * LANDMARK_SIZE  # edge coordinates of the cut
        return apply_affine(crop.output_to_source, edges) - 0.5

    def aligned_landmarks(self, pixels: np.ndarray, start: np.ndarray, cuts: int = 1) -> np.ndarray:
        """[68,2] landmarks (pixel centres of `pixels` [H,W,3] uint8) refined from `start` [68,2] by `PASSES`
        cuts, the last averaged over `cuts` (1..9) jittered cuts."""
        if not 1 <= cuts <= len(JITTER):
            raise Toon3dError(f"cuts must be in 1..{len(JITTER)}, got {cuts}")
        points = np.asarray(start, dtype=np.float64)
        for step in range(PASSES):
            quad = layout_quad(points, self.layout)
            if step < PASSES - 1:
                points = self._cut_landmarks(pixels, quad)
                continue
            side = float(np.hypot(*(quad[3] - quad[0])))
            ex, ey = (quad[3] - quad[0]) / side, (quad[1] - quad[0]) / side
            centre = quad.mean(0)
            found = []
            for dx, dy, ds in JITTER[:cuts]:
                moved = (quad - centre) * (1 + ds) + centre + (dx * ex + dy * ey) * side / LANDMARK_SIZE
                found.append(self._cut_landmarks(pixels, moved))
            points = np.mean(found, axis=0)
        return points

    def measure(self, pixels: np.ndarray, face: int = 0, cuts: int = 1) -> FaceExpression | None:
        """A video frame: pixels [H,W,3] uint8 RGB → face `face` (0 = largest) measured with `cuts` cuts, or None
        when there is none (or it is narrower than `MIN_FACE_PX`)."""
        faces = self.detector.detect(pixels)
        if face >= len(faces) or faces[face].width < MIN_FACE_PX:
            return None
        return self._measured(pixels, faces, face, cuts)

    def _measured(self, pixels: np.ndarray, faces: list, index: int, cuts: int) -> FaceExpression:
        chosen = faces[index]
        points = self.aligned_landmarks(pixels, chosen.landmarks, cuts)
        return FaceExpression(face_measures(points), points, chosen.box, index, len(faces))

    def measure_photo(self, photo: Photo | np.ndarray | str | os.PathLike, face: int | None = None,
                      cuts: int = len(JITTER)) -> FaceExpression:
        """A photo (path, [H,W,3] array or `Photo`) → its face's measures (all jittered cuts by default); no face
        or a tiny one is a one-line Toon3dError."""
        photo, faces = detect_faces(photo, self.detector)
        index = 0 if face is None else int(face)
        if not 0 <= index < len(faces):
            raise Toon3dError(f"face {index} does not exist: {len(faces)} face(s) found in {photo.source} "
                              "(0 = largest); list them with toon3d align --list")
        if faces[index].width < MIN_FACE_PX:
            raise Toon3dError(f"the face in {photo.source} is {faces[index].width:.0f} px wide; measuring an "
                              f"expression needs a face at least {MIN_FACE_PX} px wide; use a larger photo")
        return self._measured(photo.pixels, faces, index, cuts)
