"""Equalized-learning-rate layers (Karras et al.): weights stored N(0,1), scaled at run time."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from toon3d.nn.fused_act import fused_leaky_relu


class EqualLinear(nn.Module):
    """Linear layer with run-time weight scale ``lr_mul/sqrt(in)`` and bias scale ``lr_mul``.

    The stored weight is ``randn/lr_mul`` so that the effective initial weight has unit
    variance / fan-in while Adam sees a ``lr_mul``-times smaller learning rate.
    """

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True, bias_init: float = 0.0,
                 lr_mul: float = 1.0, activation: str | None = None):
        super().__init__()
        if activation not in (None, "fused_lrelu"):
            raise ValueError(f"activation must be None or 'fused_lrelu', got {activation!r}")
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.activation = activation
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B,in] -> [B,out]."""
        bias = self.bias * self.lr_mul if self.bias is not None else None
        if self.activation:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), bias)
        return F.linear(x, self.weight * self.scale, bias)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, lr_mul={self.lr_mul}, activation={self.activation}"


class EqualConv2d(nn.Module):
    """Conv2d with run-time weight scale ``1/sqrt(in*k*k)``; weight [out,in,k,k], bias [out]."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.stride = stride
        self.padding = padding
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B,in,H,W] -> [B,out,H',W']."""
        return F.conv2d(x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding)

    def extra_repr(self) -> str:
        w = self.weight.shape
        return f"{w[1]}, {w[0]}, {w[2]}, stride={self.stride}, padding={self.padding}"
