"""The Unsup3d/GAN2Shape renderer Φ(depth, albedo, view, light) for one image size.

Canonical frame: the depth map [B,S,S] is seen from the frontal camera. A view (R, t) moves
the canonical surface about (0, 0, rot_center_depth). Reconstruction follows the reference:
render the depth of the warped canonical grid mesh (`warp_canon_depth`), back-project it,
inverse-warp it into the canonical frame and `grid_sample` the canonical image there. For
turntables, `render_mesh_rgb` rasterises the textured mesh directly (z-buffer, per-vertex
colours), so occluded and back-facing parts are drawn correctly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from toon3d.errors import Toon3dError
from toon3d.shape.camera import (check_depth, intrinsics, normals_from_depth, rt_from_angles,
                                 warped_grid_from_depth, warped_points_from_depth)
from toon3d.shape.rasterise import grid_faces, interpolate, rasterise, render_depth


@dataclass
class RenderSettings:
    """Camera and depth-range settings shared by every render of one image size.

    pixel_offset 0.5 reproduces neural_renderer's sampling (pixel i at u = i + 0.5) and so the
    published Unsup3d/GAN2Shape numerics; 0.0 samples pixel centres (no half-pixel shift).
    """

    size: int
    fov_deg: float = 10.0
    rot_center_depth: float = 1.0
    min_depth: float = 0.9
    max_depth: float = 1.1
    border_depth: float = 1.04
    near: float = 0.1
    far: float = 10.0
    anti_aliasing: bool = True
    pixel_offset: float = 0.5

    @property
    def margin(self) -> float:
        """Slack around [min_depth, max_depth] kept by the clamp of rendered depth (0.1)."""
        return (self.max_depth - self.min_depth) / 2.0

    @property
    def background_depth(self) -> float:
        """Rendered depth of pixels nothing covers after the clamp (1.2)."""
        return self.max_depth + self.margin


def depth_from_network(raw: torch.Tensor, settings: RenderSettings, border_columns: int = 2) -> torch.Tensor:
    """Depth-net output [B,H,W] → canonical depth [B,H,W] in [min_depth, max_depth] (Unsup3d/GAN2Shape).

    d = tanh(raw − mean(raw)) mapped linearly to [0.9, 1.1]; the left and right
    `border_columns` columns are set to `border_depth` (1.04 = 0.7·max + 0.3·min), the
    reference's clamp that keeps image borders on a flat background (pad value 1, not
    GAN2Shape's 1.02 quirk).
    """
    d = torch.tanh(raw - raw.flatten(1).mean(1).view(-1, 1, 1))
    d = settings.min_depth + (d + 1.0) / 2.0 * (settings.max_depth - settings.min_depth)
    border = torch.zeros_like(d[:1])
    border[..., :border_columns] = 1.0
    border[..., d.shape[-1] - border_columns:] = 1.0
    return d * (1.0 - border) + border * settings.border_depth


def light_from_tanh(raw: torch.Tensor) -> torch.Tensor:
    """Network light output [B,4] in [-1,1] → (l_a, l_b, dx, dy) [B,4]: l_a = t0/2+.5, l_b = t1/2+.5."""
    return torch.cat([raw[:, :2] / 2.0 + 0.5, raw[:, 2:]], dim=1)


def light_direction(light: torch.Tensor) -> torch.Tensor:
    """Unit light direction [B,3] = normalise(dx, dy, 1) from light [B,4] = (l_a, l_b, dx, dy)."""
    d = torch.cat([light[:, 2:4], torch.ones_like(light[:, :1])], dim=1)
    return d / d.norm(dim=1, keepdim=True)


def turntable_views(n_frames: int, yaw_max_deg: float = 70.0, pitch_max_deg: float = 20.0,
                    device: torch.device | str | None = None,
                    dtype: torch.dtype | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Looping turntable poses: list of (R [1,3,3], t [1,3]) for frames k = 0..n-1.

    yaw = yaw_max·sin(2πk/n), pitch = pitch_max·sin(4πk/n): frame 0 is frontal, the sweep
    reaches ±yaw_max (the GAN2Shape range ±70°) and ±pitch_max (±20°) and returns smoothly.
    """
    if n_frames < 1:
        raise Toon3dError(f"turntable needs at least 1 frame, got {n_frames}; pass --frames ≥ 1")
    views = []
    for k in range(n_frames):
        phase = 2.0 * math.pi * k / n_frames
        views.append(rt_from_angles(yaw_max_deg * math.sin(phase), pitch_max_deg * math.sin(2 * phase),
                                    device=device, dtype=dtype))
    return views


