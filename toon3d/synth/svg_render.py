"""Rasterising SVG markup to RGB arrays with resvg, cropped to a chosen square of the drawing."""

from __future__ import annotations

import io
import re

import numpy as np
from PIL import Image

_SVG_OPEN_TAG = re.compile(r"<svg\b[^>]*>", re.IGNORECASE)


def reframe_svg(svg: str, box: tuple[float, float, float], size: int) -> str:
    """Replace the root `<svg>` tag so the square `box` = (x0, y0, side) in drawing units fills size×size pixels."""
    match = _SVG_OPEN_TAG.search(svg)
    if match is None:
        raise ValueError("the markup has no <svg> root element")
    x0, y0, side = box
    root = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" '
            f'viewBox="{x0:.4f} {y0:.4f} {side:.4f} {side:.4f}" preserveAspectRatio="none">')
    return svg[:match.start()] + root + svg[match.end():]


def render_svg(svg: str, background: str = "#ffffff") -> np.ndarray:
    """Rasterise SVG markup at its own width/height onto a plain `background` → [H,W,3] uint8."""
    import resvg_py

    # System fonts are never used by the faces and loading them costs ~50 ms per call.
    png = resvg_py.svg_to_bytes(svg_string=svg, background=background, skip_system_fonts=True)
    with Image.open(io.BytesIO(bytes(png))) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)
