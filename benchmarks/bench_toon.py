"""Toon throughput next to SynFace's: rendered images/s at 64/128/256 px (same faces, same batch).

Usage: python benchmarks/bench_toon.py [--threads 2] [--batch 64] [--repeats 3] [--sizes 64,128,256]
Prints one line per size: SynFace and toon rendering rates (all ground truth included) and their ratio.
"""

from __future__ import annotations

import argparse

import torch

from toon3d.synth.face_params import SynFaceParams
from toon3d.synth.synface import render_synface
from toon3d.synth.toon_style import render_toon

from bench_synface import best_time  # the scripts run from benchmarks/, beside each other


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default="64,128,256")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}")
    params = SynFaceParams.sample(args.batch, seed=0)
    for size in [int(s) for s in args.sizes.split(",")]:
        # Interleaved, so both see the same machine load.
        t_syn = best_time(lambda: render_synface(params, size), args.repeats)
        t_toon = best_time(lambda: render_toon(params, size), args.repeats)
        b = args.batch
        print(f"size {size:3d}: synface {b / t_syn:7.1f} images/s, toon {b / t_toon:7.1f} images/s "
              f"(toon takes {t_toon / t_syn:.2f}x SynFace's time)")


if __name__ == "__main__":
    main()
