"""StyleGAN2 building blocks with rosinality/stylegan2-pytorch's parameter names and maths.

Every module keeps the reference's state-dict layout (``conv.weight`` [1,out,in,k,k],
``conv.modulation.*``, ``noise.weight``, ``activate.bias``, blur ``kernel`` buffers), so
rosinality checkpoints load with ``strict=True``.

``ModulatedConv2d`` has two numerically equivalent paths:
- ``"reference"``: the formula as written (per-sample modulated + demodulated weights, one
  grouped convolution over the batch); used for parity checks.
- ``"fast"`` (default): never builds per-sample weights for a batch; it scales the input
  by the style, runs one shared-weight convolution and scales the output by the
  demodulation coefficients (computed as ``s^2 @ sum_k W^2``). At batch 1 it modulates the
  single weight instead, which is smaller than the activations at high resolution. During
  inference StyledConv folds the activation's sqrt(2) into the conv's output scale and runs
  noise, bias and leaky ReLU in place.
The two agree to float32 rounding (~1e-6 relative).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from toon3d.nn.blur import Blur, Downsample, Upsample
from toon3d.nn.equalized import EqualConv2d, EqualLinear
from toon3d.nn.fused_act import FusedLeakyReLU, fused_leaky_relu_

CONV_PATHS = ("fast", "reference")

__all__ = [
    "PixelNorm", "ModulatedConv2d", "NoiseInjection", "ConstantInput", "StyledConv", "ToRGB",
    "ConvLayer", "ResBlock", "Blur", "Upsample", "Downsample", "CONV_PATHS",
]


class PixelNorm(nn.Module):
    """Normalise each latent to unit RMS: ``z * rsqrt(mean(z^2) + 1e-8)``; [B,D] -> [B,D]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B,D] -> [B,D]."""
        return x * torch.rsqrt(torch.mean(x * x, dim=1, keepdim=True) + 1e-8)


class ModulatedConv2d(nn.Module):
    """Style-modulated (and optionally demodulated) conv; upsample uses transposed conv + blur."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, upsample: bool = False, downsample: bool = False,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        self.eps = 1e-8
        self.kernel_size = kernel_size
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.upsample = upsample
        self.downsample = downsample
        factor = 2
        if upsample:
            # Transposed conv output is 2H+k-2; the blur pads bring it back to exactly 2H.
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)
        if downsample:
            p = (len(blur_kernel) - factor) + (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2, p // 2))
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size))
        # bias_init=1: styles start around 1 so an untrained layer behaves like a plain conv.
        self.modulation = EqualLinear(style_dim, in_channels, bias_init=1.0)
        self.demodulate = demodulate
        self.path = "fast"

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, {self.kernel_size}, upsample={self.upsample}, "
                f"downsample={self.downsample}, demodulate={self.demodulate}, path={self.path!r}")

    def _conv(self, x: torch.Tensor, weight: torch.Tensor, groups: int = 1, transposed: bool = False) -> torch.Tensor:
        """Spatial part shared by both paths; weight [groups*out, in, k, k] ([in, out, k, k] if ``transposed``)."""
        if self.upsample and transposed:
            return self.blur(F.conv_transpose2d(x, weight, stride=2))
        if self.upsample:
            k = self.kernel_size
            w = weight.view(groups, -1, self.in_channels, k, k).transpose(1, 2)
            w = w.reshape(groups * self.in_channels, -1, k, k)
            return self.blur(F.conv_transpose2d(x, w, stride=2, groups=groups))
        if self.downsample:
            return F.conv2d(self.blur(x), weight, stride=2, groups=groups)
        if self.kernel_size == 1 and groups == 1:
            return _conv1x1(x, weight[:, :, 0, 0])
        return F.conv2d(x, weight, padding=self.padding, groups=groups)

    def forward(self, x: torch.Tensor, w: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        """x [B,in,H,W], w [B,style_dim] -> gain * conv [B,out,H',W'] (H' = 2H when upsampling)."""
        if self.path == "reference":
            out = self._forward_reference(x, w)
            return out * gain if gain != 1.0 else out
        return self._forward_fast(x, w, gain)

    def _forward_reference(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        batch, in_ch, h, wd = x.shape
        style = self.modulation(w).view(batch, 1, in_ch, 1, 1)
        weight = self.scale * self.weight * style
        if self.demodulate:
            demod = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + self.eps)
            weight = weight * demod.view(batch, self.out_channels, 1, 1, 1)
        k = self.kernel_size
        weight = weight.view(batch * self.out_channels, in_ch, k, k)
        out = self._conv(x.reshape(1, batch * in_ch, h, wd), weight, groups=batch)
        return out.view(batch, self.out_channels, out.shape[2], out.shape[3])

    def _derived(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight [out,in,k,k] or, when upsampling, its contiguous transpose [in,out,k,k]; ``sum_k W^2`` [out,in]).

        Cached while the weight is unchanged and no autograd graph is being recorded.
        """
        w = self.weight[0]
        if torch.is_grad_enabled():
            return (w.transpose(0, 1) if self.upsample else w), w.square().sum([2, 3])
        key = (self.weight._version, self.weight.data_ptr(), self.weight.device, self.weight.dtype)
        if getattr(self, "_derived_key", None) != key:
            self._derived_cache = (w.transpose(0, 1).contiguous() if self.upsample else w, w.square().sum([2, 3]))
            self._derived_key = key
        return self._derived_cache

    def demod_coefficients(self, style: torch.Tensor) -> torch.Tensor:
        """``rsqrt(sum_{i,k} (scale W s)^2 + eps)`` without per-sample weights: style [B,in] -> [B,out]."""
        return torch.rsqrt((style.square() @ self._derived()[1].t()) * self.scale**2 + self.eps)

    def _forward_fast(self, x: torch.Tensor, w: torch.Tensor, gain: float) -> torch.Tensor:
        batch = x.shape[0]
        style = self.modulation(w)
        weight = self._derived()[0]
        # Per-(sample, output) factor: equalized-lr scale x demodulation x caller's gain.
        out_scale = self.demod_coefficients(style) * (self.scale * gain) if self.demodulate else None
        if batch == 1 and x.numel() >= weight.numel():
            # One sample, large activations: modulate the (smaller) weight, one pass over it.
            factor = style.view(1, -1) * (out_scale.view(-1, 1) if out_scale is not None else self.scale * gain)
            if self.upsample:
                factor = factor.t()
            return self._conv(x, weight * factor[:, :, None, None], transposed=True)
        # Batches (and tiny activations): scale the input, share one weight, scale the output.
        if out_scale is None:
            return self._conv(x * (style * (self.scale * gain)).view(batch, -1, 1, 1), weight, transposed=True)
        out = self._conv(x * style.view(batch, -1, 1, 1), weight, transposed=True)
        return out * out_scale.view(batch, -1, 1, 1)


def _conv1x1(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """1x1 conv as a matrix product (much faster than a conv with 3 outputs): x [B,I,H,W], weight [O,I] -> [B,O,H,W]."""
    b, i, h, w = x.shape
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return (x.permute(0, 2, 3, 1) @ weight.t()).permute(0, 3, 1, 2)
    # bmm with an expanded weight; `weight @ x` would copy x into a transposed layout.
    return torch.bmm(weight.expand(b, -1, -1), x.reshape(b, i, h * w)).view(b, -1, h, w)


class NoiseInjection(nn.Module):
    """Add per-pixel noise scaled by a learned scalar ``weight`` (init 0)."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """x [B,C,H,W] + weight * noise [B or 1,1,H,W] (drawn N(0,1) when None) -> [B,C,H,W]."""
        if noise is None:
            b, _, h, w = x.shape
            noise = torch.randn(b, 1, h, w, generator=generator, device=x.device, dtype=x.dtype)
        return x + self.weight * noise


class ConstantInput(nn.Module):
    """Learned constant ``input`` [1,C,size,size], repeated over the batch."""

    def __init__(self, channels: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int | torch.Tensor) -> torch.Tensor:
        """batch size (or any tensor whose dim 0 is the batch, as in the reference) -> [B,C,size,size]."""
        if isinstance(batch, torch.Tensor):
            batch = batch.shape[0]
        return self.input.expand(batch, -1, -1, -1)


class StyledConv(nn.Module):
    """ModulatedConv2d -> NoiseInjection -> bias + leaky ReLU * sqrt(2)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, style_dim: int,
                 upsample: bool = False, blur_kernel: Sequence[float] = (1, 3, 3, 1), demodulate: bool = True):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, kernel_size, style_dim,
                                    demodulate=demodulate, upsample=upsample, blur_kernel=blur_kernel)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """x [B,in,H,W], w [B,style_dim], noise [B or 1,1,H',W'] or None (random) -> [B,out,H',W']."""
        if torch.is_grad_enabled() or self.conv.path == "reference":
            return self.activate(self.noise(self.conv(x, w), noise, generator))
        # Inference: leaky_relu(a)*g == leaky_relu(g*a) for g > 0, so the sqrt(2) gain is
        # folded into the conv's output scale, the noise strength and the bias, and the rest
        # runs in place on the fresh conv output (two full-size passes fewer per layer).
        gain = self.activate.scale
        out = self.conv(x, w, gain=gain)
        if noise is None:
            b, _, h, wd = out.shape
            noise = torch.randn(b, 1, h, wd, generator=generator, device=out.device, dtype=out.dtype)
        out.add_(noise * (self.noise.weight * gain))
        return fused_leaky_relu_(out, self.activate.bias * gain, self.activate.negative_slope, 1.0)


