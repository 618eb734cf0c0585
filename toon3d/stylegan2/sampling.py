"""Sampling a generator from W codes: truncation and per-sample seeded noise, batch-independent."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from toon3d.stylegan2.generator import NOISE_MODES


def truncate(w: torch.Tensor, mean: torch.Tensor, psi: float) -> torch.Tensor:
    """Truncation trick: w [B,D] (or W+ [B,L,D]), mean [1,D] → mean + psi·(w − mean), w's shape (psi=1: w)."""
    if psi == 1.0:
        return w
    return mean + psi * (w - mean)


def per_sample_noise(generator: nn.Module, streams: Sequence[torch.Generator],
                     device: torch.device) -> list[torch.Tensor]:
    """Random noise maps, sample b drawn from streams[b] in layer order: list of num_layers [B,1,r,r]."""
    # Drawn on the CPU (where the seeded streams live) so a seed's noise is the same on every device.
    per_sample = [[torch.randn(n.shape, generator=stream) for n in generator.noise_buffers()] for stream in streams]
    return [torch.cat([maps[layer] for maps in per_sample], 0).to(device) for layer in range(generator.num_layers)]


@torch.no_grad()
def synthesize(generator: nn.Module, w: torch.Tensor, noise_mode: str = "const",
               streams: Sequence[torch.Generator] | None = None) -> torch.Tensor:
    """W codes w [B,D] (one per image, used for every layer) or W+ [B,n_latent,D] → images [B,3,S,S], about [-1,1].

    noise_mode: "const" uses the generator's stored noise maps, "none" zero noise, "random"
    fresh N(0,1) maps with sample b drawn from streams[b] (so a sample does not depend on its batch).
    """
    if noise_mode not in NOISE_MODES:
        raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
    ws = w.unsqueeze(1).repeat(1, generator.n_latent, 1) if w.dim() == 2 else w
    if noise_mode == "random":
        if streams is None or len(streams) != w.shape[0]:
            raise ValueError("noise_mode='random' needs one torch.Generator per sample in streams")
        return generator.synthesis(ws, noise=per_sample_noise(generator, streams, w.device))
    return generator.synthesis(ws, noise_mode=noise_mode)
