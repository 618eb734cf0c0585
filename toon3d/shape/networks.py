"""The VLDA networks of Unsup3d/GAN2Shape and GAN2Shape's latent encoder, sized by the image size.

Depth D and albedo A are encoder-decoders (`EDDeconv`), view V and light L are plain
encoders (`Encoder`), and the latent encoder E is a residual encoder (`ResEncoder`) that maps
an image to a 512-d offset for the GAN's mapping tail (REFERENCE §6.4). GAN2Shape sizes them
by the image size S: `nf = max(4096 // S, 16)`, GroupNorm groups `8 if S ≥ 128 else 16`
per `nf`, and `log2(S) − 6` extra stride-2 stages, so every S has about the same parameter
count (13M for D/A at any S). `ShapeNetConfig.nf` overrides the width for CPU presets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from toon3d.errors import Toon3dError


def _extra_stages(size: int) -> int:
    """Stride-2 stages beyond the 64 px design (log2(S) − 6); S must be a power of two ≥ 16."""
    if size < 16 or size & (size - 1):
        raise Toon3dError(f"3D networks need a power-of-two image size ≥ 16, got {size}")
    return max(int(round(math.log2(size))) - 6, 0)


def _first_stride(size: int) -> int:
    """Below 64 px the 4-stage encoder would reach 0 px: sizes 16 and 32 drop stages instead."""
    return min(int(round(math.log2(size))) - 2, 4)


def default_nf(size: int) -> int:
    """GAN2Shape's width for image size S: max(4096 // S, 16) (64 at 64 px, 32 at 128, 16 at 256)."""
    return max(4096 // size, 16)


def default_gn_base(size: int) -> int:
    """GAN2Shape's GroupNorm group base: 8 from 128 px up, 16 below."""
    return 8 if size >= 128 else 16


def _gn(groups: int, channels: int) -> nn.GroupNorm:
    # Narrow CPU presets can have fewer channels than the reference group count.
    return nn.GroupNorm(max(1, min(groups, channels)), channels)


class EDDeconv(nn.Module):
    """Encoder-decoder image → map: [B,cin,S,S] → [B,cout,S,S] (depth: cout 1, no activation; albedo: cout 3, tanh).

    Down: 4×4 stride-2 convs doubling nf→8nf with GroupNorm + LeakyReLU(0.2) (no norm on the
    last), `extra` more for S > 64, a 4×4 valid conv to a zdim vector + ReLU. Up: the mirror with
    transposed convs, then nearest ×2, 3×3 and two 5×5 convs. No biases (the reference's).
    """

    def __init__(self, cin: int, cout: int, size: int = 64, zdim: int = 256, nf: int | None = None,
                 gn_base: int | None = None, activation: type[nn.Module] | None = nn.Tanh) -> None:
        super().__init__()
        extra = _extra_stages(size)
        n_down = _first_stride(size)
        nf = default_nf(size) if nf is None else nf
        g = default_gn_base(size) if gn_base is None else gn_base
        # GroupNorm groups scale with the width (g per nf channels), as in the reference.
        def norm(channels: int) -> nn.GroupNorm:
            return _gn(max(1, g * channels // nf), channels)

        layers: list[nn.Module] = []
        c = cin
        for i in range(n_down):
            w = nf * 2 ** i
            layers.append(nn.Conv2d(c, w, 4, 2, 1, bias=False))
            if i < n_down - 1:
                layers += [norm(w), nn.LeakyReLU(0.2, inplace=True)]
            c = w
        for _ in range(extra):
            layers += [norm(c), nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(c, c * 2, 4, 2, 1, bias=False)]
            c *= 2
        layers += [nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(c, zdim, 4, 1, 0, bias=False), nn.ReLU(inplace=True)]
        layers += [nn.ConvTranspose2d(zdim, c, 4, 1, 0, bias=False), nn.ReLU(inplace=True),
                   nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.ReLU(inplace=True)]
        for _ in range(n_down - 1 + extra):
            out = c // 2
            layers += [nn.ConvTranspose2d(c, out, 4, 2, 1, bias=False), norm(out), nn.ReLU(inplace=True),
                       nn.Conv2d(out, out, 3, 1, 1, bias=False), norm(out), nn.ReLU(inplace=True)]
            c = out
        layers += [nn.Upsample(scale_factor=2, mode="nearest"),
                   nn.Conv2d(c, c, 3, 1, 1, bias=False), norm(c), nn.ReLU(inplace=True),
                   nn.Conv2d(c, c, 5, 1, 2, bias=False), norm(c), nn.ReLU(inplace=True),
                   nn.Conv2d(c, cout, 5, 1, 2, bias=False)]
        if activation is not None:
            layers.append(activation())
        self.network = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image [B,cin,S,S] in [-1,1] → [B,cout,S,S]."""
        return self.network(image)


class Encoder(nn.Module):
    """Image → vector [B,cout] (view: 6, light: 4), tanh: 4×4 stride-2 convs + ReLU, a valid 4×4 conv, a 1×1 conv."""

    def __init__(self, cin: int, cout: int, size: int = 64, nf: int | None = None,
                 activation: type[nn.Module] | None = nn.Tanh) -> None:
        super().__init__()
        extra = _extra_stages(size)
        n_down = _first_stride(size)
        nf = default_nf(size) if nf is None else nf
        layers: list[nn.Module] = []
        c = cin
        for i in range(n_down):
            w = nf * 2 ** i
            layers += [nn.Conv2d(c, w, 4, 2, 1, bias=False), nn.ReLU(inplace=True)]
            c = w
        for _ in range(extra):
            layers += [nn.Conv2d(c, c * 2, 4, 2, 1, bias=False), nn.ReLU(inplace=True)]
            c *= 2
        layers += [nn.Conv2d(c, c, 4, 1, 0, bias=False), nn.ReLU(inplace=True),
                   nn.Conv2d(c, cout, 1, 1, 0, bias=False)]
        if activation is not None:
            layers.append(activation())
        self.network = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image [B,cin,S,S] → [B,cout]."""
        return self.network(image).reshape(image.shape[0], -1)


class ResBlockDown(nn.Module):
    """Pre-activation residual block halving the resolution: ReLU, 3×3 s2, ReLU, 3×3; shortcut avg-pool (+1×1 conv)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, 2, 1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        # The reference builds the 1×1 shortcut always but uses it only when widths differ.
        self.conv_sc = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B,cin,H,W] → [B,cout,H/2,W/2]."""
        h = self.conv2(F.relu(self.conv1(F.relu(x))))
        skip = F.avg_pool2d(x, 2)
        if self.conv_sc is not None:
            skip = self.conv_sc(skip)
        return skip + h


class ResEncoder(nn.Module):
    """GAN2Shape's latent encoder E: image [B,cin,S,S] → [B,cout] (512, no activation)."""

    def __init__(self, cin: int, cout: int, size: int = 128, nf: int = 32) -> None:
        super().__init__()
        extra = _extra_stages(size)
        n_down = _first_stride(size)
        layers: list[nn.Module] = [nn.Conv2d(cin, nf, 4, 2, 1, bias=False)]
        c = nf
        for _ in range(n_down - 1 + extra):
            layers.append(ResBlockDown(c, c * 2))
            c *= 2
        layers += [nn.ReLU(), nn.Conv2d(c, c * 2, 4, 1, 0, bias=False), nn.ReLU(),
                   nn.Conv2d(c * 2, cout, 1, 1, 0, bias=False)]
        self.network = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image [B,cin,S,S] → [B,cout]."""
        return self.network(image).reshape(image.shape[0], -1)


@dataclass(frozen=True)
class ShapeNetConfig:
    """Sizes of the five networks. None widths mean GAN2Shape's size rule (`default_nf`)."""

    size: int = 64
    nf: int | None = None          # D and A width
    nf_vl: int | None = None       # V and L width (Unsup3d used 32 at 64 px; GAN2Shape the D/A rule)
    zdim: int = 256
    nf_encoder: int = 32           # E width (GAN2Shape: 32)
    latent_dim: int = 512          # E output = the GAN's w width

    def as_dict(self) -> dict:
        """Plain dict for checkpoints and model cards."""
        return {"size": self.size, "nf": self.nf, "nf_vl": self.nf_vl, "zdim": self.zdim,
                "nf_encoder": self.nf_encoder, "latent_dim": self.latent_dim}


class ShapeNets(nn.Module):
    """The five networks of one reconstruction: depth, albedo, view, light and the latent encoder."""

    def __init__(self, config: ShapeNetConfig) -> None:
        super().__init__()
        self.config = config
        s = config.size
        nf_vl = config.nf_vl if config.nf_vl is not None else config.nf
        self.depth = EDDeconv(3, 1, s, config.zdim, config.nf, activation=None)
        self.albedo = EDDeconv(3, 3, s, config.zdim, config.nf)
        self.view = Encoder(3, 6, s, nf_vl)
        self.light = Encoder(3, 4, s, nf_vl)
        self.encoder = ResEncoder(3, config.latent_dim, s, config.nf_encoder)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """image [B,3,S,S] in [-1,1] → raw outputs: depth [B,S,S], albedo [B,3,S,S], view [B,6], light [B,4]."""
        return {"depth": self.depth(image)[:, 0], "albedo": self.albedo(image),
                "view": self.view(image), "light": self.light(image)}
