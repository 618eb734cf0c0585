"""The GAN2Shape cycle scheduler: one image → its 3D factors (REFERENCE §6.3, SPEC Stage 3).

`reconstruct_image` starts fresh 3D networks for the image (the pretrained reconstructor when
given, the per-image reset of GAN2Shape), fits the depth net to the ellipsoid prior when the
start has no depth net (§6.6), then runs `num_stages` cycles of step 1 → step 2 (+ collection of
projected samples) → step 3 with a fresh Adam per step and stage-0 vs later step lengths.

Resuming: with `checkpoint_dir`, the training state (networks, optimiser, RNG, position, loss
history, projected-samples order) is written atomically after the prior fit, after every step and
every `checkpoint_every` iterations inside a step; the collected samples of a stage go to their
own file once. Calling again with the same arguments continues where a killed run stopped and
ends with the same weights as an uninterrupted run. A checkpoint made with other settings, image,
latent or seed is refused, naming what differs.

Face mask: the caller passes one (a face parser's, [1,1,S,S] in [0,1]); without one the fixed
face ellipse of toon3d's layout (`toon3d.edit.masks.ellipse_mask`, forehead to chin, cheek to
cheek) is used, which fits every aligned toon3d image but does not follow a turned head.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from toon3d.errors import Toon3dError
from toon3d.shape.latent_offset import (DiscriminatorFeatureDistance, FeatureDistance, LatentProjector,
                                        PerceptualFeatureDistance, mapping_network)
from toon3d.shape.networks import ShapeNets
from toon3d.shape.photo_geometry import check_image, decompose, reconstruct, to_canonical, view_from_tanh
from toon3d.shape.prior import add_output_offset, ellipsoid_depth, fit_depth_to, prior_offset, zero_output_layer
from toon3d.shape.pseudo import LightRanges, PseudoSampler, ViewPrior, default_view_prior
from toon3d.shape.renderer import Renderer
from toon3d.shape.settings import STEP_NAMES, ReconstructionSettings, changed_settings
from toon3d.shape.steps import (LossTerms, LossWeights, ProjectedSamples, StepTools, canonical_state, make_optimizer,
                                OffsetFit, step1, step2_collect, step2_train, step3)

STATE_FORMAT = "toon3d-reconstruction/1"
STATE_FILE = "reconstruction_state.pt"
NET_NAMES = ("depth", "albedo", "view", "light", "encoder")


@dataclass
class ShapeResult:
    """One reconstruction. depth [1,S,S] canonical in [0.9,1.1]; albedo [1,3,S,S] in [-1,1]; view [1,6]
    (radians, scene units); light [1,4] (l_a, l_b, dx, dy); texture [1,3,S,S] the shaded canonical
    image; normal [1,S,S,3]; recon [1,3,S,S] Φ at the input's view; recon_mask [1,1,S,S] its valid
    pixels; recon_depth [1,S,S]; face_mask [1,1,S,S] the input-view mask used; canon_mask
    [1,1,S,S] or None; nets_state the final networks (CPU); history one dict per training
    iteration (stage, step, iteration, loss terms); dis_features which L_dis features were used."""

    depth: torch.Tensor
    albedo: torch.Tensor
    view: torch.Tensor
    light: torch.Tensor
    texture: torch.Tensor
    normal: torch.Tensor
    recon: torch.Tensor
    recon_mask: torch.Tensor
    recon_depth: torch.Tensor
    face_mask: torch.Tensor
    canon_mask: torch.Tensor | None
    nets_state: dict[str, torch.Tensor]
    history: list[dict] = field(default_factory=list)
    dis_features: str = ""
    prior_fitted: bool = False
    seconds: float = 0.0


def default_face_mask(size: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The fixed face ellipse of toon3d's layout: [1,1,S,S] with 1 inside, 0 outside."""
    from toon3d.edit.masks import ellipse_mask

    return ellipse_mask(size, device=device)


def _check_inputs(image: torch.Tensor, settings: ReconstructionSettings) -> None:
    check_image(image, settings.image_size)
    if image.shape[0] != 1:
        raise Toon3dError(f"reconstruct one image at a time: got a batch of {image.shape[0]}")


