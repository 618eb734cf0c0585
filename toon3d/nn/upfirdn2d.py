"""Upsample, FIR-filter, downsample (upfirdn2d) in plain PyTorch, with StyleGAN2's semantics.

The semantics are those of rosinality/stylegan2-pytorch's native CPU op: insert ``up - 1``
zeros after every sample, pad by ``pad`` (negative values crop), convolve with the kernel
(a true convolution, i.e. correlation with the flipped kernel), keep every ``down``-th
sample. Output size per axis: ``(in * up + pad0 + pad1 - k + down) // down``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def make_blur_kernel(taps: Sequence[float], gain: float = 1.0) -> torch.Tensor:
    """Separable 2-D FIR kernel from 1-D taps, normalised to sum ``gain``: [k,k] float32."""
    k = torch.as_tensor(list(taps), dtype=torch.float32)
    if k.ndim != 1 or k.numel() == 0:
        raise ValueError(f"blur kernel taps must be a non-empty 1-D sequence, got {taps!r}")
    k2 = k[None, :] * k[:, None]
    return k2 / k2.sum() * gain


def _normalise_pad(pad: Sequence[int]) -> tuple[int, int, int, int]:
    # (p0, p1) pads both axes alike; (x0, x1, y0, y1) as in the reference op.
    if len(pad) == 2:
        return int(pad[0]), int(pad[1]), int(pad[0]), int(pad[1])
    if len(pad) == 4:
        return int(pad[0]), int(pad[1]), int(pad[2]), int(pad[3])
    raise ValueError(f"pad must have 2 or 4 entries, got {pad!r}")


def _depthwise(kernel: torch.Tensor, channels: int, like: torch.Tensor) -> torch.Tensor:
    return kernel.to(dtype=like.dtype, device=like.device)[None, None].expand(channels, 1, *kernel.shape)


def upfirdn2d(
    x: torch.Tensor,
    kernel: torch.Tensor,
    up: int = 1,
    down: int = 1,
    pad: Sequence[int] = (0, 0),
) -> torch.Tensor:
    """Upsample by ``up``, FIR-filter with ``kernel`` [kh,kw], downsample by ``down``: [B,C,H,W] -> [B,C,H',W']."""
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects [B,C,H,W], got shape {tuple(x.shape)}")
    if up < 1 or down < 1:
        raise ValueError(f"up and down must be >= 1, got up={up}, down={down}")
    x0, x1, y0, y1 = _normalise_pad(pad)
    kh, kw = kernel.shape
    channels = x.shape[1]
    if up > 1:
        # A depthwise transposed conv with stride `up` is zero-insertion + full convolution
        # (pad k-1 before, k-up after) without materialising the zeros; F.pad then moves the
        # window to the requested pads (negative values crop).
        weight = _depthwise(kernel, channels, x)
        pads = [x0 - (kw - 1), x1 - (kw - up), y0 - (kh - 1), y1 - (kh - up)]
        if pads[0] == pads[1] <= 0 and pads[2] == pads[3] <= 0:
            # Equal crops on both sides are the transposed conv's own padding (no extra copy).
            out = F.conv_transpose2d(x, weight, stride=up, groups=channels, padding=(-pads[2], -pads[0]))
        else:
            out = F.pad(F.conv_transpose2d(x, weight, stride=up, groups=channels), pads)
        if down > 1:
            out = out[:, :, ::down, ::down]
        return out
    weight = _depthwise(torch.flip(kernel, [0, 1]), channels, x)
    if x0 == x1 >= 0 and y0 == y1 >= 0:
        # Symmetric zero padding is the conv's own padding (no padded copy of x).
        return F.conv2d(x, weight, stride=down, groups=channels, padding=(y0, x0))
    return F.conv2d(F.pad(x, [x0, x1, y0, y1]), weight, stride=down, groups=channels)


def upfirdn2d_naive(
    x: torch.Tensor,
    kernel: torch.Tensor,
    up: int = 1,
    down: int = 1,
    pad: Sequence[int] = (0, 0),
) -> torch.Tensor:
    """The definition step by step (zero-insert, pad/crop, convolve, decimate); slow, for tests: [B,C,H,W]."""
    x0, x1, y0, y1 = _normalise_pad(pad)
    b, c, h, w = x.shape
    kh, kw = kernel.shape
    z = x.new_zeros(b, c, h * up, w * up)
    z[:, :, ::up, ::up] = x
    z = F.pad(z, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    z = z[:, :, max(-y0, 0) : z.shape[2] - max(-y1, 0), max(-x0, 0) : z.shape[3] - max(-x1, 0)]
    flipped = torch.flip(kernel, [0, 1]).to(x)
    out_h = z.shape[2] - kh + 1
    out_w = z.shape[3] - kw + 1
    out = x.new_zeros(b, c, out_h, out_w)
    for i in range(kh):
        for j in range(kw):
            out = out + flipped[i, j] * z[:, :, i : i + out_h, j : j + out_w]
    return out[:, :, ::down, ::down]
