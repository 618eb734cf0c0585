"""The run folder rules every `toon3d train-*` command shares: start fresh or resume, and the command history."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from toon3d.errors import Toon3dError


def check_run_folder(out: Path, resume: bool, state_name: str = "state.pt") -> None:
    """One-line errors: --resume without `out/state_name`, or a new run into a non-empty `out`."""
    if resume:
        if not (out / state_name).is_file():
            raise Toon3dError(f"nothing to resume in {out} (no {state_name}); drop --resume to start a new run")
    elif out.exists() and any(out.iterdir()):
        raise Toon3dError(f"{out} is not empty; pass --resume to continue that run or choose a new --out")


def command_history(out: Path, resume: bool) -> tuple[str, list[str]]:
    """(this command line, every start and resume of the run in order, this one last) from out/config.json."""
    command = "toon3d " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    record_path = out / "config.json"
    earlier = json.loads(record_path.read_text()).get("commands", []) if resume and record_path.is_file() else []
    return command, [*earlier, command]
