"""Open a viewer.html in headless Chromium and screenshot it: posed through its own sliders, console checked.

Uses the system Chromium (Debian's `chromium`, or $TOON3D_CHROMIUM) driven by playwright
without any browser download (`bash install.sh --with-browser` installs both). WebGL runs on
SwiftShader, Chromium's software renderer, so no GPU is needed. The page is used as a person
would: morph weights are set by moving the range inputs, the animation by the Play button.
"""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
from PIL import Image

from toon3d.errors import Toon3dError
from toon3d.io.atomic import atomic_file

CHROMIUM_ENV = "TOON3D_CHROMIUM"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Software WebGL: recent Chromium only falls back to SwiftShader when told it may.
CHROMIUM_ARGS = ("--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist")
BROWSER_HINT = "run 'bash install.sh --with-browser' (pip install playwright; apt-get install chromium)"


@dataclass
class ViewerCapture:
    """What the page did: status ("ready"/"error"), its morph names, canvas screenshots per pose [H,W,3] uint8."""

    status: str
    error: str | None
    morph_names: list[str]
    has_animation: bool
    images: dict[str, np.ndarray] = field(default_factory=dict)
    console_errors: list[str] = field(default_factory=list)
    played_weights: dict[str, float] | None = None
    seconds: float = 0.0


def find_chromium() -> str | None:
    """Path of a Chromium executable ($TOON3D_CHROMIUM, then chromium/chrome on PATH), or None."""
    override = os.environ.get(CHROMIUM_ENV)
    if override:
        return shutil.which(override)
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def browser_available() -> str | None:
    """None when a headless viewer capture can run here, else why not (for test skips)."""
    if importlib.util.find_spec("playwright") is None:
        return f"playwright is not installed; {BROWSER_HINT}"
    if find_chromium() is None:
        return f"no Chromium found (set ${CHROMIUM_ENV} or install Debian's chromium); {BROWSER_HINT}"
    return None


def _png_to_array(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def capture_viewer(html_path: str | os.PathLike, poses: Mapping[str, Mapping[str, float]] | None = None,
                   width: int = 640, height: int = 480, play_s: float = 0.0, orbit_px: int = 0,
                   timeout_s: float = 30.0) -> ViewerCapture:
    """Load viewer.html, then for each pose (label → {morph name: weight}) set the sliders and screenshot the canvas.

    Sliders not named in a pose are set to 0. With `orbit_px` ≠ 0 the mouse then drags the last
    pose that many pixels to the right (OrbitControls) and the view is stored as "orbit". With
    `play_s` > 0 and an animation in the file, Play is pressed until the animation has run that
    many seconds (of its own clock) and the weights the sliders then show are returned.
    """
    reason = browser_available()
    if reason is not None:
        raise Toon3dError(reason)
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    html_path = Path(html_path).resolve()
    if not html_path.is_file():
        raise Toon3dError(f"viewer page {html_path} not found; write it with toon3d.io.viewer.write_viewer_html")
    poses = {"neutral": {}} if poses is None else poses
    start = time.perf_counter()
    errors: list[str] = []
    timeout_ms = timeout_s * 1000.0
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=find_chromium(), headless=True, args=list(CHROMIUM_ARGS))
            try:
                page = browser.new_page(viewport={"width": width, "height": height})
                page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(html_path.as_uri())
                page.wait_for_function("window.toon3dViewer && window.toon3dViewer.status !== 'loading'",
                                       timeout=timeout_ms)
                info = page.evaluate("({status: toon3dViewer.status, error: toon3dViewer.error, "
                                     "names: toon3dViewer.morphNames, anim: toon3dViewer.hasAnimation})")
                capture = ViewerCapture(status=info["status"], error=info["error"], morph_names=list(info["names"]),
                                        has_animation=bool(info["anim"]), console_errors=errors)
                if capture.status != "ready":
                    return capture

                def settle(frame: int) -> None:
                    # The page draws only after a change: wait for a frame drawn after `frame`, then two
                    # more animation frames so it has reached the screen.
                    page.wait_for_function(f"toon3dViewer.frame > {frame}", timeout=timeout_ms)
                    page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")

                canvas = page.locator("#toon3d-canvas")
                for label, pose in poses.items():
                    unknown = sorted(set(pose) - set(capture.morph_names))
                    if unknown:
                        raise Toon3dError(f"pose '{label}' names {', '.join(unknown)}, not in the viewer's "
                                          f"morph targets {capture.morph_names}")
                    frame = page.evaluate("toon3dViewer.frame")
                    for i, name in enumerate(capture.morph_names):
                        page.locator(f"#toon3d-morph-{i}").fill(str(float(pose.get(name, 0.0))))
                    settle(frame)
                    capture.images[label] = _png_to_array(canvas.screenshot())
                if orbit_px:
                    box = canvas.bounding_box()
                    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
                    page.mouse.move(x, y)
                    page.mouse.down()
                    page.mouse.move(x + orbit_px, y, steps=8)
                    page.mouse.up()
                    # OrbitControls' damping glides on after the drag: wait until no frame is drawn.
                    last = -1
                    while (frame := page.evaluate("toon3dViewer.frame")) != last:
                        last = frame
                        page.wait_for_timeout(250)
                    capture.images["orbit"] = _png_to_array(canvas.screenshot())
                if play_s > 0 and capture.has_animation:
                    page.click("#toon3d-play")
                    # Wait on the animation's own clock, not the wall clock: software WebGL may be slow.
                    page.wait_for_function(f"toon3dViewer.animationTime >= {float(play_s)}", timeout=timeout_ms)
                    page.click("#toon3d-play")
                    capture.played_weights = {
                        name: float(page.locator(f"#toon3d-morph-{i}").input_value())
                        for i, name in enumerate(capture.morph_names)}
            finally:
                browser.close()
    except PlaywrightError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise Toon3dError(f"headless Chromium failed on {html_path.name}: {first}") from None
    capture.console_errors = errors
    capture.seconds = time.perf_counter() - start
    return capture


def save_capture_sheet(capture: ViewerCapture, path: str | os.PathLike) -> Path:
    """Write the capture's screenshots side by side (pose order) as one PNG, atomically."""
    if not capture.images:
        raise Toon3dError("the viewer capture holds no screenshots; it did not load (see its error)")
    sheet = np.concatenate(list(capture.images.values()), axis=1)
    path = Path(path)
    with atomic_file(path) as tmp:
        Image.fromarray(sheet).save(tmp, format="PNG")
    return path
