"""Pretraining GAN2Shape's latent encoder E on many generator images (step 2 of its joint pretraining).

GAN2Shape's pretrained checkpoints come from `joint_train` over ~200 images, every network
shared, E included, and each per-image reconstruction starts from all of them. toon3d's shipped
reconstructors (`toon3d.shape.pretrain`) hold D, A, V and L only, so each reconstruction used to
start E from random weights. With the `cpu` preset's 20 step-2 iterations such an E barely
learns to project: an avatar edit that reuses the neutral's E (20 iterations) came out flatter
than one that trains E for 20 more.

This trains E alone, as step 2 does, but over a stream of generator images: iteration i draws
latent w_i (seed, i), takes the generator's image of it, decomposes it with the frozen pretrained
D, A, V, L, renders `batch` pseudo samples at random views and lights, and minimises
L_2 = L1 + L_dis + λ_E·‖Δw‖² of their projections G(w_i + ψ·Δw) (Eq. 16). The state (E, Adam,
iteration) is checkpointed atomically every `checkpoint_every` iterations; a resumed run repeats
exactly the iterations an uninterrupted one would (every draw is a function of (seed, i)).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from toon3d.errors import Toon3dError

STATE_FILE = "encoder_state.pt"


@dataclass(frozen=True)
class EncoderPretrainConfig:
    """One encoder pretraining run (defaults: the CPU recipe of the shipped encoders)."""

    iters: int = 1000
    batch: int = 4                 # pseudo samples per image (the cpu preset's step-2 batch)
    lr: float = 1e-3               # the cpu preset's step-2 rate
    truncation: float = 0.7        # ψ of the drawn latents
    seed: int = 0
    checkpoint_every: int = 100

    def check(self) -> EncoderPretrainConfig:
        """One-line errors for values that cannot work."""
        for name in ("iters", "batch", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise Toon3dError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not (self.lr > 0) or not (0 < self.truncation <= 1):
            raise Toon3dError(f"lr must be > 0 and truncation in (0, 1], got {self.lr}, {self.truncation}")
        return self


def draw_latent(generator: torch.nn.Module, mean: torch.Tensor, seed: int, index: int, truncation: float
                ) -> torch.Tensor:
    """W latent [1,D] of image `index` of the stream: z ~ N(0, I) from (seed, index), truncated toward `mean`."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + index)
    z = torch.randn(1, generator.style_dim, generator=g).to(mean)
    with torch.no_grad():
        return mean + truncation * (generator.mapping(z) - mean)


def pretrain_encoder(nets, generator: torch.nn.Module, mean: torch.Tensor, settings, config: EncoderPretrainConfig,
                     *, discriminator: torch.nn.Module | None = None, perceptual: torch.nn.Module | None = None,
                     checkpoint_dir: str | Path | None = None, progress: bool = True,
                     log=None) -> list[dict]:
    """Train `nets.encoder` in place (D, A, V, L frozen) → per-iteration losses.

    nets: ShapeNets with pretrained D, A, V, L; generator: its W space is E's target; mean [1,D]
    its truncation mean; settings: a ReconstructionSettings giving the 3D size, step-2 loss
    weights, pseudo-sample ranges and L_dis source (`dis_features`); checkpoint_dir: where the
    state goes; a call with the same arguments resumes from it.
    """
    from tqdm import tqdm

    from toon3d.io.checkpoint import load_training_state, save_training_state
    from toon3d.shape.schedule import _prepare
    from toon3d.shape.steps import canonical_state, make_optimizer, step2_train

    config.check()
    device = next(nets.parameters()).device
    generator = generator.to(device).eval()
    mean = mean.reshape(1, -1).to(device)
    first = draw_latent(generator, mean, config.seed, 0, config.truncation)
    from toon3d.shape.latent_offset import LatentProjector

    probe = LatentProjector(generator, settings.tail_layers(len(generator.style) - 1), settings.truncation,
                            settings.relative_enc, settings.image_size)
    with torch.no_grad():
        image0 = probe.generate(first)
    fixed = _prepare(image0, first, generator, settings, discriminator, None, perceptual, None, None, device, False)
    optimizer = make_optimizer(nets, "step2", config.lr, settings.betas, settings.weight_decay)
    history: list[dict] = []
    start = 0
    path = Path(checkpoint_dir) / STATE_FILE if checkpoint_dir is not None else None
    record = {"config": asdict(config), "settings": settings.as_dict()}
    if path is not None and path.is_file():
        saved = load_training_state(path)
        if saved["record"] != json.loads(json.dumps(record)):
            raise Toon3dError(f"{path} was written with other settings; use the same ones or another --out")
        nets.encoder.load_state_dict(saved["encoder"])
        optimizer.load_state_dict(saved["optimizer"])
        start, history = int(saved["iteration"]), list(saved["history"])
    nets.train()
    bar = tqdm(total=config.iters, initial=start, desc="encoder", disable=not progress, dynamic_ncols=True)
    started = time.perf_counter()
    for it in range(start, config.iters):
        latent = draw_latent(generator, mean, config.seed, it, config.truncation)
        with torch.no_grad():
            image = fixed.projector.generate(latent)
        state = canonical_state(nets, image, fixed.tools, fixed.pseudo_mask)
        rng = torch.Generator().manual_seed(config.seed * 1_000_003 + it)
        losses = step2_train(nets, state, fixed.sampler, fixed.projector, fixed.dis, latent, config.batch, rng,
                             fixed.tools.weights, optimizer)
        history.append({"iteration": it, **losses})
        bar.set_postfix(loss=f"{losses['total']:.4f}")
        bar.update(1)
        if log is not None:
            log(it, losses)
        if path is not None and ((it + 1) % config.checkpoint_every == 0 or it + 1 == config.iters):
            save_training_state(path, {"record": record, "encoder": nets.encoder.state_dict(),
                                       "optimizer": optimizer.state_dict(), "iteration": it + 1,
                                       "history": history})
    bar.close()
    nets.eval()
    if history:
        history[-1]["seconds_this_call"] = round(time.perf_counter() - started, 2)
    return history


__all__ = ["EncoderPretrainConfig", "pretrain_encoder", "draw_latent", "STATE_FILE"]
