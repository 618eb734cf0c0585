"""Run the Khronos glTF validator (npm `gltf-validator`, installed in tools/viewer) on a .glb/.gltf file."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from toon3d.errors import Toon3dError
from toon3d.io.viewer_tools import VALIDATOR_SCRIPT, find_node, install_hint, viewer_tools_dir

SEVERITIES = ("error", "warning", "info", "hint")  # the validator's severity 0..3


@dataclass
class GltfIssue:
    """One validator message: code (e.g. ACCESSOR_MIN_MISMATCH), severity name, text and JSON pointer."""

    code: str
    severity: str
    message: str
    pointer: str


@dataclass
class GltfReport:
    """The validator's verdict: every issue, plus the full JSON report it printed."""

    issues: list[GltfIssue]
    validator_version: str
    raw: dict

    def of(self, severity: str) -> list[GltfIssue]:
        """The issues of one severity ("error", "warning", "info" or "hint")."""
        return [i for i in self.issues if i.severity == severity]

    @property
    def errors(self) -> list[GltfIssue]:
        """Issues of severity error (a conforming file has none)."""
        return self.of("error")

    @property
    def warnings(self) -> list[GltfIssue]:
        """Issues of severity warning."""
        return self.of("warning")

    def summary(self) -> str:
        """One line: counts per severity and the first few codes."""
        counts = ", ".join(f"{len(self.of(s))} {s}s" for s in SEVERITIES)
        codes = ", ".join(f"{i.code} at {i.pointer}" for i in self.issues[:3])
        return f"{counts}" + (f" ({codes})" if codes else "")


def validator_available() -> str | None:
    """None when the validator can run here, else the reason it cannot (for test skips)."""
    try:
        find_node()
    except Toon3dError as err:
        return str(err)
    tool_dir = viewer_tools_dir()
    if not (tool_dir / "node_modules" / "gltf-validator" / "package.json").is_file():
        return f"gltf-validator is not installed in {tool_dir}/node_modules; {install_hint(tool_dir)}"
    return None


def validate_gltf(path: str | os.PathLike, max_issues: int = 100, timeout_s: float = 120.0) -> GltfReport:
    """Validate a .glb/.gltf file with the Khronos glTF validator; return its report (errors are not raised)."""
    path = Path(path)
    if not path.is_file():
        raise Toon3dError(f"{path} not found; check the path")
    reason = validator_available()
    if reason is not None:
        raise Toon3dError(reason)
    tool_dir = viewer_tools_dir()
    try:
        done = subprocess.run([find_node(), str(tool_dir / VALIDATOR_SCRIPT), str(path.resolve()), str(max_issues)],
                              capture_output=True, text=True, timeout=timeout_s, cwd=tool_dir)
    except subprocess.TimeoutExpired:
        raise Toon3dError(f"the glTF validator took over {timeout_s:g} s on {path}; is the file huge?") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise Toon3dError(f"the glTF validator failed on {path}: {last}")
    raw = json.loads(done.stdout)
    issues = [GltfIssue(code=m.get("code", ""), severity=SEVERITIES[int(m.get("severity", 0))],
                        message=m.get("message", ""), pointer=m.get("pointer", ""))
              for m in raw.get("issues", {}).get("messages", [])]
    return GltfReport(issues=issues, validator_version=raw.get("validatorVersion", ""), raw=raw)
