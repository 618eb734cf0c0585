"""The README's sample sheet of the built-in models: the same w through base, cartoon and toon.

    python tools/builtin_sheet.py --seeds 0-7 --out docs/images/builtin_models.png

Rows: base (human), cartoon fine-tuned, cartoon blended with base, toon fine-tuned, toon blended.
Each column is one seed: z -> base's mapping -> w (truncation 0.7 toward base's mean), and that w
is fed to every generator (the paper's pairing), with constant noise.
"""

from __future__ import annotations

import argparse

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0-7")
    parser.add_argument("--truncation", type=float, default=0.7)
    parser.add_argument("--out", required=True)
    parser.add_argument("--scale", type=int, default=2, help="nearest-neighbour upscaling for viewing")
    args = parser.parse_args()

    from toon3d.io.images import make_grid, save_png
    from toon3d.models import resolve_generator
    from toon3d.seeds import parse_seeds, z_from_seed

    seeds = parse_seeds(args.seeds)
    base = resolve_generator("base")
    z = torch.cat([z_from_seed(s, base.config["style_dim"])[0] for s in seeds])
    with torch.no_grad():
        w = base.generator.mapping(z)
        w = base.mean_latent + args.truncation * (w - base.mean_latent)
        rows = []
        for spec, blend in (("base", True), ("cartoon", False), ("cartoon", True), ("toon", False), ("toon", True)):
            g = resolve_generator(spec, blend=blend).generator
            ws = w.unsqueeze(1).repeat(1, g.n_latent, 1)
            rows.append(g.synthesis(ws, noise_mode="const").clamp(-1, 1))
    images = torch.cat(rows)
    if args.scale > 1:
        images = torch.nn.functional.interpolate(images, scale_factor=args.scale, mode="nearest")
    save_png(make_grid(images, nrow=len(seeds)), args.out)
    print(f"wrote {args.out}: rows base, cartoon, cartoon+base blend, toon, toon+base blend; seeds {args.seeds}")


if __name__ == "__main__":
    main()
