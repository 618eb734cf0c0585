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
    from toon3d.devices import resolve_device
    from toon3d.errors import Toon3dError
    from toon3d.io.atomic import atomic_dir, check_output_dir
    from toon3d.io.video import VIDEO_FORMATS
    from toon3d.shape.export import render_products, write_products
    from toon3d.shape.renderer import Renderer, RenderSettings

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
    products = render_products(renderer, depth, albedo, light[0], mask, frames=args.frames,
                               yaw_max_deg=args.yaw_max, pitch_max_deg=args.pitch_max, batch=args.batch)
    with atomic_dir(args.out, overwrite=args.overwrite, inputs=inputs) as out:
        names = write_products(out, products, renderer.K, tuple(formats), args.fps)
    print(f"wrote {args.out}: {', '.join(names)} ({len(products.turntable)} frames at {size}x{size}, "
          f"yaw ±{args.yaw_max:g}°, pitch ±{args.pitch_max:g}°)")
    return 0
