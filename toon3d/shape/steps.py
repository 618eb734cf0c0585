"""GAN2Shape's three training steps as separate units (REFERENCE §6.5-6.8, SPEC Eqs. 13-18).

Each step has a loss function (tensors, for tests and ablations) and a one-iteration training
function (forward, backward, optimiser step → loss values). Inputs are explicit: the 3D networks,
the image, the frozen helpers (`StepTools`), the loss switches (`LossTerms`), the optimiser, the
random generator. A scheduler (`toon3d.shape.schedule`) composes them into cycles.

- step 1 (Eq. 13) trains the albedo net A only: L_recon(Î₁, I) [+ L_sym(Î₁ᶠ, I)] [+ L_id(Î₁, I)]
  [+ λ_smooth·L_smooth]; depth D(I), view V(I) and light L(I) are predicted without gradient
  (depth stays at the prior in stage 0).
- step 2 (Eqs. 14-16) trains the latent encoder E only: pseudo samples I_i of the current 3D
  state at random views and lights, projected I_p = G(w + ψ·E-offset), loss
  L1(I_p, I_i) + L_dis(I_p, I_i) + λ_E·mean(Δw²) (the L1 term is the reference code's).
  `step2_collect` stores `collect_iters × batch` projections for step 3.
- step 3 (Eq. 18) trains D, A, V, L: the step-1 loss on the input (all four nets now train)
  plus L_recon(Î₃, I_p) [+ L_sym(Î₃ᶠ, I_p)] [+ L_id(Î₃, I)] with Î₃ = Φ(D(I), A(I), V(I_p), L(I_p))
  on a batch of the collected projections (their masks times the reconstruction's).

L_smooth = smoothness2(depth) + smoothness2(diffuse shading) sits in the input branch, as in
GAN2Shape; it is Eq. 18's λ_smooth·L_smooth(D(I)). Each reconstruction (direct or mirrored) is
compared over its own valid mask (GAN2Shape's code uses their product when flipping). The generator, the
discriminator, the identity and perceptual networks never receive gradients: each step freezes
them for its duration (`frozen`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from toon3d.errors import Toon3dError
from toon3d.shape.latent_offset import FeatureDistance, LatentProjector
from toon3d.shape.losses import PerceptualDistance, identity_loss, masked_l1, recon_loss, smoothness2
from toon3d.shape.photo_geometry import (Decomposition, GeometrySettings, Reconstruction, decompose, light_from_net,
                                         reconstruct, to_canonical, view_from_tanh)
from toon3d.shape.pseudo import CanonicalState, PseudoBatch, PseudoSampler
from toon3d.shape.renderer import Renderer

# The networks each step trains (GAN2Shape's init_optimizers).
STEP_NETS = {"step1": ("albedo",), "step2": ("encoder",), "step3": ("depth", "albedo", "view", "light")}


@dataclass(frozen=True)
class LossTerms:
    """Switches of the optional loss terms (ablations): L_sym, L_id, the perceptual term, L_smooth."""

    sym: bool = True
    identity: bool = True
    perceptual: bool = True
    smooth: bool = True


@dataclass(frozen=True)
class LossWeights:
    """λ_perc (Eq. 11), λ_smooth (Eq. 18), λ_E (Eq. 16), and the weight of L_id (1 in Eqs. 13 and 18)."""

    perc: float = 0.5
    smooth: float = 0.01
    regular: float = 0.01
    identity: float = 1.0


@dataclass
class StepTools:
    """What every step uses and never trains: renderer, geometry, weights, perceptual and identity networks."""

    renderer: Renderer
    geometry: GeometrySettings
    weights: LossWeights
    perceptual: PerceptualDistance | None = None
    embedder: nn.Module | None = None

    def check(self, terms: LossTerms) -> None:
        """One-line error when a switched-on term lacks its network."""
        if terms.perceptual and self.perceptual is None:
            raise Toon3dError("the perceptual term is on but no perceptual network was given; pass one "
                              "or switch the term off (perceptual='none')")
        if terms.identity and self.embedder is None:
            raise Toon3dError("the identity loss L_id is on but no identity embedder was given; pass one "
                              "or switch it off (--no-id)")


@contextlib.contextmanager
def frozen(*modules: nn.Module | None) -> Iterator[None]:
    """Turn off requires_grad on every parameter of `modules` (None skipped), restoring the flags afterwards."""
    saved = []
    for module in modules:
        if module is None:
            continue
        for p in module.parameters():
            saved.append((p, p.requires_grad))
            p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


def trained_parameters(nets: nn.Module, step: str) -> list[nn.Parameter]:
    """The parameters `step` trains: step1 A, step2 E, step3 D, A, V, L."""
    try:
        names = STEP_NETS[step]
    except KeyError:
        raise Toon3dError(f"unknown step {step!r}; steps are {', '.join(STEP_NETS)}") from None
    return [p for name in names for p in getattr(nets, name).parameters()]


def make_optimizer(nets: nn.Module, step: str, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.999),
                   weight_decay: float = 5e-4) -> torch.optim.Adam:
    """A fresh Adam over the networks `step` trains (GAN2Shape re-creates them at every step switch)."""
    return torch.optim.Adam(trained_parameters(nets, step), lr=lr, betas=tuple(betas), weight_decay=weight_decay)


def _apply(optimizer: torch.optim.Optimizer, losses: dict[str, torch.Tensor]) -> dict[str, float]:
    optimizer.zero_grad(set_to_none=True)
    losses["total"].backward()
    optimizer.step()
    return {k: float(v.detach()) for k, v in losses.items()}


def _recon_terms(recon: Reconstruction, mirrored: Reconstruction | None, target: torch.Tensor,
                 identity_target: torch.Tensor, tools: StepTools, terms: LossTerms, extra_mask: torch.Tensor | None,
                 prefix: str) -> dict[str, torch.Tensor]:
    """L_recon (+ mirrored L_sym) (+ L_id) of one reconstruction against `target`, unweighted, keyed with `prefix`."""
    lam = tools.weights.perc if terms.perceptual else 0.0
    perceptual = tools.perceptual if terms.perceptual else None
    out: dict[str, torch.Tensor] = {}
    # Each reconstruction is compared over its own valid pixels (× extra_mask), so switching L_sym
    # off removes its terms and nothing else. GAN2Shape's code multiplies the direct and mirrored
    # masks when flipping, which also changes L_recon; the paper's Eqs. 12-13 just add the terms.
    direct = recon_loss(recon, target, perceptual, lam, extra_mask=extra_mask)
    out[prefix + "l1"] = direct["l1"]
    if terms.perceptual:
        out[prefix + "perc"] = direct["perc"]
    if mirrored is not None:
        flipped = recon_loss(mirrored, target, perceptual, lam, extra_mask=extra_mask)
        out[prefix + "l1_flip"] = flipped["l1"]
        if terms.perceptual:
            out[prefix + "perc_flip"] = flipped["perc"]
    if terms.identity:
        out[prefix + "id"] = identity_loss(tools.embedder, recon.image, identity_target)
    return out


def _weighted_total(losses: dict[str, torch.Tensor], weights: LossWeights) -> torch.Tensor:
    """Σ of the terms with their weights: l1 1, perc λ_perc, smooth λ_smooth, id λ_id, reg λ_E, dis 1."""
    scale = {"l1": 1.0, "l1_flip": 1.0, "perc": weights.perc, "perc_flip": weights.perc, "smooth": weights.smooth,
             "id": weights.identity, "dis": 1.0, "reg": weights.regular}
    total = None
    for key, value in losses.items():
        term = key.split("proj_", 1)[-1]
        part = scale[term] * value
        total = part if total is None else total + part
    return total


def input_losses(nets: nn.Module, image: torch.Tensor, tools: StepTools, terms: LossTerms, *,
                 train_all: bool) -> tuple[dict[str, torch.Tensor], Decomposition, Reconstruction]:
    """The step-1 loss of the input (Eq. 13): image [1,3,S,S] in [-1,1] → (terms + 'total', decomposition, reconstruction).

    train_all=False (step 1): only A carries gradient; D, V, L predict without it.
    train_all=True (step 3's input branch): D, A, V, L all carry gradient.
    """
    tools.check(terms)
    geo = tools.geometry
    if train_all:
        dec = decompose(nets, image, geo)
    else:
        with torch.no_grad():
            view = view_from_tanh(nets.view(image), geo)
            light = light_from_net(nets.light(image), geo)
        dec = decompose(nets, image, geo, depth=False, albedo=True, view=False, light=False,
                        fixed_view=view, fixed_light=light)
    recon = reconstruct(tools.renderer, dec)
    mirrored = reconstruct(tools.renderer, dec, flip=True) if terms.sym else None
    losses = _recon_terms(recon, mirrored, image, image, tools, terms, None, "")
    if terms.smooth:
        losses["smooth"] = smoothness2(dec.depth) + smoothness2(recon.diffuse)
    losses = dict(losses, total=_weighted_total(losses, tools.weights))
    return losses, dec, recon


def step1_losses(nets: nn.Module, image: torch.Tensor, tools: StepTools, terms: LossTerms) -> dict[str, torch.Tensor]:
    """Step 1's loss terms and 'total' (gradients reach A only)."""
    with frozen(tools.perceptual, tools.embedder):
        return input_losses(nets, image, tools, terms, train_all=False)[0]


def step1(nets: nn.Module, image: torch.Tensor, tools: StepTools, terms: LossTerms,
          optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """One step-1 iteration on image [1,3,S,S]: trains A (optimizer from `make_optimizer(nets, 'step1')`) → loss values."""
    with frozen(tools.perceptual, tools.embedder):
        return _apply(optimizer, input_losses(nets, image, tools, terms, train_all=False)[0])


@torch.no_grad()
def canonical_state(nets: nn.Module, image: torch.Tensor, tools: StepTools,
                    face_mask: torch.Tensor | None) -> CanonicalState:
    """The input's current depth, albedo, light and canonical face mask (no gradient), for pseudo samples.

    face_mask [1,1,S,S] in [0,1] (input view) is moved to the canonical frame by sampling it where each
    canonical pixel lands in the input's view (GAN2Shape's canon_mask, bilinear); None keeps all pixels.
    """
    dec = decompose(nets, image, tools.geometry)
    canon_mask = None if face_mask is None else to_canonical(face_mask, dec.depth, dec.view, tools.renderer)
    return CanonicalState(depth=dec.depth, albedo=dec.albedo, light=dec.light, canon_mask=canon_mask)


def _project(nets: nn.Module, pseudo: PseudoBatch, projector: LatentProjector, latent: torch.Tensor,
             gan_image: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    offset = projector.offset(nets.encoder, pseudo.image, gan_image)
    return projector.generate(latent, offset), offset


def _eq16_terms(projected: torch.Tensor, pseudo: PseudoBatch, offset: torch.Tensor,
                dis: FeatureDistance) -> dict[str, torch.Tensor]:
    """Eq. 16's unweighted terms of projections I_p against their pseudo samples: {'l1','dis','reg'}."""
    return {"l1": masked_l1(projected, pseudo.image, pseudo.mask),
            "dis": dis(projected, pseudo.image, pseudo.mask),
            "reg": offset.pow(2).mean()}


def step2_losses(nets: nn.Module, state: CanonicalState, sampler: PseudoSampler, projector: LatentProjector,
                 dis: FeatureDistance, latent: torch.Tensor, batch: int, generator: torch.Generator,
                 weights: LossWeights, gan_image: torch.Tensor | None = None
                 ) -> tuple[dict[str, torch.Tensor], PseudoBatch, torch.Tensor]:
    """Step 2's terms {'l1','dis','reg','total'} for `batch` fresh pseudo samples (gradients reach E only).

    Returns (losses, the pseudo samples, the projections I_p [batch,3,S,S]).
    """
    with frozen(projector.generator, dis):
        pseudo = sampler(state, batch, generator)
        projected, offset = _project(nets, pseudo, projector, latent, gan_image)
        losses = _eq16_terms(projected, pseudo, offset, dis)
        losses["total"] = _weighted_total(losses, weights)
    return losses, pseudo, projected


def step2_train(nets: nn.Module, state: CanonicalState, sampler: PseudoSampler, projector: LatentProjector,
                dis: FeatureDistance, latent: torch.Tensor, batch: int, generator: torch.Generator,
                weights: LossWeights, optimizer: torch.optim.Optimizer,
                gan_image: torch.Tensor | None = None) -> dict[str, float]:
    """One step-2 iteration: trains E (optimizer from `make_optimizer(nets, 'step2')`) → loss values."""
    with frozen(projector.generator, dis):
        losses = step2_losses(nets, state, sampler, projector, dis, latent, batch, generator, weights, gan_image)[0]
        return _apply(optimizer, losses)


@dataclass
class ProjectedSamples:
    """Projections collected after step 2: images [N,3,S,S] in [-1,1], masks [N,1,S,S] (CPU), read in batches.

    Batches run through a permutation `order`; when fewer than a batch remain, the order is
    reshuffled (from the caller's generator) and reading restarts (GAN2Shape's load_proj_images).
    """

    images: torch.Tensor
    masks: torch.Tensor
    order: torch.Tensor | None = None
    cursor: int = 0

    def __post_init__(self) -> None:
        if self.order is None:
            self.order = torch.arange(self.images.shape[0])

    def __len__(self) -> int:
        return self.images.shape[0]

    def next_batch(self, batch: int, generator: torch.Generator, device: torch.device | str | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """The next `batch` (at most N) samples → (images [b,3,S,S], masks [b,1,S,S]) on `device`."""
        n = len(self)
        if n == 0:
            raise Toon3dError("no projected samples were collected; step 2 must run before step 3")
        batch = min(batch, n)
        if self.cursor + batch > n:
            self.order = self.order[torch.randperm(n, generator=generator)]
            self.cursor = 0
        idx = self.order[self.cursor:self.cursor + batch]
        self.cursor += batch
        return self.images[idx].to(device), self.masks[idx].to(device)


@dataclass(frozen=True)
class OffsetFit:
    """Per-sample refinement of the encoder's projection: `steps` Adam steps at `lr` on Eq. 16's objective."""

    steps: int
    lr: float
    dis: FeatureDistance
    weights: LossWeights


def fit_offsets(projector: LatentProjector, latent: torch.Tensor, pseudo: PseudoBatch, start: torch.Tensor,
                fit: OffsetFit) -> tuple[torch.Tensor, torch.Tensor]:
    """Δw [B,D] fitted to each pseudo sample from `start` (L1 + L_dis + λ_E‖Δw‖², Eq. 16, per sample, Adam).

    Returns (I_p = G(w + ψ·Δw) [B,3,S,S] in [-1,1], Δw), both detached. Only Δw receives gradients;
    the generator and the feature distance are frozen.
    """
    offset = start.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([offset], lr=fit.lr)
    with torch.enable_grad(), frozen(projector.generator, fit.dis):
        for _ in range(fit.steps):
            projected = projector.generate(latent, offset)
            losses = _eq16_terms(projected, pseudo, offset, fit.dis)
            optimizer.zero_grad(set_to_none=True)
            # Each sample's Δw only reaches its own image's terms, and Adam scales every element's
            # step on its own, so the samples are fitted (almost) as if alone.
            _weighted_total(losses, fit.weights).backward()
            optimizer.step()
    with torch.no_grad():
        return projector.generate(latent, offset), offset.detach()


@torch.no_grad()
def step2_collect(nets: nn.Module, state: CanonicalState, sampler: PseudoSampler, projector: LatentProjector,
                  latent: torch.Tensor, batch: int, iters: int, generator: torch.Generator,
                  gan_image: torch.Tensor | None = None, progress: bool = False, desc: str = "collect",
                  fit: OffsetFit | None = None) -> ProjectedSamples:
    """`iters` batches of fresh pseudo samples projected through the GAN → `ProjectedSamples` on the CPU.

    fit: None projects with the encoder alone (GAN2Shape); else each sample's Δw is then fitted
    to it (`fit_offsets`), so the projections show what the generator can draw at that view.
    """
    from tqdm import tqdm

    images, masks = [], []
    for _ in tqdm(range(iters), desc=desc, disable=not progress, dynamic_ncols=True, leave=False):
        pseudo = sampler(state, batch, generator)
        projected, offset = _project(nets, pseudo, projector, latent, gan_image)
        if fit is not None and fit.steps > 0:
            projected, _ = fit_offsets(projector, latent, pseudo, offset, fit)
        images.append(projected.cpu())
        masks.append(pseudo.mask.cpu())
    return ProjectedSamples(torch.cat(images), torch.cat(masks))


def step3_losses(nets: nn.Module, image: torch.Tensor, proj_images: torch.Tensor, proj_masks: torch.Tensor,
                 tools: StepTools, terms: LossTerms) -> dict[str, torch.Tensor]:
    """Step 3's terms: the input branch (step-1 terms, all four nets trained) and 'proj_*' terms of Eq. 18, and 'total'.

    image [1,3,S,S]; proj_images [b,3,S,S] in [-1,1]; proj_masks [b,1,S,S] in [0,1].
    """
    with frozen(tools.perceptual, tools.embedder):
        losses, dec, _ = input_losses(nets, image, tools, terms, train_all=True)
        b = proj_images.shape[0]
        geo = tools.geometry
        proj_dec = Decomposition(depth=dec.depth.expand(b, -1, -1), raw_depth=dec.raw_depth.expand(b, -1, -1),
                                 albedo=dec.albedo.expand(b, -1, -1, -1),
                                 view=view_from_tanh(nets.view(proj_images), geo),
                                 light=light_from_net(nets.light(proj_images), geo))
        recon = reconstruct(tools.renderer, proj_dec)
        mirrored = reconstruct(tools.renderer, proj_dec, flip=True) if terms.sym else None
        proj = _recon_terms(recon, mirrored, proj_images, image, tools, terms, proj_masks, "proj_")
        losses.pop("total")
        losses.update(proj)
        losses["total"] = _weighted_total(losses, tools.weights)
    return losses


def step3(nets: nn.Module, image: torch.Tensor, samples: ProjectedSamples, batch: int, tools: StepTools,
          terms: LossTerms, optimizer: torch.optim.Optimizer, generator: torch.Generator) -> dict[str, float]:
    """One step-3 iteration on the next batch of `samples`: trains D, A, V, L → loss values."""
    proj_images, proj_masks = samples.next_batch(batch, generator, image.device)
    with frozen(tools.perceptual, tools.embedder):
        return _apply(optimizer, step3_losses(nets, image, proj_images, proj_masks, tools, terms))
