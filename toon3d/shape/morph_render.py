"""Pictures of an avatar's morph targets blended by weights: the GLB's own linear blend, rendered per frame.

A morph target of the avatar GLB is the edit's pixel-grid mesh minus the neutral's. Mesh vertices
are linear in the canonical depth (vertex = depth · K⁻¹·pixel) and the GLB's vertex colours are
linear RGB, so blending

    depth  = d₀ + Σ_j w_j (d_j − d₀)
    albedo = srgb(lin(a₀) + Σ_j w_j (lin(a_j) − lin(a₀)))

is exactly what a glTF viewer shows for weights w (`blend_morphs`). `render_blended` shades the
blend with the neutral's light and rasterises the textured mesh from a yaw per frame (a slow
turn by default), after resampling depth and albedo to the render size (bilinear), so a 64 px
result is drawn as a smooth surface rather than as 64 px blocks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from toon3d.errors import Toon3dError
from toon3d.shape.renderer import Renderer


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """sRGB values in [0,1] → linear RGB in [0,1] (IEC 61966-2-1), any shape."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    """Linear RGB in [0,1] → sRGB in [0,1] (the inverse of `srgb_to_linear`), any shape."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.0031308, x * 12.92, 1.055 * x.clamp_min(1e-12) ** (1 / 2.4) - 0.055)


def blend_morphs(neutral_depth: torch.Tensor, neutral_albedo: torch.Tensor, target_depths: torch.Tensor,
                 target_albedos: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Neutral depth [S,S] and albedo [3,S,S] in [-1,1], targets [J,S,S] / [J,3,S,S], weights [T,J]
    → blended depth [T,S,S] and albedo [T,3,S,S] in [-1,1] (the GLB's morph blend)."""
    j = target_depths.shape[0]
    if weights.dim() != 2 or weights.shape[1] != j or target_albedos.shape[0] != j:
        raise Toon3dError(f"weights must be [T,{j}] for {j} targets, got {tuple(weights.shape)}")
    w = weights.to(neutral_depth.dtype)
    depth = neutral_depth[None] + torch.einsum("tj,jhw->thw", w, target_depths - neutral_depth[None])
    lin0 = srgb_to_linear((neutral_albedo + 1) / 2)
    lin = srgb_to_linear((target_albedos + 1) / 2)
    blended = lin0[None] + torch.einsum("tj,jchw->tchw", w, lin - lin0[None])
    return depth, linear_to_srgb(blended) * 2 - 1


@dataclass(frozen=True)
class TurnSettings:
    """The view of a driven render: yaw(t) = turn_deg · sin(2π t / period_s)."""

    turn_deg: float = 15.0
    period_s: float = 8.0

    def yaw_deg(self, frames: int, fps: float) -> np.ndarray:
        """[frames] yaw in degrees."""
        t = np.arange(frames) / fps
        return self.turn_deg * np.sin(2 * math.pi * t / self.period_s) if self.period_s > 0 else np.zeros(frames)


def render_blended(renderer: Renderer, depth: torch.Tensor, albedo: torch.Tensor, light: torch.Tensor,
                   yaw_deg: np.ndarray | torch.Tensor, batch: int = 8, progress: bool = True) -> torch.Tensor:
    """Blended depth [T,S,S], albedo [T,3,S,S] in [-1,1], light [4], yaws [T] → frames [T,3,R,R] in [-1,1] (CPU),
    R = the renderer's size (depth and albedo resampled to it)."""
    from toon3d.shape.camera import rt_from_angles

    size = renderer.settings.size
    device = renderer.K.device
    yaws = torch.as_tensor(np.asarray(yaw_deg, dtype=np.float64), dtype=torch.float32)
    if yaws.shape != (depth.shape[0],):
        raise Toon3dError(f"one yaw per frame needed: {depth.shape[0]} frames, {tuple(yaws.shape)} yaws")
    out = []
    starts = range(0, depth.shape[0], batch)
    with torch.no_grad():
        for start in tqdm(starts, desc="driven render", unit="batch", leave=False, disable=not progress):
            d = depth[start:start + batch].to(device, torch.float32)
            a = albedo[start:start + batch].to(device, torch.float32)
            if d.shape[-1] != size:
                d = F.interpolate(d[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
                a = F.interpolate(a, size=(size, size), mode="bilinear", align_corners=False)
            li = light.to(device, torch.float32).reshape(1, 4).expand(len(d), 4)
            texture, _ = renderer.shade(a, d, li)
            R, t = rt_from_angles(yaws[start:start + batch].to(device), device=device, dtype=torch.float32)
            image, _ = renderer.render_mesh_rgb(d, texture.clamp(-1, 1), R, t, background=1.0)
            out.append(image.clamp(-1, 1).cpu())
    return torch.cat(out)
