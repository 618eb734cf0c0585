"""viewer.html: one self-contained page that shows an avatar GLB with three.js, no network needed.

The page inlines three things: the GLB (base64 in <script id="toon3d-glb">), a small JSON of
settings (<script id="toon3d-meta">) and `tools/viewer/dist/viewer.js`, the three.js bundle
(GLTFLoader, OrbitControls and the UI of `tools/viewer/src/viewer.js`) that `bash install.sh`
builds with esbuild. The bundle is not in git; without it the writer says how to build it.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
from pathlib import Path

from toon3d.errors import Toon3dError
from toon3d.io.atomic import atomic_file
from toon3d.io.viewer_tools import BUNDLE, BUNDLE_SOURCES, install_hint, viewer_tools_dir

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="toon3d">
<title>{title}</title>
</head>
<body>
<div id="toon3d-app"></div>
<script id="toon3d-meta" type="application/json">{meta}</script>
<script id="toon3d-glb" type="application/octet-stream">{glb}</script>
<script>{bundle}</script>
</body>
</html>
"""


def viewer_bundle() -> str:
    """The built three.js viewer bundle (JavaScript text); a one-line error when it is missing or stale."""
    tool_dir = viewer_tools_dir()
    bundle = tool_dir / BUNDLE
    if not bundle.is_file():
        raise Toon3dError(f"the viewer's three.js bundle {bundle} is missing; {install_hint(tool_dir)}")
    built = bundle.stat().st_mtime
    stale = [s for s in BUNDLE_SOURCES if (tool_dir / s).is_file() and (tool_dir / s).stat().st_mtime > built]
    if stale:
        raise Toon3dError(f"the viewer bundle {bundle} is older than {stale[0]}; rebuild it: "
                          f"'npm run build --prefix {tool_dir}' (or 'bash install.sh')")
    return bundle.read_text(encoding="utf-8")


def _script_safe(text: str) -> str:
    """Make text safe inside a <script> element: no `</script` (or `<!--`) can end it early."""
    # `<\/` is `</` inside JS strings, template literals and regexes, the only places it can occur.
    return re.sub(r"</(script)", r"<\\/\1", text, flags=re.IGNORECASE).replace("<!--", "<\\!--")


def viewer_html(glb: bytes, title: str = "toon3d avatar", light_azimuth: float = -30.0,
                light_elevation: float = 25.0) -> str:
    """The viewer page for GLB bytes: orbit controls, a slider per morph target, light direction, animation."""
    if not isinstance(glb, (bytes, bytearray)) or glb[:4] != b"glTF":
        raise Toon3dError("viewer needs the bytes of a .glb file (binary glTF); write the avatar GLB first")
    meta = {"title": str(title), "light_azimuth": float(light_azimuth), "light_elevation": float(light_elevation)}
    meta_json = json.dumps(meta, ensure_ascii=True).replace("<", "\\u003c")
    return _PAGE.format(title=html.escape(str(title)), meta=meta_json,
                        glb=base64.b64encode(bytes(glb)).decode("ascii"), bundle=_script_safe(viewer_bundle()))


def write_viewer_html(glb: bytes | str | os.PathLike, path: str | os.PathLike, title: str = "toon3d avatar",
                      light_azimuth: float = -30.0, light_elevation: float = 25.0) -> Path:
    """Write viewer.html for a GLB (bytes or a .glb path) to `path` atomically; return the path."""
    if not isinstance(glb, (bytes, bytearray)):
        source = Path(glb)
        if not source.is_file():
            raise Toon3dError(f"GLB {source} not found; write the avatar GLB first")
        glb = source.read_bytes()
    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise Toon3dError(f"{path}: a viewer page must end in .html")
    page = viewer_html(bytes(glb), title, light_azimuth, light_elevation)
    with atomic_file(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path
