"""The head of a reconstructed image, so that exports show the head and not the backdrop card.

Unsup3d and GAN2Shape reconstruct the whole frame: the canonical depth map covers the backdrop
too, at the far depth. Turned, that backdrop is a card behind the head, and in a mesh it is a
plate the head sticks out of. An avatar is the head. `head_mask` finds it with a face parser (the
mask rule `seed`: every class but background and cloth, so hair and neck stay), keeps the largest
connected region, fills its holes and grows it by one pixel (the rim the parser's soft edge
misses), then moves it into the canonical frame through the reconstruction's depth and view, the
way GAN2Shape moves its face mask (`canon_mask`). The mesh, the rotations and the turntable are
cut to it; depth.npy and the maps keep the whole frame (the Unsup3d convention the metrics use).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from toon3d.errors import Toon3dError


def clean_mask(mask: torch.Tensor, grow: int = 1) -> torch.Tensor:
    """[S,S] bool → the largest 4-connected region, holes filled, dilated by `grow` pixels ([S,S] bool)."""
    from scipy import ndimage

    m = mask.detach().cpu().numpy().astype(bool)
    labels, count = ndimage.label(m)
    if count == 0:
        raise Toon3dError("the face parser found no head in the image; pass an image with a face in the toon3d "
                          "layout, or use --no-head-mask to keep the whole frame")
    sizes = ndimage.sum(m, labels, index=np.arange(1, count + 1))
    keep = ndimage.binary_fill_holes(labels == (int(np.argmax(sizes)) + 1))
    if grow > 0:
        keep = ndimage.binary_dilation(keep, iterations=grow)
    return torch.from_numpy(keep)


def head_mask(image: torch.Tensor, mask_fn, grow: int = 1) -> torch.Tensor:
    """Image [1,3,S,S] in [-1,1] → the head in the input view [S,S] bool (parser mask ≥ 0.5, cleaned)."""
    if image.dim() != 4 or image.shape[0] != 1 or image.shape[1] != 3:
        raise Toon3dError(f"head_mask takes one image [1,3,S,S], got {tuple(image.shape)}")
    with torch.no_grad():
        soft = mask_fn(image)
    if soft.shape[-2:] != image.shape[-2:]:
        soft = F.interpolate(soft.float(), size=image.shape[-2:], mode="bilinear", align_corners=False)
    return clean_mask(soft[0, 0] >= 0.5, grow)


def canonical_mask(mask: torch.Tensor, depth: torch.Tensor, view: torch.Tensor, renderer) -> torch.Tensor:
    """Input-view mask [S,S] → the canonical frame [S,S] bool, through canonical depth [S,S] and view [6]."""
    from toon3d.shape.photo_geometry import to_canonical

    device = renderer.K.device
    if mask.shape != depth.shape:
        raise Toon3dError(f"the head mask is {tuple(mask.shape)} but the depth is {tuple(depth.shape)}")
    with torch.no_grad():
        moved = to_canonical(mask[None, None].float(), depth[None].to(device, torch.float32),
                             view.reshape(1, -1).to(device, torch.float32), renderer)
    return (moved[0, 0] >= 0.5).cpu()


__all__ = ["clean_mask", "head_mask", "canonical_mask"]
