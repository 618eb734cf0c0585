"""A training run's log: TensorBoard scalars and image grids, plus figures.jsonl beside them."""

from __future__ import annotations

import json
from pathlib import Path

import torch


class RunLog:
    """TensorBoard writer in `<run>/tb` and an append-only `<run>/figures.jsonl` (rank 0 only)."""

    def __init__(self, run_dir: str | Path, enabled: bool = True):
        self.dir = Path(run_dir)
        self.enabled = enabled
        self._writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.dir / "tb"))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """Log scalar values at `step`."""
        if self._writer is None:
            return
        for key, value in values.items():
            self._writer.add_scalar(key, float(value), step)

    def images(self, step: int, tag: str, grid: torch.Tensor) -> None:
        """Log a [3,H,W] grid in [-1,1] to TensorBoard and write it as samples/<tag>_<step>.png."""
        if self._writer is None:
            return
        from toon3d.io.images import save_png

        img = (grid.detach().float().cpu().clamp(-1, 1) + 1) / 2
        self._writer.add_image(tag, img, step)
        save_png(grid, self.dir / "samples" / f"{tag}_{step:07d}.png")

    def figures(self, record: dict) -> None:
        """Append one JSON record to figures.jsonl."""
        if not self.enabled:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "figures.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
