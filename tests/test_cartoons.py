"""The facesjs cartoon set: seeding, independence of batches, alignment to the layout, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from toon3d.cli import main
from toon3d.errors import Toon3dError
from toon3d.synth import cartoons, layout
from toon3d.synth.svg_render import reframe_svg, render_svg

NODE_MISSING = shutil.which("node") is None
FACESJS_MISSING = not (cartoons.facesjs_dir() / "node_modules" / "facesjs").is_dir()
needs_node = pytest.mark.skipif(
    NODE_MISSING or FACESJS_MISSING,
    reason="needs Node.js on PATH and 'npm ci --prefix tools/facesjs' (bash install.sh does both)")


def _images(seed: int, indices: list[int], size: int = 32) -> dict[int, np.ndarray]:
    return {label["index"]: image for image, label in cartoons.cartoon_images(seed, indices, size)}


# --- framing maths (no Node needed) ---------------------------------------------------------

def test_crop_box_puts_facesjs_eyes_on_layout_eyes():
    left = cartoons.canvas_to_image(cartoons.FACESJS_EYE_LEFT)
    right = cartoons.canvas_to_image(cartoons.FACESJS_EYE_RIGHT)
    assert abs(left[0] - layout.EYE_LEFT_X) < 0.01 and abs(right[0] - layout.EYE_RIGHT_X) < 0.01
    assert abs(left[1] - layout.EYE_Y) < 0.01 and abs(right[1] - layout.EYE_Y) < 0.01
    mouth = cartoons.canvas_to_image(cartoons.FACESJS_MOUTH)
    assert abs(mouth[1] - layout.MOUTH_Y) < 0.03
    chin = cartoons.canvas_to_image((cartoons.FACESJS_CENTER_X, cartoons.FACESJS_CHIN_Y))
    assert abs(chin[1] - layout.CHIN_Y) < 0.03
    edge = cartoons.canvas_to_image((cartoons.FACESJS_CENTER_X + cartoons.FACESJS_HEAD_HALF_WIDTH, 0))
    assert abs((edge[0] - 0.5) - layout.FACE_HALF_WIDTH) < 0.01


def test_reframe_svg_maps_a_canvas_point_to_the_expected_pixel():
    svg = ('<svg xmlns="http://www.w3.org/2000/svg" width="100%" viewBox="0 0 400 600">'
           '<circle cx="140" cy="310" r="40" fill="#ff0000"/></svg>')
    size = 64
    image = render_svg(reframe_svg(svg, cartoons.facesjs_crop_box(), size), background="#000000")
    weight = image[..., 0].astype(float)
    ys, xs = np.mgrid[0:size, 0:size] + 0.5  # pixel centres
    centre = np.array([(weight * xs).sum(), (weight * ys).sum()]) / weight.sum()
    expected = np.array(cartoons.canvas_to_image((140.0, 310.0))) * size
    assert np.abs(centre - expected).max() < 0.1  # pixels; the anti-aliased disc is symmetric


def test_reframe_svg_rejects_markup_without_svg_root():
    with pytest.raises(ValueError):
        reframe_svg("<g/>", (0, 0, 1), 8)


# --- errors (no Node needed) ----------------------------------------------------------------

def test_missing_node_is_a_one_line_error_with_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv(cartoons.NODE_ENV, str(tmp_path / "no-such-node"))
    with pytest.raises(Toon3dError) as err:
        cartoons.find_node()
    message = str(err.value)
    assert "\n" not in message and "apt-get install nodejs npm" in message and "install.sh" in message


def test_missing_node_through_the_cli(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(cartoons.NODE_ENV, str(tmp_path / "no-such-node"))
    out = tmp_path / "cartoons"
    assert main(["data", "cartoons", "--n", "2", "--size", "32", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Node.js" in err and err.startswith("toon3d data: error:")
    assert not out.exists()


def _fake_node(tmp_path: Path, version: str) -> str:
    """An executable that answers `--version` like Node would."""
    script = tmp_path / f"node-{version}"
    script.write_text(f"#!/bin/sh\necho {version}\n")
    script.chmod(0o755)
    return str(script)


def test_missing_node_modules_says_npm_ci(monkeypatch, tmp_path):
    tool = tmp_path / "facesjs"
    tool.mkdir()
    shutil.copy(cartoons.facesjs_dir() / cartoons.SERVER_SCRIPT, tool / cartoons.SERVER_SCRIPT)
    monkeypatch.setenv(cartoons.FACESJS_DIR_ENV, str(tool))
    with pytest.raises(Toon3dError, match="npm ci --prefix") as err:
        cartoons.make_cartoons(tmp_path / "out", cartoons.CartoonSettings(n=2, size=32), progress=False,
                               node=_fake_node(tmp_path, "v20.11.0"))
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()


def test_old_node_is_refused(tmp_path):
    with pytest.raises(Toon3dError, match="needs >= 18"):
        cartoons.check_node_version(_fake_node(tmp_path, "v16.20.2"))
    assert cartoons.check_node_version(_fake_node(tmp_path, "v20.11.0")) == 20


@pytest.mark.parametrize("settings, match", [
    (cartoons.CartoonSettings(n=0, size=32), "--n"),
    (cartoons.CartoonSettings(n=2, size=4), "--size"),
    (cartoons.CartoonSettings(n=2, size=32, seed=-1), "--seed"),
    (cartoons.CartoonSettings(n=2, size=32, workers=0), "workers"),
])
def test_bad_settings_are_one_line_errors(tmp_path, settings, match):
    with pytest.raises(Toon3dError, match=match):
        cartoons.make_cartoons(tmp_path / "out", settings, progress=False)


# --- faces (Node needed) --------------------------------------------------------------------

@needs_node
def test_same_seed_same_pixels_and_face_independent_of_batch():
    first = _images(7, [0, 1, 2, 3])
    again = _images(7, [0, 1, 2, 3])
    alone = _images(7, [3, 1])
    for i in range(4):
        assert np.array_equal(first[i], again[i])
    assert np.array_equal(first[3], alone[3]) and np.array_equal(first[1], alone[1])
    other_seed = _images(8, [0])
    assert not np.array_equal(first[0], other_seed[0])
    assert not np.array_equal(first[0], first[1])


@needs_node
def test_images_are_real_faces_not_blank():
    image = _images(0, [0], size=64)[0]
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert image.std() > 20  # a flat or black image would be a rendering failure
    # The centre of the face is skin-coloured drawing, not the plain background.
    corner = image[1, 1].astype(int)
    centre = image[int(0.6 * 64), 32].astype(int)
    assert np.abs(corner - centre).sum() > 30


def _feature_centroids(seed: int, indices: range, feature: str, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(xs, ys) in image fractions of the pixels drawn by `feature` alone, per face."""
    found = []
    with cartoons.FacesjsServer() as server:
        for record in server.faces(seed, indices, feature=feature):
            svg = reframe_svg(record["svg"], cartoons.facesjs_crop_box(), size)
            image = render_svg(svg, background="#00ff00")
            drawn = np.abs(image.astype(int) - [0, 255, 0]).sum(-1) > 60
            ys, xs = np.nonzero(drawn)
            found.append(((xs + 0.5) / size, (ys + 0.5) / size))
    return found


