"""FIR resampling modules used by StyleGAN2: Blur, Upsample (x2), Downsample (/2)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from toon3d.nn.upfirdn2d import make_blur_kernel, upfirdn2d


class Blur(nn.Module):
    """FIR low-pass with pads; buffer ``kernel`` [k,k] (times factor**2 after an upsampling conv)."""

    def __init__(self, taps: Sequence[float], pad: tuple[int, int], upsample_factor: int = 1):
        super().__init__()
        self.register_buffer("kernel", make_blur_kernel(taps, gain=float(upsample_factor**2)))
        self.pad = tuple(pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B,C,H,W] -> [B,C,H+p0+p1-k+1,W+p0+p1-k+1]."""
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """2x FIR upsampling (zero-insert + filter with gain 4); buffer ``kernel`` [k,k]."""

    def __init__(self, taps: Sequence[float], factor: int = 2):
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_blur_kernel(taps, gain=float(factor**2)))
        p = len(taps) - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B,C,H,W] -> [B,C,2H,2W]."""
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class Downsample(nn.Module):
    """2x FIR downsampling (filter then decimate); buffer ``kernel`` [k,k]."""

    def __init__(self, taps: Sequence[float], factor: int = 2):
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_blur_kernel(taps))
        p = len(taps) - factor
        self.pad = ((p + 1) // 2, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B,C,H,W] -> [B,C,H/2,W/2]."""
        return upfirdn2d(x, self.kernel, down=self.factor, pad=self.pad)
