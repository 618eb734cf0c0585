"""Time `toon3d generate` on the built-in generator and checkpoint loading at FFHQ-256 size (CPU).

Prints:
  - `toon3d generate --seeds 0-15` on the built-in 64 px generator: wall time and images/s
    for --batch 1 and 8 (model construction and file writing included);
  - loading a rosinality-layout 256 px, channel_multiplier 2 checkpoint (a synthetic
    `g_ema` of the real key/shape table, ~120 MB): safe `torch.load` + architecture
    inference + strict load + seeded 4096-sample mean latent; then the same generator
    saved and reloaded as a toon3d .safetensors file.

    .venv/bin/python benchmarks/bench_generate.py [--threads N]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from pathlib import Path

import torch


def _timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_cli(folder: Path) -> None:
    from toon3d.cli import main

    for batch in (1, 8):
        out = folder / f"gen_b{batch}"

        def call() -> None:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                assert main(["generate", "--seeds", "0-15", "--batch", str(batch), "--out", str(out),
                             "--overwrite"]) == 0

        seconds = _timed(call, repeat=2)
        print(f"toon3d generate, built-in 64px, 16 seeds, --batch {batch}: {seconds:.2f} s "
              f"({16 / seconds:.1f} images/s, best of 2)")


def bench_loading(folder: Path) -> None:
    from toon3d.stylegan2.checkpoints import load_generator, save_generator
    from toon3d.stylegan2.generator import Generator

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        reference = Generator(256, channel_multiplier=2)
    ckpt = folder / "550000_synthetic.pt"
    torch.save({"g_ema": reference.state_dict(), "latent_avg": torch.zeros(512)}, ckpt)
    print(f"synthetic 256px cm2 checkpoint: {ckpt.stat().st_size / 2**20:.0f} MiB")
    del reference
    loaded = {}

    def load_pt() -> None:
        loaded["g"] = load_generator(ckpt)

    print(f"load rosinality .pt (latent_avg present): {_timed(load_pt, 2):.2f} s (best of 2)")

    ckpt_nomean = folder / "no_mean.pt"
    torch.save({"g_ema": loaded["g"].generator.state_dict()}, ckpt_nomean)
    print(f"load rosinality .pt (seeded mean_latent(4096)): {_timed(lambda: load_generator(ckpt_nomean), 2):.2f} s")

    out = folder / "g.safetensors"
    seconds = _timed(lambda: save_generator(out, loaded["g"].generator, loaded["g"].mean_latent), 2)
    print(f"save toon3d .safetensors ({out.stat().st_size / 2**20:.0f} MiB): {seconds:.2f} s")
    print(f"load toon3d .safetensors: {_timed(lambda: load_generator(out), 2):.2f} s")


def main() -> None:
    """Run both benchmarks in a temporary folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, CPU")
    with tempfile.TemporaryDirectory() as tmp:
        bench_cli(Path(tmp))
        bench_loading(Path(tmp))


if __name__ == "__main__":
    main()
