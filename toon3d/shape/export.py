"""Everything a 3D result becomes on disk: maps, meshes, relit images and a turntable.

`render_products` computes the pictures (no files); `write_products` writes them into a folder
the caller made atomic. `toon3d render`, `toon3d reconstruct` and `toon3d avatar` share both, so
every 3D result has the same files with the same meaning.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from toon3d.shape.camera import normals_from_depth
from toon3d.shape.renderer import Renderer, turntable_views

# GAN2Shape's relighting grid (REFERENCE §6.9): dx ∈ {±1.5, ±0.7, 0} × dy ∈ {0, 0.6}, strength 0.3.
RELIGHT_DIRECTIONS = [(dx, dy) for dy in (0.0, 0.6) for dx in (-1.5, -0.7, 0.0, 0.7, 1.5)]
RELIGHT_STRENGTH = 0.3
# The sheet's rotations: GAN2Shape's yaw range ±70° at five angles.
SHEET_YAWS_DEG = (-60.0, -30.0, 0.0, 30.0, 60.0)


@dataclass
class ShapeProducts:
    """Pictures of one 3D result; images [3,S,S] or [N,3,S,S] in [-1,1] (CPU)."""

    depth: torch.Tensor            # [S,S] canonical depth
    albedo: torch.Tensor           # [3,S,S]
    light: torch.Tensor            # [4] (l_a, l_b, dx, dy)
    texture: torch.Tensor          # [3,S,S] the shaded canonical image (the mesh's texture)
    diffuse: torch.Tensor          # [1,S,S] in [0,1]
    normal: torch.Tensor           # [S,S,3] unit, Unsup3d convention
    shape_render: torch.Tensor     # [3,S,S] grey-shaded geometry, frontal light
    relit: torch.Tensor            # [10,3,S,S]
    rotations: torch.Tensor        # [len(SHEET_YAWS_DEG),3,S,S] textured mesh at the sheet's yaws
    turntable: list[torch.Tensor] = field(default_factory=list)  # frames [3,S,S]
    mask: torch.Tensor | None = None  # [S,S] bool foreground, optional


def _shape_shading(renderer: Renderer, depth: torch.Tensor) -> torch.Tensor:
    """Geometry alone, frontal grey light: GAN2Shape's `shape = 0.7·max(0, n_z)` picture, [B,3,S,S] in [-1,1]."""
    normal = normals_from_depth(depth, renderer.K)
    shade = 0.7 * normal[..., 2].clamp_min(0) + 0.15
    return (shade * 2 - 1).unsqueeze(1).expand(-1, 3, -1, -1)


def render_products(renderer: Renderer, depth: torch.Tensor, albedo: torch.Tensor, light: torch.Tensor,
                    mask: torch.Tensor | None = None, frames: int = 36, yaw_max_deg: float = 70.0,
                    pitch_max_deg: float = 20.0, batch: int = 8, progress: bool = True) -> ShapeProducts:
    """depth [S,S], albedo [3,S,S] in [-1,1], light [4] → every picture of the result (no files written)."""
    from toon3d.shape.camera import rt_from_angles

    device = renderer.K.device
    d = depth.to(device).unsqueeze(0)
    a = albedo.to(device).unsqueeze(0)
    li = light.to(device).reshape(1, 4)
    m = None if mask is None else mask.to(device).unsqueeze(0)
    with torch.no_grad():
        texture, diffuse = renderer.shade(a, d, li)
        normal = normals_from_depth(d, renderer.K)[0]
        dirs = torch.tensor(RELIGHT_DIRECTIONS, dtype=li.dtype, device=device)
        relit_light = torch.cat([li[:, :2].expand(len(dirs), 2), dirs], dim=1)
        relit = renderer.relight(a.expand(len(dirs), -1, -1, -1), d.expand(len(dirs), -1, -1), relit_light,
                                 RELIGHT_STRENGTH).clamp(-1, 1)
        views = [rt_from_angles(yaw, device=device, dtype=d.dtype) for yaw in SHEET_YAWS_DEG]
        n = len(views)
        rotations, _ = renderer.render_mesh_rgb(d.expand(n, -1, -1), texture.expand(n, -1, -1, -1),
                                                torch.cat([v[0] for v in views]), torch.cat([v[1] for v in views]),
                                                background=1.0, canon_mask=None if m is None else m.expand(n, -1, -1))
        turn = []
        table = turntable_views(frames, yaw_max_deg, pitch_max_deg, device=device, dtype=d.dtype) if frames else []
        starts = range(0, len(table), batch)
        for start in tqdm(starts, desc="turntable", unit="batch", leave=False, disable=not progress):
            chunk = table[start:start + batch]
            k = len(chunk)
            image, _ = renderer.render_mesh_rgb(d.expand(k, -1, -1), texture.expand(k, -1, -1, -1),
                                                torch.cat([v[0] for v in chunk]), torch.cat([v[1] for v in chunk]),
                                                background=1.0, canon_mask=None if m is None else m.expand(k, -1, -1))
            turn.extend(image.cpu())
        shape_render = _shape_shading(renderer, d)[0]
    return ShapeProducts(depth.detach().cpu(), albedo.detach().cpu(), light.detach().reshape(4).cpu(),
                         texture[0].cpu(), diffuse[0].cpu(), normal.cpu(), shape_render.cpu(), relit.cpu(),
                         rotations.cpu(), turn, None if mask is None else mask.cpu())


