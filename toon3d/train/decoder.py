"""Regression pretraining of a StyleGAN2 generator as a SynFace decoder (the CPU recipe).

Adversarial training from scratch is out of reach on 2 CPU cores (REFERENCE §14). SynFace is
a deterministic function of its parameters, so the base generator first learns
G(z) ≈ render(params_from_latent(z)): random z then gives random SynFace faces and the
latent space carries pose, light, identity and expression. A second phase with an
adversarial term (`--adv-weight`, below) sharpens it and gives the discriminator that
fine-tuning needs.

Losses (all on [-1,1] images): a pixel L1 and an L1 on image gradients (edges), either
weighted up on the small parts that carry expression and identity (`balance="pixel"`) or taken
as the mean over each segmentation class, averaged over classes (`balance="class"`, the later
base runs: a 6-pixel eye counts as much as the background), and L1 on 2x/4x downsampled
images (coarse layout). Each iteration's latents and noise come
from a generator seeded by (seed, iteration), so a resumed run repeats exactly the batches
an uninterrupted run would draw.
"""

from __future__ import annotations

import copy
import functools
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from toon3d.errors import Toon3dError
from toon3d.synth.face_albedo import SEG_NAMES
from toon3d.synth.latent_params import params_from_latent
from toon3d.synth.synface import render_synface

# Segmentation classes whose pixels count `region_weight` times (small parts that carry
# identity and expression; at 64 px an eye is ~4 pixels tall).
REGION_CLASSES = ("brows", "eyes", "nose", "lips/mouth", "glasses")
EVAL_SEED = 2**31 - 7  # held-out latents, never drawn by training (training seeds are < 2^31 - 1000)


@dataclass
class DecoderConfig:
    """Settings of a SynFace regression run (defaults: the shipped base model's recipe)."""

    size: int = 64
    generator: dict = field(default_factory=lambda: {"style_dim": 512, "n_mlp": 4, "channel_multiplier": 2,
                                                     "channel_max": 64})
    batch: int = 16
    iters: int = 20000
    lr: float = 0.002
    betas: tuple[float, float] = (0.9, 0.99)
    mapping_lr_mult: float = 100.0  # StyleGAN2 slows its mapping 100x (lr_mlp 0.01); regression needs it fast (probe: lower held-out L1 sooner)
    ema_decay: float = 0.999
    # EMA decay ramps up as min(ema_decay, (1+t)/(10+t)): early on G_ema follows G instead of
    # averaging in the random initialisation for thousands of iterations.
    ema_rampup: bool = True
    region_weight: float = 6.0
    # "pixel": every pixel counts once (parts up-weighted by region_weight); "class": the L1 and
    # edge terms are means over each segmentation class, averaged over classes, so a 6-pixel eye
    # pulls as hard as the background that covers 75% of the frame (probe: background colours
    # otherwise take most of the gradient and the parts never sharpen).
    balance: str = "pixel"
    edge_weight: float = 1.0
    coarse_weight: float = 1.0
    noise_mode: str = "random"
    seed: int = 0
    eval_count: int = 128
    eval_every: int = 250
    ckpt_every: int = 250
    sample_every: int = 500
    # Adversarial term (0 = pure regression, the first phase of the recipe). R1's γ follows
    # StyleGAN2-ADA's heuristic 0.0002·res²/batch (≈ 0.05 at 64 px, batch 16) rounded up.
    adv_weight: float = 0.0
    # Train on SynFace's anchored views (docs/synface.md): eyes and mouth at fixed pixels under pose.
    anchor_eyes: bool = False
    d_channel_max: int = 64
    d_lr: float = 0.002
    r1: float = 0.1
    d_reg_every: int = 16

    def check(self) -> None:
        """Raise a one-line Toon3dError on impossible settings."""
        if self.size not in (32, 64, 128, 256):
            raise Toon3dError(f"decoder size must be 32, 64, 128 or 256, got {self.size}")
        if self.batch < 1 or self.iters < 1:
            raise Toon3dError(f"batch and iters must be positive, got batch {self.batch}, iters {self.iters}")
        if self.balance not in ("pixel", "class"):
            raise Toon3dError(f"balance must be 'pixel' or 'class', got {self.balance!r}")
        if self.adv_weight < 0 or self.r1 < 0:
            raise Toon3dError(f"adv_weight and r1 must be >= 0, got {self.adv_weight}, {self.r1}")
        if self.generator.get("style_dim", 512) < 56:
            raise Toon3dError("style_dim must be at least 56 (one latent dimension per SynFace parameter)")


