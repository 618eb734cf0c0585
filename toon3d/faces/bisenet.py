"""BiSeNet face parsing (19 CelebAMask-HQ classes), loading face-parsing.PyTorch's `79999_iter.pth`.

Written here from the BiSeNet paper and the key layout of zllrunning/face-parsing.PyTorch's
checkpoint (no torchvision; nothing downloaded):

  - context path `cp`: a ResNet-18 `cp.resnet` (conv1 7×7/2, bn1, ReLU, max pool 3×3/2, layer1..4
    of two basic blocks, 64/128/256/512 channels) giving 1/8, 1/16, 1/32 features; the global
    context `cp.conv_avg` (1×1 ConvBNReLU on the 1/32 global average); attention refinement
    modules `cp.arm32`, `cp.arm16` (ConvBNReLU 3×3, then a channel attention: global average →
    1×1 conv → BN → sigmoid); heads `cp.conv_head32`, `cp.conv_head16` after nearest 2× upsampling;
  - spatial path: in `79999_iter.pth` the separate spatial path (three stride-2 ConvBNReLUs) was
    replaced by the ResNet's 1/8 feature (the checkpoint has no `sp.*` keys), so that is the
    default (`spatial_path="resnet"`); `spatial_path="conv"` builds the paper's own `sp` path for
    checkpoints that have one;
  - feature fusion `ffm` (concatenate, 1×1 ConvBNReLU, squeeze-excite attention, feat·att + feat);
  - outputs `conv_out` (on the fusion) and the auxiliary `conv_out16`, `conv_out32`, each a
    3×3 ConvBNReLU and a 1×1 conv to 19 classes, bilinearly upsampled (align_corners=True).

Inputs: `BiSeNetParser.parse` takes toon3d images [B,3,S,S] in [-1,1], resizes them bilinearly
to 512 px and normalises with ImageNet's mean/std, as face-parsing.PyTorch's test script feeds
its network (`preprocess="imagenet"`); the seed code resized with nearest neighbours and fed
[-1,1] without normalisation (`preprocess="seed"`, REFERENCE §1.3), which reproduces that. The class
probabilities are area-averaged back to S before the argmax, so small images lose no class to
nearest-neighbour sampling.

Weights: user-supplied (registry entry `bisenet`), loaded with `torch.load(weights_only=True)`;
a missing file says where to get it, a different network is a one-line error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from toon3d.errors import Toon3dError
from toon3d.faces.mask_rule import DEFAULT_RULE, face_mask_from_parsing

NUM_CLASSES = 19
PARSE_SIZE = 512
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SPATIAL_PATHS = ("resnet", "conv")
PREPROCESS = ("imagenet", "seed")


class ConvBNReLU(nn.Module):
    """conv (no bias) → BN → ReLU."""

    def __init__(self, cin: int, cout: int, ks: int = 3, stride: int = 1, padding: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, ks, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    """ResNet basic block: ReLU(shortcut + BN(conv3×3(ReLU(BN(conv3×3(x)))))), 1×1 conv + BN shortcut on change."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if cin != cout or stride != 1:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet18Features(nn.Module):
    """ResNet-18 trunk without its classifier: x → (1/8 [B,128], 1/16 [B,256], 1/32 [B,512] features)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        widths = (64, 64, 128, 256, 512)
        for i in range(1, 5):
            stride = 1 if i == 1 else 2
            setattr(self, f"layer{i}", nn.Sequential(BasicBlock(widths[i - 1], widths[i], stride),
                                                     BasicBlock(widths[i], widths[i], 1)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        feat8 = self.layer2(self.layer1(x))
        feat16 = self.layer3(feat8)
        return feat8, feat16, self.layer4(feat16)


class AttentionRefinementModule(nn.Module):
    """ConvBNReLU, then reweight its channels by sigmoid(BN(conv1×1(global average)))."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(cin, cout)
        self.conv_atten = nn.Conv2d(cout, cout, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        return feat * torch.sigmoid(self.bn_atten(self.conv_atten(feat.mean((2, 3), keepdim=True))))


class ContextPath(nn.Module):
    """ResNet-18 + global context + two ARMs: x → (1/8 feature, context at 1/8, context at 1/16)."""

    def __init__(self) -> None:
        super().__init__()
        self.resnet = ResNet18Features()
        self.arm16 = AttentionRefinementModule(256, 128)
        self.arm32 = AttentionRefinementModule(512, 128)
        self.conv_head32 = ConvBNReLU(128, 128)
        self.conv_head16 = ConvBNReLU(128, 128)
        self.conv_avg = ConvBNReLU(512, 128, ks=1, padding=0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feat8, feat16, feat32 = self.resnet(x)
        avg = self.conv_avg(feat32.mean((2, 3), keepdim=True))
        up32 = F.interpolate(self.arm32(feat32) + avg, size=feat16.shape[-2:], mode="nearest")
        up32 = self.conv_head32(up32)
        up16 = F.interpolate(self.arm16(feat16) + up32, size=feat8.shape[-2:], mode="nearest")
        return feat8, self.conv_head16(up16), up32


class SpatialPath(nn.Module):
    """The BiSeNet paper's spatial path: three stride-2 ConvBNReLUs and a 1×1 one → [B,128] at 1/8."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = ConvBNReLU(3, 64, ks=7, stride=2, padding=3)
        self.conv2 = ConvBNReLU(64, 64, stride=2)
        self.conv3 = ConvBNReLU(64, 64, stride=2)
        self.conv_out = ConvBNReLU(64, 128, ks=1, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv3(self.conv2(self.conv1(x))))


class FeatureFusionModule(nn.Module):
    """Fuse spatial and context features: f = ConvBNReLU(cat); f + f·sigmoid(conv(ReLU(conv(mean f))))."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.convblk = ConvBNReLU(cin, cout, ks=1, padding=0)
        self.conv1 = nn.Conv2d(cout, cout // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(cout // 4, cout, 1, bias=False)

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([spatial, context], dim=1))
        atten = torch.sigmoid(self.conv2(F.relu(self.conv1(feat.mean((2, 3), keepdim=True)))))
        return feat * atten + feat


class BiSeNetOutput(nn.Module):
    """3×3 ConvBNReLU → 1×1 conv to class logits."""

    def __init__(self, cin: int, mid: int, n_classes: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(cin, mid)
        self.conv_out = nn.Conv2d(mid, n_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """BiSeNet: normalised images [B,3,H,W] → class logits [B,n_classes,H,W] (and the two auxiliary heads')."""

    def __init__(self, n_classes: int = NUM_CLASSES, spatial_path: str = "resnet") -> None:
        super().__init__()
        if spatial_path not in SPATIAL_PATHS:
            raise Toon3dError(f"spatial_path must be one of {', '.join(SPATIAL_PATHS)}, got {spatial_path!r}")
        self.cp = ContextPath()
        self.sp = SpatialPath() if spatial_path == "conv" else None
        self.ffm = FeatureFusionModule(256, 256)
        self.conv_out = BiSeNetOutput(256, 256, n_classes)
        self.conv_out16 = BiSeNetOutput(128, 64, n_classes)
        self.conv_out32 = BiSeNetOutput(128, 64, n_classes)

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B,3,H,W] → (main, aux 1/8, aux 1/16) logits, each [B,n_classes,H,W]."""
        size = x.shape[-2:]
        feat8, context8, context16 = self.cp(x)
        spatial = feat8 if self.sp is None else self.sp(x)
        outs = (self.conv_out(self.ffm(spatial, context8)), self.conv_out16(context8), self.conv_out32(context16))
        return tuple(F.interpolate(o, size=size, mode="bilinear", align_corners=True) for o in outs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B,3,H,W] (preprocessed) → main logits [B,n_classes,H,W]."""
        return self.forward_all(x)[0]


@dataclass(frozen=True)
class BiSeNetSettings:
    """How toon3d images reach BiSeNet."""

    parse_size: int = PARSE_SIZE
    preprocess: str = "imagenet"   # "imagenet" (as trained) or "seed" (raw [-1,1], the seed code)

    def __post_init__(self) -> None:
        if self.preprocess not in PREPROCESS:
            raise Toon3dError(f"BiSeNet preprocess must be one of {', '.join(PREPROCESS)}, got {self.preprocess!r}")
        if self.parse_size < 32:
            raise Toon3dError(f"BiSeNet parse_size must be at least 32, got {self.parse_size}")


class BiSeNetParser(nn.Module):
    """toon3d images → CelebAMask-HQ parsing, and the face mask of REFERENCE §1.3. Frozen, eval mode."""

    num_classes = NUM_CLASSES

    def __init__(self, net: BiSeNet, settings: BiSeNetSettings | None = None) -> None:
        super().__init__()
        self.net = net.eval()
        self.settings = settings or BiSeNetSettings()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> BiSeNetParser:
        super().train(mode)
        self.net.eval()
        return self

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """images [B,3,S,S] in [-1,1] → class probabilities [B,19,S,S] (parsed at parse_size, area-averaged back)."""
        size, target = images.shape[-1], (self.settings.parse_size,) * 2
        x = images.to(self.mean.dtype)
        if self.settings.preprocess == "imagenet":
            # PIL's bilinear resize of the test script (antialiased when it shrinks), then ImageNet statistics.
            x = F.interpolate(x, size=target, mode="bilinear", align_corners=False, antialias=size > target[0])
            x = ((x.clamp(-1, 1) + 1) / 2 - self.mean) / self.std
        else:
            x = F.interpolate(x, size=target, mode="nearest")  # the seed code: F.interpolate(img, 512), raw [-1,1]
        probs = self.net(x).softmax(1)
        return probs if size == self.settings.parse_size else F.interpolate(probs, size=(size, size), mode="area")

    @torch.no_grad()
    def parse(self, images: torch.Tensor) -> torch.Tensor:
        """images [B,3,S,S] in [-1,1] → CelebAMask-HQ labels [B,S,S] int64 in 0..18."""
        return self.probabilities(images).argmax(1)

    @torch.no_grad()
    def face_mask(self, images: torch.Tensor, rule: str = DEFAULT_RULE) -> torch.Tensor:
        """images [B,3,S,S] in [-1,1] → face mask [B,1,S,S] in [0,1] (`toon3d.faces.mask_rule`)."""
        return face_mask_from_parsing(self.parse(images), rule).to(images.dtype)


def bisenet_state_dict(checkpoint: dict, source: str) -> dict[str, torch.Tensor]:
    """The network's tensors from a face-parsing.PyTorch checkpoint (a bare state dict; `module.` dropped)."""
    out = {}
    for key, value in checkpoint.items():
        if not isinstance(value, torch.Tensor):
            raise Toon3dError(f"{source}: entry {key!r} is a {type(value).__name__}, not a tensor; pass "
                              "face-parsing.PyTorch's 79999_iter.pth (a plain state dict)")
        out[key[len("module."):] if key.startswith("module.") else key] = value
    return out


def build_bisenet(state: dict[str, torch.Tensor], source: str) -> BiSeNet:
    """A BiSeNet holding `state` (spatial path chosen by whether `sp.*` keys exist); mismatch → one-line error."""
    with torch.device("meta"):  # shapes only: no time spent on a random initialisation that is overwritten
        net = BiSeNet(NUM_CLASSES, "conv" if any(k.startswith("sp.") for k in state) else "resnet")
    from toon3d.faces.state_fit import fill_from_state

    return fill_from_state(net, state, source, "face-parsing.PyTorch's 19-class BiSeNet", "pass its 79999_iter.pth")


def load_bisenet(path: str | os.PathLike | None = None) -> BiSeNet:
    """BiSeNet from `path`, else the models folder ($TOON3D_MODELS); missing file → where to get it."""
    from toon3d.io.checkpoint import load_torch_checkpoint
    from toon3d.models import require

    found = require("bisenet", path)
    return build_bisenet(bisenet_state_dict(load_torch_checkpoint(found), str(found)), str(found))


def load_bisenet_parser(path: str | os.PathLike | None = None,
                        settings: BiSeNetSettings | None = None) -> BiSeNetParser:
    """`BiSeNetParser` with the user-supplied `79999_iter.pth` (see `load_bisenet`)."""
    return BiSeNetParser(load_bisenet(path), settings)