class ToRGB(nn.Module):
    """1x1 modulated conv to RGB (no demodulation) + bias, plus the upsampled skip image."""

    def __init__(self, in_channels: int, style_dim: int, upsample: bool = True,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channels, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, w: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        """x [B,C,H,W], w [B,style_dim], skip [B,3,H/2,W/2] or None -> [B,3,H,W]."""
        out = self.conv(x, w) + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        return out


class ConvLayer(nn.Sequential):
    """[Blur] -> EqualConv2d -> [bias + leaky ReLU]; keys ``0.kernel``/``1.weight``/``2.bias`` when downsampling."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, downsample: bool = False,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1), bias: bool = True, activate: bool = True):
        layers: list[nn.Module] = []
        if downsample:
            p = (len(blur_kernel) - 2) + (kernel_size - 1)
            layers.append(Blur(blur_kernel, pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        # With an activation the bias lives in FusedLeakyReLU (reference key layout).
        layers.append(EqualConv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                                   bias=bias and not activate))
        if activate:
            layers.append(FusedLeakyReLU(out_channels, bias=bias))
        super().__init__(*layers)


class ResBlock(nn.Module):
    """Discriminator residual block: two convs (the second halves H,W) + blurred 1x1 skip, / sqrt(2)."""

    def __init__(self, in_channels: int, out_channels: int, blur_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        self.conv1 = ConvLayer(in_channels, in_channels, 3, blur_kernel=blur_kernel)
        self.conv2 = ConvLayer(in_channels, out_channels, 3, downsample=True, blur_kernel=blur_kernel)
        self.skip = ConvLayer(in_channels, out_channels, 1, downsample=True, blur_kernel=blur_kernel,
                              activate=False, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B,in,H,W] -> [B,out,H/2,W/2]."""
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2.0)
