"""A generator's image at a lower resolution without running its highest blocks (the CPU speed-up).

StyleGAN2's skip generator builds its image as a sum of upsampled RGB outputs, one per block;
the sum after the block of resolution r (`Generator.synthesis(until=r)`) is an r-pixel image that
the higher blocks only add to. Stopping there skips most of the work: at 256 px, channel
multiplier 2, the 128 and 256 px blocks hold about three quarters of the multiply-adds.

The partial sum is not the full image shrunk to r: the higher blocks add some low-frequency
colour too. `LowResSynthesis` adds that difference, measured once at a reference code without
gradient, so its image equals the full image shrunk to r at the reference and differs, for a
nearby code, only by how much the higher blocks' contribution changes (the small offsets that
expression edits and GAN2Shape's projections explore). `benchmarks/bench_early_exit.py` measures
both the speed-up and that error.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def shrink(images: torch.Tensor, size: int) -> torch.Tensor:
    """images [B,C,S,S] → [B,C,size,size] by area averaging (size ≤ S); unchanged when the size matches."""
    if images.shape[-1] == size:
        return images
    if size > images.shape[-1]:
        raise ValueError(f"shrink makes images smaller; asked for {size} px from {images.shape[-1]} px")
    return F.interpolate(images, size=(size, size), mode="area")


def supports_early_exit(generator: nn.Module) -> bool:
    """Whether `generator.synthesis` takes `until` (toon3d's Generator and FeatureInjectionGenerator)."""
    import inspect

    synthesis = getattr(generator, "synthesis", None)
    return synthesis is not None and "until" in inspect.signature(synthesis).parameters


def exit_size(generator: nn.Module, size: int | None) -> int | None:
    """The resolution to stop at for a wanted `size`: None (run every block) when size is None, not
    below the generator's size, or the generator cannot stop early; else the smallest block ≥ size."""
    full = int(getattr(generator, "size", 0))
    if size is None or size >= full or not supports_early_exit(generator):
        return None
    stop = 4
    while stop < size:
        stop *= 2
    return min(stop, full)


class LowResSynthesis:
    """W+ codes → the generator's image at `size` px from its blocks up to `size`, plus a residual.

    `residual(ws_ref)` [B,3,size,size] = shrink(full(ws_ref)) − partial(ws_ref), computed without
    gradient; `__call__(ws, residual)` = partial(ws) + residual, which equals shrink(full(ws_ref))
    at ws = ws_ref. Noise: "const" (the stored maps), "none", or an explicit list of maps.
    """

    def __init__(self, generator: nn.Module, size: int, noise: str | Sequence[torch.Tensor] = "const") -> None:
        stop = exit_size(generator, size)
        if stop is None or stop != size:
            raise ValueError(f"{type(generator).__name__} of {getattr(generator, 'size', '?')} px cannot stop "
                             f"early at {size} px (a block resolution below its size is needed)")
        self.generator = generator
        self.size = size
        self.noise = noise

    def _synth(self, ws: torch.Tensor, until: int | None) -> torch.Tensor:
        if isinstance(self.noise, str):
            return self.generator.synthesis(ws, noise_mode=self.noise, until=until)
        return self.generator.synthesis(ws, noise=list(self.noise), until=until)

    def residual(self, ws_ref: torch.Tensor, clamp: bool = False) -> torch.Tensor:
        """[B,3,size,size]: what the blocks above `size` add to the shrunk image at ws_ref [B,n_latent,D]
        (`clamp`: to the shrunk image of the full image clamped to [-1,1], for callers that clamp)."""
        with torch.no_grad():
            full = self._synth(ws_ref, None)
            return shrink(full.clamp(-1, 1) if clamp else full, self.size) - self._synth(ws_ref, self.size)

    def __call__(self, ws: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """ws [B,n_latent,D], residual [B|1,3,size,size] → images [B,3,size,size] (about [-1,1], not clamped)."""
        return self._synth(ws, self.size) + residual


__all__ = ["LowResSynthesis", "exit_size", "shrink", "supports_early_exit"]