def _face_mask(mask: torch.Tensor | None, size: int, device: torch.device) -> torch.Tensor:
    """The face mask as [1,1,S,S] float on `device` (default: the layout ellipse); one-line errors."""
    if mask is None:
        return default_face_mask(size, device)
    if not isinstance(mask, torch.Tensor) or mask.dim() not in (2, 3, 4) or tuple(mask.shape[-2:]) != (size, size) \
            or mask.numel() != size * size:
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise Toon3dError(f"the face mask must be [1,1,{size},{size}] (or [{size},{size}]), got {shape}")
    m = mask.to(device=device, dtype=torch.float32).reshape(1, 1, size, size)
    if not torch.isfinite(m).all() or m.min() < 0 or m.max() > 1:
        raise Toon3dError("the face mask must hold values in [0, 1]")
    return m


def build_nets(settings: ReconstructionSettings, latent_dim: int, seed: int,
               nets_init: dict[str, torch.Tensor] | None) -> tuple[ShapeNets, bool]:
    """Fresh 3D networks (initialised from `seed`), loaded from `nets_init` where it has them → (nets, has_depth).

    `nets_init` may hold any of the five networks (keys `depth.…`, `albedo.…`, `view.…`, `light.…`,
    `encoder.…`); each one present must match these settings' architecture exactly.
    """
    with torch.random.fork_rng(devices=[]):
        # Module constructors draw from the global RNG; fork_rng leaves the caller's state untouched.
        torch.manual_seed(seed)
        nets = ShapeNets(settings.net_config(latent_dim))
    if not nets_init:
        return nets, False
    present = {name for name in NET_NAMES if any(k.startswith(name + ".") for k in nets_init)}
    unknown = sorted(k for k in nets_init if k.split(".", 1)[0] not in NET_NAMES)
    if unknown:
        raise Toon3dError(f"the pretrained reconstructor has an unknown entry {unknown[0]!r}; "
                          f"expected networks {', '.join(NET_NAMES)}")
    for name in sorted(present):
        part = {k.split(".", 1)[1]: v for k, v in nets_init.items() if k.startswith(name + ".")}
        module = getattr(nets, name)
        mine = module.state_dict()
        missing = sorted(set(mine) - set(part))
        extra = sorted(set(part) - set(mine))
        bad = sorted(k for k in set(mine) & set(part) if tuple(mine[k].shape) != tuple(part[k].shape))
        if missing or extra or bad:
            what = (f"its {name} net has shape {tuple(part[bad[0]].shape)} at {bad[0]} where these settings need "
                    f"{tuple(mine[bad[0]].shape)}" if bad else
                    f"its {name} net lacks {missing[0]}" if missing else f"its {name} net has an extra {extra[0]}")
            raise Toon3dError(f"the pretrained reconstructor does not fit the 3D networks of these settings "
                              f"({settings.image_size} px, nf {settings.nf}, zdim {settings.zdim}): {what}; "
                              "pass a reconstructor trained for this size and width, or matching settings")
        module.load_state_dict({k: v.to(mine[k].dtype) for k, v in part.items()})
    return nets, "depth" in present


def _feature_distance(settings: ReconstructionSettings, discriminator: nn.Module | None,
                      perceptual: nn.Module | None) -> FeatureDistance:
    if settings.dis_features == "discriminator":
        if discriminator is None:
            raise Toon3dError("L_dis needs the generator's discriminator, but none was given; pass it, or choose "
                              "the perceptual substitute explicitly (dis_features='perceptual')")
        return DiscriminatorFeatureDistance(discriminator, settings.dis_blocks)
    if perceptual is None:
        raise Toon3dError("dis_features='perceptual' needs a perceptual network; pass one")
    return PerceptualFeatureDistance(perceptual)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.equal(a.cpu(), b.cpu())


