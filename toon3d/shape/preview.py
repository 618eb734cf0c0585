"""Preview sheets of decompositions: input, reconstruction, albedo, depth shading, rotations.

Depth shading is the canonical surface lit from the camera (GAN2Shape's shape image,
0.7·max(0, n_z) + ambient): a flat card is a uniform grey, a face shows its relief. Rotated
renders use the z-buffered mesh renderer so the turned face is drawn with correct occlusion.
"""

from __future__ import annotations

import torch

from toon3d.shape.camera import rt_from_angles
from toon3d.shape.photo_geometry import Decomposition, reconstruct
from toon3d.shape.renderer import Renderer

PREVIEW_YAWS_DEG = (-45.0, 45.0)


def depth_shading(depth: torch.Tensor, renderer: Renderer, light=(-0.3, -0.3)) -> torch.Tensor:
    """Grey shape image [B,3,S,S] in [-1,1] of canonical depth [B,S,S]: 0.2 + 0.8·max(0, n·l̂), l̂ ∝ (dx, dy, 1)."""
    from toon3d.shape.camera import normals_from_depth

    normal = normals_from_depth(depth, renderer.K)
    direction = torch.tensor([light[0], light[1], 1.0], dtype=depth.dtype, device=depth.device)
    direction = direction / direction.norm()
    lit = 0.2 + 0.8 * (normal * direction).sum(-1).clamp_min(0)
    return (lit * 2 - 1).unsqueeze(1).expand(-1, 3, -1, -1)


def depth_image(depth: torch.Tensor, low: float = 0.9, high: float = 1.1) -> torch.Tensor:
    """Depth [B,S,S] as grey [B,3,S,S] in [-1,1]: near is bright."""
    x = ((high - depth) / (high - low)).clamp(0, 1)
    return (x * 2 - 1).unsqueeze(1).expand(-1, 3, -1, -1)


@torch.no_grad()
def preview_columns(images: torch.Tensor, dec: Decomposition, renderer: Renderer,
                    yaws_deg: tuple[float, ...] = PREVIEW_YAWS_DEG) -> list[torch.Tensor]:
    """Columns [B,3,S,S] in [-1,1]: input, reconstruction, mirrored reconstruction, albedo, depth,
    depth shading, then shading and texture turned to each yaw."""
    rec = reconstruct(renderer, dec)
    rec_flip = reconstruct(renderer, dec, flip=True)
    shading = depth_shading(dec.depth, renderer)
    columns = [images, rec.image, rec_flip.image, dec.albedo, depth_image(dec.depth), shading]
    b = images.shape[0]
    for yaw in yaws_deg:
        R, t = rt_from_angles([yaw] * b, device=images.device, dtype=images.dtype)
        columns.append(renderer.render_mesh_rgb(dec.depth, shading, R, t)[0])
        columns.append(renderer.render_mesh_rgb(dec.depth, rec.texture.clamp(-1, 1), R, t)[0])
    return columns


def preview_grid(images: torch.Tensor, dec: Decomposition, renderer: Renderer) -> torch.Tensor:
    """One sheet [3,H,W] in [-1,1]: a row per image, the columns of `preview_columns`."""
    from toon3d.io.images import make_grid

    columns = preview_columns(images, dec, renderer)
    rows = torch.stack(columns, dim=1).flatten(0, 1)  # image-major: row b holds its columns
    return make_grid(rows, nrow=len(columns))
