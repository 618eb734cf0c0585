"""Distilling the per-image ellipsoid prior into a reconstructor's depth net D.

The paper's depth prior (REFERENCE §6.6) is an ellipsoid squeezed into the bounding box of the
face parser's mask of *this* image. The shipped reconstructors' D instead holds one ellipsoid at
the layout's fixed place (`toon3d.shape.pretrain`: fitted once, then held). On the views the
built-in base draws (SynFace's anchored views: eyes and mouth at fixed pixels, the head's outline
moving with the pose) that fixed shape scores MAD 33.7° where the per-image prior scores 23.4°
(256 test renders, docs/shape.md).

This trains D alone to predict the per-image prior from the image: iteration i draws `batch`
latents from (seed, i), takes the generator's images, parses them, builds each image's
ellipsoid (the reconstruction settings' kind, threshold, near, far, radius; shifted to be
representable by the mean-centred net when `prior_centre`), and minimises the MSE of D's depth
before the border clamp, as `toon3d.shape.prior.fit_depth_to` does for one image. No ground truth
is used: the targets come from the parser, as GAN2Shape's prior does. The rate decays to 0
(cosine), which keeps the decoder's transposed-conv stripes out of the depth. The state is
checkpointed atomically; a resumed run repeats exactly the iterations an uninterrupted one would.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from toon3d.errors import Toon3dError

STATE_FILE = "depth_state.pt"


@dataclass(frozen=True)
class DepthPriorConfig:
    """One distillation run (defaults: the CPU recipe of the shipped depth nets)."""

    iters: int = 1000
    batch: int = 8
    lr: float = 1e-3
    truncation: float = 1.0     # ψ of the drawn latents (1: the whole distribution the nets will see)
    seed: int = 0
    checkpoint_every: int = 100

    def check(self) -> DepthPriorConfig:
        """One-line errors for values that cannot work."""
        for name in ("iters", "batch", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise Toon3dError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)) or not (0 < self.truncation <= 1):
            raise Toon3dError(f"lr must be > 0 and truncation in (0, 1], got {self.lr}, {self.truncation}")
        return self


def prior_targets(masks: torch.Tensor, settings) -> torch.Tensor:
    """Per-image ellipsoid priors: face masks [B,1,S,S] in [0,1] → depth [B,S,S] (shifted when `prior_centre`)."""
    from toon3d.shape.prior import ellipsoid_depth, representable_shift

    out = []
    for mask in masks[:, 0]:
        target = ellipsoid_depth((mask >= settings.prior_mask_threshold).cpu(), settings.prior_kind,
                                 settings.prior_near, settings.prior_far, settings.prior_radius).float()
        if settings.prior_centre:
            target = target + representable_shift(target, settings.min_depth, settings.max_depth)
        out.append(target)
    return torch.stack(out).to(masks.device)


def draw_latents(generator: torch.nn.Module, mean: torch.Tensor, seed: int, iteration: int, batch: int,
                 truncation: float) -> torch.Tensor:
    """W latents [batch,D] of iteration `iteration`: z ~ N(0, I) from (seed, iteration), truncated toward `mean`."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + iteration)
    z = torch.randn(batch, generator.style_dim, generator=g).to(mean)
    with torch.no_grad():
        return mean + truncation * (generator.mapping(z) - mean)


def _cosine(iters: int) -> Callable[[int], float]:
    return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, iters) / iters))


def distill_depth_prior(nets, generator: torch.nn.Module, mean: torch.Tensor, settings,
                        face_mask: Callable[[torch.Tensor], torch.Tensor], config: DepthPriorConfig, *,
                        checkpoint_dir: str | Path | None = None, progress: bool = True, log=None) -> list[dict]:
    """Train `nets.depth` in place to predict each image's mask prior → per-iteration losses.

    nets: ShapeNets (only D changes); generator / mean [1,D]: the images and their truncation
    mean; settings: a ReconstructionSettings (image size, depth range, prior shape, weight decay);
    face_mask: images [B,3,S,S] in [-1,1] → [B,1,S,S] in [0,1] (the parser of the prior);
    checkpoint_dir: where the state goes; a call with the same arguments resumes from it.
    """
    from tqdm import tqdm

    from toon3d.io.checkpoint import load_training_state, save_training_state
    from toon3d.shape.latent_offset import LatentProjector
    from toon3d.shape.photo_geometry import depth_from_raw

    config.check()
    settings.check()
    device = next(nets.parameters()).device
    generator = generator.to(device).eval()
    mean = mean.reshape(1, -1).to(device)
    geometry = settings.geometry()
    projector = LatentProjector(generator, settings.tail_layers(len(generator.style) - 1), settings.truncation,
                                False, settings.image_size)
    optimizer = torch.optim.Adam(nets.depth.parameters(), lr=config.lr, betas=tuple(settings.betas),
                                 weight_decay=settings.weight_decay)
    decay = torch.optim.lr_scheduler.LambdaLR(optimizer, _cosine(config.iters))
    history: list[dict] = []
    start = 0
    path = Path(checkpoint_dir) / STATE_FILE if checkpoint_dir is not None else None
    record = json.loads(json.dumps({"config": asdict(config), "settings": settings.as_dict()}))
    if path is not None and path.is_file():
        saved = load_training_state(path)
        if saved["record"] != record:
            raise Toon3dError(f"{path} was written with other settings; use the same ones or another --out")
        nets.depth.load_state_dict(saved["depth"])
        optimizer.load_state_dict(saved["optimizer"])
        decay.load_state_dict(saved["decay"])
        start, history = int(saved["iteration"]), list(saved["history"])
    frozen = [p for name in ("albedo", "view", "light", "encoder") for p in getattr(nets, name).parameters()]
    flags = [p.requires_grad for p in frozen]
    for p in frozen:
        p.requires_grad_(False)
    nets.train()
    bar = tqdm(total=config.iters, initial=start, desc="depth prior", disable=not progress, dynamic_ncols=True)
    started = time.perf_counter()
    try:
        for it in range(start, config.iters):
            latents = draw_latents(generator, mean, config.seed, it, config.batch, config.truncation)
            with torch.no_grad():
                images = projector.generate(latents)
                targets = prior_targets(face_mask(images).to(device), settings)
            _, raw = depth_from_raw(nets.depth(images)[:, 0], geometry)
            loss = F.mse_loss(raw, targets)
            if not torch.isfinite(loss):
                raise Toon3dError(f"the depth loss became {float(loss)} at iteration {it}; lower --lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            decay.step()
            history.append({"iteration": it, "mse": float(loss.detach())})
            bar.set_postfix(mse=f"{history[-1]['mse']:.2e}")
            bar.update(1)
            if log is not None:
                log(it, history[-1])
            if path is not None and ((it + 1) % config.checkpoint_every == 0 or it + 1 == config.iters):
                save_training_state(path, {"record": record, "depth": nets.depth.state_dict(),
                                           "optimizer": optimizer.state_dict(), "decay": decay.state_dict(),
                                           "iteration": it + 1, "history": history})
    finally:
        for p, flag in zip(frozen, flags):
            p.requires_grad_(flag)
        bar.close()
    nets.eval()
    if history:
        history[-1]["seconds_this_call"] = round(time.perf_counter() - started, 2)
    return history


__all__ = ["DepthPriorConfig", "distill_depth_prior", "prior_targets", "draw_latents", "STATE_FILE"]