class _Checkpoint:
    """The training state on disk: one state file (rewritten atomically) plus one samples file per stage."""

    def __init__(self, folder: str | os.PathLike | None) -> None:
        self.folder = Path(folder) if folder is not None else None

    def samples_path(self, stage: int) -> Path:
        return self.folder / f"projected_stage{stage}.pt"

    def load(self) -> dict | None:
        from toon3d.io.checkpoint import load_training_state

        if self.folder is None or not (self.folder / STATE_FILE).is_file():
            return None
        state = load_training_state(self.folder / STATE_FILE)
        if state.get("format") != STATE_FORMAT:
            raise Toon3dError(f"{self.folder / STATE_FILE} is not a toon3d reconstruction state; "
                              "choose an empty checkpoint folder")
        return state

    def save(self, state: dict) -> None:
        from toon3d.io.checkpoint import save_training_state

        if self.folder is not None:
            save_training_state(self.folder / STATE_FILE, state)

    def save_samples(self, stage: int, samples: ProjectedSamples) -> None:
        from toon3d.io.checkpoint import save_training_state

        if self.folder is not None:
            save_training_state(self.samples_path(stage), {"images": samples.images, "masks": samples.masks})

    def load_samples(self, stage: int) -> ProjectedSamples:
        from toon3d.io.checkpoint import load_training_state

        data = load_training_state(self.samples_path(stage))
        return ProjectedSamples(data["images"], data["masks"])


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def _optimizer_state_to(state: dict, device: torch.device) -> dict:
    out = dict(state)
    out["state"] = {k: {n: (v.to(device) if isinstance(v, torch.Tensor) and n != "step" else v)
                        for n, v in s.items()} for k, s in state["state"].items()}
    return out


@dataclass
class _Fixed:
    """What stays fixed during one reconstruction: inputs on the device and the frozen helpers."""

    settings: ReconstructionSettings
    image: torch.Tensor
    latent: torch.Tensor
    face_mask: torch.Tensor
    tools: StepTools
    sampler: PseudoSampler
    projector: LatentProjector
    dis: FeatureDistance
    gan_image: torch.Tensor | None
    device: torch.device
    progress: bool
    # prior_frame="canonical": the start view [1,6] the prior's mask is moved to the canonical frame through.
    prior_view: torch.Tensor | None = None

    @property
    def pseudo_mask(self) -> torch.Tensor | None:
        return self.face_mask if self.settings.use_mask else None


@dataclass
class _Progress:
    """The mutable training state a checkpoint holds besides the networks and the RNG."""

    position: dict = field(default_factory=lambda: {"stage": 0, "step": 0, "iteration": 0})
    history: list[dict] = field(default_factory=list)
    prior_done: bool = False
    prior_fitted: bool = False
    optimizer: dict | None = None
    samples: ProjectedSamples | None = None
    samples_stage: int | None = None


def _prepare(image: torch.Tensor, latent: torch.Tensor, generator: nn.Module, settings: ReconstructionSettings,
             discriminator: nn.Module | None, identity_embedder: nn.Module | None, perceptual: nn.Module | None,
             mask: torch.Tensor | None, view_prior: ViewPrior | None, device: torch.device,
             progress: bool) -> _Fixed:
    """Validate the inputs (one-line errors) and build the frozen helpers on `device`."""
    settings.check()
    _check_inputs(image, settings)
    mapping_network(generator)
    uses_perceptual = settings.perceptual != "none"
    if uses_perceptual and perceptual is None:
        raise Toon3dError(f"perceptual='{settings.perceptual}' needs a perceptual network; pass one "
                          "(toon3d.shape.losses.load_perceptual) or set perceptual='none'")
    if settings.identity and identity_embedder is None:
        raise Toon3dError("the identity loss L_id is on but no identity embedder was given; pass one "
                          "(toon3d.faces.identity.load_identity_embedder) or switch it off (--no-id)")
    for module in (generator, discriminator, identity_embedder, perceptual):
        if module is not None:
            module.to(device).eval()
    dis = _feature_distance(settings, discriminator, perceptual)
    geometry = settings.geometry()
    renderer = Renderer(geometry.renderer_settings(), device=device)
    projector = LatentProjector(generator, settings.tail_layers(len(generator.style) - 1), settings.truncation,
                                settings.relative_enc, settings.image_size, settings.synthesis_size())
    latent = projector.check_latent(latent.detach().to(device=device, dtype=torch.float32))
    weights = LossWeights(settings.lam_perc, settings.lam_smooth, settings.lam_regular, settings.lam_id)
    tools = StepTools(renderer, geometry, weights, perceptual if uses_perceptual else None,
                      identity_embedder if settings.identity else None)
    sampler = PseudoSampler(renderer, geometry, view_prior or default_view_prior(settings.rot_range_deg),
                            LightRanges.from_sequence(settings.rand_light), settings.view_scale)
    with torch.no_grad():
        gan_image = projector.generate(latent) if settings.relative_enc else None
    return _Fixed(settings, image.detach().to(device=device, dtype=torch.float32), latent,
                  _face_mask(mask, settings.image_size, device), tools, sampler, projector, dis, gan_image, device,
                  progress)


