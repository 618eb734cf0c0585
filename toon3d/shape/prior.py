"""The ellipsoid shape prior of GAN2Shape (REFERENCE §6.6) and fitting a depth net to a target depth.

`ellipsoid_depth` builds a sphere cap squeezed to the face mask's bounding box: depth `near` at
the centre, rising to `far` at the rim and outside. The bounding box is adjusted per category as
GAN2Shape does ('face': the box runs to the image bottom and loses width/12 on each side;
'synface': the top moves up by a sixth of the height; 'box': unchanged). Rows are squeezed
about the image centre row h/2 (the reference's `i' = (i − h/2)/ratio + h/2`), so for a box
centred off h/2 the cap's centre moves vertically by (ratio − 1)·(c_y − h/2): kept for parity,
`squeeze_about="box"` squeezes about the box centre instead.

`fit_depth_to` trains a depth network so that its processed output (before the border clamp)
matches a target: GAN2Shape's `init_netD_ellipsoid` (1000 Adam steps, lr 1e-4, weight decay
5e-4, MSE).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from toon3d.errors import Toon3dError

PRIOR_KINDS = ("face", "synface", "box")


PRIOR_SCHEDULES = ("constant", "cosine")


def mask_box(mask: torch.Tensor) -> tuple[float, float, float, float]:
    """(max_y, min_y, max_x, min_x) pixel indices of the True pixels of mask [H,W]."""
    if mask.dim() != 2:
        raise Toon3dError(f"the prior's mask must be [H,W], got {tuple(mask.shape)}")
    ys, xs = torch.nonzero(mask.bool(), as_tuple=True)
    if ys.numel() == 0:
        raise Toon3dError("the face mask is empty; check the mask threshold or the image")
    return float(ys.max()), float(ys.min()), float(xs.max()), float(xs.min())


def ellipsoid_depth(mask: torch.Tensor, kind: str = "face", near: float = 0.91, far: float = 1.02,
                    radius: float = 0.4, squeeze_about: str = "image") -> torch.Tensor:
    """Ellipsoid prior depth [H,W] from a face mask [H,W] (bool or 0/1): `near` at the centre, `far` at the rim and outside."""
    if kind not in PRIOR_KINDS:
        raise Toon3dError(f"unknown prior kind {kind!r}; choose one of {', '.join(PRIOR_KINDS)}")
    if squeeze_about not in ("image", "box"):
        raise Toon3dError(f"squeeze_about must be 'image' (GAN2Shape) or 'box', got {squeeze_about!r}")
    if not 0 < far - near < radius:
        raise Toon3dError(f"need 0 < far − near < radius, got near {near}, far {far}, radius {radius}")
    h, w = mask.shape[-2:]
    max_y, min_y, max_x, min_x = mask_box(mask)
    if kind == "synface":
        min_y = min_y - (max_y - min_y) / 6
    elif kind == "face":
        max_y = h - 1
        width = max_x - min_x
        max_x -= width / 12
        min_x += width / 12
    if max_x <= min_x or max_y <= min_y:
        raise Toon3dError("the face mask is a line or a point; the prior needs a mask with width and height")
    r_pixel = (max_x - min_x) / 2
    ratio = (max_y - min_y) / (max_x - min_x)
    c_x, c_y = (max_x + min_x) / 2, (max_y + min_y) / 2
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                indexing="ij")
    pivot = h / 2 if squeeze_about == "image" else c_y
    rows = (rows - pivot) / ratio + pivot
    cap = math.sqrt(radius ** 2 - (radius - (far - near)) ** 2)
    dist = torch.sqrt((rows - c_y) ** 2 + (cols - c_x) ** 2)
    inside = dist <= r_pixel
    depth = radius - torch.sqrt((radius ** 2 - (dist / r_pixel * cap) ** 2).abs()) + near
    return torch.where(inside, depth, torch.full_like(depth, far)).to(mask.device)


def representable_shift(target: torch.Tensor, min_depth: float, max_depth: float, iters: int = 60) -> float:
    """The depth shift δ that lets a mean-centred depth net hold `target` [S,S] exactly (bisection).

    The net's depth is `min + (tanh(x − mean x) + 1)/2·(max − min)`, so the atanh of any depth it
    can produce averages to 0 over the image. A prior whose atanh does not (GAN2Shape's ellipsoid
    on a far plane of 1.02) can only be approximated: the fit trades the offset against the relief.
    `target + δ` with this δ has zero atanh mean; a uniform shift leaves the normals unchanged.
    """
    half, mid = (max_depth - min_depth) / 2, (max_depth + min_depth) / 2
    t = target.detach().double()
    limit = 1 - 1e-6

    def mean_atanh(delta: float) -> float:
        return float(torch.atanh(((t + delta - mid) / half).clamp(-limit, limit)).mean())

    lo, hi = min_depth - float(t.max()), max_depth - float(t.min())
    if mean_atanh(lo) > 0 or mean_atanh(hi) < 0:
        raise Toon3dError("the prior cannot be shifted into the depth range; check prior_near/far against "
                          "min_depth/max_depth")
    for _ in range(iters):
        mid_delta = (lo + hi) / 2
        if mean_atanh(mid_delta) < 0:
            lo = mid_delta
        else:
            hi = mid_delta
    return (lo + hi) / 2


DEPTH_STARTS = ("fit", "residual")
# The frame the mask's ellipsoid is built in: "view" takes the input-view mask's ellipsoid as the
# canonical depth (GAN2Shape, whose CelebA/FFHQ faces are near-frontal); "canonical" first moves
# the mask to the canonical frame through the start view, so a turned head's prior, rendered at
# that view, covers the mask again.
PRIOR_FRAMES = ("view", "canonical")


def prior_offset(target: torch.Tensor, min_depth: float, max_depth: float) -> torch.Tensor:
    """The raw depth-net output [S,S] whose depth (`depth_from_raw`) is `target` [S,S] + `representable_shift`.

    atanh of the shifted prior scaled to (−1, 1), mean-centred (the shift makes its mean 0 up to the
    bisection's precision, so the centring only removes that residue).
    """
    shifted = target + representable_shift(target, min_depth, max_depth)
    half, mid = (max_depth - min_depth) / 2, (max_depth + min_depth) / 2
    raw = torch.atanh(((shifted - mid) / half).clamp(-1 + 1e-6, 1 - 1e-6))
    return raw - raw.mean()


def zero_output_layer(depth_net: nn.Module) -> None:
    """Zero the weights (and bias) of the depth net's last convolution, so its output starts at 0."""
    convs = [m for m in depth_net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    if not convs:
        raise Toon3dError("the depth net has no convolution to zero; depth_start=residual needs a conv output layer")
    with torch.no_grad():
        convs[-1].weight.zero_()
        if convs[-1].bias is not None:
            convs[-1].bias.zero_()


def add_output_offset(depth_net: nn.Module, offset: torch.Tensor):
    """Make depth_net(image) return its output + offset [S,S] (a forward hook; returns its handle)."""
    offset = offset.detach()[None, None]
    return depth_net.register_forward_hook(lambda module, inputs, output: output + offset.to(output))


def fit_depth_to(depth_net: nn.Module, image: torch.Tensor, target_depth: torch.Tensor, settings,
                 steps: int = 1000, lr: float = 1e-4, wd: float = 5e-4, progress: bool = False,
                 schedule: str = "constant", centre: bool = False) -> list[float]:
    """Train depth_net (image [B,3,S,S] → [B,1,S,S]) so its processed depth before the border clamp matches
    target_depth [S,S] or [B,S,S] (MSE, Adam(lr, wd)); returns the loss of every step.

    schedule "constant" is GAN2Shape's; "cosine" decays the rate to 0 over the steps. The MSE ends
    the same either way (~1.6e-4 on the built-in layout: the mean-centred tanh cannot hold the
    offset), but at a constant 1e-3 the last steps leave the decoder's stripes in the depth,
    which the normals show: 4 SynFace images, 600 steps, normal error against the target
    18.1° constant, 3.2° cosine (docs/reconstruct.md).

    centre=True fits `target + representable_shift(target)` instead: the same shape, moved in
    depth so that the mean-centred net can hold it exactly (MSE 1.6e-4 → 1e-6 on the built-in
    layout; held-out SynFace MAD of the fitted depth 23.8° → 23.1°, the analytic prior's 23.2°).
    GAN2Shape fits the unshifted prior (centre=False)."""
    from tqdm import tqdm

    from toon3d.shape.photo_geometry import check_image, depth_from_raw

    if steps < 0:
        raise Toon3dError(f"steps must be ≥ 0, got {steps}")
    if schedule not in PRIOR_SCHEDULES:
        raise Toon3dError(f"prior fit schedule must be one of {', '.join(PRIOR_SCHEDULES)}, got {schedule!r}")
    check_image(image, settings.size)
    target = target_depth.to(image)
    if target.dim() == 2:
        target = target.unsqueeze(0)
    if target.shape[1:] != image.shape[2:] or target.shape[0] not in (1, image.shape[0]):
        raise Toon3dError(f"target depth {tuple(target_depth.shape)} does not fit images {tuple(image.shape)}")
    if centre:  # per target map: a shared [S,S] target is shifted once, before the expand
        shifts = [representable_shift(t, settings.min_depth, settings.max_depth) for t in target]
        target = target + target.new_tensor(shifts).view(-1, 1, 1)
    target = target.expand(image.shape[0], -1, -1)
    params = [p for p in depth_net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), weight_decay=wd)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps) if schedule == "cosine" and steps else None
    losses = []
    for _ in tqdm(range(steps), desc="fit depth prior", disable=not progress, dynamic_ncols=True):
        _, raw_depth = depth_from_raw(depth_net(image)[:, 0], settings)
        loss = F.mse_loss(raw_depth, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if decay is not None:
            decay.step()
        losses.append(float(loss.detach()))
    return losses
