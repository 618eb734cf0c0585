"""StyleGAN2 generator with rosinality/stylegan2-pytorch's state-dict layout and forward()."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from toon3d.errors import Toon3dError
from toon3d.nn.equalized import EqualLinear
from toon3d.stylegan2.layers import CONV_PATHS, ConstantInput, ModulatedConv2d, PixelNorm, StyledConv, ToRGB

NOISE_MODES = ("const", "random", "none")

# CPU inference without autograd runs blocks of this resolution and above one sample at a time
# (weights modulated per sample, no full-size input/output scaling passes), and the small
# low-resolution blocks batched (bigger ops keep both cores busy). Measured with
# benchmarks/bench_generator.py on a 2-core AVX-512 machine, torch 2.13.
PER_SAMPLE_FROM_RES = 64


def stylegan2_channels(size: int, channel_multiplier: int = 2, channel_max: int = 512) -> dict[int, int]:
    """Feature channels per resolution (rosinality's table, each capped at ``channel_max``)."""
    base = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * channel_multiplier, 128: 128 * channel_multiplier,
            256: 64 * channel_multiplier, 512: 32 * channel_multiplier, 1024: 16 * channel_multiplier}
    return {r: min(c, channel_max) for r, c in base.items() if r <= size}


def check_size(size: int, low: int = 16, high: int = 1024) -> int:
    """Return log2(size) for a power of two in [low, high], else a Toon3dError."""
    if not isinstance(size, int) or size < low or size > high or size & (size - 1):
        raise Toon3dError(f"StyleGAN2 size must be a power of 2 between {low} and {high}, got {size!r}")
    return int(math.log2(size))