def write_products(folder: Path, products: ShapeProducts, K: torch.Tensor, formats: tuple[str, ...] = ("gif", "mp4"),
                   fps: float = 18.0, view: torch.Tensor | None = None) -> list[str]:
    """Write one result's files into `folder` (which the caller made atomic); returns the file names written.

    depth.npy (canonical depth [S,S] float32, Unsup3d units), depth.png (preview), depth16.png,
    albedo.png, canonical.png (shaded texture), diffuse.png, normal.png, shape.png, relight.png,
    rotations.png, mesh.obj/.mtl/.png, mesh.glb, turntable.<fmt>, turntable_sheet.png, light.json.
    With `products.mask` (the head, `toon3d.shape.head_mask`) the meshes hold only its triangles.
    """
    from toon3d.io.depth_maps import save_depth16_png, save_depth_png, save_normal_png
    from toon3d.io.images import make_grid, save_png
    from toon3d.io.mesh import mesh_from_depth, write_glb, write_obj
    from toon3d.io.video import frames_to_uint8, write_video

    p = products
    folder = Path(folder)
    np.save(folder / "depth.npy", p.depth.numpy().astype(np.float32))
    save_depth_png(p.depth, folder / "depth.png", p.mask)
    save_depth16_png(p.depth, folder / "depth16.png")
    save_png(p.albedo, folder / "albedo.png")
    save_png(p.texture, folder / "canonical.png")
    save_png(p.diffuse, folder / "diffuse.png", value_range=(0.0, 1.0))
    save_normal_png(p.normal, folder / "normal.png")
    save_png(p.shape_render, folder / "shape.png")
    save_png(make_grid(p.relit, nrow=5), folder / "relight.png")
    save_png(make_grid(p.rotations, nrow=len(p.rotations)), folder / "rotations.png")
    mesh = mesh_from_depth(p.depth, p.texture, K.cpu(), p.mask)
    write_obj(mesh, folder / "mesh.obj")
    write_glb(mesh, folder / "mesh.glb")
    names = ["depth.npy", "depth.png", "depth16.png", "albedo.png", "canonical.png", "diffuse.png", "normal.png",
             "shape.png", "relight.png", "rotations.png", "mesh.obj", "mesh.mtl", "mesh.png", "mesh.glb"]
    if p.turntable:
        frames_u8 = frames_to_uint8(p.turntable)
        for fmt in formats:
            write_video(frames_u8, folder / f"turntable.{fmt}", fps)
            names.append(f"turntable.{fmt}")
        count = min(12, len(p.turntable))
        picks = [round(i * len(p.turntable) / count) for i in range(count)]
        save_png(make_grid(torch.stack([p.turntable[i] for i in picks]), nrow=min(6, count)),
                 folder / "turntable_sheet.png")
        names.append("turntable_sheet.png")
    record = {"light": {"ambient": float(p.light[0]), "diffuse": float(p.light[1]),
                        "direction_xy": [float(p.light[2]), float(p.light[3])]}}
    if view is not None:
        v = view.detach().reshape(-1).cpu().tolist()
        record["view"] = {"rotation_rad": v[:3], "translation": v[3:6]}
    (folder / "light.json").write_text(json.dumps(record, indent=2) + "\n")
    names.append("light.json")
    return names
