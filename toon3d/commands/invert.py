"""`toon3d invert`: a photo's face as a latent of a generator (align, then rosinality's projector).

Outputs (all in --out, all-or-nothing):

  - `latent.pt` + `latent.npy`: the W code [1,D] float32, which every command reading W latents
    takes (`toon3d generate --latents latent.pt --space w`, `toon3d edit --latent latent.pt`);
    with --wplus the W+ code [1,n_latent,D] (commands that read only W refuse it);
  - `noises.pt`: the optimised noise maps {"noise_i": [1,1,r,r]} (the image was made with them;
    other commands use the generator's stored maps, which changes fine detail only);
  - `projected.png` (the generator's image), `compare.png` (aligned photo | the start's image |
    projection, each at least 256 px), `aligned.png` (the target; with `align.json` when the
    photo was aligned here);
  - `losses.json`: the settings, the loss and start used, per-step losses, learning rates and
    latent-noise strengths, and the final PSNR and dlib identity distance to the target.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from toon3d.commands.align import add_layout_arguments

ENCODER_HELP = ("auto: the shipped encoder trained for these generator weights, else the mean W (default); none: "
                "the mean W (rosinality); FILE: an encoder from toon3d train-encoder")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `toon3d invert`."""
    parser = subparsers.add_parser(
        "invert", help="find the latent of a photo's face (align + GAN inversion)",
        description="Align the face of a photo to the generator's layout (or take an aligned image with "
                    "--aligned) and optimise a W code and the noise maps so that the generator reproduces it "
                    "(rosinality's projector). The perceptual loss is LPIPS-VGG when VGG16 is supplied, else an "
                    "offline face loss (docs/photos.md). Writes latent.pt, projected.png, compare.png, losses.json.")
    parser.add_argument("--image", required=True, help="the photo, or an aligned face with --aligned")
    parser.add_argument("--aligned", action="store_true",
                        help="the image is already aligned to the generator's layout (resized to its size)")
    parser.add_argument("--ckpt", default="base", help="the generator: base | ffhq256 | PATH (default base)")
    parser.add_argument("--steps", type=int, default=200,
                        help="optimisation steps (default 200; rosinality's default is 1000)")
    parser.add_argument("--wplus", action="store_true", help="optimise a W+ code (one W per layer) instead of W")
    parser.add_argument("--encoder", default="auto", help=ENCODER_HELP)
    parser.add_argument("--loss", choices=["auto", "lpips", "face", "pixel"], default="auto",
                        help="auto: lpips when VGG16 + LPIPS heads are found, else face (default); pixel: MSE only")
    parser.add_argument("--vgg16", default=None, metavar="PATH", help="VGG16 weights vgg16-397923af.pth")
    parser.add_argument("--lpips-vgg", default=None, metavar="PATH", help="LPIPS v0.1 heads vgg.pth")
    parser.add_argument("--lr", type=float, default=0.1, help="initial learning rate (default 0.1)")
    parser.add_argument("--noise-regularize", type=float, default=1e5, help="noise regulariser weight (default 1e5)")
    parser.add_argument("--mse", type=float, default=0.0, help="extra MSE weight, as rosinality's --mse (default 0)")
    parser.add_argument("--latent-prior", default="auto",
                        help="weight of a pull back towards the generator's own W codes (not in rosinality): auto = "
                             "0 for FFHQ generators, 10 for the built-in SynFace world (default auto)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise maps and latent jitter (default 0)")
    add_layout_arguments(parser, size=False)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    parser.add_argument("--out", required=True, help="output folder (must be new or empty unless --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder toon3d wrote")
    parser.set_defaults(func=run)


def _check(args: argparse.Namespace) -> None:
    import math

    from toon3d.errors import Toon3dError

    if args.steps < 0:
        raise Toon3dError(f"--steps must be 0 or more, got {args.steps}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise Toon3dError(f"--lr must be a positive number, got {args.lr}")
    if args.face is not None and args.face < 0:
        raise Toon3dError(f"--face must be 0 (largest) or more, got {args.face}")
    if args.latent_prior != "auto":
        try:
            value = float(args.latent_prior)
        except ValueError:
            value = -1.0
        if not (math.isfinite(value) and value >= 0):
            raise Toon3dError(f"--latent-prior must be auto or a non-negative number, got {args.latent_prior}")
    if args.aligned and (args.face is not None or args.no_padding):
        raise Toon3dError("--face and --no-padding choose how a photo is aligned; drop them with --aligned")


def load_target(args: argparse.Namespace, loaded):
    """(target [1,3,S,S] in [-1,1], AlignedFace or None, layout name)."""
    import numpy as np
    import torch
    from PIL import Image

    from toon3d.faces.align import align_photo, layout_for_generator
    from toon3d.io.photos import read_photo

    size = int(loaded.config["size"])
    layout = layout_for_generator(loaded) if args.layout == "auto" else args.layout
    if args.aligned:
        photo = read_photo(args.image)
        pixels = photo.pixels
        if pixels.shape[0] != pixels.shape[1]:
            from toon3d.errors import Toon3dError

            raise Toon3dError(f"{args.image} is {pixels.shape[1]}x{pixels.shape[0]}, not square; an aligned face is "
                              "square (drop --aligned to align the photo)")
        if pixels.shape[0] != size:
            pixels = np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.LANCZOS))
        x = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float()[None] / 127.5 - 1.0
        return x, None, layout
    aligned = align_photo(args.image, layout, size, args.face, padding=not args.no_padding)
    return aligned.tensor(), aligned, layout


