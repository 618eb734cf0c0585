"""LPIPS-VGG (Zhang et al. 2018, v0.1 "net-lin"): the perceptual distance rosinality's projector uses.

Two user-supplied pieces, nothing downloaded:
  - the VGG16 ImageNet backbone, torchvision's `vgg16-397923af.pth` (registry entry `vgg16`),
    read into `VGG16Features`, a module with torchvision's key names (`features.0.weight`, ...)
    so the file loads as is, without importing torchvision (which does not load beside the
    CPU torch here, see ASSETS);
  - the five linear heads, `vgg.pth` of the LPIPS v0.1 release (registry entry `lpips_vgg`; it
    ships in the `lpips` wheel), keys `lin{k}.model.1.weight` of shape [1,C_k,1,1].

Distance for images x, y [B,3,H,W] in [-1,1]: both are shifted and scaled per channel
(shift −.030, −.088, −.188; scale .458, .448, .450), run through VGG16 up to relu1_2,
relu2_2, relu3_3, relu4_3 and relu5_3; each activation is divided by its L2 norm over channels
(+1e-10), the squared difference is weighted per channel by the head (a 1×1 conv without
bias), averaged over space, and the five layers are summed → [B].
"""

from __future__ import annotations

import os

import torch
from torch import nn

from toon3d.errors import Toon3dError

# torchvision's VGG16 `features`: conv widths, "M" = 2x2 max-pool; ReLU after every conv.
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
# Indices in `features` of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (LPIPS's five taps).
LPIPS_TAPS = (3, 8, 15, 22, 29)
LPIPS_CHANNELS = (64, 128, 256, 512, 512)
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
NORM_EPS = 1e-10


class VGG16Features(nn.Module):
    """torchvision's VGG16 `features` (same module indices and key names); `forward` returns chosen activations."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in VGG16_LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU(inplace=False)]
                channels = item
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, taps: tuple[int, ...] = LPIPS_TAPS) -> list[torch.Tensor]:
        """x [B,3,H,W] (ImageNet-normalised by the caller) → the outputs of `features[i]` for i in taps."""
        out = []
        last = max(taps)
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in taps:
                out.append(x)
            if i == last:
                break
        return out


def vgg16_from_state(state: dict, name: str = "vgg16") -> VGG16Features:
    """`VGG16Features` from a torchvision VGG16 state dict (its `classifier.*` keys are ignored)."""
    if not isinstance(state, dict):
        raise Toon3dError(f"{name} holds a {type(state).__name__}, not a VGG16 state dict; pass vgg16-397923af.pth")
    net = VGG16Features()
    wanted = net.state_dict()
    features = {k: v for k, v in state.items() if isinstance(k, str) and k.startswith("features.")}
    missing = sorted(set(wanted) - set(features))
    if missing:
        raise Toon3dError(f"{name} is not a torchvision VGG16 state dict (missing {missing[0]} and "
                          f"{len(missing) - 1} more); pass vgg16-397923af.pth")
    for key, value in features.items():
        if key not in wanted or tuple(value.shape) != tuple(wanted[key].shape):
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            expects = tuple(wanted[key].shape) if key in wanted else "no such key"
            raise Toon3dError(f"{name}: {key} has shape {got}, VGG16 expects {expects}; pass vgg16-397923af.pth")
    net.load_state_dict({k: v.float() for k, v in features.items()}, strict=True)
    return net.eval().requires_grad_(False)


def heads_from_state(state: dict, name: str = "lpips heads") -> nn.ModuleList:
    """The five LPIPS linear heads (1×1 convs, no bias) from the v0.1 `vgg.pth` state dict."""
    if not isinstance(state, dict):
        raise Toon3dError(f"{name} holds a {type(state).__name__}, not the LPIPS heads; "
                          "pass lpips' weights/v0.1/vgg.pth")
    heads = nn.ModuleList()
    for k, channels in enumerate(LPIPS_CHANNELS):
        key = f"lin{k}.model.1.weight"
        weight = state.get(key)
        if not isinstance(weight, torch.Tensor) or tuple(weight.shape) != (1, channels, 1, 1):
            got = tuple(weight.shape) if isinstance(weight, torch.Tensor) else "missing"
            raise Toon3dError(f"{name}: {key} is {got}, expected (1, {channels}, 1, 1); "
                              "pass the LPIPS v0.1 vgg.pth (lpips wheel, weights/v0.1/vgg.pth)")
        conv = nn.Conv2d(channels, 1, 1, bias=False)
        with torch.no_grad():
            conv.weight.copy_(weight.float())
        heads.append(conv)
    return heads.requires_grad_(False)


def normalize_channels(x: torch.Tensor) -> torch.Tensor:
    """x [B,C,H,W] divided by its L2 norm over C (+1e-10), as LPIPS does."""
    return x / (x.pow(2).sum(1, keepdim=True).sqrt() + NORM_EPS)


class LPIPS(nn.Module):
    """LPIPS v0.1 net-lin VGG: `forward(x, y)` with x, y [B,3,H,W] in [-1,1] → distances [B]."""

    def __init__(self, vgg: VGG16Features, heads: nn.ModuleList) -> None:
        super().__init__()
        self.vgg = vgg
        self.heads = heads
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x [B,3,H,W] in [-1,1] → the five channel-normalised VGG activations."""
        return [normalize_channels(f) for f in self.vgg((x - self.shift) / self.scale)]

    def distance(self, fx: list[torch.Tensor], fy: list[torch.Tensor]) -> torch.Tensor:
        """Distance [B] between two lists of `features` (fy may hold one sample for the whole batch)."""
        total = 0.0
        for head, a, b in zip(self.heads, fx, fy):
            total = total + head((a - b).pow(2)).mean((1, 2, 3))
        return total

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.distance(self.features(x), self.features(y))


def load_lpips_vgg(vgg_path: str | os.PathLike | None = None,
                   heads_path: str | os.PathLike | None = None) -> LPIPS:
    """LPIPS-VGG from the registry files `vgg16` and `lpips_vgg` (at the given paths or the usual places);
    a missing file is a one-line Toon3dError that says where to get it."""
    from toon3d import models
    from toon3d.io.checkpoint import load_torch_file

    vgg_file = models.require("vgg16", vgg_path)
    heads_file = models.require("lpips_vgg", heads_path)
    return LPIPS(vgg16_from_state(load_torch_file(vgg_file), str(vgg_file)),
                 heads_from_state(load_torch_file(heads_file), str(heads_file)))


def lpips_available(vgg_path: str | os.PathLike | None = None,
                    heads_path: str | os.PathLike | None = None) -> bool:
    """True when both LPIPS-VGG files are found (explicit paths must exist)."""
    from toon3d import models

    vgg = os.path.isfile(vgg_path) if vgg_path is not None else models.find("vgg16") is not None
    heads = os.path.isfile(heads_path) if heads_path is not None else models.find("lpips_vgg") is not None
    return vgg and heads

