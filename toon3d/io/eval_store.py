"""Files of `toon3d eval`: per-image arrays and scores, the run's config, and the result tables.

`toon3d eval shape` is resumable image by image, so its folder is written piece by piece
(every file atomically) instead of all at once:

    DIR/config.json                          what decides the numbers (a resume must match it)
    DIR/<world>/<row>/pred/NNNN.npy          predicted canonical depth [S,S] float32
    DIR/<world>/<row>/gt/NNNN.npy            ground-truth canonical depth [S,S]
    DIR/<world>/<row>/mask/NNNN.npy          evaluation mask [S,S] in {0,1} (input view)
    DIR/<world>/<row>/pred_view/NNNN.npy     predicted depth in the input view (what SIDE/MAD score)
    DIR/<world>/<row>/gt_view/NNNN.npy       ground-truth depth in the input view
    DIR/<world>/<row>/scores/NNNN.json       {"side_x100", "mad_deg", "seconds", ...}: written last,
                                             so an image counts as done exactly when it exists
    DIR/<world>/<row>/ckpt/NNNN/             a reconstruction's training state while it runs
    DIR/<world>/images/NNNN.png              the input image
    DIR/table.md, DIR/table.json             the tables, rewritten whenever a run ends
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from toon3d.errors import Toon3dError
from toon3d.io.atomic import OUTPUT_MARKER, atomic_file

CONFIG_FILE = "config.json"
ARRAY_KINDS = ("pred", "gt", "mask", "pred_view", "gt_view")


def write_json(path: str | os.PathLike, data: dict) -> Path:
    """Write `data` as indented JSON, atomically."""
    path = Path(path)
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path


def read_json(path: str | os.PathLike) -> dict:
    """Read a JSON object; a missing or damaged file is a one-line Toon3dError."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise Toon3dError(f"{path} not found") from None
    except (OSError, ValueError) as err:
        raise Toon3dError(f"{path} is not readable JSON ({err}); delete it and run again") from None
    if not isinstance(data, dict):
        raise Toon3dError(f"{path} holds a {type(data).__name__}, not a JSON object; delete it and run again")
    return data


def save_array(path: str | os.PathLike, array: torch.Tensor | np.ndarray) -> Path:
    """Write an array as float32 .npy, atomically (the folder is created)."""
    path = Path(path)
    data = array.detach().float().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array, np.float32)
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, data.astype(np.float32), allow_pickle=False)
    return path


def load_array(path: str | os.PathLike) -> torch.Tensor:
    """Read a .npy array written by `save_array` as a float32 tensor."""
    path = Path(path)
    try:
        return torch.from_numpy(np.load(path, allow_pickle=False)).float()
    except FileNotFoundError:
        raise Toon3dError(f"{path} not found; run the evaluation again to recreate it") from None
    except (OSError, ValueError) as err:
        raise Toon3dError(f"{path} is not a readable .npy array ({err}); delete it and run again") from None


def write_tables(folder: str | os.PathLike, markdown: str, data: dict) -> tuple[Path, Path]:
    """Write `table.md` and `table.json` into `folder`, each atomically."""
    folder = Path(folder)
    with atomic_file(folder / "table.md") as tmp:
        tmp.write_text(markdown)
    return folder / "table.md", write_json(folder / "table.json", data)


def _differences(saved: dict, mine: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(saved) | set(mine)):
        a, b = saved.get(key), mine.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}")
    return out


class ShapeEvalFolder:
    """The resumable output folder of `toon3d eval shape` (layout in the module docstring)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def open(self, config: dict) -> bool:
        """Create the folder with `config`, or check an existing one was made with the same config.

        Returns True when a previous run's folder is continued. A folder of another config, or a
        non-empty folder toon3d did not write, is a one-line error.
        """
        config = json.loads(json.dumps(config))
        path = self.root / CONFIG_FILE
        if self.root.exists() and not self.root.is_dir():
            raise Toon3dError(f"{self.root} exists and is not a folder; choose another --out")
        if path.is_file():
            saved = read_json(path)
            differ = _differences(saved, config)
            if differ:
                raise Toon3dError(f"{self.root} holds an evaluation made with other settings ({', '.join(differ[:4])} "
                                  "differ); rerun with the same settings or choose another --out")
            return True
        if self.root.is_dir() and any(self.root.iterdir()):
            raise Toon3dError(f"{self.root} is not empty and holds no evaluation ({CONFIG_FILE} missing); "
                              "choose another --out")
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / OUTPUT_MARKER).write_text("written by toon3d eval\n")
        write_json(path, config)
        return False

    def row_dir(self, world: str, row: str) -> Path:
        """DIR/<world>/<row>."""
        return self.root / world / row

    def array_path(self, world: str, row: str, kind: str, index: int) -> Path:
        """DIR/<world>/<row>/<kind>/NNNN.npy for kind in ARRAY_KINDS."""
        if kind not in ARRAY_KINDS:
            raise ValueError(f"unknown array kind {kind!r}")
        return self.row_dir(world, row) / kind / f"{index:04d}.npy"

    def scores_path(self, world: str, row: str, index: int) -> Path:
        """DIR/<world>/<row>/scores/NNNN.json (its existence marks the image done)."""
        return self.row_dir(world, row) / "scores" / f"{index:04d}.json"

    def checkpoint_dir(self, world: str, row: str, index: int) -> Path:
        """DIR/<world>/<row>/ckpt/NNNN: where a running reconstruction keeps its training state."""
        return self.row_dir(world, row) / "ckpt" / f"{index:04d}"

    def image_path(self, world: str, index: int) -> Path:
        """DIR/<world>/images/NNNN.png."""
        return self.root / world / "images" / f"{index:04d}.png"

    def is_done(self, world: str, row: str, index: int) -> bool:
        """Whether image `index` of `row` has its scores (and so all its arrays)."""
        return self.scores_path(world, row, index).is_file()

    def save_result(self, world: str, row: str, index: int, arrays: dict[str, torch.Tensor], scores: dict) -> None:
        """Write the image's arrays (every kind of ARRAY_KINDS), then its scores; drop its checkpoint."""
        missing = sorted(set(ARRAY_KINDS) - set(arrays))
        if missing:
            raise ValueError(f"result of image {index} lacks {missing}")
        for kind in ARRAY_KINDS:
            save_array(self.array_path(world, row, kind, index), arrays[kind])
        write_json(self.scores_path(world, row, index), scores)
        ckpt = self.checkpoint_dir(world, row, index)
        if ckpt.is_dir():
            shutil.rmtree(ckpt, ignore_errors=True)

    def load_scores(self, world: str, row: str, indices: list[int]) -> list[dict]:
        """Scores of the done images among `indices`, in order (missing ones are skipped)."""
        return [read_json(self.scores_path(world, row, i)) for i in indices if self.is_done(world, row, i)]

    def load(self, world: str, row: str, kind: str, index: int) -> torch.Tensor:
        """One saved array [S,S]."""
        return load_array(self.array_path(world, row, kind, index))