def _restore(ckpt: _Checkpoint, fixed: _Fixed, seed: int, nets: ShapeNets, rng: torch.Generator,
             progress: _Progress) -> _Progress:
    """Load a saved state into nets and rng and return its progress; refuse one made with other inputs."""
    saved = ckpt.load()
    if saved is None:
        return progress
    where = ckpt.folder
    changed = changed_settings(saved["settings"], fixed.settings)
    if changed:
        raise Toon3dError(f"the checkpoint in {where} was made with other settings ({', '.join(changed)} differ); "
                          "resume with the same settings or choose another checkpoint folder")
    for name, mine, theirs in (("image", fixed.image, saved["image"]), ("latent", fixed.latent, saved["latent"])):
        if not _same(mine, theirs):
            raise Toon3dError(f"the checkpoint in {where} was made for another {name}; choose another checkpoint folder")
    if saved["seed"] != seed:
        raise Toon3dError(f"the checkpoint in {where} was made with seed {saved['seed']}, not {seed}; "
                          "resume with the same seed or choose another checkpoint folder")
    nets.load_state_dict(saved["nets"])
    rng.set_state(saved["rng"])
    out = _Progress(dict(saved["position"]), list(saved["history"]), saved["prior_done"], saved["prior_fitted"],
                    saved["optimizer"], None, saved["samples_stage"])
    if out.samples_stage is not None:
        out.samples = ckpt.load_samples(out.samples_stage)
        out.samples.order, out.samples.cursor = saved["samples_order"], saved["samples_cursor"]
    return out


def _save(ckpt: _Checkpoint, fixed: _Fixed, seed: int, nets: ShapeNets, rng: torch.Generator, progress: _Progress,
          optimizer: torch.optim.Optimizer | None) -> None:
    samples = progress.samples
    ckpt.save({"format": STATE_FORMAT, "settings": fixed.settings.as_dict(), "seed": seed,
               "image": fixed.image.cpu(), "latent": fixed.latent.cpu(), "nets": _cpu_state(nets),
               "optimizer": optimizer.state_dict() if optimizer is not None else None,
               "rng": rng.get_state(), "position": dict(progress.position), "history": progress.history,
               "prior_done": progress.prior_done, "prior_fitted": progress.prior_fitted,
               "samples_stage": progress.samples_stage,
               "samples_order": samples.order if samples is not None else None,
               "samples_cursor": samples.cursor if samples is not None else 0})


def _prior_target(fixed: _Fixed) -> torch.Tensor:
    """The ellipsoid prior [S,S] of this image's face mask (REFERENCE §6.6), in the frame `prior_frame` names."""
    s = fixed.settings

    def ellipsoid(mask: torch.Tensor) -> torch.Tensor:
        return ellipsoid_depth((mask >= s.prior_mask_threshold).cpu(), s.prior_kind, s.prior_near, s.prior_far,
                               s.prior_radius).to(fixed.device)

    target = ellipsoid(fixed.face_mask[0, 0])
    if fixed.prior_view is None:
        return target
    # Each canonical pixel takes the mask where it lands in the input at the start view; the
    # view-frame ellipsoid is the depth guess the landing points are computed on.
    canon = to_canonical(fixed.face_mask, target[None], fixed.prior_view, fixed.tools.renderer)
    return ellipsoid(canon[0, 0])


