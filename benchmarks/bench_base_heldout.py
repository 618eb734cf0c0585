"""Held-out regression error of a SynFace-decoder generator (the built-in base), overall and per face region.

    python benchmarks/bench_base_heldout.py --ckpt base --n 256

Renders the SynFace faces of held-out latents (seed toon3d.train.decoder.EVAL_SEED, never drawn
in training) and prints the mean absolute error on [-1,1] images of G(z) against them, per
SynFace segmentation class, plus a sheet (targets over reconstructions) if --sheet is given.
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default="base")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--views", choices=("auto", "anchored", "plain"), default="auto",
                        help="SynFace views to compare against (auto: those the model was trained on, from its metadata)")
    parser.add_argument("--sheet", default=None, help="write targets-over-reconstructions PNG here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from toon3d.io.images import save_png
    from toon3d.models import resolve_generator
    from toon3d.train.decoder import DecoderConfig, evaluate, sample_grid, trained_on_anchored_views

    loaded = resolve_generator(args.ckpt)
    anchored = (trained_on_anchored_views(loaded.meta) if args.views == "auto" else args.views == "anchored")
    cfg = DecoderConfig(size=int(loaded.config["size"]), anchor_eyes=anchored)
    start = time.perf_counter()
    figures = evaluate(loaded.generator, cfg, count=args.n)
    print(f"{loaded.source}: held-out L1 on [-1,1] over {args.n} latents, {'anchored' if anchored else 'plain'} views ({time.perf_counter() - start:.1f} s)")
    for key, value in figures.items():
        print(f"  {key:<18s}{value:.4f}")
    if args.sheet:
        save_png(sample_grid(loaded.generator, cfg, n=8), args.sheet)
        print(f"sheet: {args.sheet}")


if __name__ == "__main__":
    main()
