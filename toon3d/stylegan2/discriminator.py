"""StyleGAN2 residual discriminator with rosinality/stylegan2-pytorch's state-dict layout."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from toon3d.nn.equalized import EqualLinear
from toon3d.stylegan2.generator import check_size, stylegan2_channels
from toon3d.stylegan2.layers import ConvLayer, ResBlock


def minibatch_stddev(x: torch.Tensor, group_size: int = 4, n_features: int = 1) -> torch.Tensor:
    """Append the group std-dev feature map(s): x [B,C,H,W] -> [B,C+n_features,H,W].

    The group axis is the *outer* batch split (reference layout): with G = min(B, group_size),
    sample b is grouped with b + k*B/G, so B must be divisible by G.
    """
    b, c, h, w = x.shape
    group = min(b, group_size)
    if b % group:
        raise ValueError(f"minibatch stddev: batch size {b} must be divisible by min(batch, {group_size}) = {group}")
    y = x.view(group, -1, n_features, c // n_features, h, w)
    y = torch.sqrt(y.var(0, unbiased=False) + 1e-8)
    y = y.mean([2, 3, 4], keepdim=True).squeeze(2)
    return torch.cat([x, y.repeat(group, 1, h, w)], 1)


class Discriminator(nn.Module):
    """FromRGB 1x1 -> ResBlocks down to 4x4 -> minibatch stddev -> 3x3 conv -> 2 linear layers."""

    def __init__(self, size: int, channel_multiplier: int = 2, blur_kernel: Sequence[float] = (1, 3, 3, 1),
                 channel_max: int = 512):
        super().__init__()
        log_size = check_size(size)
        self.size = size
        self._config = {"size": size, "channel_multiplier": channel_multiplier,
                        "blur_kernel": [float(t) for t in blur_kernel], "channel_max": channel_max}
        ch = stylegan2_channels(size, channel_multiplier, channel_max)
        convs: list[nn.Module] = [ConvLayer(3, ch[size], 1)]
        in_ch = ch[size]
        for i in range(log_size, 2, -1):
            out_ch = ch[2 ** (i - 1)]
            convs.append(ResBlock(in_ch, out_ch, blur_kernel))
            in_ch = out_ch
        self.convs = nn.Sequential(*convs)
        self.stddev_group = 4
        self.stddev_feat = 1
        self.final_conv = ConvLayer(in_ch + 1, ch[4], 3)
        self.final_linear = nn.Sequential(
            EqualLinear(ch[4] * 4 * 4, ch[4], activation="fused_lrelu"),
            EqualLinear(ch[4], 1),
        )

    @property
    def config(self) -> dict:
        """Constructor arguments as a JSON-serialisable dict."""
        return dict(self._config, blur_kernel=list(self._config["blur_kernel"]))

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != self.size or x.shape[3] != self.size:
            raise ValueError(f"discriminator expects [B,3,{self.size},{self.size}], got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images x [B,3,S,S] in [-1,1] -> realness logits [B,1]."""
        self._check_input(x)
        out = minibatch_stddev(self.convs(x), self.stddev_group, self.stddev_feat)
        out = self.final_conv(out)
        return self.final_linear(out.reshape(out.shape[0], -1))

    def features(self, x: torch.Tensor, n_blocks: int) -> list[torch.Tensor]:
        """Outputs of ResBlocks convs[1..n_blocks] for x [B,3,S,S]: list of [B,C_i,S/2^i,S/2^i]."""
        self._check_input(x)
        if not 1 <= n_blocks <= len(self.convs) - 1:
            raise ValueError(f"n_blocks must be in 1..{len(self.convs) - 1}, got {n_blocks}")
        out = self.convs[0](x)
        feats = []
        for block in list(self.convs)[1 : n_blocks + 1]:
            out = block(out)
            feats.append(out)
        return feats