class Renderer:
    """Renders canonical depth/albedo at views for one S×S size; holds K and the grid faces."""

    def __init__(self, settings: RenderSettings, device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float32) -> None:
        self.settings = settings
        self.K = intrinsics(settings.size, settings.fov_deg, device=device, dtype=dtype)
        self.faces = grid_faces(settings.size, settings.size, device=device)

    def _check(self, depth: torch.Tensor, name: str = "canon_depth") -> None:
        check_depth(depth, name)
        s = self.settings.size
        if depth.shape[1:] != (s, s):
            raise Toon3dError(f"{name} is {tuple(depth.shape[1:])} but this renderer is {s}x{s}; "
                              f"resize it or build a Renderer of that size")

    def _face_mask(self, canon_mask: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        if canon_mask is None:
            return None
        s = self.settings.size
        if canon_mask.shape != (batch, s, s):
            raise Toon3dError(f"canon_mask must be [B,H,W] = {(batch, s, s)}, got {tuple(canon_mask.shape)}")
        m = canon_mask > 0.5
        # Faces follow `grid_faces`: all [tl, bl, tr] triangles, then all [tr, bl, br].
        tl, tr, bl, br = m[:, :-1, :-1], m[:, :-1, 1:], m[:, 1:, :-1], m[:, 1:, 1:]
        shared = tr & bl
        return torch.cat([(tl & shared).reshape(batch, -1), (shared & br).reshape(batch, -1)], dim=1)

    def warped_vertices(self, canon_depth: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Canonical grid points moved to the view: [B,H·W,3] in camera space."""
        points = warped_points_from_depth(canon_depth, self.K, R, t, self.settings.rot_center_depth)
        return points.reshape(canon_depth.shape[0], -1, 3)

    def warp_canon_depth(self, canon_depth: torch.Tensor, R: torch.Tensor, t: torch.Tensor,
                         canon_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Depth [B,H,W] of the canonical surface seen from view (R, t), clamped to [0.8, 1.2].

        Uncovered pixels (and those whose anti-aliased depth mixes in the background) end at
        1.2 = max_depth + margin; `valid_mask` tests `< 1.2`.
        """
        self._check(canon_depth)
        s = self.settings
        verts = self.warped_vertices(canon_depth, R, t)
        depth = render_depth(verts, self.faces, self.K, s.size, near=s.near, far=s.far,
                             anti_aliasing=s.anti_aliasing, pixel_offset=s.pixel_offset,
                             face_mask=self._face_mask(canon_mask, canon_depth.shape[0]))
        return depth.clamp(s.min_depth - s.margin, s.max_depth + s.margin)

    def valid_mask(self, recon_depth: torch.Tensor) -> torch.Tensor:
        """[B,1,H,W] float: 1 where the rendered depth hit the surface (recon_depth < 1.2)."""
        return (recon_depth < self.settings.background_depth).to(recon_depth.dtype).unsqueeze(1)

    def warp_grid(self, canon_depth: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Grid [B,H,W,2]: where each canonical pixel lands in the view (align_corners=True coordinates)."""
        return warped_grid_from_depth(canon_depth, self.K, R, t, self.settings.rot_center_depth)

    def inverse_warp_grid(self, recon_depth: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Grid [B,H,W,2] locating each view pixel in the canonical image (grid_sample, align_corners=True)."""
        return warped_grid_from_depth(recon_depth, self.K, R, t, self.settings.rot_center_depth, inverse=True)

    def render_view(self, canon_image: torch.Tensor, canon_depth: torch.Tensor, R: torch.Tensor,
                    t: torch.Tensor, canon_mask: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Canonical image [B,C,H,W] in [-1,1] seen from (R, t) → image [B,C,H,W] (clamped), mask [B,1,H,W], recon_depth.

        Image by bilinear inverse-warp sampling; the mask is `recon_depth < 1.2`, times the
        canonical mask sampled with nearest when one is given.
        """
        recon_depth = self.warp_canon_depth(canon_depth, R, t, canon_mask)
        grid = self.inverse_warp_grid(recon_depth, R, t)
        image = F.grid_sample(canon_image, grid, mode="bilinear", align_corners=True).clamp(-1, 1)
        mask = self.valid_mask(recon_depth).detach()
        if canon_mask is not None:
            sampled = F.grid_sample(canon_mask.to(grid.dtype).unsqueeze(1), grid, mode="nearest",
                                    align_corners=True)
            mask = mask * sampled.detach()
        return image, mask, recon_depth

    def shade(self, albedo: torch.Tensor, depth: torch.Tensor, light: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Lambertian canonical image: albedo [B,3,H,W] in [-1,1], depth [B,H,W], light [B,4] = (l_a, l_b, dx, dy).

        Returns texture = (albedo/2+.5)·(l_a + l_b·max(0, n·l̂))·2−1 [B,3,H,W] and the diffuse
        term max(0, n·l̂) [B,1,H,W], l̂ = normalise(dx, dy, 1). Use `light_from_tanh` on raw
        network outputs.
        """
        if light.dim() != 2 or light.shape[1] != 4:
            raise Toon3dError(f"light must be [B,4] = (l_a, l_b, dx, dy), got {tuple(light.shape)}")
        normal = normals_from_depth(depth, self.K)
        direction = light_direction(light)
        diffuse = (normal * direction.view(-1, 1, 1, 3)).sum(-1).clamp_min(0).unsqueeze(1)
        shading = light[:, 0].view(-1, 1, 1, 1) + light[:, 1].view(-1, 1, 1, 1) * diffuse
        texture = (albedo / 2.0 + 0.5) * shading * 2.0 - 1.0
        return texture, diffuse

    def relight(self, albedo: torch.Tensor, depth: torch.Tensor, light: torch.Tensor,
                strength: torch.Tensor | float = 0.0, ambient_shift: float = -0.6
                ) -> torch.Tensor:
        """Re-lit canonical image [B,3,H,W] in [-1,1] (GAN2Shape pseudo-sample / relighting shading).

        shading = l_a + ambient_shift·r + (l_b + r)·max(0, n·l̂) with r = `strength` ([B] or
        scalar; r = 0 gives `shade`). GAN2Shape samples r ~ U(−0.1, 0.6) for pseudo samples and
        uses r ∈ {0.3, 0.6} with directions dx ∈ {±1.5, ±0.7, 0}, dy ∈ {0, 0.6} for its relit renders.
        """
        _, diffuse = self.shade(albedo, depth, light)
        r = torch.as_tensor(strength, dtype=albedo.dtype, device=albedo.device).reshape(-1, 1, 1, 1)
        shading = light[:, 0].view(-1, 1, 1, 1) + ambient_shift * r + (light[:, 1].view(-1, 1, 1, 1) + r) * diffuse
        return (albedo / 2.0 + 0.5) * shading * 2.0 - 1.0

    def reconstruct(self, canon_depth: torch.Tensor, albedo: torch.Tensor, R: torch.Tensor,
                    t: torch.Tensor, light: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Φ(d, a, v, l): shade the albedo, then render it at (R, t) → image, mask, recon_depth."""
        texture, _ = self.shade(albedo, canon_depth, light)
        return self.render_view(texture, canon_depth, R, t)

    def render_mesh_rgb(self, canon_depth: torch.Tensor, texture: torch.Tensor, R: torch.Tensor,
                        t: torch.Tensor, background: float | tuple[float, float, float] = 1.0,
                        canon_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Textured grid mesh at (R, t) → image [B,3,H,W] in [-1,1] and coverage [B,1,H,W] in [0,1].

        Z-buffered, double-sided, with perspective-correct per-vertex colours, 2× supersampled;
        `background` is the colour (in [-1,1]) where no triangle is visible.
        """
        self._check(canon_depth)
        s = self.settings
        b = canon_depth.shape[0]
        if texture.dim() != 4 or texture.shape[0] != b or texture.shape[2:] != canon_depth.shape[1:]:
            raise Toon3dError(f"texture must be [B,C,H,W] matching depth {tuple(canon_depth.shape)}, "
                              f"got {tuple(texture.shape)}")
        verts = self.warped_vertices(canon_depth, R, t)
        ss = 2 if s.anti_aliasing else 1
        frags = rasterise(verts, self.faces, self.K, s.size, near=s.near, far=s.far, supersample=ss,
                          pixel_offset=s.pixel_offset, face_mask=self._face_mask(canon_mask, b))
        colours = texture.flatten(2).transpose(1, 2)  # [B,H·W,C]
        image = interpolate(frags, colours)
        cover = frags.covered.unsqueeze(1).to(image.dtype)
        bg = torch.as_tensor(background, dtype=image.dtype, device=image.device).reshape(1, -1, 1, 1)
        image = image * cover + bg * (1 - cover)
        if ss > 1:
            image = F.avg_pool2d(image, ss)
            cover = F.avg_pool2d(cover, ss)
        return image.clamp(-1, 1), cover