@torch.no_grad()
def start_view(nets: ShapeNets, image: torch.Tensor, settings: ReconstructionSettings) -> torch.Tensor:
    """The view [1,6] (pitch, yaw, roll in radians; tx, ty, tz in scene units; the settings' view_mean
    applied) the pretrained view net predicts for image [1,3,S,S] in [-1,1] before any training."""
    was_training = nets.view.training
    nets.view.eval()
    try:
        return view_from_tanh(nets.view(image), settings.geometry())
    finally:
        nets.view.train(was_training)


def _attach_prior_offset(fixed: _Fixed, nets: ShapeNets):
    """depth_start=residual: D's raw output + this image's prior offset (recomputed on resume: it is a
    function of the image's mask, the settings and, with prior_frame=canonical, the start view)."""
    g = fixed.tools.geometry
    return add_output_offset(nets.depth, prior_offset(_prior_target(fixed), g.min_depth, g.max_depth))


def _fit_prior(fixed: _Fixed, nets: ShapeNets) -> None:
    """Start D at the ellipsoid prior of the face mask: fit it (REFERENCE §6.6), or zero its output layer
    (depth_start=residual, where the prior is added to its output)."""
    s = fixed.settings
    if s.depth_start == "residual":
        zero_output_layer(nets.depth)
        return
    target = _prior_target(fixed)
    fit_depth_to(nets.depth, fixed.image, target, fixed.tools.geometry, steps=s.prior_fit_steps, lr=s.prior_lr,
                 wd=s.weight_decay, progress=fixed.progress, schedule=s.prior_schedule,
                 centre=s.prior_centre)


def _run_step(fixed: _Fixed, nets: ShapeNets, rng: torch.Generator, progress: _Progress, stage: int,
              step_index: int, checkpoint: Callable[[torch.optim.Optimizer | None], None]) -> None:
    """Run (the rest of) one step of one stage; step 2 ends with the collection of projected samples."""
    from tqdm import tqdm

    s = fixed.settings
    name = STEP_NAMES[step_index]
    length = s.steps_of(stage)[step_index]
    optimizer = make_optimizer(nets, name, s.lr[step_index], s.betas, s.weight_decay)
    start = 0
    if (stage, step_index) == (progress.position["stage"], progress.position["step"]) \
            and progress.position["iteration"] > 0:
        optimizer.load_state_dict(_optimizer_state_to(progress.optimizer, fixed.device))
        start = progress.position["iteration"]
    terms = LossTerms(sym=(s.flip1 if name == "step1" else s.flip3)[stage], identity=s.identity,
                      perceptual=s.perceptual != "none", smooth=s.smooth)
    # Step 2's pseudo samples start from the state step 1 left (D, A, V, L do not change in step 2).
    state = canonical_state(nets, fixed.image, fixed.tools, fixed.pseudo_mask) if name == "step2" else None
    bar = tqdm(total=length, initial=start, desc=f"stage {stage} {name}", disable=not fixed.progress,
               dynamic_ncols=True)
    for it in range(start, length):
        if name == "step1":
            losses = step1(nets, fixed.image, fixed.tools, terms, optimizer)
        elif name == "step2":
            losses = step2_train(nets, state, fixed.sampler, fixed.projector, fixed.dis, fixed.latent, s.batch_size,
                                 rng, fixed.tools.weights, optimizer, fixed.gan_image)
        else:
            losses = step3(nets, fixed.image, progress.samples, s.batch_size, fixed.tools, terms, optimizer, rng)
        progress.history.append({"stage": stage, "step": name, "iteration": it, **losses})
        bar.set_postfix(loss=f"{losses['total']:.4f}")
        bar.update(1)
        if it + 1 < length and (it + 1) % s.checkpoint_every == 0:
            progress.position = {"stage": stage, "step": step_index, "iteration": it + 1}
            checkpoint(optimizer)
    bar.close()
    if name == "step2":
        fit = (OffsetFit(s.projection_fit_steps, s.projection_fit_lr, fixed.dis, fixed.tools.weights)
               if s.projection_fit_steps > 0 else None)
        progress.samples = step2_collect(nets, state, fixed.sampler, fixed.projector, fixed.latent, s.batch_size,
                                         s.collect_iters, rng, fixed.gan_image, fixed.progress,
                                         desc=f"stage {stage} collect", fit=fit)
        progress.samples_stage = stage


