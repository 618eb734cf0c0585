"""GAN inversion: rosinality's StyleGAN2 projector (REFERENCE §2.7, §12 item 13), on any device.

For target images t [B,3,S,S] in [-1,1], optimise a latent (W [B,D] by default, W+ [B,L,D]
with `w_plus`) and every noise map of the generator with Adam, for `steps` steps:

  - start: the mean of W over `n_mean_latent` mapped z (or a given start, e.g. an encoder's
    prediction); noise maps drawn fresh from N(0,1) per image;
  - latent_std = sqrt(Σ|w − mean|² / n): one scalar over all dimensions, as NVIDIA's projector;
  - step i, t = i/steps: lr = lr₀·ramp, ramp = (½ − ½cos(π·min(1, (1−t)/rampdown)))·min(1, t/rampup)
    (so step 0 has lr 0, yet its gradient enters Adam's moments, as in the reference);
  - the latent fed to the generator is jittered: w + N(0,1)·latent_std·noise·max(0, 1 − t/noise_ramp)²;
  - images larger than 256 px are averaged down to 256 (2×2 blocks) before the loss, as the
    reference does; the target must be at that size;
  - loss = Σ_b [perceptual(img_b) + noise_regularize·R(noises_b) + mse·MSE(img_b, t_b)], with
    R = Σ over maps and over the 2×2-averaged pyramid of each map down to 8×8 (smaller maps:
    once) of mean(n·roll_x(n))² + mean(n·roll_y(n))²;
  - after each step every noise map is renormalised to zero mean and unit standard deviation.

One addition, off by default: `latent_prior` > 0 adds latent_prior·max(0, m(w) − r) to each
image's loss, m(w) = mean(((w − mean)/σ_d)²) over dimensions (and layers), σ_d the per-dimension
std of W, r the 99th percentile of m over the `n_mean_latent` mapped samples. Codes like the
generator's own pay nothing; a target the generator cannot draw (a real photo for the
SynFace-trained built-in base) can no longer pull the latent far outside them, where its images
stop being faces.

Several targets are projected side by side as if each were alone: the regulariser, the MSE and
the renormalisation are taken per image (the reference takes them over the whole batch, which
couples the images; with one image the two are the same). Only the random draws differ from
a run on the image alone.

The result is the latent after the last step and the image it gives with the optimised noise.
(The reference records the latent every 100 steps and returns the last record, the same
latent when `steps` is a multiple of 100; it cannot run fewer than 100 steps.)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from toon3d.edit.refine import frozen, lr_schedule
from toon3d.errors import Toon3dError

LOSS_SIZE = 256  # the reference compares at most 256 px images


@dataclass
class ProjectorSettings:
    """rosinality's projector.py defaults (REFERENCE §2.7)."""

    steps: int = 1000
    lr: float = 0.1
    lr_rampup: float = 0.05
    lr_rampdown: float = 0.25
    noise: float = 0.05
    noise_ramp: float = 0.75
    noise_regularize: float = 1e5
    mse: float = 0.0
    # Not in the reference (0 = off): weight of the hinge max(0, m(w) − r) (module docstring) that keeps the
    # latent among the generator's own codes when the target is one the generator cannot draw.
    latent_prior: float = 0.0
    w_plus: bool = False
    n_mean_latent: int = 10000
    optimize_noise: bool = True
    seed: int = 0

    def check(self) -> None:
        """Raise a one-line Toon3dError on impossible settings."""
        if self.steps < 0:
            raise Toon3dError(f"--steps must be 0 or more, got {self.steps}")
        if not (math.isfinite(self.lr) and self.lr >= 0):
            raise Toon3dError(f"--lr must be a non-negative number, got {self.lr}")
        if self.n_mean_latent < 2:
            raise Toon3dError(f"n_mean_latent must be at least 2, got {self.n_mean_latent}")
        for name in ("noise", "noise_regularize", "mse", "latent_prior"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise Toon3dError(f"{name} must be a non-negative number, got {value}")


@dataclass
class ProjectionResult:
    """What `project` found, and how the optimisation went."""

    latent: torch.Tensor           # W [B,D] or W+ [B,L,D], detached, on the generator's device
    noises: list[torch.Tensor]     # num_layers maps [B,1,r,r], detached
    image: torch.Tensor            # [B,3,S,S] the generator's output for latent + noises (not clamped)
    start: torch.Tensor            # the latent the optimisation started from (same shape as latent)
    losses: dict[str, list[list[float]]] = field(default_factory=dict)  # term → per step → per sample
    lrs: list[float] = field(default_factory=list)
    noise_strengths: list[float] = field(default_factory=list)
    settings: dict = field(default_factory=dict)


@dataclass
class LatentStatistics:
    """W's statistics over mapped z ~ N(0,1)."""

    mean: torch.Tensor      # [1,D]
    std: float              # sqrt(Σ|w − mean|²/n): one scalar, the reference's latent_std
    dim_std: torch.Tensor   # [D] per-dimension std (the latent prior's units)
    radius: float           # 99th percentile over the samples of mean_d(((w − mean)/dim_std)²)

    def spread(self, latent: torch.Tensor) -> torch.Tensor:
        """m(w) = mean(((w − mean)/dim_std)²) over all but the batch dimension: W [B,D] or W+ [B,L,D] → [B]."""
        return ((latent - self.mean.reshape(-1)) / self.dim_std).pow(2).flatten(1).mean(1)


def latent_statistics(generator: nn.Module, n: int, rng: torch.Generator | None = None,
                      device: torch.device | str | None = None) -> LatentStatistics:
    """`LatentStatistics` of W over n mapped z ~ N(0,1) drawn from rng."""
    device = device or next(generator.parameters()).device
    with torch.no_grad():
        z = torch.randn(n, generator.style_dim, generator=rng).to(device)
        w = torch.cat([generator.style(z[i:i + 4096]) for i in range(0, n, 4096)])
        mean = w.mean(0, keepdim=True)
        std = float(((w - mean).pow(2).sum() / n).sqrt())
        stats = LatentStatistics(mean, std, w.std(0).clamp_min(1e-8), 0.0)
        stats.radius = float(torch.quantile(stats.spread(w), 0.99))
    return stats


def noise_regularize(noises: Sequence[torch.Tensor]) -> torch.Tensor:
    """StyleGAN2's noise regulariser over the 2×2 pyramid of each map [B,1,r,r] → [B] (one value per image)."""
    loss = noises[0].new_zeros(noises[0].shape[0])
    for noise in noises:
        size = noise.shape[2]
        while True:
            loss = loss + (noise * torch.roll(noise, shifts=1, dims=3)).mean((1, 2, 3)).pow(2) \
                + (noise * torch.roll(noise, shifts=1, dims=2)).mean((1, 2, 3)).pow(2)
            if size <= 8:
                break
            noise = noise.reshape(-1, 1, size // 2, 2, size // 2, 2).mean((3, 5))
            size //= 2
    return loss


@torch.no_grad()
def noise_normalize_(noises: Sequence[torch.Tensor]) -> None:
    """Each image's map [B,1,r,r] to zero mean and unit std (over its r×r values), in place."""
    for noise in noises:
        mean = noise.mean((1, 2, 3), keepdim=True)
        std = noise.std((1, 2, 3), keepdim=True)
        noise.sub_(mean).div_(std)


def downsample_to(images: torch.Tensor, size: int) -> torch.Tensor:
    """[B,C,S,S] → [B,C,size,size] by averaging factor×factor blocks (S a multiple of size); else unchanged."""
    s = images.shape[-1]
    if s <= size:
        return images
    if s % size:
        raise Toon3dError(f"cannot average {s} px images down to {size} px; pass a target of a size dividing {s}")
    f = s // size
    b, c = images.shape[:2]
    return images.reshape(b, c, size, f, size, f).mean((3, 5))


def loss_size(generator_size: int) -> int:
    """The size the projector compares images at: min(generator size, 256)."""
    return min(generator_size, LOSS_SIZE)


def project(generator: nn.Module, target: torch.Tensor,
            perceptual: Callable[[torch.Tensor], dict[str, torch.Tensor]],
            settings: ProjectorSettings | None = None, start: torch.Tensor | None = None,
            statistics: LatentStatistics | None = None,
            progress: Callable[[int, dict[str, float]], None] | None = None) -> ProjectionResult:
    """Invert target [B,3,s,s] in [-1,1] (s = min(generator size, 256)) into `generator` → ProjectionResult.

    perceptual(images [B,3,s,s]) → {"total": [B], other terms: [B]} (see `toon3d.invert.losses`);
    start: a W [B|1,D] (or W+ [B|1,L,D]) start instead of the mean (e.g. the encoder's);
    statistics: precomputed `latent_statistics` (else computed from settings.seed);
    progress(step, {term: mean value}) is called after every step.
    """
    settings = settings or ProjectorSettings()
    settings.check()
    device = next(generator.parameters()).device
    if target.dim() != 4 or target.shape[1] != 3:
        raise Toon3dError(f"the target must be [B,3,S,S] images in [-1,1], got {tuple(target.shape)}")
    size = loss_size(generator.size)
    if tuple(target.shape[2:]) != (size, size):
        raise Toon3dError(f"the target is {target.shape[-1]} px; this {generator.size} px generator is compared at "
                          f"{size} px: resize the aligned photo to {size} px")
    batch = target.shape[0]
    target = target.to(device)
    rng = torch.Generator().manual_seed(settings.seed)
    if statistics is None:
        statistics = latent_statistics(generator, settings.n_mean_latent, rng, device)
    latent_mean, latent_std = statistics.mean, statistics.std
    if start is None:
        init = latent_mean.detach().to(device).reshape(1, -1).expand(batch, -1)
    else:
        init = start.detach().to(device)
    init = _start_latent(init, batch, generator.n_latent, settings.w_plus, generator.style_dim)
    latent = init.clone().requires_grad_(True)
    noises = [torch.randn(batch, 1, *n.shape[2:], generator=rng).to(device) for n in generator.noise_buffers()]
    for noise in noises:
        noise.requires_grad_(settings.optimize_noise)
    variables = [latent] + (noises if settings.optimize_noise else [])
    optimizer = torch.optim.Adam(variables, lr=settings.lr)
    lrs = lr_schedule(settings.steps, settings.lr, settings.lr_rampdown, settings.lr_rampup)
    record: dict[str, list[list[float]]] = {}
    strengths = []
    with frozen(generator, perceptual), torch.enable_grad():
        for i, lr in enumerate(lrs):
            t = i / settings.steps
            for group in optimizer.param_groups:
                group["lr"] = lr
            strength = latent_std * settings.noise * max(0.0, 1.0 - t / settings.noise_ramp) ** 2
            jitter = torch.randn(latent.shape, generator=rng).to(device) * strength
            images = downsample_to(generator([latent + jitter], input_is_latent=True, noise=noises)[0], size)
            terms = perceptual(images)
            n_loss = noise_regularize(noises)
            mse = (images - target).pow(2).mean((1, 2, 3))
            prior = (statistics.spread(latent) - statistics.radius).clamp_min(0)
            per_image = terms["total"] + settings.noise_regularize * n_loss + settings.mse * mse
            if settings.latent_prior:
                per_image = per_image + settings.latent_prior * prior
            loss = per_image.sum()
            grads = torch.autograd.grad(loss, variables)
            for var, grad in zip(variables, grads):
                var.grad = grad
            optimizer.step()
            if settings.optimize_noise:
                noise_normalize_(noises)
            per_sample = {k: v.detach().float().cpu().tolist() for k, v in terms.items()}
            per_sample["noise_reg"] = n_loss.detach().cpu().tolist()
            per_sample["mse"] = mse.detach().cpu().tolist()
            per_sample["latent_prior"] = prior.detach().cpu().tolist()
            per_sample["loss"] = per_image.detach().cpu().tolist()
            for key, values in per_sample.items():
                record.setdefault(key, []).append(values)
            strengths.append(strength)
            if progress is not None:
                progress(i, {k: float(sum(v) / len(v)) for k, v in per_sample.items()})
    with torch.no_grad():
        image = generator([latent.detach()], input_is_latent=True, noise=[n.detach() for n in noises])[0]
    return ProjectionResult(latent.detach(), [n.detach() for n in noises], image, init, record, lrs, strengths,
                            asdict(settings))


def _start_latent(start: torch.Tensor, batch: int, n_latent: int, w_plus: bool, style_dim: int) -> torch.Tensor:
    if start.shape[-1] != style_dim:
        raise Toon3dError(f"the start latent has {start.shape[-1]} dimensions, the generator's W has {style_dim}")
    if start.dim() == 1:
        start = start[None]
    if start.shape[0] not in (1, batch):
        raise Toon3dError(f"the start latent holds {start.shape[0]} codes for {batch} target images")
    start = start.expand(batch, *start.shape[1:]).clone()
    if start.dim() == 2:
        return start[:, None].repeat(1, n_latent, 1) if w_plus else start
    if start.dim() == 3 and start.shape[1] == n_latent:
        if not w_plus:
            raise Toon3dError("a W+ start needs w_plus=True (--wplus)")
        return start
    raise Toon3dError(f"the start latent must be W [B,{style_dim}] or W+ [B,{n_latent},{style_dim}], "
                      f"got {tuple(start.shape)}")