@needs_node
def test_rendered_eyes_fall_on_the_layout_eye_centres():
    size = 128
    centres = []
    for xs, ys in _feature_centroids(3, range(16), "eye", size):
        left, right = xs < 0.5, xs >= 0.5
        assert left.sum() > 10 and right.sum() > 10
        centres.append([0.5 * (xs[left].min() + xs[left].max()), 0.5 * (xs[right].min() + xs[right].max()),
                        0.5 * (ys.min() + ys.max())])
    centres = np.array(centres)
    target = np.array([layout.EYE_LEFT_X, layout.EYE_RIGHT_X, layout.EYE_Y])
    # On average within 1.5% of the image; a single face's eye drawing (tilted by its eye
    # angle, not symmetric about its anchor) within 6%.
    assert np.abs(centres.mean(0) - target).max() < 0.015
    assert np.abs(centres - target).max() < 0.06


@needs_node
def test_rendered_mouth_and_head_match_the_layout():
    size = 128
    for xs, ys in _feature_centroids(5, range(8), "mouth", size):
        assert abs(0.5 * (ys.min() + ys.max()) - layout.MOUTH_Y) < 0.04
        assert abs(0.5 * (xs.min() + xs.max()) - layout.FACE_CENTER_X) < 0.04
    for xs, ys in _feature_centroids(5, range(8), "head", size):
        half_width = 0.5 * (xs.max() - xs.min())
        assert abs(half_width - layout.FACE_HALF_WIDTH) < 0.05
        assert abs(ys.max() - layout.CHIN_Y) < 0.04


@needs_node
def test_make_cartoons_writes_the_folder_format_deterministically(tmp_path):
    settings = cartoons.CartoonSettings(n=3, size=32, seed=1, workers=1)
    a = cartoons.make_cartoons(tmp_path / "a", settings, progress=False)
    b = cartoons.make_cartoons(tmp_path / "b", cartoons.CartoonSettings(n=3, size=32, seed=1, workers=3),
                               progress=False)
    meta = json.loads((a / "meta.json").read_text())
    assert meta["kind"] == "cartoons" and meta["count"] == 3 and meta["size"] == 32 and meta["seed"] == 1
    assert meta["facesjs_version"] == "5.0.3"
    for i in range(3):
        name = Path("images") / f"{i:06d}.png"
        assert (a / name).read_bytes() == (b / name).read_bytes()
    labels = [json.loads(line) for line in (a / "labels.jsonl").read_text().splitlines()]
    assert [r["index"] for r in labels] == [0, 1, 2]
    assert {"fatness", "eye", "mouth", "head"} <= set(labels[0]["face"])
    assert (a / "contact_sheet.png").is_file()
    assert (a / "labels.jsonl").read_bytes() == (b / "labels.jsonl").read_bytes()


@needs_node
def test_cli_refuses_a_non_empty_out_without_overwrite(tmp_path, capsys):
    out = tmp_path / "c"
    assert main(["data", "cartoons", "--n", "2", "--size", "32", "--out", str(out)]) == 0
    assert main(["data", "cartoons", "--n", "2", "--size", "32", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["data", "cartoons", "--n", "3", "--size", "32", "--out", str(out), "--overwrite"]) == 0
    assert json.loads((out / "meta.json").read_text())["count"] == 3


@needs_node
def test_a_crashing_node_script_is_a_one_line_error(tmp_path):
    tool = tmp_path / "facesjs"
    tool.mkdir()
    (tool / "node_modules").symlink_to(cartoons.facesjs_dir() / "node_modules")
    (tool / cartoons.SERVER_SCRIPT).write_text("import x from 'no-such-package';\n")
    with pytest.raises(Toon3dError, match="ERR_MODULE_NOT_FOUND") as err:
        with cartoons.FacesjsServer(tool_dir=tool):
            pass
    assert "\n" not in str(err.value) and "npm ci --prefix" in str(err.value)


@needs_node
def test_stopping_early_closes_the_server_cleanly():
    with cartoons.FacesjsServer() as server:
        first = next(server.faces(0, range(500)))
    assert first["index"] == 0 and server._proc is None
