"""Face alignment: FFHQ's crop maths on synthetic landmarks, the pixel pipeline on synthetic images, the packaged
photos (skipped when their package is missing), several faces, EXIF, conversions, and one-line errors."""

from __future__ import annotations

import importlib.util
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.dlib_helpers import needs_dlib, one_line_error
from toon3d.errors import Toon3dError
from toon3d.faces import align as A
from toon3d.io.photos import photo_from_array, read_photo


def packaged(package: str, relative: str) -> Path | None:
    """A file shipped inside an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / relative
        if path.is_file():
            return path
    return None


ASTRONAUT = packaged("skimage", "data/astronaut.png")
GRACE = packaged("matplotlib", "mpl-data/sample_data/grace_hopper.jpg")
T1 = packaged("insightface", "data/images/t1.jpg")
needs_astronaut = pytest.mark.skipif(ASTRONAUT is None, reason="scikit-image not installed (astronaut.png)")
needs_grace = pytest.mark.skipif(GRACE is None, reason="matplotlib not installed (grace_hopper.jpg)")
needs_t1 = pytest.mark.skipif(T1 is None, reason="insightface not installed (t1.jpg)")


def synthetic_landmarks(eye_left, eye_right, mouth_left, mouth_right, rng=None) -> np.ndarray:
    """68 points whose eye contours average to the given eye centres, with the given mouth corners (48, 54) and
    an outer lip symmetric about their midpoint; the rest are filler."""
    rng = rng or np.random.default_rng(0)
    lm = rng.normal(0, 5, (68, 2)) + np.mean([eye_left, eye_right], 0)
    ring = np.array([[-6, 0], [-3, -3], [3, -3], [6, 0], [3, 3], [-3, 3]], dtype=np.float64)
    lm[36:42] = np.asarray(eye_left) + ring
    lm[42:48] = np.asarray(eye_right) + ring
    ml, mr = np.asarray(mouth_left, dtype=np.float64), np.asarray(mouth_right, dtype=np.float64)
    mid = (ml + mr) / 2
    lip = np.array([[-1, 0], [-.6, -.3], [-.2, -.35], [0, -.3], [.2, -.35], [.6, -.3], [1, 0],
                    [.6, .35], [.2, .45], [0, .45], [-.2, .45], [-.6, .35]])
    half = (mr - ml) / 2
    perp = np.array([-half[1], half[0]])
    lm[48:60] = mid + lip[:, :1] * half + lip[:, 1:] * perp
    # symmetric outer lip: its centroid is the corner midpoint shifted along perp only
    return lm


def similarity(points: np.ndarray, scale: float, angle: float, shift) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.asarray(points) @ (scale * np.array([[c, -s], [s, c]])).T + np.asarray(shift)


def output_points(quad: np.ndarray, points: np.ndarray, size: int) -> np.ndarray:
    """Pixel-centre points of the photo → pixel-centre points of the size×size crop of `quad`."""
    m = A.quad_affine(quad + 0.5, size)
    return A.apply_affine(A.invert_affine(m), np.asarray(points) + 0.5) - 0.5


# ---- the maths, on synthetic landmarks ---------------------------------------------------------

@pytest.mark.parametrize("eye_gap,mouth_drop", [(60.0, 50.0), (40.0, 70.0)])
def test_ffhq_quad_matches_the_recipe_on_an_upright_face(eye_gap, mouth_drop):
    # Upright face, eyes at (±g/2, 0), mouth corners below at depth m: FFHQ's square has half-side
    # max(2g, 1.8·|e2m|) and centre 0.1·e2m below the eye midpoint.
    centre = np.array([300.0, 200.0])
    lm = synthetic_landmarks(centre + [-eye_gap / 2, 0], centre + [eye_gap / 2, 0],
                             centre + [-20, mouth_drop], centre + [20, mouth_drop])
    quad = A.ffhq_quad(lm)
    half = max(2 * eye_gap, 1.8 * mouth_drop)
    c = centre + [0, 0.1 * mouth_drop]
    np.testing.assert_allclose(quad, [c + [-half, -half], c + [-half, half], c + [half, half], c + [half, -half]],
                               atol=1e-9)
    size = 256
    eyes = output_points(quad, [centre + [-eye_gap / 2, 0], centre + [eye_gap / 2, 0]], size)
    expect_y = size / 2 - 0.1 * mouth_drop * size / (2 * half) - 0.5
    np.testing.assert_allclose(eyes[:, 1], [expect_y, expect_y], atol=1e-9)
    np.testing.assert_allclose(eyes[:, 0], size / 2 + np.array([-1, 1]) * eye_gap / 2 * size / (2 * half) - 0.5,
                               atol=1e-9)
    if 2 * eye_gap >= 1.8 * mouth_drop:  # the eye term decides: eyes at the fixed 3/8 and 5/8 of the width
        np.testing.assert_allclose(eyes[:, 0] + 0.5, [0.375 * size, 0.625 * size], atol=1e-9)


@pytest.mark.parametrize("layout", ["ffhq", "synface"])
def test_crop_square_moves_with_the_face(layout):
    # A turned, scaled, shifted face gets the turned, scaled, shifted square: the aligned face is the same.
    lm = synthetic_landmarks([270, 200], [330, 203], [282, 262], [318, 263], np.random.default_rng(3))
    quad = A.layout_quad(lm, layout)
    moved = similarity(lm + 0.5, 1.7, 0.4, [55, -20]) - 0.5  # moved in edge coordinates, as images move
    np.testing.assert_allclose(A.layout_quad(moved, layout), similarity(quad + 0.5, 1.7, 0.4, [55, -20]) - 0.5,
                               atol=1e-7)
    np.testing.assert_allclose(output_points(A.layout_quad(moved, layout), moved, 128), output_points(quad, lm, 128),
                               atol=1e-7)


def test_synface_square_fits_the_layout_by_least_squares():
    lm = synthetic_landmarks([270, 200], [330, 196], [281, 262], [321, 265], np.random.default_rng(5))
    size = 64
    points = A.eye_mouth_points(lm)
    mapped = output_points(A.similarity_quad(lm, A.LAYOUTS["synface"].anchors),
                           np.stack([points["eye_left"], points["eye_right"], points["mouth_centre"]]), size)
    wanted = np.asarray(A.LAYOUTS["synface"].anchors) * size - 0.5
    # Least squares with a free translation: the residuals cancel, the centroids coincide.
    np.testing.assert_allclose(mapped.mean(0), wanted.mean(0), atol=1e-9)
    assert np.abs(mapped - wanted).max() < 0.05 * size
    # A face that is exactly a similarity image of the layout lands on it exactly.
    target = similarity(np.asarray(A.LAYOUTS["synface"].anchors) * 100, 1.3, -0.2, [200, 150]) - 0.5
    exact = synthetic_landmarks(target[0], target[1], target[2] + [-15, 0], target[2] + [15, 0])
    exact[48:60] += target[2] - exact[48:60].mean(0)
    p = A.eye_mouth_points(exact)
    mapped = output_points(A.similarity_quad(exact, A.LAYOUTS["synface"].anchors),
                           np.stack([p["eye_left"], p["eye_right"], p["mouth_centre"]]), size)
    np.testing.assert_allclose(mapped, wanted, atol=1e-6)


def dotted_photo(width, height, points, radius=2.0) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    img = np.full((height, width, 3), 40.0)
    for x, y in points:
        img[..., 1] += 215 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * radius**2))
    return np.clip(img, 0, 255).astype(np.uint8)


def dot_centres(image: np.ndarray, guesses: np.ndarray, window: int) -> np.ndarray:
    g = image[..., 1].astype(np.float64) - image[..., 0]
    out = []
    for x, y in guesses:
        x0, y0 = int(round(x)) - window, int(round(y)) - window
        patch = np.clip(g[y0:y0 + 2 * window + 1, x0:x0 + 2 * window + 1], 0, None)
        yy, xx = np.mgrid[:patch.shape[0], :patch.shape[1]]
        out.append([x0 + (patch * xx).sum() / patch.sum(), y0 + (patch * yy).sum() / patch.sum()])
    return np.array(out)


@pytest.mark.parametrize("scale,near_edge", [(1.0, False), (6.0, True)])
def test_crop_pixels_follow_the_recorded_transform(scale, near_edge):
    # Bright dots at the eye centres and the mouth of a synthetic face: after FFHQ's shrink (scale 6: by 11),
    # crop, pad (near the edge) and QUAD transform they sit where the recorded transform and FFHQ's maths put them.
    face = np.array([[0, 0], [60, 3], [12, 62], [48, 64]], dtype=np.float64) * scale
    corner = np.array([60.0, 100.0]) * scale if near_edge else np.array([150.0, 150.0])
    el, er, ml, mr = face + corner
    lm = synthetic_landmarks(el, er, ml, mr)
    mouth = (ml + mr) / 2
    size = 64
    quad = A.ffhq_quad(lm)
    qsize = float(np.hypot(*(quad[3] - quad[0])))
    photo = dotted_photo(int(corner[0] + 200 * scale), int(corner[1] + 200 * scale), [el, er, mouth],
                         radius=1.5 * qsize / size)
    result = A.crop_quad(photo, quad, size)
    assert (result.shrink > 1) == (scale > 1)
    assert (result.pad is not None) == near_edge
    predicted = A.apply_affine(A.invert_affine(result.output_to_source), np.stack([el, er, mouth]) + 0.5) - 0.5
    found = dot_centres(result.image, predicted, 5)
    np.testing.assert_allclose(found, predicted, atol=0.3)
    nominal = output_points(quad, np.stack([el, er, mouth]), size)
    np.testing.assert_allclose(predicted, nominal, atol=0.3)  # FFHQ's shrink quirk moves it < 1/4 px


# ---- dlib on real photos ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def detector():
    pytest.importorskip("dlib")
    return A.FaceDetector()


def bilinear(photo: np.ndarray, xy: np.ndarray) -> np.ndarray:
    x, y = xy[..., 0] - 0.5, xy[..., 1] - 0.5  # edge → pixel-centre coordinates
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    h, w = photo.shape[:2]
    p = lambda yy, xx: photo[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)].astype(np.float64)  # noqa: E731
    return (p(y0, x0) * (1 - fx) * (1 - fy) + p(y0, x0 + 1) * fx * (1 - fy) + p(y0 + 1, x0) * (1 - fx) * fy
            + p(y0 + 1, x0 + 1) * fx * fy)


@needs_dlib
@pytest.mark.parametrize("name", ["astronaut", "grace_hopper"])
def test_ffhq_alignment_of_packaged_photos(name, detector):
    path = {"astronaut": ASTRONAUT, "grace_hopper": GRACE}[name]
    if path is None:
        pytest.skip(f"{name} photo not installed")
    size = 256
    aligned = A.align_photo(path, "ffhq", size, detector=detector)
    assert aligned.image.shape == (size, size, 3) and aligned.image.dtype == np.uint8
    eyes = A.eye_mouth_points(aligned.aligned_landmarks)
    # Both photos are in the eye-term regime: the eyes sit at FFHQ's fixed 3/8 and 5/8 of the width, level.
    assert abs(eyes["eye_left"][0] + 0.5 - 0.375 * size) < 1.0
    assert abs(eyes["eye_right"][0] + 0.5 - 0.625 * size) < 1.0
    assert abs(eyes["eye_left"][1] - eyes["eye_right"][1]) < 1.0
    assert 0.45 * size < eyes["eye_left"][1] < 0.50 * size
    # The pixels are the photo sampled along the recorded transform (interior, away from Lanczos ringing).
    photo = read_photo(path).pixels
    centres = np.stack(np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5), -1)
    direct = bilinear(photo, A.apply_affine(aligned.output_to_source, centres.reshape(-1, 2)).reshape(size, size, 2))
    inner = slice(16, size - 16)
    assert np.abs(direct[inner, inner] - aligned.image[inner, inner]).mean() < 4.0
    if name == "astronaut":  # dlib finds the same eyes again in the aligned image (Grace Hopper's glasses: no)
        again = A.eye_mouth_points(detector.detect(aligned.image)[0].landmarks)
        for key in ("eye_left", "eye_right"):
            assert np.abs(again[key] - eyes[key]).max() < 1.0


@needs_dlib
@needs_astronaut
def test_synface_alignment_and_json(detector):
    aligned = A.align_photo(ASTRONAUT, "synface", 64, detector=detector)
    record = aligned.to_json()
    json.dumps(record)
    assert record["layout"] == "synface" and record["size"] == 64 and len(record["landmarks_aligned"]) == 68
    p = A.eye_mouth_points(aligned.aligned_landmarks)
    got = (np.stack([p["eye_left"], p["eye_right"], p["mouth_centre"]]) + 0.5) / 64
    np.testing.assert_allclose(got.mean(0), np.asarray(A.LAYOUTS["synface"].anchors).mean(0), atol=1e-6)
    assert np.abs(got - np.asarray(A.LAYOUTS["synface"].anchors)).max() < 0.01


@needs_dlib
@needs_t1
def test_six_faces_largest_first(detector):
    photo, faces = A.detect_faces(T1, detector)
    assert len(faces) == 6
    areas = [(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]) for f in faces]
    assert areas == sorted(areas, reverse=True)
    third = A.align_photo(photo, "ffhq", 64, face=2, detector=detector)
    assert third.face_index == 2
    np.testing.assert_allclose(third.face.landmarks, faces[2].landmarks)
    message = one_line_error(A.align_photo, photo, "ffhq", 64, face=6, detector=detector)
    assert "6 face(s)" in message and "--list" in message


@needs_dlib
@needs_astronaut
def test_two_faces_ordered_by_size_and_huge_photo(detector):
    face = np.asarray(Image.open(ASTRONAUT).convert("RGB"))[40:260, 120:330]
    canvas = np.full((1400, 2600, 3), 200, np.uint8)  # above DETECT_MAX_SIDE: detected downscaled
    # Both faces large enough for the undoubled detector on the 1024 px copy (it stops at the first level
    # that finds a face, so smaller faces beside a big one are not looked for).
    small = np.asarray(Image.fromarray(face).resize((520, 545), Image.Resampling.LANCZOS))
    big = np.asarray(Image.fromarray(face).resize((880, 920), Image.Resampling.LANCZOS))
    canvas[100:645, 150:670] = small
    canvas[300:1220, 1500:2380] = big
    photo, faces = A.detect_faces(canvas, detector)
    assert len(faces) == 2
    assert faces[0].box[0] > 1400 and faces[1].box[0] < 600
    # Landmarks come from the full-resolution photo: the big face's eyes agree with the small one's, scaled.
    a = A.eye_mouth_points(faces[0].landmarks)["eye_left"] - [1500, 300]
    b = A.eye_mouth_points(faces[1].landmarks)["eye_left"] - [150, 100]
    np.testing.assert_allclose(a / 880, b / 520, atol=0.012)


@needs_dlib
@needs_astronaut
@pytest.mark.parametrize("orientation", [6, 8, 3])
def test_exif_orientation_is_honoured(tmp_path, orientation, detector):
    upright = Image.open(ASTRONAUT).convert("RGB")
    # Store the pixels as a camera would (turned), with the tag that says how to turn them back.
    stored = upright.transpose({6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270,
                                3: Image.Transpose.ROTATE_180}[orientation])
    exif = Image.Exif()
    exif[274] = orientation
    path = tmp_path / "turned.png"
    stored.save(path, exif=exif)
    photo = read_photo(path)
    np.testing.assert_array_equal(photo.pixels, np.asarray(upright))
    assert photo.exif_orientation == orientation and any("EXIF" in c for c in photo.conversions)
    a = A.align_photo(photo, "ffhq", 64, detector=detector)
    b = A.align_photo(np.asarray(upright), "ffhq", 64, detector=detector)
    np.testing.assert_array_equal(a.image, b.image)


@needs_dlib
@needs_astronaut
def test_grey_16bit_and_transparent_photos_are_converted(tmp_path, detector):
    rgb = np.asarray(Image.open(ASTRONAUT).convert("RGB"))
    grey8 = np.asarray(Image.fromarray(rgb).convert("L"))
    grey16 = (grey8.astype(np.uint16) * 257)
    Image.fromarray(grey16).save(tmp_path / "grey16.png")
    photo = read_photo(tmp_path / "grey16.png")
    assert photo.pixels.dtype == np.uint8 and photo.pixels.shape == rgb.shape
    np.testing.assert_array_equal(photo.pixels[..., 0], grey8)
    assert any("16-bit" in c for c in photo.conversions)
    assert A.align_photo(photo, "ffhq", 64, detector=detector).image.shape == (64, 64, 3)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    rgba[:50, :50, 3] = 0
    Image.fromarray(rgba).save(tmp_path / "alpha.png")
    photo = read_photo(tmp_path / "alpha.png")
    np.testing.assert_array_equal(photo.pixels[:50, :50], 255)  # over white
    np.testing.assert_array_equal(photo.pixels[60:], rgb[60:])
    assert photo_from_array(grey16).pixels[..., 0].tolist() == grey8.tolist()


# ---- errors --------------------------------------------------------------------------------

@needs_dlib
def test_no_face_in_a_flat_grey_image(detector):
    message = one_line_error(A.align_photo, np.full((300, 400, 3), 128, np.uint8), detector=detector)
    assert "no face found" in message and str(A.MIN_FACE_PX) in message


@needs_dlib
@needs_astronaut
def test_face_too_small(detector):
    small = np.asarray(Image.open(ASTRONAUT).convert("RGB").resize((154, 154), Image.Resampling.LANCZOS))
    message = one_line_error(A.align_photo, small, detector=detector)
    assert "px wide" in message and f"at least {A.MIN_FACE_PX}" in message


def test_unreadable_files(tmp_path):
    (tmp_path / "noise.jpg").write_bytes(np.random.default_rng(0).bytes(5000))
    assert "not an image" in one_line_error(read_photo, tmp_path / "noise.jpg")
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(buffer, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buffer.getvalue()[:3000])
    assert "truncated" in one_line_error(read_photo, tmp_path / "cut.jpg")
    (tmp_path / "empty.png").write_bytes(b"")
    assert "empty" in one_line_error(read_photo, tmp_path / "empty.png")
    assert "not found" in one_line_error(read_photo, tmp_path / "missing.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "tiny.png")
    assert "at least" in one_line_error(read_photo, tmp_path / "tiny.png")
    assert "unknown face layout" in one_line_error(A.get_layout, "anime")


# ---- the command -----------------------------------------------------------------------------

@needs_dlib
@needs_astronaut
def test_cli_align_list_and_write(tmp_path, capsys):
    from toon3d.cli import main

    assert main(["align", str(ASTRONAUT), "--list"]) == 0
    listing = capsys.readouterr().out
    assert "1 face" in listing and "face 0: box (179,83)-(267,171), 88 px wide" in listing
    out = tmp_path / "aligned"
    assert main(["align", str(ASTRONAUT), "--layout", "ffhq", "--size", "128", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "align.json", "aligned.png", "detections.png"]
    record = json.loads((out / "align.json").read_text())
    assert record["layout"] == "ffhq" and record["size"] == 128
    assert Image.open(out / "aligned.png").size == (128, 128)
    # The built-in base sets the layout and size: SynFace, 64 px.
    out2 = tmp_path / "base"
    assert main(["align", str(ASTRONAUT), "--out", str(out2)]) == 0
    record = json.loads((out2 / "align.json").read_text())
    assert record["layout"] == "synface" and record["size"] == 64
    # Errors are one line, and nothing is written.
    grey = tmp_path / "grey.png"
    Image.new("RGB", (200, 200), (128, 128, 128)).save(grey)
    assert main(["align", str(grey), "--layout", "ffhq", "--size", "64", "--out", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "no face found" in err and err.count("\n") == 1
    assert not (tmp_path / "none").exists()


def test_layout_follows_the_generator():
    from types import SimpleNamespace

    assert A.layout_for_generator(SimpleNamespace(meta={"format": "rosinality"}, entry="g_ema",
                                                  config={"size": 256})) == "ffhq"
    assert A.layout_for_generator(SimpleNamespace(meta={}, entry="file", config={"size": 64})) == "synface"
    assert A.layout_for_generator(SimpleNamespace(meta={"layout": "ffhq"}, entry="file", config={"size": 64})) == "ffhq"
    assert A.layout_for_generator(SimpleNamespace(meta={}, entry="blend", config={"size": 256})) == "ffhq"
    with pytest.raises(Toon3dError):
        A.align_photo(np.zeros((64, 64, 3), np.uint8), "cartoon")
