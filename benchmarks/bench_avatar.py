"""Time and memory of `toon3d avatar`: seconds per stage and per avatar, peak resident memory.

    .venv/bin/python benchmarks/bench_avatar.py --seeds 0-2 [--preset cpu] [--instant] [--style cartoon]

Runs the whole pipeline (toon3d/pipeline.py) for each seed into a temporary folder on one
thread (the machine's cores are then free for other work; pass --threads to change it), and
prints one row per avatar and the mean, plus the peak RSS of the process.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import torch

from toon3d.pipeline import DEFAULT_EXPRESSIONS, AvatarSettings, AvatarSource, make_avatar
from toon3d.seeds import parse_seeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0-2")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--instant", action="store_true")
    parser.add_argument("--style", default="cartoon")
    parser.add_argument("--frames", type=int, default=36)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = AvatarSettings(style=args.style, preset=args.preset, instant=args.instant, frames=args.frames,
                              expressions=DEFAULT_EXPRESSIONS)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in parse_seeds(args.seeds):
            start = time.perf_counter()
            record = make_avatar(AvatarSource(seed=seed), settings, Path(tmp) / f"s{seed}",
                                 device=torch.device(args.device), progress=False, log=lambda _: None)
            rows.append((seed, time.perf_counter() - start, record["timings_seconds"]))
    stages = list(rows[0][2])
    print(f"toon3d avatar, preset {args.preset}{' --instant' if args.instant else ''}, style {args.style}, "
          f"{args.threads} thread(s), {args.device}, {len(DEFAULT_EXPRESSIONS)} expressions, {args.frames} frames")
    print("| seed | total s | " + " | ".join(stages) + " |")
    print("|---|---|" + "---|" * len(stages))
    for seed, total, t in rows:
        print(f"| {seed} | {total:.1f} | " + " | ".join(f"{t[s]:.1f}" for s in stages) + " |")
    mean = sum(r[1] for r in rows) / len(rows)
    print(f"| mean | {mean:.1f} | " + " | ".join(f"{sum(r[2][s] for r in rows) / len(rows):.1f}" for s in stages)
          + " |")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
