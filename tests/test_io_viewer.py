"""viewer.html: self-contained page (GLB + three.js bundle inlined), opened in headless Chromium."""

import base64
import os
import re
import time

import numpy as np
import pytest
import torch
from PIL import Image

from toon3d.errors import Toon3dError
from toon3d.io.gltf_morph import MorphAnimation, avatar_glb_bytes
from toon3d.io.viewer import _script_safe, viewer_bundle, viewer_html, write_viewer_html
from toon3d.io.viewer_capture import browser_available, capture_viewer, save_capture_sheet
from toon3d.io.viewer_tools import VIEWER_DIR_ENV, viewer_tools_dir
from toon3d.shape.camera import intrinsics


def bundle_missing() -> str | None:
    try:
        viewer_bundle()
    except Toon3dError as err:
        return str(err)
    return None


def avatar_bytes(size=48):
    """A head-like sphere cap; 'mouth_open' opens a dark mouth with white teeth in the lower half."""
    v, u = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    depth = 1.0 - 0.07 * torch.sqrt((1.1 - u ** 2 - v ** 2).clamp_min(0))
    albedo = torch.stack([0.55 + 0 * u, 0.15 + 0 * u, -0.1 + 0 * u])
    mouth = (u / 0.35) ** 2 + ((v - 0.45) / 0.18) ** 2 < 1
    open_depth = depth + 0.025 * mouth.float()
    open_albedo = albedo.clone()
    open_albedo[:, mouth] = -0.8
    open_albedo[:, mouth & (v < 0.37)] = 0.95
    smile_depth = depth - 0.012 * torch.exp(-((u.abs() - 0.4) ** 2 + (v - 0.3) ** 2) / 0.02)
    anim = MorphAnimation(times=[0.0, 0.5, 1.0], weights=[[0.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    return avatar_glb_bytes((depth, albedo), {"mouth_open": (open_depth, open_albedo), "smile": (smile_depth, albedo)},
                            intrinsics(size), animation=anim)


def test_missing_bundle_is_a_one_line_error_naming_install(tmp_path, monkeypatch):
    monkeypatch.setenv(VIEWER_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(Toon3dError) as err:
        write_viewer_html(b"glTF" + b"\0" * 20, tmp_path / "viewer.html")
    assert "bash install.sh" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "viewer.html").exists()


def test_stale_bundle_asks_for_a_rebuild(tmp_path, monkeypatch):
    (tmp_path / "src").mkdir()
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / "viewer.js").write_text("/* old */")
    (tmp_path / "src" / "viewer.js").write_text("/* edited */")
    old = time.time() - 100
    os.utime(tmp_path / "dist" / "viewer.js", (old, old))
    monkeypatch.setenv(VIEWER_DIR_ENV, str(tmp_path))
    with pytest.raises(Toon3dError, match="npm run build"):
        viewer_bundle()


def test_script_text_cannot_close_its_element():
    js = 'const a = "</script><b>"; const b = "<!--";'
    safe = _script_safe(js)
    assert "</script" not in safe.lower() and "<!--" not in safe
    assert safe == 'const a = "<\\/script><b>"; const b = "<\\!--";'  # same strings once JS parses them


def test_bad_viewer_inputs(tmp_path):
    with pytest.raises(Toon3dError, match="bytes of a .glb"):
        viewer_html(b"not a glb")
    with pytest.raises(Toon3dError, match="not found"):
        write_viewer_html(tmp_path / "missing.glb", tmp_path / "viewer.html")
    with pytest.raises(Toon3dError, match="must end in .html"):
        write_viewer_html(b"glTF", tmp_path / "viewer.txt")


@pytest.mark.skipif(bundle_missing() is not None, reason=str(bundle_missing()))
def test_page_is_self_contained(tmp_path):
    glb = avatar_bytes(16)
    path = write_viewer_html(glb, tmp_path / "viewer.html", title="Ann <3")
    page = path.read_text(encoding="utf-8")
    embedded = re.search(r'<script id="toon3d-glb" type="application/octet-stream">([^<]*)</script>', page).group(1)
    assert base64.b64decode(embedded) == glb
    assert "<title>Ann &lt;3</title>" in page
    # nothing is fetched at view time: no external scripts, stylesheets or URLs to load
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=|https?://[^\s\"']*\.(js|css|glb)", page)
    assert page.lower().count("</script") == 3  # meta, glb, bundle: the bundle cannot end early
    assert "GLTFLoader" in page or "glTF" in page


@pytest.mark.skipif(bundle_missing() is not None or browser_available() is not None,
                    reason=str(bundle_missing() or browser_available()))
def test_viewer_renders_and_morph_slider_moves_the_face(tmp_path):
    path = write_viewer_html(avatar_bytes(), tmp_path / "viewer.html", title="test avatar")
    capture = capture_viewer(path, {"neutral": {}, "mouth_open": {"mouth_open": 1.0}}, width=480, height=360,
                             play_s=0.25, orbit_px=80)
    assert capture.status == "ready", capture.error
    assert capture.console_errors == []
    assert capture.morph_names == ["mouth_open", "smile"] and capture.has_animation
    save_capture_sheet(capture, tmp_path / "viewer_shots.png")
    neutral = capture.images["neutral"].astype(np.float64)
    opened = capture.images["mouth_open"].astype(np.float64)
    assert neutral.shape[2] == 3 and neutral.shape[0] > 100
    # not blank: the face covers a good part of the canvas, and its shading varies
    background = np.array([0x2B, 0x2F, 0x36], np.float64)
    face = np.abs(neutral - background).sum(-1) > 30
    assert 0.05 < face.mean() < 0.95, face.mean()
    assert neutral[face].std(0).max() > 5
    # the slider opened the mouth: pixels changed, inside the face, with dark/white mouth colours
    changed = np.abs(opened - neutral).sum(-1) > 30
    assert 0.002 < changed.mean() < 0.5, changed.mean()
    assert (changed & face).sum() >= 0.9 * changed.sum()
    # dragging on the canvas orbits the camera: the view changes
    turned = capture.images["orbit"].astype(np.float64)
    assert (np.abs(turned - opened).sum(-1) > 30).mean() > 0.02
    # Play ran the animation: the sliders followed non-zero weights
    assert capture.played_weights is not None and max(capture.played_weights.values()) > 0.05
    Image.fromarray(capture.images["mouth_open"]).save(tmp_path / "viewer_mouth_open.png")


def test_tools_dir_is_the_checkout_folder(monkeypatch):
    monkeypatch.delenv(VIEWER_DIR_ENV, raising=False)
    assert (viewer_tools_dir() / "package.json").is_file()
    assert (viewer_tools_dir() / "src" / "viewer.js").is_file()
