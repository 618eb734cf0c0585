"""Identity-preserving refinement of a SeFa edit (paper III-C, Eqs. 7-9; REFERENCE §1.3-1.4).

Start from Δw₀ = α·n and optimise Δw with Adam for a few steps on G_base, so that the edited
face keeps its identity (L_id) while its face region still changes (L_low, maximised so the
edit does not collapse to Δw = 0). Two modes:

``paper`` (Eq. 9)::

    L = L_id(w, w+Δw) − λ_low·L_low(w, w+Δw),   λ_low = 0.2

``code`` (the released `apply_factor_opt.py`: symmetric ± edits, a −log low-level term)::

    L = ½[L_id(w, w+Δw) + L_id(w, w−Δw)] + λ·(−log((d(f,f₊) + d(f,f₋) + d(f₊,f₋)) / 3)),   λ = 0.1

with d(a, b) = (a − b)² summed over dim 1 (embedding or channel), averaged over the rest
(the seed code's `.pow(2).sum(1).mean()`), f = f_low(mask·G(w)), f± = f_low(mask·G(w ± Δw)),
L_id(w, w') = d(E(G(w)), E(G(w'))). The reference terms E(G(w)), f are constants.

Schedule (StyleGAN2's projector, `lr_schedule`): lr_i = lr₀·ramp(t = i/steps) with rampdown
0.25 and rampup 0.05, so step 0 has lr 0, as in the seed code; its gradient still enters
Adam's moments. For 10 steps: [0, .1, .1, .1, .1, .1, .1, .1, .090451, .034549].

Batches: each sample's loss is its own (no batch mean inside the −log), and the optimised
objective is their sum, so a sample is refined as if it were alone; with B = 1 the losses are
exactly the seed code's. Noise maps are fixed (the generator's stored maps by default), unlike
the seed code's fresh noise per call. Only Δw receives gradients (`torch.autograd.grad` with
respect to Δw alone); the generator's parameters, and those of the identity/feature/mask
callables when they are modules or their bound methods, are frozen for the duration.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from toon3d.edit.directions import apply_direction
from toon3d.edit.masks import face_ellipse_mask

MODES = ("paper", "code")
LAMBDA_LOW = {"paper": 0.2, "code": 0.1}
DEFAULT_STEPS = 10
DEFAULT_LR = 0.1
RAMPDOWN = 0.25
RAMPUP = 0.05

Features = torch.Tensor | Sequence[torch.Tensor]


def lr_schedule(steps: int = DEFAULT_STEPS, lr: float = DEFAULT_LR, rampdown: float = RAMPDOWN,
                rampup: float = RAMPUP) -> list[float]:
    """StyleGAN2 projector's learning rates for steps 0..steps−1 (t = i/steps; step 0 gets 0)."""
    out = []
    for i in range(steps):
        t = i / steps
        ramp = min(1.0, (1.0 - t) / rampdown) if rampdown > 0 else 1.0
        ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
        ramp *= min(1.0, t / rampup) if rampup > 0 else 1.0
        out.append(lr * ramp)
    return out


def pair_distance(a: Features, b: Features) -> torch.Tensor:
    """d(a, b) per sample: (a − b)² summed over dim 1, averaged over the remaining dims → [B].

    Sequences of tensors (several feature maps) add their distances.
    """
    if isinstance(a, torch.Tensor):
        diff = (a - b).pow(2).sum(1)
        return diff.reshape(diff.shape[0], -1).mean(1)
    return sum(pair_distance(x, y) for x, y in zip(a, b, strict=True))