def reconstruct_image(image: torch.Tensor, latent: torch.Tensor, generator: nn.Module,
                      settings: ReconstructionSettings, *, nets_init: dict[str, torch.Tensor] | None = None,
                      discriminator: nn.Module | None = None, identity_embedder: nn.Module | None = None,
                      perceptual: nn.Module | None = None, mask: torch.Tensor | None = None,
                      view_prior: ViewPrior | None = None, device: torch.device | str = "cpu", seed: int = 0,
                      checkpoint_dir: str | os.PathLike | None = None, progress: bool = True) -> ShapeResult:
    """3D factors of image [1,3,S,S] in [-1,1], the generator's image of W latent [1,D] (GAN2Shape cycles).

    generator / discriminator / identity_embedder / perceptual are moved to `device` and never
    trained. nets_init: a pretrained reconstructor's state dict (any of depth/albedo/view/light/
    encoder); without its depth net the ellipsoid prior is fitted into D. mask [1,1,S,S] in [0,1]:
    the face mask (default: `default_face_mask`). view_prior: the pseudo-view Gaussian (default:
    `default_view_prior`). seed: network initialisation and every random draw. checkpoint_dir:
    where the training state goes; a call with the same arguments resumes from it.
    """
    started = time.perf_counter()
    device = torch.device(device)
    fixed = _prepare(image, latent, generator, settings, discriminator, identity_embedder, perceptual, mask,
                     view_prior, device, progress)
    nets, has_depth = build_nets(settings, fixed.projector.style_dim, seed, nets_init)
    nets.to(device).train()
    rng = torch.Generator().manual_seed(seed)
    if settings.prior_frame == "canonical" and nets_init and any(k.startswith("view.") for k in nets_init):
        # From the pretrained view net as built (before any saved state is loaded), so a resume
        # recomputes the same view. A fresh view net's output is noise, not a pose: the view frame's prior.
        fixed.prior_view = start_view(nets, fixed.image, settings)
    ckpt = _Checkpoint(checkpoint_dir)
    residual = settings.depth_start == "residual"
    state = _restore(ckpt, fixed, seed, nets, rng,
                     _Progress(prior_done=has_depth and not (settings.prior_refit or residual)))
    offset = _attach_prior_offset(fixed, nets) if residual else None

    def checkpoint(optimizer: torch.optim.Optimizer | None) -> None:
        _save(ckpt, fixed, seed, nets, rng, state, optimizer)

    if not state.prior_done:
        _fit_prior(fixed, nets)
        state.prior_done = state.prior_fitted = True
        checkpoint(None)
    for stage in range(settings.num_stages):
        for step_index in range(len(STEP_NAMES)):
            if (stage, step_index) < (state.position["stage"], state.position["step"]):
                continue
            _run_step(fixed, nets, rng, state, stage, step_index, checkpoint)
            if state.samples_stage == stage and step_index == 1:
                ckpt.save_samples(stage, state.samples)
            following = (stage, step_index + 1) if step_index + 1 < len(STEP_NAMES) else (stage + 1, 0)
            state.position = {"stage": following[0], "step": following[1], "iteration": 0}
            checkpoint(None)

    nets.eval()
    with torch.no_grad():
        dec = decompose(nets, fixed.image, fixed.tools.geometry)
        recon = reconstruct(fixed.tools.renderer, dec)
        final = canonical_state(nets, fixed.image, fixed.tools, fixed.pseudo_mask)
    if offset is not None:
        offset.remove()  # the nets leave without this image's prior
    return ShapeResult(depth=dec.depth.cpu(), albedo=dec.albedo.cpu(), view=dec.view.cpu(), light=dec.light.cpu(),
                       texture=recon.texture.cpu(), normal=recon.normal.cpu(), recon=recon.image.cpu(),
                       recon_mask=recon.mask.cpu(), recon_depth=recon.recon_depth.cpu(),
                       face_mask=fixed.face_mask.cpu(),
                       canon_mask=final.canon_mask.cpu() if final.canon_mask is not None else None,
                       nets_state=_cpu_state(nets), history=state.history, dis_features=fixed.dis.kind,
                       prior_fitted=state.prior_fitted, seconds=time.perf_counter() - started)
