"""`toon3d reconstruct`: 3D shape of one GAN image (Stage 3: GAN2Shape cycles, or the instant reconstructor).

Examples:
    toon3d reconstruct --seed 0 --ckpt cartoon --out out/recon
    toon3d reconstruct --seed 0 --ckpt toon --instant --out out/instant
    toon3d reconstruct --latent out/photo/latent.pt --ckpt cartoon --no-sym --out out/ablation
"""

from __future__ import annotations

import argparse

PRESETS = ("cpu", "paper", "released", "tiny")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `toon3d reconstruct`."""
    p = subparsers.add_parser(
        "reconstruct", help="depth, albedo, light, view, meshes, turntable and relit images of one GAN image",
        description="Reconstruct the 3D face of one generator image (the paper's Stage 3): GAN2Shape cycles "
                    "(step 1 albedo, step 2 pseudo samples projected through the GAN, step 3 joint V/L/D/A) "
                    "started from the pretrained reconstructor of the generator's world, or its instant "
                    "feed-forward prediction with --instant. Writes depth.npy (canonical depth, Unsup3d units), "
                    "albedo, normal map, light and view, OBJ and GLB meshes, a turntable, relit images and a "
                    "Figure-6-like sheet.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--seed", type=int, help="seed of the face (z → W, truncated)")
    src.add_argument("--latent", metavar="W.pt", help="a W latent file ([D] or [N,D])")
    p.add_argument("--latent-index", type=int, default=0, help="row of --latent (default 0)")
    p.add_argument("--ckpt", default="cartoon", help="generator: base | cartoon | toon (built-in) | FILE (default cartoon)")
    p.add_argument("--no-blend", action="store_true", help="a built-in style without its blend with base")
    p.add_argument("--truncation", type=float, default=0.7, help="psi for --seed (default 0.7)")
    p.add_argument("--preset", choices=list(PRESETS), default="cpu",
                   help="cpu (minutes on 2 cores, default), paper (256 px schedule, GPU), released (the released "
                        "code's: no symmetry, no L_id), tiny (tests)")
    p.add_argument("--instant", action="store_true", help="the pretrained reconstructor's prediction only (≈1 s)")
    p.add_argument("--reconstructor", metavar="FILE", help="pretrained reconstructor (default: the world's built-in)")
    p.add_argument("--no-sym", action="store_true", help="ablation: no symmetry loss L_sym")
    p.add_argument("--no-id", action="store_true", help="ablation: no identity loss L_id")
    p.add_argument("--perceptual", choices=["vgg", "dlib", "none"], default=None,
                   help="perceptual term: vgg (user-supplied VGG16, the paper's) or dlib (offline substitute); "
                        "default: the preset's")
    p.add_argument("--no-head-mask", action="store_true",
                   help="keep the whole frame in the mesh and turntable (Unsup3d/GAN2Shape), not only the head")
    p.add_argument("--seed3d", type=int, default=0, help="seed of the 3D networks and pseudo samples (default 0)")
    p.add_argument("--frames", type=int, default=36, help="turntable frames (default 36)")
    p.add_argument("--fps", type=float, default=18.0, help="turntable frames per second (default 18)")
    p.add_argument("--format", default="gif,mp4", help="turntable formats: gif, mp4 or both (default)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--out", required=True, help="output folder (new or empty unless --overwrite)")
    p.add_argument("--resume", action="store_true", help="continue a reconstruction that was killed")
    p.add_argument("--overwrite", action="store_true", help="replace an output folder toon3d wrote")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _latent(args: argparse.Namespace, loaded, device):
    import torch

    from toon3d.errors import Toon3dError
    from toon3d.io.latents import load_latents
    from toon3d.seeds import z_from_seed

    g = loaded.generator
    if args.latent is not None:
        codes = load_latents(args.latent, dim=None, flag="toon3d reconstruct --latent")
        if not 0 <= args.latent_index < codes.shape[0]:
            raise Toon3dError(f"--latent-index {args.latent_index} is out of range: {args.latent} holds "
                              f"{codes.shape[0]} latent(s)")
        w = codes[args.latent_index:args.latent_index + 1]
        if w.shape[1] != g.style_dim:
            raise Toon3dError(f"{args.latent}: a latent of width {w.shape[1]} given, {g.style_dim} expected by "
                              f"{loaded.source}; pass W codes of that generator")
        if not torch.isfinite(w).all():
            raise Toon3dError(f"{args.latent} holds NaN or infinite values; pass a valid latent")
        return w.to(device)
    if not 0 <= args.seed < 2**32:
        raise Toon3dError(f"--seed must be in 0..{2**32 - 1}, got {args.seed}")
    z, _ = z_from_seed(args.seed, g.style_dim)
    mean = loaded.mean_latent.to(device)
    with torch.no_grad():
        return mean + args.truncation * (g.mapping(z.to(device)) - mean)


def run(args: argparse.Namespace) -> int:
    """Generate the image, reconstruct it (resumable), export everything atomically."""
    import json
    import math
    import shutil
    import time
    from pathlib import Path

    import torch

    from toon3d.devices import resolve_device
    from toon3d.errors import Toon3dError
    from toon3d.io.atomic import atomic_dir, check_output_dir
    from toon3d.io.images import save_png
    from toon3d.io.sheet import labelled_sheet
    from toon3d.io.video import VIDEO_FORMATS
    from toon3d.models import resolve_generator
    from toon3d.pipeline_shape import ShapeOptions, builtin_world, export_head_mask, reconstruct_generated
    from toon3d.shape.export import render_products, write_products
    from toon3d.shape.renderer import Renderer, RenderSettings

    formats = tuple(f.strip().lower() for f in args.format.split(",") if f.strip())
    unknown = sorted(set(formats) - set(VIDEO_FORMATS))
    if unknown:
        raise Toon3dError(f"--format {args.format}: unknown {', '.join(unknown)}; use gif, mp4 or both")
    if args.frames < 1 or not args.fps > 0 or not math.isfinite(args.truncation):
        raise Toon3dError("--frames and --fps must be positive and --truncation finite")
    out = Path(args.out)
    check_output_dir(out, args.overwrite, [args.latent])
    device = resolve_device(args.device)
    loaded = resolve_generator(args.ckpt, blend=not args.no_blend)
    loaded.generator.to(device).eval()
    w = _latent(args, loaded, device)
    with torch.no_grad():
        image = loaded.generator.synthesis(w[:, None].expand(-1, loaded.generator.n_latent, -1),
                                           noise_mode="const").clamp(-1, 1)
    options = ShapeOptions(preset=args.preset, instant=args.instant, reconstructor=args.reconstructor,
                           seed=args.seed3d, no_sym=args.no_sym, no_id=args.no_id, perceptual=args.perceptual)
    checkpoints = out.parent / f".{out.name}.toon3d-ckpt"
    if checkpoints.exists() and not args.resume:
        raise Toon3dError(f"an earlier reconstruction into {out} stopped before it finished ({checkpoints}); pass "
                          "--resume to continue it, or remove that folder to start over")

    def embedder():
        from toon3d.faces.identity import load_identity_embedder

        return load_identity_embedder("dlib").to(device).eval()

    start = time.perf_counter()
    result, _, record = reconstruct_generated(image, w, loaded.generator, args.ckpt, options, device, embedder,
                                              None if args.instant else checkpoints, None, not args.no_progress)
    seconds = time.perf_counter() - start
    size = result["depth"].shape[-1]
    renderer = Renderer(RenderSettings(size), device=device)
    mask, mask_record = (None, None) if args.no_head_mask else \
        export_head_mask(image, builtin_world(args.ckpt) is not None, result, renderer, device)
    record["head_mask"] = mask_record
    products = render_products(renderer, result["depth"], result["albedo"], result["light"], mask, args.frames,
                               progress=not args.no_progress)
    with atomic_dir(out, overwrite=args.overwrite, inputs=[args.latent]) as tmp:
        save_png(image[0], tmp / "input.png")
        names = write_products(tmp, products, renderer.K, formats, args.fps, view=result["view"])
        p = products
        small = torch.nn.functional.interpolate(image, size=(size, size), mode="bilinear", align_corners=False,
                                                antialias=image.shape[-1] > size)[0] if image.shape[-1] != size \
            else image[0]
        recon, _, _ = renderer.reconstruct(result["depth"][None].to(device), result["albedo"][None].to(device),
                                           *_view_rt(result["view"].to(device)), result["light"][None].to(device))
        row = [small, recon[0].cpu(), p.albedo, *p.rotations, p.relit[0], p.relit[2], p.relit[4],
               p.normal.permute(2, 0, 1) * torch.tensor([1.0, -1.0, -1.0]).view(3, 1, 1), p.shape_render]
        cols = ["input", "recon", "albedo", "yaw -60", "-30", "0", "+30", "+60", "light left", "front", "right",
                "normals", "shape"]
        save_png(labelled_sheet([(args.ckpt, row)], cols), tmp / "sheet.png")
        summary = {"command": "toon3d reconstruct", "ckpt": args.ckpt, "source": loaded.source,
                   "seed": args.seed, "latent": args.latent, "truncation": args.truncation,
                   "seconds": round(seconds, 2), "device": str(device), "reconstruction": record,
                   "files": ["input.png", "sheet.png", *names]}
        (tmp / "reconstruct.json").write_text(json.dumps(summary, indent=2) + "\n")
    shutil.rmtree(checkpoints, ignore_errors=True)
    print(f"wrote {out}: sheet.png, depth.npy, mesh.obj/.glb, normal.png, relight.png, turntable "
          f"({record['mode']}, {seconds:.1f} s)")
    return 0


def _view_rt(view):
    from toon3d.shape.photo_geometry import view_rt

    return view_rt(view[None])