class Generator(nn.Module):
    """Mapping network (PixelNorm + n_mlp EqualLinear) and synthesis network (4x4 const -> size)."""

    def __init__(self, size: int, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: int = 2,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1), lr_mlp: float = 0.01, channel_max: int = 512):
        super().__init__()
        self.log_size = check_size(size)
        self.size = size
        self.style_dim = style_dim
        self._config = {"size": size, "style_dim": style_dim, "n_mlp": n_mlp,
                        "channel_multiplier": channel_multiplier, "blur_kernel": [float(t) for t in blur_kernel],
                        "lr_mlp": lr_mlp, "channel_max": channel_max}
        self.style = nn.Sequential(PixelNorm(), *[
            EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation="fused_lrelu") for _ in range(n_mlp)])
        self.channels = stylegan2_channels(size, channel_multiplier, channel_max)
        c4 = self.channels[4]
        self.input = ConstantInput(c4)
        self.conv1 = StyledConv(c4, c4, 3, style_dim, blur_kernel=blur_kernel)
        self.to_rgb1 = ToRGB(c4, style_dim, upsample=False)
        self.num_layers = (self.log_size - 2) * 2 + 1
        self.n_latent = self.log_size * 2 - 2
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for layer in range(self.num_layers):
            r = 2 ** ((layer + 5) // 2)
            self.noises.register_buffer(f"noise_{layer}", torch.randn(1, 1, r, r))
        # Inference on CPU runs a batch one sample at a time (see _per_sample_inference).
        self.per_sample_cpu_inference = True
        in_ch = c4
        for i in range(3, self.log_size + 1):
            out_ch = self.channels[2**i]
            self.convs.append(StyledConv(in_ch, out_ch, 3, style_dim, upsample=True, blur_kernel=blur_kernel))
            self.convs.append(StyledConv(out_ch, out_ch, 3, style_dim, blur_kernel=blur_kernel))
            self.to_rgbs.append(ToRGB(out_ch, style_dim, blur_kernel=blur_kernel))
            in_ch = out_ch

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments as a JSON-serialisable dict (``Generator(**g.config)`` rebuilds it)."""
        return dict(self._config, blur_kernel=list(self._config["blur_kernel"]))

    @property
    def resolutions(self) -> list[int]:
        """Block resolutions 4, 8, ..., size."""
        return [2**i for i in range(2, self.log_size + 1)]

    def set_conv_path(self, path: str) -> Generator:
        """Select "fast" (default) or "reference" (grouped-conv formula) for every modulated conv."""
        if path not in CONV_PATHS:
            raise ValueError(f"conv path must be one of {CONV_PATHS}, got {path!r}")
        for m in self.modules():
            if isinstance(m, ModulatedConv2d):
                m.path = path
        return self

    # ---- mapping -------------------------------------------------------------------------
    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """z [B,style_dim] ~ N(0,1) -> w [B,style_dim]."""
        return self.style(z)

    def get_latent(self, z: torch.Tensor) -> torch.Tensor:
        """Reference name for :meth:`mapping`: z [B,style_dim] -> w [B,style_dim]."""
        return self.style(z)

    @torch.no_grad()
    def mean_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean of ``mapping`` over n random z (seeded by ``generator``): -> [1,style_dim]."""
        dev = self.input.input.device
        z = torch.randn(n, self.style_dim, generator=generator, device=dev)
        return self.style(z).mean(0, keepdim=True)

    # ---- noise ---------------------------------------------------------------------------
    def noise_buffers(self) -> list[torch.Tensor]:
        """The stored per-layer noise maps ``noises.noise_i``: list of [1,1,r,r]."""
        return [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]

    def make_noise(self, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Fresh N(0,1) noise maps (seeded by ``generator``): list of num_layers [1,1,r,r]."""
        dev = self.input.input.device
        return [torch.randn(n.shape, generator=generator, device=dev) for n in self.noise_buffers()]

    def _noise_list(self, noise_mode: str, noise: Sequence[torch.Tensor | None] | None,
                    batch: int, generator: torch.Generator | None) -> list[torch.Tensor | None]:
        if noise is not None:
            if len(noise) != self.num_layers:
                raise ValueError(f"noise must be a list of {self.num_layers} tensors, got {len(noise)}")
            return list(noise)
        if noise_mode == "const":
            return self.noise_buffers()
        if noise_mode == "random":
            # None asks each layer to draw N(0,1) [B,1,r,r] itself, in layer order.
            return [None] * self.num_layers
        if noise_mode == "none":
            return [torch.zeros_like(n) for n in self.noise_buffers()]
        raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")

    # ---- synthesis -----------------------------------------------------------------------
    def synthesis(self, ws: torch.Tensor, noise_mode: str = "const",
                  noise: Sequence[torch.Tensor | None] | None = None, generator: torch.Generator | None = None,
                  return_features: bool = False, inject_features: dict[int, torch.Tensor] | None = None,
                  until: int | None = None) -> torch.Tensor | tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """W+ codes ws [B,n_latent,style_dim] -> image [B,3,size,size] (about [-1,1], not clamped).

        ``features`` maps each resolution to its block output (4: conv1; r >= 8: the second
        StyledConv of block r, post-activation, pre-ToRGB). ``inject_features[r]`` replaces
        that block output before its ToRGB and the following blocks. ``until`` (a resolution)
        stops after that block and returns its skip image [B,3,until,until]: the partial RGB sum
        of the skip architecture, which the higher blocks only add to (the full image is
        ``until=size``); the blocks above it are not run.
        """
        if until is not None and until not in self.resolutions:
            raise ValueError(f"until must be one of {self.resolutions}, got {until}")
        if ws.ndim != 3 or ws.shape[1] != self.n_latent or ws.shape[2] != self.style_dim:
            raise ValueError(f"ws must be [B,{self.n_latent},{self.style_dim}], got {tuple(ws.shape)}")
        batch = ws.shape[0]
        noises = self._noise_list(noise_mode, noise, batch, generator)
        inject = inject_features or {}
        unknown = set(inject) - set(self.resolutions)
        if unknown:
            raise ValueError(f"inject_features resolutions {sorted(unknown)} not in {self.resolutions}")
        split = batch > 1 and self._per_sample_inference(ws)
        if split:
            # Random maps are drawn up front in layer order: the same draws the batched path makes.
            noises = [n if n is not None else torch.randn(batch, 1, *b.shape[2:], generator=generator,
                                                          device=ws.device, dtype=ws.dtype)
                      for n, b in zip(noises, self.noise_buffers())]
        features: dict[int, torch.Tensor] = {}
        image = self._synthesize(ws, noises, generator, features if return_features else None, inject,
                                 PER_SAMPLE_FROM_RES if split else None, stop=until)
        return (image, features) if return_features else image

    def _per_sample_inference(self, ws: torch.Tensor) -> bool:
        return (self.per_sample_cpu_inference and ws.device.type == "cpu" and not torch.is_grad_enabled()
                and all(m.path == "fast" for m in self.modules() if isinstance(m, ModulatedConv2d)))

    def _synthesize(self, ws: torch.Tensor, noises: list[torch.Tensor | None], generator: torch.Generator | None,
                    features: dict[int, torch.Tensor] | None, inject: dict[int, torch.Tensor],
                    split_from: int | None = None, start: int = 0, out: torch.Tensor | None = None,
                    skip: torch.Tensor | None = None, stop: int | None = None) -> torch.Tensor:
        """Blocks ``start..`` (0 = the 4x4 block) -> RGB skip image; from resolution ``split_from`` on,
        one sample at a time; none above resolution ``stop``. ``features`` (when given) receives the
        block outputs."""
        batch = ws.shape[0]

        def tap(res: int, x: torch.Tensor) -> torch.Tensor:
            if res in inject:
                x = inject[res].to(x)
            if features is not None:
                features[res] = x
            return x

        if start == 0:
            out = tap(4, self.conv1(self.input(batch), ws[:, 0], noises[0], generator))
            skip = self.to_rgb1(out, ws[:, 1])
        for k in range(max(start, 1), self.log_size - 1):
            res = 2 ** (k + 2)
            if stop is not None and res > stop:
                break
            if split_from is not None and res >= split_from and batch > 1:
                return self._per_sample_tail(ws, noises, generator, features, inject, k, out, skip, stop)
            i = 2 * (k - 1)
            out = self.convs[i](out, ws[:, i + 1], noises[i + 1], generator)
            out = tap(res, self.convs[i + 1](out, ws[:, i + 2], noises[i + 2], generator))
            skip = self.to_rgbs[k - 1](out, ws[:, i + 3], skip)
        return skip

    def _per_sample_tail(self, ws: torch.Tensor, noises: list[torch.Tensor | None],
                         generator: torch.Generator | None, features: dict[int, torch.Tensor] | None,
                         inject: dict[int, torch.Tensor], start: int, out: torch.Tensor,
                         skip: torch.Tensor, stop: int | None = None) -> torch.Tensor:
        """Blocks ``start..`` run for each sample alone; images and features concatenated back."""
        batch = ws.shape[0]

        def row(t: torch.Tensor | None, i: int) -> torch.Tensor | None:
            return t[i : i + 1] if t is not None and t.shape[0] == batch else t

        images, per_sample = [], []
        for i in range(batch):
            feats_i: dict[int, torch.Tensor] | None = {} if features is not None else None
            images.append(self._synthesize(ws[i : i + 1], [row(n, i) for n in noises], generator, feats_i,
                                           {r: row(t, i) for r, t in inject.items()}, None, start,
                                           row(out, i), row(skip, i), stop))
            per_sample.append(feats_i)
        if features is not None:
            for r in per_sample[0]:
                features[r] = torch.cat([f[r] for f in per_sample], 0)
        return torch.cat(images, 0)

    def block_features(self, ws: torch.Tensor, noise: Sequence[torch.Tensor], until: int) -> dict[int, torch.Tensor]:
        """Block outputs {res: [B,C,res,res]} for res 4..until (as ``synthesis`` taps them), without ToRGB.

        ws [B,n_latent,style_dim] W+ codes, noise a full list of num_layers maps; the blocks above
        ``until`` are not run (the structure loss needs only the low resolutions).
        """
        if until not in self.resolutions:
            raise ValueError(f"until must be one of {self.resolutions}, got {until}")
        out = self.conv1(self.input(ws.shape[0]), ws[:, 0], noise[0])
        feats = {4: out}
        for k in range(1, int(math.log2(until)) - 1):
            i = 2 * (k - 1)
            out = self.convs[i](out, ws[:, i + 1], noise[i + 1])
            out = self.convs[i + 1](out, ws[:, i + 2], noise[i + 2])
            feats[2 ** (k + 2)] = out
        return feats

    # ---- reference-compatible forward ---------------------------------------------------
    def styles_to_latent(self, styles: Sequence[torch.Tensor], inject_index: int | None = None,
                         generator: torch.Generator | None = None) -> torch.Tensor:
        """One W [B,D] (repeated), one W+ [B,n_latent,D] (as is) or two W mixed at inject_index -> [B,n_latent,D]."""
        if len(styles) == 0 or len(styles) > 2:
            raise ValueError(f"styles must hold 1 or 2 tensors, got {len(styles)}")
        if len(styles) == 1:
            s = styles[0]
            return s if s.ndim == 3 else s.unsqueeze(1).repeat(1, self.n_latent, 1)
        if inject_index is None:
            inject_index = int(torch.randint(1, self.n_latent, (1,), generator=generator).item())
        if not 0 <= inject_index <= self.n_latent:
            raise ValueError(f"inject_index must be in [0, {self.n_latent}], got {inject_index}")
        a = styles[0].unsqueeze(1).repeat(1, inject_index, 1)
        b = styles[1].unsqueeze(1).repeat(1, self.n_latent - inject_index, 1)
        return torch.cat([a, b], 1)

    def forward(self, styles: Sequence[torch.Tensor], return_latents: bool = False,
                inject_index: int | None = None, truncation: float = 1.0,
                truncation_latent: torch.Tensor | None = None, input_is_latent: bool = False,
                noise: Sequence[torch.Tensor | None] | None = None, randomize_noise: bool = True,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """rosinality-compatible call: list of z (or w with input_is_latent) [B,D] -> (image [B,3,S,S], W+ or None).

        ``generator`` (an extension) seeds the random noise maps and a random inject_index.
        """
        if not input_is_latent:
            styles = [self.style(s) for s in styles]
        if truncation < 1:
            if truncation_latent is None:
                raise ValueError("truncation < 1 needs truncation_latent (e.g. g.mean_latent(4096))")
            styles = [truncation_latent + truncation * (s - truncation_latent) for s in styles]
        latent = self.styles_to_latent(styles, inject_index, generator)
        image = self.synthesis(latent, noise_mode="random" if randomize_noise else "const", noise=noise,
                               generator=generator)
        return image, (latent if return_latents else None)