def iteration_rng(seed: int, iteration: int, rank: int = 0) -> torch.Generator:
    """The generator that draws iteration `iteration`'s latents and noise on process `rank` (same on resume)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + iteration + rank * 7_919_000_003) % (2**63 - 1))


def synface_targets(z: torch.Tensor, size: int, anchor_eyes: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Render the faces of latents z [B,D]: images [B,3,S,S] in [-1,1], seg [B,S,S] uint8.

    Sizes below SynFace's 64 px minimum render at 64 and are area-downsampled. `anchor_eyes`
    renders SynFace's anchored views (docs/synface.md: parts stay at fixed pixels under pose).
    """
    from toon3d.synth.synface import SynFaceSettings

    render_size = max(size, 64)
    out = render_synface(params_from_latent(z), render_size, settings=SynFaceSettings(anchor_eyes=anchor_eyes))
    image, seg = out["image"], out["seg"]
    if render_size != size:
        image = F.adaptive_avg_pool2d(image, size)
        seg = F.interpolate(seg[:, None].float(), size=size, mode="nearest")[:, 0].to(torch.uint8)
    return image, seg


def region_weights(seg: torch.Tensor, weight: float) -> torch.Tensor:
    """seg [B,S,S] -> per-pixel weights [B,1,S,S]: 1 + weight on (dilated) REGION_CLASSES."""
    ids = torch.tensor([SEG_NAMES.index(c) for c in REGION_CLASSES], device=seg.device)
    region = torch.isin(seg.long(), ids).float()[:, None]
    region = F.max_pool2d(region, 3, 1, 1)  # a 1-px margin: the generator's parts may sit a pixel off
    return 1.0 + weight * region


def class_masks(seg: torch.Tensor) -> torch.Tensor:
    """seg [B,S,S] -> one mask per SynFace class [B,K,S,S] in {0,1}, REGION_CLASSES dilated by 1 px."""
    onehot = F.one_hot(seg.long(), len(SEG_NAMES)).permute(0, 3, 1, 2).float()
    ids = [SEG_NAMES.index(c) for c in REGION_CLASSES]
    onehot[:, ids] = F.max_pool2d(onehot[:, ids], 3, 1, 1)
    return onehot


