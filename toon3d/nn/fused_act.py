"""Bias + leaky ReLU scaled by sqrt(2): StyleGAN2's "fused" activation, in plain PyTorch."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# sqrt(2) keeps the activations' second moment roughly unchanged through leaky ReLU (the
# StyleGAN2 "gain"); the same constant is used by the reference CUDA kernel.
LRELU_GAIN = math.sqrt(2.0)


def fused_leaky_relu(
    x: torch.Tensor, bias: torch.Tensor | None = None, negative_slope: float = 0.2, scale: float = LRELU_GAIN
) -> torch.Tensor:
    """``leaky_relu(x + bias, 0.2) * sqrt(2)``, bias [C] on dim 1: x [B,C,...] -> same shape."""
    if bias is not None:
        x = x + bias.view(1, -1, *([1] * (x.ndim - 2)))
    return F.leaky_relu(x, negative_slope=negative_slope) * scale


def fused_leaky_relu_(x: torch.Tensor, bias: torch.Tensor | None = None, negative_slope: float = 0.2,
                      scale: float = LRELU_GAIN) -> torch.Tensor:
    """In-place variant for inference (no autograd): x [B,C,...] overwritten and returned."""
    if bias is not None:
        x.add_(bias.view(1, -1, *([1] * (x.ndim - 2))))
    F.leaky_relu_(x, negative_slope)
    return x.mul_(scale) if scale != 1.0 else x


class FusedLeakyReLU(nn.Module):
    """Learned per-channel bias followed by leaky ReLU * sqrt(2); parameter ``bias`` [C]."""

    def __init__(self, channels: int, bias: bool = True, negative_slope: float = 0.2, scale: float = LRELU_GAIN):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None
        self.negative_slope = negative_slope
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B,C,H,W] or [B,C] -> same shape."""
        return fused_leaky_relu(x, self.bias, self.negative_slope, self.scale)
