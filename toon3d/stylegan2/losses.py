"""StyleGAN2 training losses and constants (rosinality ``train.py`` / Karras et al. 2020).

Non-saturating logistic GAN loss in softplus form, lazy R1 on reals, lazy path-length
regularisation, Adam settings for lazy regularisation and the generator EMA.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# EMA half-life of 10k images at batch 32 (StyleGAN2): 0.5 ** (32 / 10000) = 0.997784.
EMA_DECAY = 0.5 ** (32 / 10000)


@dataclass(frozen=True)
class RegularisationSettings:
    """Lazy-regularisation constants of rosinality ``train.py`` (defaults = its defaults)."""

    r1_gamma: float = 10.0
    d_reg_every: int = 16
    path_weight: float = 2.0
    path_batch_shrink: int = 2
    g_reg_every: int = 4
    path_decay: float = 0.01


def d_logistic_loss(real_pred: torch.Tensor, fake_pred: torch.Tensor) -> torch.Tensor:
    """D loss ``mean softplus(-D(real)) + mean softplus(D(fake))``: logits [B,1] -> scalar."""
    return F.softplus(-real_pred).mean() + F.softplus(fake_pred).mean()


def g_nonsaturating_loss(fake_pred: torch.Tensor) -> torch.Tensor:
    """G loss ``mean softplus(-D(G(z)))``: logits [B,1] -> scalar."""
    return F.softplus(-fake_pred).mean()


def d_r1_penalty(real_pred: torch.Tensor, real_img: torch.Tensor) -> torch.Tensor:
    """Mean over samples of ``sum |dD(x)/dx|^2``; real_img [B,3,H,W] must require grad -> scalar.

    The graph is kept (create_graph) so the penalty can be back-propagated into D.
    """
    (grad,) = torch.autograd.grad(real_pred.sum(), real_img, create_graph=True)
    return grad.pow(2).reshape(grad.shape[0], -1).sum(1).mean()


def d_r1_loss(real_pred: torch.Tensor, real_img: torch.Tensor, r1_gamma: float = 10.0,
              d_reg_every: int = 16) -> torch.Tensor:
    """Lazy R1 term as added to D's loss: ``gamma/2 * penalty * d_reg_every`` -> scalar."""
    return r1_gamma / 2 * d_r1_penalty(real_pred, real_img) * d_reg_every


def path_length_penalty(fake_img: torch.Tensor, latents: torch.Tensor, mean_path_length: torch.Tensor | float,
                        decay: float = 0.01, generator: torch.Generator | None = None,
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Path-length penalty for images [B,3,H,W] made from W+ latents [B,n_latent,D].

    Returns ``(penalty, path_mean_detached, path_lengths [B])`` where penalty =
    ``mean((pl - pl_mean)^2)`` and ``pl_mean <- pl_mean + decay * (mean(pl) - pl_mean)``.
    The image-space noise is scaled by 1/sqrt(H*W) so the lengths do not grow with resolution.
    """
    noise = torch.randn(fake_img.shape, generator=generator, device=fake_img.device, dtype=fake_img.dtype)
    noise = noise / math.sqrt(fake_img.shape[2] * fake_img.shape[3])
    (grad,) = torch.autograd.grad((fake_img * noise).sum(), latents, create_graph=True)
    path_lengths = torch.sqrt(grad.pow(2).sum(2).mean(1))
    mean_prev = torch.as_tensor(mean_path_length, dtype=path_lengths.dtype, device=path_lengths.device)
    path_mean = mean_prev + decay * (path_lengths.mean() - mean_prev)
    penalty = (path_lengths - path_mean).pow(2).mean()
    return penalty, path_mean.detach(), path_lengths


def g_path_loss(penalty: torch.Tensor, path_weight: float = 2.0, g_reg_every: int = 4) -> torch.Tensor:
    """Lazy path-length term as added to G's loss: ``path_weight * g_reg_every * penalty`` -> scalar."""
    return path_weight * g_reg_every * penalty


def lazy_adam_params(lr: float, reg_every: int, beta2: float = 0.99) -> tuple[float, tuple[float, float]]:
    """Adam (lr, betas) corrected for lazy regularisation every ``reg_every`` steps.

    ratio = reg_every/(reg_every+1): lr*ratio, betas (0, beta2**ratio); e.g. G (0.0016, (0, 0.99199)).
    """
    if reg_every <= 0:
        return lr, (0.0, beta2)
    ratio = reg_every / (reg_every + 1)
    return lr * ratio, (0.0 ** ratio, beta2**ratio)


@torch.no_grad()
def ema_update(g_ema: nn.Module, g: nn.Module, decay: float = EMA_DECAY) -> None:
    """``g_ema <- decay * g_ema + (1 - decay) * g`` on parameters only (buffers such as noise maps stay)."""
    ema_params = dict(g_ema.named_parameters())
    for name, p in g.named_parameters():
        if name not in ema_params:
            raise KeyError(f"ema_update: parameter {name!r} missing from the EMA model")
        ema_params[name].lerp_(p.detach(), 1.0 - decay)