def class_mean(err: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mean of err [B,1,H,W] over each class of masks [B,K,H,W], averaged over the classes present -> scalar."""
    area = masks.sum((0, 2, 3))
    per_class = (err * masks).sum((0, 2, 3)) / area.clamp_min(1.0)
    present = area > 0
    return per_class[present].mean()


def _grad_xy(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def decoder_loss(fake: torch.Tensor, target: torch.Tensor, seg: torch.Tensor,
                 cfg: DecoderConfig) -> dict[str, torch.Tensor]:
    """Regression losses for fake/target [B,3,S,S] in [-1,1] and seg [B,S,S] -> {"total", "l1", "edge", "coarse"}.

    "l1" and "edge" follow cfg.balance (pixel weights or class means); "coarse" is plain.
    """
    fx, fy = _grad_xy(fake)
    tx, ty = _grad_xy(target)
    if cfg.balance == "class":
        m = class_masks(seg)
        l1 = class_mean((fake - target).abs().mean(1, keepdim=True), m)
        edge = (class_mean((fx - tx).abs().mean(1, keepdim=True), m[..., :, 1:])
                + class_mean((fy - ty).abs().mean(1, keepdim=True), m[..., 1:, :]))
    else:
        w = region_weights(seg, cfg.region_weight)
        l1 = ((fake - target).abs() * w).mean()
        edge = ((fx - tx).abs() * w[..., :, 1:]).mean() + ((fy - ty).abs() * w[..., 1:, :]).mean()
    coarse = sum(F.l1_loss(F.avg_pool2d(fake, k), F.avg_pool2d(target, k)) for k in (2, 4))
    total = l1 + cfg.edge_weight * edge + cfg.coarse_weight * coarse
    return {"total": total, "l1": l1.detach(), "edge": edge.detach(), "coarse": coarse.detach()}


def build_generator(cfg: DecoderConfig, seed: int):
    """A fresh Generator of cfg's architecture, weights from `seed`."""
    from toon3d.stylegan2.generator import Generator

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Generator(cfg.size, **cfg.generator)


def build_discriminator(cfg: DecoderConfig, seed: int):
    """A fresh StyleGAN2 Discriminator at cfg.size capped at cfg.d_channel_max channels, weights from `seed`."""
    from toon3d.stylegan2.discriminator import Discriminator

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Discriminator(cfg.size, channel_multiplier=2, channel_max=cfg.d_channel_max)


def make_d_optimizer(d: torch.nn.Module, cfg: DecoderConfig) -> torch.optim.Optimizer:
    """rosinality's D optimiser: Adam with the lazy-R1 corrected lr and betas."""
    from toon3d.stylegan2.losses import lazy_adam_params

    lr, betas = lazy_adam_params(cfg.d_lr, cfg.d_reg_every, cfg.betas[1])
    return torch.optim.Adam(d.parameters(), lr=lr, betas=betas)


def make_optimizer(g: torch.nn.Module, cfg: DecoderConfig) -> torch.optim.Optimizer:
    """Adam with the mapping network's learning rate multiplied by cfg.mapping_lr_mult."""
    mapping = [p for n, p in g.named_parameters() if n.startswith("style.")]
    synthesis = [p for n, p in g.named_parameters() if not n.startswith("style.")]
    return torch.optim.Adam([{"params": synthesis, "lr": cfg.lr},
                             {"params": mapping, "lr": cfg.lr * cfg.mapping_lr_mult}], betas=tuple(cfg.betas))


@torch.no_grad()
@functools.lru_cache(maxsize=4)
def heldout_set(count: int, style_dim: int, size: int,
                anchor_eyes: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The held-out latents of EVAL_SEED and their renders: (z [N,D], images [N,3,S,S], seg [N,S,S]).

    Rendered once per run (the evaluation repeats every few hundred iterations); callers must not modify them.
    """
    z = torch.randn(count, style_dim, generator=torch.Generator().manual_seed(EVAL_SEED))
    return (z, *synface_targets(z, size, anchor_eyes))


@torch.no_grad()
def evaluate(g: torch.nn.Module, cfg: DecoderConfig, count: int | None = None) -> dict[str, float]:
    """Held-out L1 on [-1,1] (overall and per SynFace segment class) over latents of EVAL_SEED."""
    count = count or cfg.eval_count
    z, target, seg = heldout_set(count, g.style_dim, cfg.size, cfg.anchor_eyes)
    was_training = g.training
    g.eval()
    fake = torch.cat([g([z[i:i + 32]], randomize_noise=False)[0] for i in range(0, count, 32)])
    g.train(was_training)
    err = (fake - target).abs().mean(1)
    out = {"l1": float(err.mean())}
    for k, name in enumerate(SEG_NAMES):
        m = seg == k
        if m.any():
            out[f"l1_{name.replace('/', '_')}"] = float(err[m].mean())
    return out


class _DecoderCall(torch.nn.Module):
    """G as one forward (z, noise maps or None) -> image, so DDP sees the whole use."""

    def __init__(self, g: torch.nn.Module):
        super().__init__()
        self.g = g

    def forward(self, z: torch.Tensor, noise: list[torch.Tensor] | None) -> torch.Tensor:
        ws = self.g.styles_to_latent([self.g.mapping(z)])
        return self.g.synthesis(ws, noise_mode="none" if noise is None else "const", noise=noise)


class DecoderRun:
    """One regression run in a folder: config.json, state.pt (atomic, resumable), tb/, samples/."""

    def __init__(self, run_dir: str | Path, cfg: DecoderConfig, device: torch.device | str = "cpu"):
        cfg.check()
        self.dir = Path(run_dir)
        self.cfg = cfg
        self.device = torch.device(device)
        from toon3d.train.gan import init_distributed

        self.rank, self.world = init_distributed(self.device)
        self.g = build_generator(cfg, cfg.seed).to(self.device)
        self.g_ema = copy.deepcopy(self.g).eval()
        self.opt = make_optimizer(self.g, cfg)
        # Several processes (torchrun): each renders its own batch; DDP averages the gradients.
        self.g_call: torch.nn.Module = _DecoderCall(self.g)
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.g_call = torch.nn.parallel.DistributedDataParallel(self.g_call, device_ids=ids,
                                                                    broadcast_buffers=False)
        self.d = self.opt_d = None
        self.d_call: torch.nn.Module | None = None
        if cfg.adv_weight > 0:
            self.d = build_discriminator(cfg, cfg.seed + 1).to(self.device)
            self.opt_d = make_d_optimizer(self.d, cfg)
            self.d_call = self.d
            if self.world > 1:
                ids = [self.device.index] if self.device.type == "cuda" else None
                self.d_call = torch.nn.parallel.DistributedDataParallel(self.d, device_ids=ids, broadcast_buffers=False)
        self.iteration = 0
        self.history: list[dict] = []
        self.train_seconds = 0.0

    # ---- persistence --------------------------------------------------------------------
    def state_path(self) -> Path:
        return self.dir / "state.pt"

    def save(self) -> None:
        """Write everything a resume needs, atomically."""
        from toon3d.io.checkpoint import save_training_state

        save_training_state(self.state_path(), {
            "kind": "toon3d-decoder-run", "config": json.dumps(asdict(self.cfg), sort_keys=True),
            "g": self.g.state_dict(), "g_ema": self.g_ema.state_dict(), "opt": self.opt.state_dict(),
            "iteration": self.iteration, "history": json.dumps(self.history),
            "train_seconds": self.train_seconds,
            **({"d": self.d.state_dict(), "opt_d": self.opt_d.state_dict()} if self.d is not None else {})})

    def load(self) -> None:
        """Restore from state.pt; a run folder of another config is a one-line error."""
        from toon3d.io.checkpoint import load_training_state

        state = load_training_state(self.state_path())
        if state.get("kind") != "toon3d-decoder-run":
            raise Toon3dError(f"{self.state_path()} is not a decoder run state; pass the folder of a decoder run")
        from toon3d.train.gan import changed_settings

        differ = changed_settings(state["config"], self.cfg, ("iters", "eval_every", "ckpt_every", "sample_every"))
        if differ:
            raise Toon3dError(f"{self.dir} was started with other settings ({', '.join(differ)}); "
                              "resume with the same settings or use a new --out")
        self.g.load_state_dict(state["g"])
        self.g_ema.load_state_dict(state["g_ema"])
        self.opt.load_state_dict(state["opt"])
        if self.d is not None:
            self.d.load_state_dict(state["d"])
            self.opt_d.load_state_dict(state["opt_d"])
        self.iteration = int(state["iteration"])
        self.history = json.loads(state["history"])
        self.train_seconds = float(state["train_seconds"])

    # ---- training -----------------------------------------------------------------------
    def step(self) -> dict[str, torch.Tensor]:
        """One optimisation step on iteration `self.iteration`'s batch."""
        from toon3d.stylegan2.losses import ema_update

        rng = iteration_rng(self.cfg.seed, self.iteration, self.rank)
        z = torch.randn(self.cfg.batch, self.g.style_dim, generator=rng)
        target, seg = synface_targets(z, self.cfg.size, self.cfg.anchor_eyes)
        noise = None
        if self.cfg.noise_mode == "random":
            noise = [torch.randn(self.cfg.batch, 1, *b.shape[2:], generator=rng).to(self.device)
                     for b in self.g.noise_buffers()]
        target, seg = target.to(self.device), seg.to(self.device)
        fake = self.g_call(z.to(self.device), noise)
        if self.d is not None:
            # G has not moved yet, so this batch's images serve the D step too (detached)
            d_logs = self.d_step(fake.detach(), target)
        losses = decoder_loss(fake, target, seg, self.cfg)
        if self.d is not None:
            from toon3d.stylegan2.losses import g_nonsaturating_loss

            self._set_requires_grad(self.d, False)
            adv = g_nonsaturating_loss(self.d_call(fake))
            self._set_requires_grad(self.d, True)
            losses["total"] = losses["total"] + self.cfg.adv_weight * adv
            losses["g_adv"] = adv.detach()
            losses.update(d_logs)
        self.opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        self.opt.step()
        decay = self.cfg.ema_decay
        if self.cfg.ema_rampup:
            decay = min(decay, (1 + self.iteration) / (10 + self.iteration))
        ema_update(self.g_ema, self.g, decay)
        self.iteration += 1
        return losses

    @staticmethod
    def _set_requires_grad(module: torch.nn.Module, flag: bool) -> None:
        for p in module.parameters():
            p.requires_grad_(flag)

    def d_step(self, fake: torch.Tensor, real: torch.Tensor) -> dict[str, torch.Tensor]:
        """One discriminator step on real renders and detached G(z) [B,3,S,S], with lazy R1 every cfg.d_reg_every."""
        from toon3d.stylegan2.losses import d_logistic_loss, d_r1_penalty

        loss = d_logistic_loss(self.d_call(real), self.d_call(fake))
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_d.step()
        logs = {"d_loss": loss.detach()}
        if self.iteration % self.cfg.d_reg_every == 0 and self.cfg.r1 > 0:
            real = real.detach().requires_grad_(True)
            pred = self.d_call(real)
            r1 = d_r1_penalty(pred, real)
            self.opt_d.zero_grad(set_to_none=True)
            # `0 * pred[0]` keeps every D output in the graph (DDP expects all parameters used)
            (self.cfg.r1 / 2 * r1 * self.cfg.d_reg_every + 0 * pred[0]).sum().backward()
            self.opt_d.step()
            logs["r1"] = r1.detach()
        return logs

    def train(self, until: int | None = None, log=None, progress: bool = True) -> None:
        """Train to iteration `until` (default cfg.iters), checkpointing every cfg.ckpt_every."""
        from tqdm import tqdm

        until = self.cfg.iters if until is None else until
        lead = self.rank == 0  # with several processes, rank 0 evaluates, logs and saves
        bar = tqdm(total=until, initial=self.iteration, disable=not progress or not lead, desc="decoder",
                   dynamic_ncols=True)
        while self.iteration < until:
            t0 = time.perf_counter()
            losses = self.step()
            self.train_seconds += time.perf_counter() - t0
            bar.update(1)
            bar.set_postfix(l1=f"{losses['l1'].item():.4f}")
            it = self.iteration
            if log is not None:
                log.scalars(it, {f"train/{k}": v.item() for k, v in losses.items()})
            if lead and (it % self.cfg.eval_every == 0 or it == until):
                figures = evaluate(self.g_ema, self.cfg)
                figures.update(iteration=it, train_minutes=round(self.train_seconds / 60, 2))
                self.history.append(figures)
                if log is not None:
                    log.scalars(it, {f"eval/{k}": v for k, v in figures.items() if k.startswith("l1")})
            if log is not None and (it % self.cfg.sample_every == 0 or it == until):
                log.images(it, "samples", sample_grid(self.g_ema, self.cfg))
            if lead and (it % self.cfg.ckpt_every == 0 or it == until):
                self.save()
        bar.close()


def trained_on_anchored_views(meta: dict) -> bool:
    """Whether a generator file's metadata says its decoder learned SynFace's anchored views.

    Reads a shipped model's phases (tools/ship_builtin.py) or a run export's config.
    """
    if any(p.get("anchor_eyes") for p in meta.get("phases", []) if isinstance(p, dict)):
        return True
    config = meta.get("config")
    return bool(config.get("anchor_eyes", False)) if isinstance(config, dict) else False


@torch.no_grad()
def sample_grid(g: torch.nn.Module, cfg: DecoderConfig, n: int = 8) -> torch.Tensor:
    """Held-out targets (top row) over G's reconstructions (bottom row): [3,H,W] in [-1,1]."""
    from toon3d.io.images import make_grid

    z, target, _ = heldout_set(n, g.style_dim, cfg.size, cfg.anchor_eyes)
    fake = g([z], randomize_noise=False)[0].clamp(-1, 1)
    return make_grid(torch.cat([target, fake.cpu()]), nrow=n)



def export_generator(run: DecoderRun, path: str | Path, command: str) -> Path:
    """Write the run's EMA generator (with a 4096-sample mean latent) as a toon3d .safetensors file."""
    from toon3d.stylegan2.checkpoints import MEAN_LATENT_SAMPLES, MEAN_LATENT_SEED, save_generator

    g = copy.deepcopy(run.g_ema).cpu().eval()
    mean = g.mean_latent(MEAN_LATENT_SAMPLES, generator=torch.Generator().manual_seed(MEAN_LATENT_SEED))
    meta = {"recipe": "synface-decoder", "iteration": run.iteration, "command": command,
            "train_minutes": round(run.train_seconds / 60, 2), "config": asdict(run.cfg),
            "heldout": run.history[-1] if run.history else {}}
    written = save_generator(path, g, mean, meta)
    if run.d is not None:
        from toon3d.stylegan2.checkpoints import save_discriminator

        save_discriminator(Path(path).with_name("discriminator.safetensors"), copy.deepcopy(run.d).cpu().eval(),
                           {"recipe": "synface-decoder", "iteration": run.iteration, "command": command})
    return written
