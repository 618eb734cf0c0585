"""Training speed and peak memory of the default configs on this machine.

Prints iterations/s, images/s and peak RSS for: the SynFace regression decoder (the built-in
base recipe), the adversarial trainer at the built-in size, and a cartoon fine-tune step with
the structure loss. Each is timed over --iters iterations after --warmup.

    python benchmarks/bench_train.py --threads 2 --iters 10
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import torch


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(step, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    return (time.perf_counter() - t0) / iters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--channel-max", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from toon3d.cli import main as cli
    from toon3d.data.dataset import FaceDataset
    from toon3d.train.data_stream import ImageStream
    from toon3d.train.decoder import DecoderConfig, DecoderRun
    from toon3d.train.gan import GanConfig, GanTrainer

    gcfg = {"style_dim": 64, "n_mlp": 4, "channel_multiplier": 2, "channel_max": args.channel_max}
    print(f"threads {args.threads}, {args.size} px, channel cap {args.channel_max}")
    with tempfile.TemporaryDirectory() as tmp:
        dec = DecoderRun(Path(tmp) / "dec", DecoderConfig(size=args.size, generator=dict(gcfg), batch=16))
        s = timed(dec.step, args.warmup, args.iters)
        print(f"decoder   batch 16: {s:.3f} s/iter, {1 / s:.2f} iter/s, {16 / s:.1f} images/s, "
              f"peak RSS {peak_rss_mb():.0f} MB")

        data = Path(tmp) / "faces"
        cli(["data", "synface", "--n", "64", "--size", str(max(64, args.size)), "--out", str(data)])
        for batch in (8, 16):
            cfg = GanConfig(size=args.size, generator=dict(gcfg),
                            discriminator={"channel_multiplier": 2, "channel_max": args.channel_max}, batch=batch)
            stream = ImageStream(FaceDataset(data, size=args.size, load_gt=False), batch)
            trainer = GanTrainer(cfg, Path(tmp) / f"gan{batch}", stream, "cpu")
            s = timed(trainer.step, args.warmup, args.iters)
            print(f"adversarial batch {batch}: {s:.3f} s/iter (incl. lazy R1 1/16, path length 1/4), "
                  f"{batch / s:.1f} images/s, peak RSS {peak_rss_mb():.0f} MB")
        cfg = GanConfig(size=args.size, generator=dict(gcfg),
                        discriminator={"channel_multiplier": 2, "channel_max": args.channel_max}, batch=8,
                        structure_k=2, path_regularize=0.0)
        stream = ImageStream(FaceDataset(data, size=args.size, load_gt=False), 8)
        from toon3d.stylegan2.generator import Generator

        trainer = GanTrainer(cfg, Path(tmp) / "ft", stream, "cpu", init={"g_base": Generator(args.size, **gcfg)})
        s = timed(trainer.step, args.warmup, args.iters)
        print(f"fine-tune batch 8 (structure loss k=2): {s:.3f} s/iter, {8 / s:.1f} images/s, "
              f"peak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
