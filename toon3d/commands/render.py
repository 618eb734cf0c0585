"""`toon3d render`: export a canonical depth map (+ albedo) as mesh, maps and a turntable.

Example:
    toon3d render --depth depth.npy --albedo albedo.png --out out/face --frames 36 --format gif,mp4
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `toon3d render`."""
    p = subparsers.add_parser(
        "render", help="mesh (OBJ/GLB), normal and depth maps, turntable GIF/MP4 from a depth map",
        description="Turn a canonical depth map (Unsup3d units, ~0.9-1.1) and an albedo image into a "
                    "textured mesh (OBJ+MTL+PNG and GLB), a normal map, depth PNGs and a turntable.")
    p.add_argument("--depth", required=True,
                   help="canonical depth: .npy [H,W] float, 16-bit PNG (0..65535 ↔ 0.8..1.2) or 8-bit PNG "
                        "(synface convention, bright = near)")
    p.add_argument("--albedo", help="albedo image (PNG/JPEG, resized to --size); default: flat grey")
    p.add_argument("--mask", help="optional foreground mask image (white = keep); the turntable drops the rest")
    p.add_argument("--light", type=float, nargs=4, default=[0.5, 0.5, 0.0, 0.0],
                   metavar=("AMBIENT", "DIFFUSE", "DX", "DY"),
                   help="Lambertian light: ambient, diffuse (≥ 0), direction (dx, dy, 1); default 0.5 0.5 0 0")
    p.add_argument("--out", required=True, help="output folder (created; must not exist unless --overwrite)")
    p.add_argument("--size", type=int, help="render size in pixels (default: the depth map's size)")
    p.add_argument("--frames", type=int, default=36, help="turntable frames (default 36)")
    p.add_argument("--fps", type=float, default=18.0, help="turntable frames per second (default 18)")
    p.add_argument("--format", default="gif,mp4", help="turntable formats, comma-separated: gif, mp4")
    p.add_argument("--yaw-max", type=float, default=70.0, help="turntable yaw amplitude in degrees (default 70)")
    p.add_argument("--pitch-max", type=float, default=20.0, help="turntable pitch amplitude in degrees (default 20)")
    p.add_argument("--pixel-offset", type=float, default=0.5, choices=[0.0, 0.5],
                   help="rasteriser pixel centres: 0.5 = neural_renderer parity (default), 0.0 = centred")
    p.add_argument("--batch", type=int, default=8, help="turntable frames rendered per batch (default 8)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda:N")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.set_defaults(func=run)


def _load_inputs(args: argparse.Namespace):
    import torch
    import torch.nn.functional as F

    from toon3d.errors import Toon3dError
    from toon3d.io.depth_maps import load_depth
    from toon3d.io.images import load_image

    depth = load_depth(args.depth)
    h, w = depth.shape
    lo, hi = depth.min().item(), depth.max().item()
    if lo < 0.5 or hi > 1.5:
        raise Toon3dError(f"{args.depth} has depths in [{lo:.3g}, {hi:.3g}], not Unsup3d units; "
                          f"rescale it to about [0.9, 1.1] (camera at 0, face at ~1)")
    if h != w:
        raise Toon3dError(f"{args.depth} is {h}x{w}; the renderer needs a square depth map, crop it first")
    size = args.size or h
    if not 8 <= size <= 2048:
        raise Toon3dError(f"--size {size} is out of range; use 8..2048")
    if size != h:
        depth = F.interpolate(depth[None, None], size=(size, size), mode="bilinear", align_corners=True)[0, 0]
    if args.albedo:
        albedo = load_image(args.albedo, size)
    else:
        albedo = torch.full((3, size, size), 0.4)
    mask = None
    if args.mask:
        mask = load_image(args.mask, size).mean(0) > 0
    light = torch.tensor([args.light], dtype=torch.float32)
    if not torch.isfinite(light).all() or light[0, 0] < 0 or light[0, 1] < 0:
        raise Toon3dError(f"--light {args.light} is invalid; ambient and diffuse must be ≥ 0 and all values finite")
    return depth, albedo, mask, light


