"""Copy an avatar's sheet and turntable into docs/images for the README, with a frame sheet of the turntable.

    .venv/bin/python tools/avatar_readme_images.py out/avatar --name avatar_seed0

Writes docs/images/<name>_sheet.png (the avatar's sheet.png), <name>_turntable.gif, and
<name>_turntable_sheet.png: every third frame of the GIF, each scaled to 64 px (nearest), in rows
of six on white.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def frame_sheet(gif: Path, out: Path, step: int = 3, per_row: int = 6, size: int = 64, gap: int = 2) -> None:
    """Every `step`-th frame of `gif` tiled `per_row` wide on white, each `size` px."""
    with Image.open(gif) as im:
        frames = []
        for k in range(0, im.n_frames, step):
            im.seek(k)
            frames.append(im.convert("RGB").resize((size, size), Image.NEAREST))
    rows = (len(frames) + per_row - 1) // per_row
    sheet = Image.new("RGB", (per_row * size + (per_row - 1) * gap, rows * size + (rows - 1) * gap), "white")
    for i, frame in enumerate(frames):
        sheet.paste(frame, ((i % per_row) * (size + gap), (i // per_row) * (size + gap)))
    sheet.save(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("avatar", help="a toon3d avatar output folder")
    parser.add_argument("--name", default="avatar_seed0")
    args = parser.parse_args()
    src, images = Path(args.avatar), REPO / "docs" / "images"
    shutil.copyfile(src / "sheet.png", images / f"{args.name}_sheet.png")
    shutil.copyfile(src / "turntable.gif", images / f"{args.name}_turntable.gif")
    frame_sheet(src / "turntable.gif", images / f"{args.name}_turntable_sheet.png")
    print(f"wrote docs/images/{args.name}_sheet.png, _turntable.gif, _turntable_sheet.png")


if __name__ == "__main__":
    main()
