"""Ship a trained run as a built-in model: fp16 weights + model card into toon3d/weights.

    python tools/ship_builtin.py --name base --run /work/runs/base-decoder \
        --figures figures/base.json [--discriminator RUN/discriminator.safetensors] [--blend '{"swap_resolution": 16}']

--run may be given several times (the phases in order: e.g. the decoder run, then a `toon3d train`
run); the last run's generator.safetensors is shipped. Each phase's command, iterations, training
minutes and data are read from the run folder (config.json + state.pt).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from toon3d.models import WEIGHTS_DIR
from toon3d.train.ship import ship_generator


def phase_of(run: Path) -> dict:
    """{"what", "command", "iterations", "minutes", "data"} of one run folder."""
    record = json.loads((run / "config.json").read_text())
    state = torch.load(run / "state.pt", weights_only=True, map_location="cpu")
    kind = state.get("kind", "")
    what = {"toon3d-decoder-run": "SynFace regression decoder (toon3d train-decoder)",
            "toon3d-gan-run": "adversarial (toon3d train / finetune)"}.get(kind, kind)
    commands = record.get("commands") or [record.get("command", "?")]
    phase = {"what": what, "command": " && ".join(commands), "iterations": int(state["iteration"]),
             "minutes": round(float(state["train_seconds"]) / 60, 1),
             "data": record.get("data", "SynFace, rendered on the fly")}
    if kind == "toon3d-decoder-run":
        # which SynFace views the decoder learned (benchmarks compare it against the same views)
        phase["anchor_eyes"] = bool(record.get("config", {}).get("anchor_eyes", False))
    return phase


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--run", action="append", required=True, type=Path)
    parser.add_argument("--figures", type=Path, default=None, help="JSON of measured figures")
    parser.add_argument("--discriminator", default=None)
    parser.add_argument("--blend", default=None, help="JSON blend settings stored in the card (styles)")
    parser.add_argument("--notes", default="", help="Markdown paragraph at the top of the card")
    parser.add_argument("--weights-dir", type=Path, default=WEIGHTS_DIR)
    args = parser.parse_args()
    phases = [phase_of(r) for r in args.run]
    figures = json.loads(args.figures.read_text()) if args.figures else {}
    extra = {"blend": json.loads(args.blend)} if args.blend else {}
    notes = Path(args.notes).read_text() if args.notes and Path(args.notes).is_file() else args.notes
    written = ship_generator(args.run[-1] / "generator.safetensors", args.name, args.weights_dir, phases, figures,
                             extra, args.discriminator, notes)
    for path in written:
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
