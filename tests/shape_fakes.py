"""Small stand-ins shared by the GAN2Shape step and schedule tests: a 32 px generator + discriminator,
a frozen perceptual distance and identity embedder with seeded random weights, and the tiny preset."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from toon3d.errors import Toon3dError
from toon3d.shape.losses import PerceptualDistance
from toon3d.stylegan2.discriminator import Discriminator
from toon3d.stylegan2.generator import Generator

SIZE = 32
STYLE_DIM = 16


class TinyPerceptual(PerceptualDistance):
    """One seeded 3×3 stride-2 conv + ReLU as the feature network (frozen)."""

    def __init__(self, seed: int = 5) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.conv = nn.Conv2d(3, 4, 3, 2, 1)
        self.requires_grad_(False)

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        return [torch.relu(self.conv(images))]


class TinyEmbedder(nn.Module):
    """A seeded conv → pool → linear identity embedder with `embed` (frozen)."""

    def __init__(self, seed: int = 6) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                                     nn.Linear(16, 8))
        self.requires_grad_(False)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


def tiny_gan(seed: int = 0, n_mlp: int = 8) -> tuple[Generator, Discriminator]:
    """A 32 px generator (16-d w, `n_mlp` mapping layers) and discriminator with seeded random weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        g = Generator(SIZE, style_dim=STYLE_DIM, n_mlp=n_mlp, channel_multiplier=1, channel_max=16).eval()
        d = Discriminator(SIZE, channel_multiplier=1, channel_max=16).eval()
    return g, d


def tiny_target(g: Generator, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(image [1,3,32,32] in [-1,1], its latent w [1,16]) from the generator."""
    z = torch.randn(1, STYLE_DIM, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        w = g.style(z)
        image, _ = g([w], input_is_latent=True, randomize_noise=False)
    return image.clamp(-1, 1), w


def one_line_error(fn, *args, **kwargs) -> str:
    """Call fn expecting a Toon3dError; return its message, asserting it is one line."""
    with pytest.raises(Toon3dError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message
