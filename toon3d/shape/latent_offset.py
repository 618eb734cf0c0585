"""Projecting pseudo samples back into the GAN (GAN2Shape step 2, REFERENCE §6.7, §12 item 21), and L_dis.

The latent encoder E maps an image to an offset that enters the generator's mapping network part
way through, around the hidden activation of the zero input:

    Δw = tail(center_h + E(I)) − M(0),   center_h = head(0),   I_p = G(w + ψ·Δw)

`head`/`tail` split the mapping `nn.Sequential([PixelNorm, Lin1, …, Lin_n])` at index
`n − F1_d`. The PixelNorm sits at index 0 of that list, so GAN2Shape's `style_forward(skip=8−F1_d)`
runs Lin_(n−F1_d+1)…Lin_n: with F1_d = 2 on StyleGAN2's 8-layer mapping the tail is
Lin6, Lin7, Lin8, three layers although its config comment says two; with F1_d = n (GAN2Shape's
synface config) center_h = 0 and the tail is the whole mapping, PixelNorm included. We reproduce
that indexing exactly. F1_d is counted on the generator's own mapping depth
(`ReconstructionSettings.tail_layers` rescales the paper's F1_d = 2 of 8).

ψ: toon3d latents are already truncated (w = m + ψ(w_raw − m)); G(w + ψΔw) equals GAN2Shape's
G(m + ψ(w_raw + Δw − m)), its truncation applied to the projected latent.

L_dis compares discriminator features of the projection and the pseudo sample: the outputs of
the D's ResBlocks `convs[1..4]`, masked mean |Δ| per block with the mask average-pooled to each
block's resolution, the real (pseudo) branch without gradient. A generator without a
discriminator (toon3d's built-in `base` ships none) can use `PerceptualFeatureDistance`
instead, a documented substitute that the caller must choose explicitly.
"""

from __future__ import annotations

import abc

import torch
import torch.nn.functional as F
from torch import nn

from toon3d.errors import Toon3dError


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """images [B,C,H,W] → [B,C,size,size]: bilinear up, area down (GAN2Shape's `resize`), unchanged at size."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    if size > images.shape[-1]:
        return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return F.interpolate(images, size=(size, size), mode="area")


def mapping_network(generator: nn.Module) -> nn.Sequential:
    """The generator's mapping `style` = Sequential(PixelNorm, Lin1..Lin_n); a one-line error for anything else."""
    style = getattr(generator, "style", None)
    if not isinstance(style, nn.Sequential) or len(style) < 2:
        raise Toon3dError("the generator has no StyleGAN2 mapping network (style = PixelNorm + linear layers); "
                          "pass a StyleGAN2 generator")
    if type(style[0]).__name__ != "PixelNorm":
        raise Toon3dError(f"the generator's mapping starts with {type(style[0]).__name__}, not PixelNorm; "
                          "pass a rosinality-layout StyleGAN2 generator")
    return style


def split_mapping(style: nn.Sequential, tail_layers: int) -> tuple[nn.Sequential, nn.Sequential]:
    """(head, tail) of the mapping at list index n − tail_layers, PixelNorm counted at index 0 (GAN2Shape's split).

    tail_layers = F1_d ∈ [1, n]: F1_d < n gives tail = Lin_(n−F1_d+1)..Lin_n (F1_d + 1 layers
    for F1_d = 2, n = 8: Lin6..Lin8); F1_d = n gives an empty head and the whole mapping as tail.
    """
    n = len(style) - 1
    if not 1 <= tail_layers <= n:
        raise Toon3dError(f"F1_d must be between 1 and the mapping depth {n}, got {tail_layers}")
    k = n - tail_layers
    return style[:k], style[k:]


