"""Where the Node.js side of the viewer lives: `tools/viewer` (three.js bundle, glTF validator) and `node`.

`bash install.sh` runs `npm ci` there and builds `dist/viewer.js`; $TOON3D_VIEWER_DIR points
elsewhere (an installed package has no tools folder) and $TOON3D_NODE picks the node binary.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from toon3d.errors import Toon3dError

VIEWER_DIR_ENV = "TOON3D_VIEWER_DIR"
NODE_ENV = "TOON3D_NODE"
BUNDLE = Path("dist") / "viewer.js"
BUNDLE_SOURCES = (Path("src") / "viewer.js", Path("package-lock.json"))
VALIDATOR_SCRIPT = "validate.cjs"


def viewer_tools_dir() -> Path:
    """The `tools/viewer` folder of this checkout, or $TOON3D_VIEWER_DIR."""
    override = os.environ.get(VIEWER_DIR_ENV)
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2] / "tools" / "viewer"


def install_hint(tool_dir: Path) -> str:
    """The command that installs the viewer tools (for error messages)."""
    return f"run 'bash install.sh' (or 'npm ci --prefix {tool_dir} && npm run build --prefix {tool_dir}')"


def find_node() -> str:
    """Path of the Node.js executable ($TOON3D_NODE, else `node` on PATH); one-line error if absent."""
    candidate = os.environ.get(NODE_ENV) or "node"
    found = shutil.which(candidate)
    if found is None:
        raise Toon3dError(f"Node.js ('{candidate}') not found; the glTF validator needs Node.js >= 18: "
                          "install it (apt-get install nodejs npm), then run 'bash install.sh'")
    return found