def _upscaled(images, size: int):
    import torch.nn.functional as F

    if images.shape[-1] >= size:
        return images
    factor = -(-size // images.shape[-1])
    return F.interpolate(images, scale_factor=factor, mode="nearest")


def run(args: argparse.Namespace) -> int:
    """Align (unless --aligned), invert, write."""
    import contextlib

    import torch

    from toon3d.commands.generate import _ckpt_inputs
    from toon3d.devices import resolve_device
    from toon3d.errors import Toon3dError
    from toon3d.faces.identity import load_dlib_embedder
    from toon3d.invert.encoder import psnr
    from toon3d.invert.inversion import invert
    from toon3d.invert.losses import embedder_for_layout
    from toon3d.invert.projector import ProjectorSettings, downsample_to, loss_size
    from toon3d.io.atomic import atomic_dir, atomic_file, check_output_dir
    from toon3d.io.images import make_grid, save_png
    from toon3d.io.latents import save_latents
    from toon3d.models import resolve_generator

    _check(args)
    inputs = [args.image, *_ckpt_inputs(args.ckpt)]
    check_output_dir(args.out, args.overwrite, inputs=inputs)
    device = resolve_device(args.device)
    loaded = resolve_generator(args.ckpt)
    target, aligned, layout = load_target(args, loaded)
    embedder, embedder_error = None, None
    try:  # dlib's network: the face loss, and the identity figure whatever the loss
        embedder = embedder_for_layout(load_dlib_embedder(), layout)
    except Toon3dError as err:
        if args.loss == "face":
            raise
        embedder_error = str(err)
    settings = ProjectorSettings(lr=args.lr, noise_regularize=args.noise_regularize, mse=args.mse, seed=args.seed)
    result = invert(loaded, target, steps=args.steps, w_plus=args.wplus, loss=args.loss, encoder=args.encoder,
                    layout=layout, device=device, vgg16=args.vgg16, lpips_heads=args.lpips_vgg, settings=settings,
                    latent_prior=args.latent_prior, embedder=embedder)
    generator = loaded.generator
    size = loss_size(generator.size)
    with torch.no_grad():
        start_ws = result.start_latent.to(device)
        start_image = generator([start_ws], input_is_latent=True, noise=[n.to(device) for n in result.noises])[0]
    projected = result.image.clamp(-1, 1)
    compared = downsample_to(projected, size)
    figures = {"psnr_db": round(float(psnr(compared, downsample_to(target, size))[0]), 3),
               "identity_distance": None}
    if embedder is not None:
        with torch.no_grad():
            e = embedder.cpu().embed(torch.cat([compared, downsample_to(target, size)]))
        figures["identity_distance"] = round(float((e[0] - e[1]).norm()), 4)
    else:
        figures["identity_distance_error"] = embedder_error
    out = Path(args.out)
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(atomic_dir(out, overwrite=args.overwrite, inputs=inputs))
        save_latents(tmp, result.latent, stem="latent")
        with atomic_file(tmp / "noises.pt") as tmp_noise:
            torch.save({f"noise_{i}": n.contiguous().clone() for i, n in enumerate(result.noises)}, tmp_noise)
        save_png(projected[0], tmp / "projected.png")
        save_png(target[0].clamp(-1, 1), tmp / "aligned.png")
        panels = torch.cat([target.cpu(), start_image.clamp(-1, 1).cpu(), projected.cpu()])
        save_png(make_grid(_upscaled(panels, 256), nrow=3), tmp / "compare.png")
        if aligned is not None:
            with atomic_file(tmp / "align.json") as tmp_json:
                tmp_json.write_text(json.dumps({"command": "toon3d invert", **aligned.to_json()}, indent=2) + "\n")
        record = _record(args, loaded, layout, result, figures)
        with atomic_file(tmp / "losses.json") as tmp_json:
            tmp_json.write_text(json.dumps(record, indent=2) + "\n")
    shape = "x".join(str(d) for d in result.latent.shape)
    print(f"wrote latent.pt ({'W+' if args.wplus else 'W'} [{shape}]), projected.png, compare.png, losses.json to "
          f"{out}: PSNR {figures['psnr_db']:.2f} dB, identity distance "
          f"{figures['identity_distance'] if figures['identity_distance'] is not None else 'n/a'} "
          f"({result.loss} loss, start {result.start.split(':')[0]}, {args.steps} steps)")
    for note in result.notes + (aligned.notes if aligned is not None else []):
        print(f"toon3d invert: note: {note}")
    return 0


def _record(args: argparse.Namespace, loaded, layout: str, result, figures: dict) -> dict:
    import toon3d

    proj = result.projection
    return {
        "command": "toon3d invert", "toon3d_version": toon3d.__version__, "image": args.image,
        "aligned_here": not args.aligned, "layout": layout,
        "model": {"source": loaded.source, "config": loaded.config},
        "space": "W+" if args.wplus else "W", "latent_shape": list(result.latent.shape),
        "latent_note": "the latent feeds the synthesis network as is (no truncation): toon3d generate --latents "
                       "latent.pt --space w; its image used the optimised noise maps in noises.pt",
        "loss": result.loss, "start": result.start, "notes": result.notes,
        "settings": proj.settings, "figures": figures,
        "per_step": {"lr": proj.lrs, "latent_noise_strength": proj.noise_strengths,
                     **{k: [v[0] for v in values] for k, values in proj.losses.items()}},
    }
