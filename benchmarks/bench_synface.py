"""SynFace throughput: rendered images/s at 64/128/256 px, and data set writing images/s.

Usage: python benchmarks/bench_synface.py [--threads 2] [--batch 64] [--repeats 3] [--write-n 256]
Prints one line per measurement. Rendering (canonical face + shading + ray-marched view +
ground truth) is timed apart from the PNG/npz writing, which uses a small thread pool.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from toon3d.synth.face_params import SynFaceParams
from toon3d.synth.heightfield_view import march_heightfield
from toon3d.synth.synface import canonical_face, render_synface, synface_pose
from toon3d.synth.synface_dataset import write_synface_dataset


def best_time(fn, repeats: int) -> float:
    """Best wall time of `repeats` calls after one warm-up (the machine may be shared)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write-n", type=int, default=256)
    parser.add_argument("--sizes", default="64,128,256")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}")
    params = SynFaceParams.sample(args.batch, seed=0)
    for size in [int(s) for s in args.sizes.split(",")]:
        t_render = best_time(lambda: render_synface(params, size), args.repeats)
        t_canon = best_time(lambda: canonical_face(params, size), args.repeats)
        canon = canonical_face(params, size)
        R, t = synface_pose(params)
        t_march = best_time(lambda: march_heightfield(canon["canon_depth"], canon["canon_mask"], R, t), args.repeats)
        b = args.batch
        print(f"size {size:3d}: render {b / t_render:7.1f} images/s  (canonical face {b / t_canon:7.1f}/s, "
              f"view ray march {b / t_march:7.1f}/s)")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_synface_dataset(Path(tmp) / "ds", n=args.write_n, size=128, batch=args.batch, workers=2,
                              progress=False)
        t_write = time.perf_counter() - t0
    print(f"write {args.write_n} images at 128 px (render + PNG + npz, 2 writer threads): "
          f"{args.write_n / t_write:.1f} images/s")


if __name__ == "__main__":
    main()
