"""LiftedGAN's LResNet-18 face embedding (the paper's identity network, REFERENCE §8) as an IdentityEmbedder.

The network (seasonSH/LiftedGAN `models/face_embedding.py`, `LResNet(nch=3, image_size=(128,128),
nlayer=18)`, batch norm, no SE), written here from its description:

    input [B,3,128,128] in [-1,1] (no mean/std normalisation)
    conv1 4×4/2 pad 1, 64, no bias → bn1 → act_layer (PReLU, 64)            → [B,64,64,64]
    layer1..4: 2 IR blocks each, 64/128/256/512 channels, strides 1/2/2/2   → [B,512,8,8]
    bn4 → (dropout 0.4, inactive in eval) → flatten (C,H,W order) → fc5 32768→512 → bn5 (1-d) → L2-normalise

IR block: bn0 → conv1 3×3 → bn1 → prelu (per channel) → conv2 3×3 (stride) → bn2, plus the input
(through downsample = 1×1 conv(stride) + BN where the shape changes); no activation after the sum.

Weights: the user-supplied `lresnet_casia.pth.tar` (CASIA-WebFace), a dict whose
'model_state_dict' was saved from `nn.DataParallel`, so every key starts with `module.`; both
that and a bare state dict load. Old files may lack BatchNorm's `num_batches_tracked` (unused in
eval); every other key must be present with its shape, or loading fails with a one-line error.

The crop: LiftedGAN and the seed code feed FFHQ-aligned 256 px StyleGAN images, average-pooled
2×2 to 128 inside `forward`; toon3d's layout is FFHQ-like (`toon3d.synth.layout`), so the
default crop is the whole image resized to 128 (`LResNetSettings.crop_box`), by 2×2 box
averaging when that is exact (256, 512, …) and otherwise by bilinear sampling after box
halving (so no pixel is skipped), differentiably. LiftedGAN itself trained its StyleGAN on a
tighter re-crop of FFHQ "to fit the style of our face embedding network"; a tighter `crop_box`
imitates that.

Low-level features (`features(images, n)`): the outputs of the network's first n children in
order, conv1, bn1, act_layer, layer1, layer2, layer3, layer4, so n = 4 is the seed code's f_low
(`children()[:4]`: conv1 + bn1 + PReLU + layer1). The seed code applies f_low to the 256 px
masked image as it is (64×128×128 features) while the embedding sees the 128 px pool;
`LResNetSettings.low_level_input` chooses between that ("image") and the embedding's crop
("crop", the default: the same pixels the identity term sees, [B,64,64,64]).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from toon3d.errors import Toon3dError
from toon3d.faces.identity import IdentityEmbedder
from toon3d.metrics.face_descriptor import check_images

INPUT_SIZE = 128
EMBEDDING_DIM = 512
WIDTHS = (64, 128, 256, 512)
STRIDES = (1, 2, 2, 2)
BLOCKS_PER_LAYER = 2
CHILDREN = ("conv1", "bn1", "act_layer", "layer1", "layer2", "layer3", "layer4")
STATE_KEY = "model_state_dict"
LOW_LEVEL_INPUTS = ("crop", "image")


@dataclass(frozen=True)
class LResNetSettings:
    """How toon3d images reach the network."""

    # (left, top, size) of the square crop, fractions of the image; (0, 0, 1) = the whole image,
    # as the seed code feeds its FFHQ-aligned images.
    crop_box: tuple[float, float, float] = (0.0, 0.0, 1.0)
    # "crop": f_low sees the 128 px crop (default); "image": the image as given (the seed code).
    low_level_input: str = "crop"

    def __post_init__(self) -> None:
        left, top, size = self.crop_box
        if not size > 0:
            raise Toon3dError(f"LResNet crop_box size must be positive, got {size}")
        if self.low_level_input not in LOW_LEVEL_INPUTS:
            raise Toon3dError(f"low_level_input must be one of {', '.join(LOW_LEVEL_INPUTS)}, "
                              f"got {self.low_level_input!r}")


class IRBlock(nn.Module):
    """bn0 → conv3×3 → bn1 → PReLU → conv3×3(stride) → bn2, plus the (downsampled) input."""

    def __init__(self, inplanes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.bn0 = nn.BatchNorm2d(inplanes)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, 0, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.prelu(self.bn1(self.conv1(self.bn0(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class LResNet18(nn.Module):
    """LiftedGAN's LResNet-18: [B,3,128,128] in [-1,1] → L2-normalised [B,512]; key names as its checkpoint's."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, WIDTHS[0], 4, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(WIDTHS[0])
        self.act_layer = nn.PReLU(WIDTHS[0])
        inplanes = WIDTHS[0]
        for i, (width, stride) in enumerate(zip(WIDTHS, STRIDES), 1):
            blocks = [IRBlock(inplanes, width, stride)] + [IRBlock(width, width, 1)
                                                           for _ in range(BLOCKS_PER_LAYER - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            inplanes = width
        self.bn4 = nn.BatchNorm2d(WIDTHS[-1])
        side = INPUT_SIZE // 16
        self.fc5 = nn.Linear(WIDTHS[-1] * side * side, EMBEDDING_DIM)
        self.bn5 = nn.BatchNorm1d(EMBEDDING_DIM)

    def children_in_order(self) -> list[nn.Module]:
        """conv1, bn1, act_layer, layer1..layer4: the modules `features` taps, in forward order."""
        return [getattr(self, name) for name in CHILDREN]

    def features(self, x: torch.Tensor, n_blocks: int) -> list[torch.Tensor]:
        """x [B,3,H,W] in [-1,1] → outputs of the first n_blocks of `CHILDREN` (n=4: the seed's f_low)."""
        if not 1 <= n_blocks <= len(CHILDREN):
            raise Toon3dError(f"n_blocks must be in 1..{len(CHILDREN)} ({', '.join(CHILDREN)}), got {n_blocks}")
        out = []
        for child in self.children_in_order()[:n_blocks]:
            x = child(x)
            out.append(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            raise Toon3dError(f"LResNet-18 takes [B,3,{INPUT_SIZE},{INPUT_SIZE}] crops, got {tuple(x.shape)}")
        x = self.features(x, len(CHILDREN))[-1]
        x = self.bn4(x).flatten(1)  # dropout: identity in eval, and the network is only used in eval
        return F.normalize(self.bn5(self.fc5(x)), p=2, dim=1)


def crop_resize(images: torch.Tensor, box: tuple[float, float, float], size: int) -> torch.Tensor:
    """Differentiable square crop: images [B,C,S,S] → [B,C,size,size] of box (left, top, side) in image fractions.

    Whole-image boxes whose size divides S are 2×2/k×k box averages (the seed code's avg_pool2d);
    anything else is bilinear `grid_sample` (align_corners=False; border pixels repeat outside the
    image, so upsampling leaves no dark rim) after halving by 2×2 box averaging while one output
    pixel would span more than 2 input pixels.
    """
    left, top, side = box
    s = images.shape[-1]
    if (left, top, side) == (0.0, 0.0, 1.0):
        if s == size:
            return images
        if s > size and s % size == 0:
            return F.avg_pool2d(images, s // size)
    span = side * s / size
    while span > 2.0:
        images = F.avg_pool2d(images, 2)
        span /= 2.0
    centres = (torch.arange(size, dtype=images.dtype, device=images.device) + 0.5) / size
    gx = 2 * (left + side * centres) - 1
    gy = 2 * (top + side * centres) - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1)
    return F.grid_sample(images, grid[None].expand(images.shape[0], -1, -1, -1), mode="bilinear",
                         padding_mode="border", align_corners=False)


class LResNetEmbedder(IdentityEmbedder):
    """LiftedGAN's LResNet-18 on toon3d images: crop/resize to 128 → L2-normalised [B,512], frozen, eval mode.

    Same-person threshold: LiftedGAN publishes none for this network, so it is None (not calibrated).
    """

    dim = EMBEDDING_DIM
    same_person_threshold = None

    def __init__(self, net: LResNet18, settings: LResNetSettings | None = None) -> None:
        super().__init__()
        self.net = net
        self.settings = settings or LResNetSettings()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.net.eval()

    def train(self, mode: bool = True) -> LResNetEmbedder:
        # A frozen embedding: batch norm always uses its stored statistics, dropout stays off.
        super().train(mode)
        self.net.eval()
        return self

    def crops(self, images: torch.Tensor) -> torch.Tensor:
        """images [B,3,S,S] in [-1,1] → the network's input [B,3,128,128] in [-1,1] (differentiable)."""
        images = check_images(images)
        dtype = self.net.conv1.weight.dtype
        return crop_resize(images.to(dtype), self.settings.crop_box, INPUT_SIZE)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self.crops(images))

    def features(self, images: torch.Tensor, n_blocks: int) -> list[torch.Tensor]:
        if self.settings.low_level_input == "image":
            x = check_images(images).to(self.net.conv1.weight.dtype)
        else:
            x = self.crops(images)
        return self.net.features(x, n_blocks)


def lresnet_state_dict(checkpoint: dict, source: str) -> dict[str, torch.Tensor]:
    """The network's state dict out of a LiftedGAN checkpoint (`model_state_dict`, `module.` prefixes dropped)."""
    state = checkpoint.get(STATE_KEY, checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not state:
        raise Toon3dError(f"{source} holds no LResNet state dict (expected a dict with {STATE_KEY!r}); "
                          "pass LiftedGAN's pretrained/lresnet_casia.pth.tar")
    out = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise Toon3dError(f"{source}: entry {key!r} of its state dict is a {type(value).__name__}, not a tensor; "
                              "pass LiftedGAN's pretrained/lresnet_casia.pth.tar")
        out[key[len("module."):] if key.startswith("module.") else key] = value
    return out


def build_lresnet(state: dict[str, torch.Tensor], source: str) -> LResNet18:
    """An LResNet18 holding `state`; missing, unexpected or mis-shaped keys are one-line errors."""
    with torch.device("meta"):  # shapes only: no time spent on a random initialisation that is overwritten
        net = LResNet18()
    from toon3d.faces.state_fit import fill_from_state

    return fill_from_state(net, state, source, "LiftedGAN's LResNet-18 (128 px, 512-d)",
                           "pass pretrained/lresnet_casia.pth.tar from LiftedGAN's bundle")


def load_lresnet(path: str | os.PathLike | None = None) -> LResNet18:
    """LResNet-18 from `path`, else the models folder ($TOON3D_MODELS); missing file → where to get it."""
    from toon3d.io.checkpoint import load_torch_checkpoint
    from toon3d.models import require

    found = require("lresnet", path)
    return build_lresnet(lresnet_state_dict(load_torch_checkpoint(found), str(found)), str(found))


def load_lresnet_embedder(path: str | os.PathLike | None = None,
                          settings: LResNetSettings | None = None) -> LResNetEmbedder:
    """`LResNetEmbedder` with the user-supplied `lresnet_casia.pth.tar` (see `load_lresnet`)."""
    return LResNetEmbedder(load_lresnet(path), settings)
