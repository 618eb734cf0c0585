"""A seeded, resumable stream of training batches from a `FaceDataset`.

Each epoch visits the dataset in a permutation drawn from (seed, epoch); with several
processes, rank r takes positions r, r+W, r+2W, ... of that permutation, so the ranks see
disjoint images. The stream's state is (epoch, position): a resumed run continues with exactly
the batches an uninterrupted run would have drawn. Small datasets are decoded once and kept
in memory (uint8), since re-decoding PNGs costs more than a 64 px training step's data needs.
"""

from __future__ import annotations

import numpy as np
import torch

from toon3d.data.dataset import FaceDataset
from toon3d.errors import Toon3dError

CACHE_LIMIT_BYTES = 2 << 30


class ImageStream:
    """Batches of images [B,3,S,S] in [-1,1] from `dataset`, in seeded epoch order."""

    def __init__(self, dataset: FaceDataset, batch: int, seed: int = 0, rank: int = 0, world: int = 1,
                 cache: bool | None = None):
        if len(dataset) < batch * world:
            raise Toon3dError(f"dataset {dataset.root} holds {len(dataset)} images, fewer than one batch of "
                              f"{batch * world}; add images or lower --batch")
        self.dataset = dataset
        self.batch = batch
        self.seed = int(seed)
        self.rank, self.world = rank, world
        self.epoch = 0
        self.position = 0  # index into this rank's share of the epoch's permutation
        bytes_needed = len(dataset) * 3 * dataset.size * dataset.size * 2  # both flips
        self.cache_enabled = bytes_needed <= CACHE_LIMIT_BYTES if cache is None else cache
        self._cache: dict[tuple[int, bool], torch.Tensor] = {}
        self._order = self._permutation(self.epoch)

    def _permutation(self, epoch: int) -> np.ndarray:
        perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.dataset))
        share = perm[self.rank::self.world]
        # Every rank takes the same number of batches per epoch.
        per_rank = (len(self.dataset) // self.world) // self.batch * self.batch
        return share[:per_rank]

    def _image(self, index: int) -> torch.Tensor:
        key = (int(index), self.dataset.flipped(int(index)))
        if key in self._cache:
            return self._cache[key].float().div_(127.5).sub_(1.0)
        image = self.dataset[int(index)]["image"]
        if self.cache_enabled:
            self._cache[key] = ((image + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
            return self._cache[key].float().div_(127.5).sub_(1.0)
        return image

    def next(self) -> torch.Tensor:
        """The next batch [B,3,S,S] in [-1,1]."""
        if self.position + self.batch > len(self._order):
            self.epoch += 1
            self.position = 0
            self._order = self._permutation(self.epoch)
        self.dataset.set_epoch(self.epoch)
        indices = self._order[self.position:self.position + self.batch]
        self.position += self.batch
        return torch.stack([self._image(i) for i in indices])

    def state_dict(self) -> dict:
        """(epoch, position) — all a resume needs."""
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a `state_dict()`."""
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self._order = self._permutation(self.epoch)
