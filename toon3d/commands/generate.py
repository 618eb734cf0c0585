"""`toon3d generate`: images from a StyleGAN2 generator for seeds or a latent file.

Outputs (all in --out): `seed0000.png` per seed (or `latent0000.png` per latent row),
`grid.png` (the first 64 images), `latents.pt` + `latents.npy` (the W codes actually fed
to the synthesis network, after truncation, [N,style_dim] float32, or W+ [N,n_latent,style_dim]
when --latents held W+ codes) and `generate.json`
(settings, model, files). `--raw FILE.npy` also writes the float32 images [N,3,S,S]
before quantisation.

Nothing is left half-written: everything goes into a hidden temporary folder beside
--out, `generate.json` last, and the folder is renamed to --out only when complete.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

GRID_MAX = 64


@dataclass
class GenerateSettings:
    """Everything that decides the images (recorded in generate.json)."""

    ckpt: str = "default"
    seeds: list[int] | None = None
    latents: str | None = None
    space: str = "z"
    truncation: float = 0.7
    truncation_mean: int | None = None
    noise: str = "const"
    device: str = "auto"
    batch: int = 4
    blend: bool = True


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `toon3d generate`."""
    parser = subparsers.add_parser(
        "generate", help="sample images from a StyleGAN2 generator (seeds or latent files)",
        description="Sample images from a StyleGAN2 generator. --ckpt takes a built-in model (base = default: "
                    "SynFace human faces; cartoon, toon: the built-in styles, blended with base as the paper uses "
                    "them), a registry name (ffhq256) or a file: a rosinality .pt checkpoint such as "
                    "550000.pt, or a toon3d .safetensors generator (blends included).")
    parser.add_argument("--ckpt", default="default",
                        help="generator: default | base | cartoon | toon | ffhq256 | PATH (.pt or .safetensors)")
    parser.add_argument("--no-blend", action="store_true",
                        help="with --ckpt cartoon|toon: the raw fine-tuned generator, not its blend with base")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--seeds", default=None, help="seeds, ranges and lists: 0-7, 0-3,7 (default 0-7)")
    source.add_argument("--latents", default=None, metavar="FILE",
                        help="[N,512] latents in .pt (loaded safely) or .npy, e.g. a previous run's latents.pt; "
                             "with --space w also W+ codes [N,n_latent,512] (toon3d invert --wplus, toon3d edit)")
    parser.add_argument("--space", choices=["z", "w"], default="z",
                        help="what --latents holds: z (fed through the mapping network) or w (default z)")
    parser.add_argument("--truncation", type=float, default=None,
                        help="psi in mean + psi*(w - mean); default 0.7, or 1.0 with --space w (a previous run's "
                             "latents.pt is already truncated)")
    parser.add_argument("--truncation-mean", type=int, default=None, metavar="N",
                        help="compute the truncation mean from N seeded samples (default: the checkpoint's "
                             "latent_avg, else 4096 samples)")
    parser.add_argument("--noise", choices=["const", "random", "none"], default="const",
                        help="noise maps: the generator's stored ones (const, default), fresh per seed (random), "
                             "or zero (none)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    parser.add_argument("--batch", type=int, default=4, help="images per forward pass (default 4)")
    parser.add_argument("--out", required=True, help="output folder (must be new or empty unless --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    parser.add_argument("--raw", default=None, metavar="FILE.npy",
                        help="also write the float32 images [N,3,S,S] before quantisation to this .npy file")
    parser.add_argument("--size", type=int, default=None, help="assert the generator's output size")
    parser.add_argument("--channel-multiplier", type=int, default=None, help="assert the channel multiplier")
    parser.add_argument("--channel-max", type=int, default=None, help="assert the channel cap")
    parser.set_defaults(func=run)


def _settings(args: argparse.Namespace) -> GenerateSettings:
    from toon3d.errors import Toon3dError
    from toon3d.seeds import parse_seeds

    if args.latents is None and args.space == "w":
        raise Toon3dError("--space w needs --latents FILE; seeds always give z")
    truncation = args.truncation
    if truncation is None:
        truncation = 1.0 if args.space == "w" else 0.7
    if not math.isfinite(truncation):
        raise Toon3dError(f"--truncation must be a finite number, got {args.truncation}")
    if args.batch < 1:
        raise Toon3dError(f"--batch must be at least 1, got {args.batch}")
    if args.truncation_mean is not None and args.truncation_mean < 1:
        raise Toon3dError(f"--truncation-mean must be at least 1, got {args.truncation_mean}")
    seeds = None if args.latents is not None else parse_seeds(args.seeds if args.seeds is not None else "0-7")
    return GenerateSettings(ckpt=args.ckpt, seeds=seeds, latents=args.latents, space=args.space,
                            truncation=float(truncation), truncation_mean=args.truncation_mean, noise=args.noise,
                            device=args.device, batch=args.batch, blend=not args.no_blend)


def _raw_target(raw: str | None, out: Path) -> tuple[Path | None, Path | None]:
    """(final raw path, path relative to --out when it lies inside it)."""
    from toon3d.errors import Toon3dError

    if raw is None:
        return None, None
    path = Path(raw)
    if path.suffix != ".npy":
        raise Toon3dError(f"--raw {raw}: the raw images are written as a .npy file; pass a name ending in .npy")
    if path.is_dir():
        raise Toon3dError(f"--raw {raw} is a folder; pass a file name ending in .npy")
    try:
        inside = path.resolve().relative_to(out.resolve())
    except ValueError:
        return path, None
    if inside == Path("latents.npy"):
        raise Toon3dError(f"--raw {raw} would overwrite the latents.npy written in --out; choose another name")
    return path, inside


def _ckpt_inputs(spec: str) -> list[Path]:
    """The files --ckpt SPEC reads (a path, a registry file, the shipped weights) that exist here."""
    from toon3d import models

    name = models.DEFAULT_GENERATOR if spec == "default" else spec
    paths = [Path(name).expanduser()]
    if name in models.REGISTRY:
        found = models.find(name)
        if found is not None:
            paths.append(found)
    if name in models.UNTRAINED_SEEDS:
        paths.append(models.builtin_generator_path(name))
        if name in models.BUILTIN_STYLES:
            paths.append(models.builtin_generator_path(models.DEFAULT_GENERATOR))
    return [p for p in paths if p.exists()]


def run(args: argparse.Namespace) -> int:
    """Generate the images and write them, all or nothing."""
    import contextlib

    from toon3d.devices import resolve_device
    from toon3d.errors import Toon3dError
    from toon3d.io.atomic import atomic_dir, atomic_file
    from toon3d.io.latents import load_latents
    from toon3d.models import resolve_generator
    from toon3d.stylegan2.checkpoints import ArchOverrides

    settings = _settings(args)
    device = resolve_device(settings.device)
    # Latent files are checked before any output or model is touched; their width after loading.
    codes = load_latents(settings.latents, dim=None, wplus=True) if settings.latents is not None else None
    if codes is not None and codes.dim() == 3 and settings.space != "w":
        raise Toon3dError(f"{settings.latents} holds W+ codes {list(codes.shape)}, which have no z; pass --space w")
    out = Path(args.out)
    raw_path, raw_inside = _raw_target(args.raw, out)
    overrides = ArchOverrides(size=args.size, channel_multiplier=args.channel_multiplier,
                              channel_max=args.channel_max)
    # Output places are claimed (and checked writable) before the slow part starts.
    with contextlib.ExitStack() as stack:
        inputs = [*_ckpt_inputs(settings.ckpt), settings.latents]
        tmp = stack.enter_context(atomic_dir(out, overwrite=args.overwrite, inputs=inputs))
        raw_tmp = None
        if raw_path is not None:
            raw_tmp = tmp / raw_inside if raw_inside is not None else stack.enter_context(atomic_file(raw_path))
        loaded = resolve_generator(settings.ckpt, overrides, settings.truncation_mean, blend=settings.blend)
        summary = _generate_into(tmp, raw_tmp, loaded, settings, device, codes)
        if raw_path is not None:
            summary["raw"]["file"] = str(raw_path)
        with atomic_file(tmp / "generate.json") as tmp_json:
            tmp_json.write_text(json.dumps(summary, indent=2) + "\n")
    names = summary["images"]
    print(f"wrote {len(names)} images ({summary['size']}px) to {out}: {names[0]}..{names[-1]}, grid.png, "
          "latents.pt, generate.json" + (f"; raw images in {raw_path}" if raw_path is not None else ""))
    if loaded.meta.get("untrained"):
        print(f"toon3d generate: note: {loaded.source} has untrained random weights; its images are not "
              "faces. Pass --ckpt 550000.pt (see docs/generate.md) for FFHQ faces.", file=sys.stderr)
    return 0


def _generate_into(folder: Path, raw_file: Path | None, loaded, settings: GenerateSettings, device,
                   codes=None) -> dict:
    """Write the PNGs, grid, latents (and raw .npy) into `folder`; return generate.json's contents."""
    import numpy as np
    import torch
    from tqdm import tqdm

    import toon3d
    from toon3d.errors import Toon3dError
    from toon3d.io.images import make_grid, save_png
    from toon3d.io.latents import check_latents_fit, save_latents
    from toon3d.seeds import seed_stream, z_from_seed
    from toon3d.stylegan2.sampling import synthesize, truncate

    generator = loaded.generator.to(device).eval()
    style_dim, size = loaded.config["style_dim"], generator.size
    if codes is not None:
        codes = check_latents_fit(codes, style_dim, generator.n_latent, settings.latents, loaded.source)
        keys = list(range(codes.shape[0]))
        names = [f"latent{i:04d}.png" for i in keys]
    else:
        keys = settings.seeds
        names = [f"seed{s:04d}.png" for s in keys]
    count = len(keys)
    mean = loaded.mean_latent.to(device)
    raw = None
    if raw_file is not None:
        raw_file.parent.mkdir(parents=True, exist_ok=True)
        raw = np.lib.format.open_memmap(raw_file, mode="w+", dtype=np.float32, shape=(count, 3, size, size))
    used_w, grid_images = [], []
    with tqdm(total=count, desc="generate", unit="img", disable=None) as bar:
        for start in range(0, count, settings.batch):
            chunk = keys[start:start + settings.batch]
            if codes is not None:
                rows = codes[start:start + len(chunk)]
                streams = [seed_stream(i) for i in chunk]
            else:
                drawn = [z_from_seed(s, style_dim) for s in chunk]
                rows = torch.cat([z for z, _ in drawn], 0)
                streams = [stream for _, stream in drawn]
            with torch.no_grad():
                rows = rows.to(device)
                w = rows if settings.space == "w" else generator.mapping(rows)
                w = truncate(w, mean, settings.truncation)
                images = synthesize(generator, w, settings.noise, streams).float().cpu()
            if not torch.isfinite(images).all():
                raise Toon3dError(f"the generator produced NaN/inf for {names[start]}; the checkpoint or the "
                                  "latents are broken (try --truncation 0.7)")
            used_w.append(w.float().cpu())
            for i, image in enumerate(images):
                save_png(image, folder / names[start + i])
                if len(grid_images) < GRID_MAX:
                    grid_images.append(image)
            if raw is not None:
                raw[start:start + len(chunk)] = images.numpy()
            bar.update(len(chunk))
    if raw is not None:
        raw.flush()
        del raw
    save_png(make_grid(torch.stack(grid_images)), folder / "grid.png")
    save_latents(folder, torch.cat(used_w, 0))
    return {
        "command": "toon3d generate",
        "toon3d_version": toon3d.__version__,
        "settings": asdict(settings),
        "device": str(device),
        "model": {"source": loaded.source, "entry": loaded.entry, "config": loaded.config,
                  "truncation_mean": loaded.mean_source, "meta": loaded.meta},
        "seeding": ("z for seed s = torch.randn(1, style_dim, generator=torch.Generator().manual_seed(s)); "
                    "random noise for a sample is drawn next from the same generator (latent row i: seed i)"),
        "count": count,
        "size": size,
        "images": names,
        "grid": {"file": "grid.png", "images": len(grid_images)},
        "latents": {"files": ["latents.pt", "latents.npy"], "space": "w+" if codes is not None and codes.dim() == 3
                    else "w", "shape": [count, *used_w[0].shape[1:]],
                    "truncated": settings.truncation != 1.0},
        "raw": None if raw_file is None else {"shape": [count, 3, size, size], "dtype": "float32",
                                              "range": "about [-1,1], not clamped"},
    }