class LatentProjector:
    """Δw from the encoder and I_p = G(w + ψ·Δw) for one generator (frozen; noise fixed to its buffers).

    The generator is not owned: its parameters are not trained here (the steps freeze it).
    `output_size` resizes the generator's images to the 3D image size (GAN2Shape's resize).
    `synthesis_size` (None: every block) stops the generator after its block of that resolution
    and adds the residual of the full image at the image's own latent
    (`toon3d.stylegan2.early_exit`): exact for Δw = 0, an approximation for the offsets E gives.
    """

    def __init__(self, generator: nn.Module, tail_layers: int, truncation: float = 1.0,
                 relative_enc: bool = False, output_size: int | None = None,
                 synthesis_size: int | None = None) -> None:
        self.generator = generator
        self.style = mapping_network(generator)
        self.tail_layers = tail_layers
        self.head, self.tail = split_mapping(self.style, tail_layers)
        self.truncation = float(truncation)
        self.relative_enc = relative_enc
        self.output_size = output_size
        from toon3d.stylegan2.early_exit import LowResSynthesis, exit_size

        stop = exit_size(generator, synthesis_size)
        self.low = LowResSynthesis(generator, stop) if stop is not None else None
        self._residual: tuple[torch.Tensor, torch.Tensor] | None = None
        self.style_dim = int(getattr(generator, "style_dim", self.style[1].weight.shape[1]))
        param = next(generator.parameters())
        with torch.no_grad():
            zero = torch.zeros(1, self.style_dim, device=param.device, dtype=param.dtype)
            self.center_h = self.head(zero)
            self.center_w = self.style(zero)

    def check_latent(self, latent: torch.Tensor) -> torch.Tensor:
        """A W latent [D] or [1,D] of this generator → [1,D]; a one-line error for other shapes or widths."""
        if not isinstance(latent, torch.Tensor) or latent.dim() not in (1, 2) or \
                (latent.dim() == 2 and latent.shape[0] != 1):
            shape = tuple(latent.shape) if isinstance(latent, torch.Tensor) else type(latent).__name__
            raise Toon3dError(f"the latent must be one W code [{self.style_dim}] or [1,{self.style_dim}], got {shape}")
        latent = latent.reshape(1, -1)
        if latent.shape[1] != self.style_dim:
            raise Toon3dError(f"the latent is {latent.shape[1]}-d but this generator's w is {self.style_dim}-d; "
                              "pass a latent of the same generator")
        if not torch.isfinite(latent).all():
            raise Toon3dError("the latent contains NaN or inf values; check its source")
        return latent

    def offset(self, encoder: nn.Module, images: torch.Tensor, gan_image: torch.Tensor | None = None) -> torch.Tensor:
        """Δw [B,D] = tail(center_h + E(images)) − M(0); with relative_enc, E(gan_image) is subtracted from E(images)."""
        e = encoder(images)
        if e.shape[1] != self.style_dim:
            raise Toon3dError(f"the latent encoder gives {e.shape[1]}-d offsets but the generator's w is "
                              f"{self.style_dim}-d; build the 3D networks with latent_dim={self.style_dim}")
        if self.relative_enc:
            if gan_image is None:
                raise Toon3dError("relative_enc needs the generator's image of the latent (gan_image)")
            e = e - encoder(gan_image)
        return self.tail(self.center_h + e) - self.center_w

    def generate(self, latent: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        """I = G(w + ψ·Δw) clamped to [-1,1] and resized to output_size: latent [1,D], offset [B,D] → [B,3,S,S]."""
        w = latent if offset is None else latent + self.truncation * offset
        if self.low is not None:
            image = self.low(self._plus(w), self.residual_at(latent)).clamp(-1, 1)
            return resize_images(image, self.output_size) if self.output_size else image
        image, _ = self.generator([w], input_is_latent=True, randomize_noise=False)
        image = image.clamp(-1, 1)
        return resize_images(image, self.output_size) if self.output_size else image

    def _plus(self, w: torch.Tensor) -> torch.Tensor:
        return w[:, None].expand(-1, self.generator.n_latent, -1)

    def residual_at(self, latent: torch.Tensor) -> torch.Tensor:
        """The early exit's residual [1,3,s,s] at `latent` [1,D] (computed once per latent, no gradient)."""
        if self._residual is None or not torch.equal(self._residual[0], latent):
            self._residual = (latent.detach().clone(), self.low.residual(self._plus(latent.detach()), clamp=True))
        return self._residual[1]


class FeatureDistance(nn.Module, abc.ABC):
    """L_dis: forward(fake [B,3,S,S], real [B,3,S,S] in [-1,1], mask [B,1,S,S] | None) → scalar; `kind` names it."""

    kind: str

    @abc.abstractmethod
    def forward(self, fake: torch.Tensor, real: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Distance between two image batches, gradients to `fake` only."""


def _masked_mean(loss: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return loss.mean()
    m = F.adaptive_avg_pool2d(mask.to(loss.dtype), loss.shape[2:]).expand_as(loss)
    return (loss * m).sum() / m.sum().clamp_min(1e-7)


class DiscriminatorFeatureDistance(FeatureDistance):
    """Σ_i masked-mean |D_i(fake) − D_i(real)| over the D's first `n_blocks` ResBlocks (GAN2Shape's DiscriminatorLoss).

    Images are resized to the discriminator's size when the 3D size differs; the mask is
    average-pooled to each block's resolution; the real branch runs without gradient.
    """

    kind = "discriminator"

    def __init__(self, discriminator: nn.Module, n_blocks: int = 4) -> None:
        super().__init__()
        if not hasattr(discriminator, "features"):
            raise Toon3dError("the discriminator has no features(); pass a toon3d StyleGAN2 Discriminator")
        available = len(discriminator.convs) - 1
        if not 1 <= n_blocks <= available:
            raise Toon3dError(f"L_dis uses {n_blocks} discriminator blocks but this {discriminator.size} px "
                              f"discriminator has {available}; lower dis_blocks")
        self.discriminator = discriminator.eval()
        self.n_blocks = n_blocks

    def train(self, mode: bool = True) -> DiscriminatorFeatureDistance:
        # The discriminator is a fixed feature extractor whatever mode the owner is put in.
        super().train(mode)
        self.discriminator.eval()
        return self

    def forward(self, fake: torch.Tensor, real: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        size = self.discriminator.size
        with torch.no_grad():
            real_feats = self.discriminator.features(resize_images(real, size), self.n_blocks)
        fake_feats = self.discriminator.features(resize_images(fake, size), self.n_blocks)
        if mask is not None:
            mask = resize_images(mask, size)
        return sum(_masked_mean((f - r).abs(), mask) for f, r in zip(fake_feats, real_feats))


class PerceptualFeatureDistance(FeatureDistance):
    """The substitute L_dis for generators without a discriminator: a `PerceptualDistance` (masked feature L1)."""

    def __init__(self, perceptual: nn.Module) -> None:
        super().__init__()
        self.perceptual = perceptual
        self.kind = f"perceptual substitute ({type(perceptual).__name__})"

    def forward(self, fake: torch.Tensor, real: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.perceptual(fake, real.detach(), mask)
