"""SIDE and MAD, the BFM depth metrics of Unsup3d (Wu et al. 2020), computed per image.

Protocol (Unsup3d `model.forward` with ground-truth depth):
- masks: `gt < max(gt)` with the maximum taken over the *whole batch* (Unsup3d's
  `mask_gt = (depth_gt < depth_gt.max())`; the background sits at the maximum depth) and the
  predicted valid mask, each eroded by one pixel (3x3 average pool > 0.99, zero padding), then
  multiplied. `gt_max="image"` takes the maximum per image instead (not Unsup3d: an image with
  no background pixel then loses its farthest foreground pixels);
- SIDE = sqrt(masked variance of log d̂ − log d): scale-invariant, papers report it ×100;
- MAD = masked mean of acos(clamp(n̂·n, −1, 1)) in degrees, normals from
  `normals_from_depth` of the predicted depth *in the input view* and of the ground truth.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from toon3d.errors import Toon3dError
from toon3d.shape.camera import normals_from_depth


def erode_mask(mask: torch.Tensor) -> torch.Tensor:
    """Erode a mask [B,H,W] (bool or 0/1) by one pixel: 3x3 avg_pool (zero padding) > 0.99 → float [B,H,W]."""
    pooled = F.avg_pool2d(mask.float().unsqueeze(1), 3, stride=1, padding=1).squeeze(1)
    return (pooled > 0.99).float()


GT_MAX_MODES = ("batch", "image")


def evaluation_mask(gt_depth: torch.Tensor, pred_mask: torch.Tensor | None = None,
                    gt_max: str = "batch") -> torch.Tensor:
    """Pixels scored [B,H,W] float: eroded (gt < max(gt)) × eroded predicted mask.

    `gt_max="batch"` (default, Unsup3d): the maximum over the whole batch, so the scores of an
    image depend on its batch mates' background value; `"image"`: each image's own maximum.
    """
    if gt_max == "batch":
        limit = gt_depth.max()
    elif gt_max == "image":
        limit = gt_depth.flatten(1).amax(1).view(-1, 1, 1)
    else:
        raise Toon3dError(f"gt_max must be one of {', '.join(GT_MAX_MODES)}, not {gt_max!r}; "
                          f"use 'batch' (Unsup3d) or 'image'")
    mask = erode_mask(gt_depth < limit)
    if pred_mask is not None:
        if pred_mask.dim() == 4:
            pred_mask = pred_mask.squeeze(1)
        mask = mask * erode_mask(pred_mask > 0.5)
    return mask


def _check(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if pred.shape != gt.shape:
        raise Toon3dError(f"prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} differ in shape; "
                          f"resize them to the same size")
    if not (torch.isfinite(pred).all() and torch.isfinite(gt).all()):
        raise Toon3dError("depth for evaluation contains NaN or inf; check the prediction and the ground truth")
    count = mask.flatten(1).sum(1)
    if (count == 0).any():
        raise Toon3dError("an evaluation mask is empty (no pixel is both foreground and predicted); "
                          "check the ground-truth background value and the predicted mask")
    return count


def side(pred_depth: torch.Tensor, gt_depth: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Scale-invariant depth error [B] (not ×100) of depths [B,H,W] > 0 over mask [B,H,W]."""
    count = _check(pred_depth, gt_depth, mask)
    if (pred_depth <= 0).any() or (gt_depth <= 0).any():
        raise Toon3dError("SIDE needs positive depths (it compares logarithms); check the depth units")
    delta = (pred_depth.log() - gt_depth.log()) * mask
    mean = delta.flatten(1).sum(1) / count
    var = ((delta - mean.view(-1, 1, 1)) ** 2 * mask).flatten(1).sum(1) / count
    return var.sqrt()


def mad(pred_normal: torch.Tensor, gt_normal: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean angle deviation [B] in degrees between unit normals [B,H,W,3] over mask [B,H,W]."""
    count = _check(pred_normal, gt_normal, mask)
    cos = (pred_normal * gt_normal).sum(-1).clamp(-1.0, 1.0)
    angle = torch.rad2deg(torch.acos(cos))
    return (angle * mask).flatten(1).sum(1) / count


def depth_scores(pred_depth: torch.Tensor, gt_depth: torch.Tensor, K: torch.Tensor,
                 pred_mask: torch.Tensor | None = None, gt_max: str = "batch") -> dict[str, torch.Tensor]:
    """Unsup3d protocol on view depths [B,H,W]: {'side': [B] ×1, 'side_x100': [B], 'mad_deg': [B], 'mask': [B,H,W]}.

    `gt_max` picks the background rule of `evaluation_mask` ("batch" = Unsup3d, or "image").
    """
    mask = evaluation_mask(gt_depth, pred_mask, gt_max=gt_max)
    s = side(pred_depth, gt_depth, mask)
    m = mad(normals_from_depth(pred_depth, K), normals_from_depth(gt_depth, K), mask)
    return {"side": s, "side_x100": s * 100.0, "mad_deg": m, "mask": mask}


def gt_depth_from_synface_png(channel0: torch.Tensor, min_depth: float = 0.9, max_depth: float = 1.1) -> torch.Tensor:
    """Unsup3d synface ground truth: PNG channel 0 in [0,1] [B,H,W] → depth (1−x)·2−1 rescaled to [min,max]."""
    x = (1.0 - channel0) * 2.0 - 1.0
    return min_depth + (x + 1.0) / 2.0 * (max_depth - min_depth)


def mean_std(scores: torch.Tensor) -> tuple[float, float]:
    """Mean and (population) standard deviation of per-image scores [N]."""
    scores = scores.double()
    mean = scores.mean().item()
    return mean, math.sqrt(((scores - mean) ** 2).mean().item())