def paper_loss(e0: torch.Tensor, e1: torch.Tensor, f0: Features, f1: Features,
               lambda_low: float = LAMBDA_LOW["paper"]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. 9 per sample: (L_id − λ·L_low, L_id, L_low), each [B]; e embeddings, f low-level features."""
    l_id = pair_distance(e0, e1)
    l_low = pair_distance(f0, f1)
    return l_id - lambda_low * l_low, l_id, l_low


def code_loss(e0: torch.Tensor, e_plus: torch.Tensor, e_minus: torch.Tensor, f0: Features, f_plus: Features,
              f_minus: Features, lambda_low: float = LAMBDA_LOW["code"],
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The seed code's loss per sample: (L_id + λ·L_low, L_id, L_low) with its ± L_id and −log L_low, each [B]."""
    l_id = 0.5 * (pair_distance(e0, e_plus) + pair_distance(e0, e_minus))
    spread = (pair_distance(f0, f_plus) + pair_distance(f0, f_minus) + pair_distance(f_plus, f_minus)) / 3
    l_low = -torch.log(spread.clamp_min(1e-12))
    return l_id + lambda_low * l_low, l_id, l_low


@dataclass
class RefineResult:
    """Refined offsets and the per-step record (losses evaluated before each step's update)."""

    delta_w: torch.Tensor        # [B,D], detached
    losses: torch.Tensor         # [steps,B] total
    id_losses: torch.Tensor      # [steps,B] L_id
    low_losses: torch.Tensor     # [steps,B] L_low (paper: d; code: the −log term)
    lrs: list[float]
    mode: str
    lambda_low: float


def _modules(*things: object) -> list[nn.Module]:
    found = []
    for thing in things:
        owner = thing if isinstance(thing, nn.Module) else getattr(thing, "__self__", None)
        if isinstance(owner, nn.Module):
            found.append(owner)
    return found


@contextlib.contextmanager
def frozen(*things: object):
    """Parameters of the given modules (or of those whose bound methods are given) without grad, then restored."""
    params = [p for m in _modules(*things) for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def _masked(images: torch.Tensor, mask: Callable[[torch.Tensor], torch.Tensor] | None) -> torch.Tensor:
    if mask is None:
        return images
    with torch.no_grad():
        m = mask(images.detach())
    return images * m.to(images)


def refine_direction(generator: nn.Module, w: torch.Tensor, direction: torch.Tensor, alpha: float | torch.Tensor,
                     identity: Callable[[torch.Tensor], torch.Tensor],
                     low_features: Callable[[torch.Tensor], Features],
                     mask: Callable[[torch.Tensor], torch.Tensor] | None = face_ellipse_mask,
                     mode: str = "paper", steps: int = DEFAULT_STEPS, lr: float = DEFAULT_LR,
                     noise: str | Sequence[torch.Tensor] = "const", layers: list[int] | None = None,
                     lambda_low: float | None = None, rampdown: float = RAMPDOWN,
                     rampup: float = RAMPUP, synthesis_size: int | None = None) -> RefineResult:
    """Refine the edit w + α·n on G_base (`generator`) → RefineResult(delta_w [B,D], per-step losses).

    w [B,D] or [B,n_latent,D]: the codes fed to synthesis (already truncated); direction [D]
    (unit); alpha a float or [B] (per-sample strength, e.g. [+a, −a] to refine both signs in
    paper mode); identity(images [B,3,S,S] in [-1,1]) → [B,dim]; low_features(masked images)
    → a tensor [B,C,...] or a list of them; mask(images) → [B|1,1,S,S] in [0,1] (None: no mask);
    noise "const" | "none" | a list of fixed maps; layers: the W+ layers Δw is added to (None: all).
    synthesis_size (None: the full generator) computes the losses on the generator stopped after
    that block plus the full image's residual at w (`toon3d.stylegan2.early_exit`): the reference
    images are then the full images shrunk to that size, exactly; the edited ones an approximation.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if isinstance(noise, str) and noise not in ("const", "none"):
        raise ValueError(f"noise must be 'const', 'none' or a list of fixed maps, got {noise!r}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    lam = LAMBDA_LOW[mode] if lambda_low is None else float(lambda_low)
    w = w.detach()
    batch, n_latent = w.shape[0], generator.n_latent
    alpha_t = torch.as_tensor(alpha, dtype=w.dtype, device=w.device).reshape(-1)
    if alpha_t.numel() not in (1, batch):
        raise ValueError(f"alpha must be a number or hold one value per sample ({batch}), got {alpha_t.numel()}")
    direction = direction.detach().to(w).reshape(-1)
    delta = (alpha_t.expand(batch)[:, None] * direction[None]).clone().requires_grad_(True)
    optimizer = torch.optim.Adam([delta], lr=lr)
    schedule = lr_schedule(steps, lr, rampdown, rampup)

    from toon3d.stylegan2.early_exit import LowResSynthesis, exit_size

    stop = exit_size(generator, synthesis_size)
    low_res = LowResSynthesis(generator, stop, noise) if stop is not None else None
    residual: torch.Tensor | None = None

    def synth(ws: torch.Tensor) -> torch.Tensor:
        if low_res is not None:
            # one residual per sample; code mode stacks the + and − edits of the same samples
            return low_res(ws, residual.repeat(ws.shape[0] // residual.shape[0], 1, 1, 1))
        if isinstance(noise, str):
            return generator.synthesis(ws, noise_mode=noise)
        return generator.synthesis(ws, noise=list(noise))

    totals, ids, lows = [], [], []
    with frozen(generator, identity, low_features, mask), torch.enable_grad():
        with torch.no_grad():
            ws_ref = apply_direction(w, torch.zeros_like(direction), n_latent)
            if low_res is not None:
                residual = low_res.residual(ws_ref)
            reference = synth(ws_ref)
            e0 = identity(reference)
            f0 = low_features(_masked(reference, mask))
        for step_lr in schedule:
            for group in optimizer.param_groups:
                group["lr"] = step_lr
            if mode == "paper":
                images = synth(apply_direction(w, delta, n_latent, layers))
                total, l_id, l_low = paper_loss(e0, identity(images), f0, low_features(_masked(images, mask)), lam)
            else:
                images = synth(torch.cat([apply_direction(w, delta, n_latent, layers),
                                          apply_direction(w, -delta, n_latent, layers)]))
                e = identity(images)
                f = low_features(_masked(images, mask))
                total, l_id, l_low = code_loss(e0, e[:batch], e[batch:], f0, _rows(f, 0, batch),
                                               _rows(f, batch, 2 * batch), lam)
            (grad,) = torch.autograd.grad(total.sum(), [delta])
            delta.grad = grad
            optimizer.step()
            totals.append(total.detach())
            ids.append(l_id.detach())
            lows.append(l_low.detach())
    return RefineResult(delta.detach().clone(), torch.stack(totals), torch.stack(ids), torch.stack(lows),
                        schedule, mode, lam)


def _rows(features: Features, start: int, stop: int) -> Features:
    if isinstance(features, torch.Tensor):
        return features[start:stop]
    return [f[start:stop] for f in features]
