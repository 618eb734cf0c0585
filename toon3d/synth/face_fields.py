"""Small analytic field helpers shared by the SynFace shape, albedo and background code.

Every field is a function of normalised image coordinates (x right, y down, both in
[-1,1] with the corner pixels' centres at ±1, the renderer's `align_corners=True`
convention), so the same face comes out at every image size.
"""

from __future__ import annotations

import torch


def image_grid(size: int, device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised pixel-centre coordinates (X, Y), each [1,S,S] in [-1,1]."""
    t = torch.linspace(-1.0, 1.0, size, device=device, dtype=dtype)
    y, x = torch.meshgrid(t, t, indexing="ij")
    return x[None], y[None]


def col(v: torch.Tensor) -> torch.Tensor:
    """[B] per-face value → [B,1,1], to broadcast against [1,S,S] fields."""
    return v[:, None, None]


def edge_width(size: int) -> float:
    """Anti-aliasing ramp width in normalised units: 1.2 pixels at this size."""
    return 2.4 / (size - 1)


def coverage(sdf: torch.Tensor, edge: float) -> torch.Tensor:
    """Soft inside-ness in [0,1] of a signed distance (negative inside), ramped over `edge`."""
    return (0.5 - sdf / edge).clamp(0.0, 1.0)


def compact_bump(q: torch.Tensor) -> torch.Tensor:
    """(1-q)^2 for q<1 else exactly 0: a C1 bump of a squared normalised radius q."""
    return (1.0 - q).clamp(min=0.0).square()


def ellipse_q(x: torch.Tensor, y: torch.Tensor, cx, cy, rx, ry) -> torch.Tensor:
    """Squared normalised elliptic radius ((x-cx)/rx)^2 + ((y-cy)/ry)^2."""
    return ((x - cx) / rx).square() + ((y - cy) / ry).square()


def ellipse_sdf(q: torch.Tensor, r_min) -> torch.Tensor:
    """Approximate signed distance to an ellipse boundary from its squared radius q."""
    return (q.clamp(min=0.0).sqrt() - 1.0) * r_min


def region_window(q: torch.Tensor) -> torch.Tensor:
    """1 for q<0.7, exactly 0 for q>=1, smooth between: the support of an expression."""
    w = ((1.0 - q) / 0.3).clamp(0.0, 1.0)
    return w * w * (3.0 - 2.0 * w)


def smoothstep(lo: float, hi: float, x: torch.Tensor) -> torch.Tensor:
    """Hermite step from 0 at `lo` to 1 at `hi`."""
    t = ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def smooth_min(a: torch.Tensor, b: torch.Tensor, k: float) -> torch.Tensor:
    """Polynomial smooth minimum: equals min(a,b) where |a-b| >= k."""
    h = (k - (a - b).abs()).clamp(min=0.0) / k
    return torch.minimum(a, b) - h * h * k * 0.25


def over(base: torch.Tensor, color: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Alpha-composite `color` over `base`: [B,3,H,W] images, alpha [B,H,W] in [0,1]."""
    a = alpha[:, None]
    return base + a * (color - base)


def lerp_palette(palette: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear colour ramp: palette [K,3] in [0,1], t [B] in [0,1] → [B,3]."""
    k = palette.shape[0] - 1
    pos = t.clamp(0.0, 1.0) * k
    i0 = pos.floor().long().clamp(max=k - 1)
    frac = (pos - i0.to(pos.dtype))[:, None]
    pal = palette.to(device=t.device, dtype=t.dtype)
    return pal[i0] * (1 - frac) + pal[i0 + 1] * frac
