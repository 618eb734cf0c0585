"""Time and memory of `toon3d avatar`: seconds per stage and per avatar, peak resident memory.

    .venv/bin/python benchmarks/bench_avatar.py --seeds 0-2 [--preset cpu] [--instant] [--style cartoon]
    .venv/bin/python benchmarks/bench_avatar.py --seeds 0 --random-256 --threads 2   # the paper-size timing

Runs the whole pipeline (toon3d/pipeline.py) for each seed into a temporary folder on one
thread (the machine's cores are then free for other work; pass --threads to change it), and
prints one row per avatar and the mean, plus the peak RSS of the process. `--random-256` times
the paper's size instead: random-weight 256 px, channel-multiplier-2 generators in the format of
rosinality's 550000.pt as G_base and as the style (the issue's timing case; the images are noise,
the work per stage is the paper setting's: refined edits at 256 px, 3D in the preset's size).
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
    parser.add_argument("--edit-encoder", default=None, choices=["train", "neutral"],
                        help="the edits' 3D: train step 2 again or reuse the neutral's encoder (default: the preset's)")
    parser.add_argument("--edit-size", default="full", help="refinement synthesis size: full (default) or N")
    parser.add_argument("--random-256", action="store_true",
                        help="random 256 px channel-multiplier-2 generators (550000.pt's format) as base and style")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt, style = "base", args.style
        if args.random_256:
            ckpt = _random_256(Path(tmp) / "g256_base.safetensors", 0)
            style = _random_256(Path(tmp) / "g256_style.safetensors", 1)
        # a random generator has no named directions: SeFa's two strongest stand in
        expressions = (("0", 3.0), ("1", 3.0)) if args.random_256 else DEFAULT_EXPRESSIONS
        settings = AvatarSettings(ckpt=ckpt, style=style, preset=args.preset, instant=args.instant,
                                  frames=args.frames, expressions=expressions, edit_encoder=args.edit_encoder,
                                  edit_size=None if args.edit_size == "full" else int(args.edit_size))
        for seed in parse_seeds(args.seeds):
            start = time.perf_counter()
            record = make_avatar(AvatarSource(seed=seed), settings, Path(tmp) / f"s{seed}",
                                 device=torch.device(args.device), progress=False, log=lambda _: None)
            rows.append((seed, time.perf_counter() - start, record["timings_seconds"]))
    stages = list(rows[0][2])
    what = "random 256 px cm-2 generators" if args.random_256 else f"style {args.style}"
    print(f"toon3d avatar, preset {args.preset}{' --instant' if args.instant else ''}, {what}, "
          f"{args.threads} thread(s), {args.device}, {len(expressions)} expressions, {args.frames} frames, "
          f"--edit-encoder {settings.edit_encoder}, --edit-size {args.edit_size}")
    print("| seed | total s | " + " | ".join(stages) + " |")
    print("|---|---|" + "---|" * len(stages))
    for seed, total, t in rows:
        print(f"| {seed} | {total:.1f} | " + " | ".join(f"{t[s]:.1f}" for s in stages) + " |")
    mean = sum(r[1] for r in rows) / len(rows)
    print(f"| mean | {mean:.1f} | " + " | ".join(f"{sum(r[2][s] for r in rows) / len(rows):.1f}" for s in stages)
          + " |")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {peak_mb:.0f} MB")


def _random_256(path: Path, seed: int) -> str:
    """Write a random-weight 256 px, channel-multiplier-2, 512-d generator to `path`; return the path."""
    from toon3d.stylegan2.checkpoints import save_generator
    from toon3d.stylegan2.generator import Generator

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        g = Generator(256, 512, 8, channel_multiplier=2).eval()
        with torch.no_grad():
            mean = g.mean_latent(256, generator=torch.Generator().manual_seed(seed))
    save_generator(path, g, mean.reshape(-1))
    return str(path)


if __name__ == "__main__":
    main()
