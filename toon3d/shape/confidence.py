"""Unsup3d's confidence network: per-pixel uncertainty of the reconstruction and of its mirror image.

An encoder-decoder predicts two positive maps (softplus) for the L1 term at full resolution and
two for the perceptual term at a quarter of it; channel 0 weighs the plain reconstruction,
channel 1 the flipped one. Where a face is not symmetric (a parting, a side light) the flipped
channel grows and the loss stops forcing symmetry there (Unsup3d, Wu et al. 2020, Eq. 6).
Only joint pretraining uses it; the shipped reconstructors do not need it at inference.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from toon3d.errors import Toon3dError


def _gn(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(max(1, min(16, channels // 2)), channels)


class ConfidenceNet(nn.Module):
    """image [B,3,S,S] in [-1,1] → (sigma_l1 [B,2,S,S], sigma_perc [B,2,S/4,S/4]), both > 0."""

    def __init__(self, size: int = 64, nf: int = 16, zdim: int = 128) -> None:
        super().__init__()
        if size < 16 or size & (size - 1):
            raise Toon3dError(f"the confidence network needs a power-of-two image size ≥ 16, got {size}")
        n_down = int(round(math.log2(size))) - 2  # down to 4×4
        widths = [nf * 2 ** min(i, 3) for i in range(n_down)]
        layers: list[nn.Module] = []
        c = 3
        for i, w in enumerate(widths):
            layers.append(nn.Conv2d(c, w, 4, 2, 1, bias=False))
            if i < n_down - 1:
                layers.append(_gn(w))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            c = w
        layers += [nn.Conv2d(c, zdim, 4, 1, 0, bias=False), nn.ReLU(inplace=True),
                   nn.ConvTranspose2d(zdim, c, 4, 1, 0, bias=False), nn.ReLU(inplace=True)]
        # Up from 4×4 to S/4, mirroring the encoder's widths.
        for w in reversed(widths[:n_down - 2]):
            layers += [nn.ConvTranspose2d(c, w, 4, 2, 1, bias=False), _gn(w), nn.ReLU(inplace=True)]
            c = w
        self.trunk = nn.Sequential(*layers)
        self.perc_head = nn.Sequential(nn.Conv2d(c, 2, 3, 1, 1, bias=False), nn.Softplus())
        self.l1_head = nn.Sequential(
            nn.ConvTranspose2d(c, nf, 4, 2, 1, bias=False), _gn(nf), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(nf, nf, 4, 2, 1, bias=False), _gn(nf), nn.ReLU(inplace=True),
            nn.Conv2d(nf, 2, 5, 1, 2, bias=False), nn.Softplus())

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """image [B,3,S,S] → (sigma_l1 [B,2,S,S], sigma_perc [B,2,S/4,S/4])."""
        h = self.trunk(image)
        return self.l1_head(h), self.perc_head(h)
