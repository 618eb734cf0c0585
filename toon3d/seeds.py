"""Seed lists from the command line (`0-7`, `0-3,7,12`) and the per-seed random stream.

Every seed owns one `torch.Generator` seeded with it: z is drawn first from it
(`randn(1, style_dim)`), then anything else that sample needs (random noise maps), so a
seed gives the same sample whatever else is in the batch.
"""

from __future__ import annotations

import torch

from toon3d.errors import Toon3dError

MAX_SEED = 2**32 - 1
MAX_SEEDS = 100_000


def parse_range(part: str) -> tuple[int, int]:
    """'3' → (3, 3), '0-5' → (0, 5): one item of a comma list (ValueError when not integers)."""
    lo_text, dash, hi_text = part.strip().partition("-")
    lo = int(lo_text)
    return lo, int(hi_text) if dash else lo


def parse_seeds(spec: str) -> list[int]:
    """'0-3,7' → [0, 1, 2, 3, 7]: comma-separated seeds and inclusive ranges, each seed once."""
    seeds: list[int] = []
    seen: set[int] = set()
    parts = [p.strip() for p in str(spec).split(",")]
    if not any(parts):
        raise Toon3dError("--seeds is empty; pass seeds like 0-7 or 0-3,7")
    for part in parts:
        try:
            lo, hi = parse_range(part)
        except ValueError:
            raise Toon3dError(f"bad seed {part!r} in --seeds {spec!r}; use non-negative integers and ranges "
                              "like 0-7 or 0-3,7") from None
        if lo < 0 or hi > MAX_SEED:
            raise Toon3dError(f"seed range {part!r} is outside 0-{MAX_SEED}; pass seeds like 0-7")
        if hi < lo:
            raise Toon3dError(f"seed range {part!r} runs backwards; write it as {hi}-{lo}")
        if len(seeds) + hi - lo + 1 > MAX_SEEDS:
            raise Toon3dError(f"--seeds {spec!r} asks for more than {MAX_SEEDS} images; split it into smaller runs")
        for seed in range(lo, hi + 1):
            if seed in seen:
                raise Toon3dError(f"seed {seed} is listed twice in --seeds {spec!r}; list each seed once")
            seen.add(seed)
            seeds.append(seed)
    return seeds


def seed_stream(seed: int) -> torch.Generator:
    """The CPU random stream owned by `seed` (z first, then noise)."""
    return torch.Generator().manual_seed(int(seed))


def z_from_seed(seed: int, style_dim: int = 512) -> tuple[torch.Tensor, torch.Generator]:
    """z [1,style_dim] ~ N(0,1) for `seed`, and the stream positioned after it (for that sample's noise)."""
    stream = seed_stream(seed)
    return torch.randn(1, style_dim, generator=stream), stream
