"""The generator's early exit (toon3d.stylegan2.early_exit): what it saves and what it costs.

    .venv/bin/python benchmarks/bench_early_exit.py [--threads 2] [--n 64]

Speed: a random-weight 256 px, channel-multiplier-2, 512-d generator (the shape of rosinality's
550000.pt), forward + backward of a batch of 4 W codes, stopped at 64, 128 and 256 px (full).

Accuracy, on the built-in `base` (64 px, trained; stopped at 32 px, the same 2x step as 256 →
128): `--n` latents (seed 0, ψ 0.7), each moved by Δw (the top SeFa directions at α = 1 and 3,
as the expression edits move it; random directions of norm r, as GAN2Shape's projections move
it). For each, mean |error| on [-1,1] against the full image shrunk to 32 px of

  - the partial image alone (the exit without the residual),
  - the partial image plus the residual taken at w (what toon3d uses),

and the size of the change itself, |shrink(G(w+Δw)) − shrink(G(w))|: the corrected error over
the change says how much of the edit the approximation gets wrong.
"""

from __future__ import annotations

import argparse
import time

import torch


def speed(threads: int) -> list[tuple[int, float]]:
    """(exit size, seconds) of forward + backward of 4 codes through a random 256 px cm-2 generator."""
    from toon3d.stylegan2.generator import Generator

    torch.manual_seed(0)
    g = Generator(256, 512, 8, channel_multiplier=2).eval().requires_grad_(False)
    ws = torch.randn(4, 1, 512).expand(-1, g.n_latent, -1)
    out = []
    for until in (64, 128, 256):
        x = ws.clone().requires_grad_(True)
        start = time.perf_counter()
        g.synthesis(x, until=until).mean().backward()
        out.append((until, time.perf_counter() - start))
    return out


def accuracy(n: int) -> list[dict]:
    """Rows of mean |error| (partial, corrected) and |change| for each kind of offset on the built-in base."""
    from toon3d.edit.directions import factorize
    from toon3d.models import resolve_generator
    from toon3d.stylegan2.early_exit import LowResSynthesis, shrink

    loaded = resolve_generator("base")
    g = loaded.generator.eval().requires_grad_(False)
    mean = loaded.mean_latent.reshape(1, -1)
    z = torch.randn(n, g.style_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        w = mean + 0.7 * (g.mapping(z) - mean)
    plus = lambda v: v[:, None].expand(-1, g.n_latent, -1)  # noqa: E731
    size = g.size // 2
    low = LowResSynthesis(g, size)
    factor = factorize(g)
    offsets = {}
    for k in range(3):
        for alpha in (1.0, 3.0):
            offsets[f"SeFa direction {k}, α = {alpha:g}"] = alpha * factor.direction(k)[None].expand(n, -1)
    gen = torch.Generator().manual_seed(1)
    for r in (0.5, 1.0, 2.0, 4.0):
        d = torch.randn(n, g.style_dim, generator=gen)
        offsets[f"random direction, ‖Δw‖ = {r:g}"] = r * d / d.norm(dim=1, keepdim=True)
    rows = []
    with torch.no_grad():
        residual = low.residual(plus(w))
        before = shrink(g.synthesis(plus(w)), size)
        for name, delta in offsets.items():
            moved = plus(w + delta)
            exact = shrink(g.synthesis(moved), size)
            rows.append({"offset": name,
                         "partial": (g.synthesis(moved, until=size) - exact).abs().mean().item(),
                         "corrected": (low(moved, residual) - exact).abs().mean().item(),
                         "change": (exact - before).abs().mean().item()})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n", type=int, default=64, help="latents of the accuracy table (default 64)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"speed: random 256 px channel-multiplier-2 generator, 4 codes, forward + backward, {args.threads} thread(s)")
    print("| stop at | seconds | share of full |")
    print("|---|---|---|")
    times = speed(args.threads)
    for until, seconds in times:
        print(f"| {until} px | {seconds:.2f} | {seconds / times[-1][1]:.2f} |")
    print(f"\naccuracy: built-in base (64 px) stopped at 32 px, {args.n} latents (ψ 0.7); mean |error| on [-1,1] "
          "against the full image shrunk to 32 px")
    print("| offset Δw | partial alone | partial + residual at w | the change itself | corrected / change |")
    print("|---|---|---|---|---|")
    for row in accuracy(args.n):
        print(f"| {row['offset']} | {row['partial']:.4f} | {row['corrected']:.4f} | {row['change']:.4f} | "
              f"{row['corrected'] / max(row['change'], 1e-12):.3f} |")


if __name__ == "__main__":
    main()
