"""Fast view rendering of a canonical depth map by ray marching (a CPU shortcut for data making).

`toon3d.shape.renderer.Renderer.warp_canon_depth` rasterises the canonical grid mesh; that
is exact but costs ~60 ms per 128 px image on a CPU core, too slow to make tens of thousands
of SynFace images. Here each view ray is marched through the canonical frame instead and
intersected with the bilinearly interpolated depth map: the same surface up to the
difference between bilinear patches and the mesh's two planar triangles per pixel quad
(~1e-4 depth units on a face), with the same camera (fov, rotation about (0,0,1); the rays
come from `toon3d.shape.camera`'s `intrinsics`, `depth_to_3d` and `inverse_warp_points`),
pixel-centre sampling (the renderer's `pixel_offset=0`) and mask rule (a hit counts only
where all four canonical neighbours are inside the canonical mask, as the mesh drops every
triangle touching an outside vertex).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from toon3d.shape.camera import depth_to_3d, intrinsics, inverse_warp_points, warped_points_from_depth


@dataclass
class MarchSettings:
    """Ray-marching settings: camera, steps and the search margin around the surface."""

    fov_deg: float = 10.0
    rot_center_depth: float = 1.0
    steps: int = 14
    bisections: int = 5
    margin: float = 0.004
    background_depth: float = 1.2


def view_rays(K: torch.Tensor, size: int, R: torch.Tensor, t: torch.Tensor,
              rot_center_depth: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Each view pixel's ray in the canonical frame: direction A [B,H,W,3] and origin o [B,3].

    The view point at depth s on pixel (u, v) is s·K⁻¹[u, v, 1]; `inverse_warp_points` is
    affine, so it maps to the canonical point s·A + o with A = K⁻¹[u, v, 1] R (the rotation
    alone: no translation, centre 0) and o = the inverse warp of the camera centre.
    """
    b = R.shape[0]
    rays = depth_to_3d(torch.ones(1, size, size, device=R.device, dtype=R.dtype), K)   # [1,H,W,3]
    a = inverse_warp_points(rays.expand(b, -1, -1, -1), R, torch.zeros_like(t), rot_center_depth=0.0)
    o = inverse_warp_points(torch.zeros_like(t).unsqueeze(1), R, t, rot_center_depth=rot_center_depth)[:, 0]
    return a, o


def march_heightfield(canon_depth: torch.Tensor, canon_mask: torch.Tensor, R: torch.Tensor, t: torch.Tensor,
                      settings: MarchSettings | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """View depth [B,H,W] (background = settings.background_depth), canonical grid [B,H,W,2], hit [B,H,W] bool.

    canon_depth [B,H,W] and canon_mask [B,H,W] in {0,1} are in the frontal frame; the view
    moves the surface by P' = (P - c) Rᵀ + c + t with c = (0, 0, rot_center_depth). The grid
    locates each view pixel's surface point in the canonical image (`grid_sample`,
    `align_corners=True`), so canonical textures render with `F.grid_sample(tex, grid)`.
    """
    s = settings or MarchSettings()
    b, h, w = canon_depth.shape
    dtype, device = canon_depth.dtype, canon_depth.device
    tan_half = math.tan(math.radians(s.fov_deg) / 2.0)
    K = intrinsics(h, s.fov_deg, device=device, dtype=dtype)
    R, t = R.to(dtype), t.to(dtype)

    # Per-image search range: the view depths of the warped head vertices, plus a margin.
    inside = canon_mask > 0.5
    z_view = warped_points_from_depth(canon_depth, K, R, t, s.rot_center_depth)[..., 2]
    big = torch.finfo(dtype).max
    z_lo = torch.where(inside, z_view, torch.full_like(z_view, big)).amin(dim=(1, 2)) - s.margin
    z_hi = torch.where(inside, z_view, torch.full_like(z_view, -big)).amax(dim=(1, 2)) + s.margin
    empty = ~inside.any(dim=(1, 2))
    z_lo = torch.where(empty, torch.ones_like(z_lo), z_lo)
    z_hi = torch.where(empty, torch.ones_like(z_hi) * 1.01, z_hi)

    # A view ray s·r (r = K⁻¹[u, v, 1]) maps to the canonical frame as s·A + o, linear in s.
    a, o = view_rays(K, h, R, t, s.rot_center_depth)                         # [B,H,W,3], [B,3]
    # Fold 1/tan(fov/2) into x and y so the canonical grid is (s·ax + ox) / (s·az + oz): the
    # align_corners grid of `points_to_grid` (f / ((S-1)/2) = 1/tan(fov/2), c maps to 0).
    inv_tan = 1.0 / tan_half
    ax, ay, az = (v.contiguous() for v in (a[..., 0] * inv_tan, a[..., 1] * inv_tan, a[..., 2]))
    ox, oy, oz = (o[:, i].view(b, 1, 1) * (inv_tan if i < 2 else 1.0) for i in range(3))
    depth_in = canon_depth.unsqueeze(1)

    def gap(depth_view: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Signed gap (point depth − surface depth) in the canonical frame, and the grid."""
        zc = torch.addcmul(oz, depth_view, az)
        gx = torch.addcmul(ox, depth_view, ax).div_(zc)
        gy = torch.addcmul(oy, depth_view, ay).div_(zc)
        grid = torch.stack([gx, gy], dim=-1)
        surf = F.grid_sample(depth_in, grid, mode="bilinear", padding_mode="border", align_corners=True)
        return zc.sub_(surf[:, 0]), grid

    # March in equal steps; remember the step where each ray first passes the surface.
    n = max(2, s.steps)
    step = ((z_hi - z_lo) / (n - 1)).view(b, 1, 1)
    start = z_lo.view(b, 1, 1)
    first = torch.zeros(b, h, w, dtype=torch.int16, device=device)
    prev_neg = gap(start)[0] < 0
    for k in range(1, n):
        neg = gap(start + step * k)[0] < 0
        first = torch.where(prev_neg & ~neg & (first == 0), k, first)
        prev_neg = neg
    found = first > 0
    lo = torch.addcmul(start, step, (first - 1).to(dtype))
    hi = lo + step

    # Bisection, then one secant step inside the final bracket.
    g_lo, _ = gap(lo)
    for _ in range(s.bisections):
        mid = 0.5 * (lo + hi)
        g_mid, _ = gap(mid)
        below = g_mid < 0
        lo = torch.where(below, mid, lo)
        g_lo = torch.where(below, g_mid, g_lo)
        hi = torch.where(below, hi, mid)
    g_hi, _ = gap(hi)
    frac = (-g_lo / (g_hi - g_lo).clamp(min=1e-12)).clamp(0.0, 1.0)
    depth = lo + (hi - lo) * frac
    _, grid = gap(depth)

    # Count a hit only where the whole canonical cell lies inside the mask.
    cell = F.grid_sample(canon_mask.to(dtype).unsqueeze(1), grid, mode="bilinear", padding_mode="zeros",
                         align_corners=True)[:, 0]
    hit = found & (cell > 0.999)
    depth = torch.where(hit, depth, torch.full_like(depth, s.background_depth))
    return depth, grid, hit