def run(args: argparse.Namespace) -> int:
    """Render and export everything into --out atomically."""
    import torch
    from tqdm import tqdm

    from toon3d.devices import resolve_device
    from toon3d.errors import Toon3dError
    from toon3d.io.atomic import atomic_dir, check_output_dir
    from toon3d.io.depth_maps import save_depth16_png, save_depth_png, save_normal_png
    from toon3d.io.images import make_grid, save_png
    from toon3d.io.mesh import mesh_from_depth, write_glb, write_obj
    from toon3d.io.video import VIDEO_FORMATS, frames_to_uint8, write_video
    from toon3d.shape.camera import normals_from_depth
    from toon3d.shape.renderer import Renderer, RenderSettings, turntable_views

    inputs = [args.depth, args.albedo, args.mask]
    check_output_dir(args.out, args.overwrite, inputs)  # fail before the turntable, not after it
    formats = [f.strip().lower() for f in args.format.split(",") if f.strip()]
    unknown = sorted(set(formats) - set(VIDEO_FORMATS))
    if unknown:
        raise Toon3dError(f"--format {args.format}: unknown {', '.join(unknown)}; use gif, mp4 or both")
    if args.frames < 1 or args.batch < 1 or args.fps <= 0:
        raise Toon3dError("--frames, --batch and --fps must be positive")
    device = resolve_device(args.device)
    depth, albedo, mask, light = _load_inputs(args)
    size = depth.shape[0]
    renderer = Renderer(RenderSettings(size, pixel_offset=args.pixel_offset), device=device)
    depth_b = depth.to(device).unsqueeze(0)
    mask_b = None if mask is None else mask.to(device).unsqueeze(0)
    with torch.no_grad():
        texture, diffuse = renderer.shade(albedo.to(device).unsqueeze(0), depth_b, light.to(device))
        normal = normals_from_depth(depth_b, renderer.K)[0]
        # GAN2Shape's relighting grid: dx ∈ {−1.5, −0.7, 0, 0.7, 1.5} × dy ∈ {0, 0.6}, strength 0.3.
        relight_dirs = torch.tensor([[dx, dy] for dy in (0.0, 0.6) for dx in (-1.5, -0.7, 0.0, 0.7, 1.5)])
        relight_light = torch.cat([light[:, :2].expand(len(relight_dirs), 2), relight_dirs], dim=1).to(device)
        relit = renderer.relight(albedo.to(device).expand(len(relight_dirs), -1, -1, -1),
                                 depth_b.expand(len(relight_dirs), -1, -1), relight_light, 0.3).clamp(-1, 1)
        views = turntable_views(args.frames, args.yaw_max, args.pitch_max, device=device)
        frames = []
        for start in tqdm(range(0, len(views), args.batch), desc="turntable", unit="batch", leave=False):
            chunk = views[start:start + args.batch]
            R = torch.cat([v[0] for v in chunk])
            t = torch.cat([v[1] for v in chunk])
            n = len(chunk)
            image, _ = renderer.render_mesh_rgb(depth_b.expand(n, -1, -1), texture.expand(n, -1, -1, -1), R, t,
                                                background=1.0,
                                                canon_mask=None if mask_b is None else mask_b.expand(n, -1, -1))
            frames.extend(image.cpu())
    frames_u8 = frames_to_uint8(frames)
    sheet_idx = [round(i * len(frames) / min(12, len(frames))) for i in range(min(12, len(frames)))]
    with atomic_dir(args.out, overwrite=args.overwrite, inputs=inputs) as out:
        mesh = mesh_from_depth(depth, texture[0].cpu(), renderer.K.cpu())
        write_obj(mesh, out / "mesh.obj")
        write_glb(mesh, out / "mesh.glb")
        save_normal_png(normal.cpu(), out / "normal.png")
        save_depth_png(depth, out / "depth.png", mask)
        save_depth16_png(depth, out / "depth16.png")
        save_png(texture[0].cpu(), out / "canonical.png")
        save_png(diffuse[0].cpu(), out / "diffuse.png", value_range=(0.0, 1.0))
        save_png(make_grid(relit.cpu(), nrow=5), out / "relight.png")
        for fmt in formats:
            write_video(frames_u8, out / f"turntable.{fmt}", args.fps)
        save_png(make_grid(torch.stack([frames[i] for i in sheet_idx]), nrow=min(6, len(sheet_idx))),
                 out / "turntable_sheet.png")
    print(f"wrote {args.out}: mesh.obj/.mtl/.png, mesh.glb, normal.png, depth.png, depth16.png, canonical.png, "
          f"diffuse.png, relight.png, {', '.join('turntable.' + f for f in formats)}, turntable_sheet.png "
          f"({len(frames)} frames at {size}x{size}, yaw ±{args.yaw_max:g}°, pitch ±{args.pitch_max:g}°)")
    return 0
