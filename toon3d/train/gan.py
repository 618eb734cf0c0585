"""Adversarial StyleGAN2 training and cartoon fine-tuning, faithful to rosinality's ``train.py``.

One iteration is rosinality's: a D step on (real, G(z)) with the softplus loss, lazy R1 every
``d_reg_every`` iterations (through the ADA augmentation when it is on), a G step with the
non-saturating loss (plus the structure loss when fine-tuning), lazy path-length
regularisation every ``g_reg_every`` iterations on batch/``path_batch_shrink``, and the EMA
of G. Style mixing draws two z with probability ``mixing``. Every constant is a field of
`GanConfig` with the reference default.

Determinism: all randomness (z, mixing index, noise maps, augmentation, path-length noise)
comes from one CPU `torch.Generator` per process, and data order from `ImageStream`; both are
saved in the checkpoint, so a killed run resumed from its last checkpoint ends with the same
weights as an uninterrupted run (bit-identical on CPU).

Several processes (``torchrun --nproc-per-node K``) train one model with
DistributedDataParallel (NCCL on GPUs, gloo on CPU); ``batch`` is per process, as in rosinality.
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from toon3d.errors import Toon3dError
from toon3d.stylegan2.losses import (EMA_DECAY, d_logistic_loss, d_r1_penalty, ema_update, g_nonsaturating_loss,
                                     lazy_adam_params, path_length_penalty)
from toon3d.train.freeze import apply_freeze, discriminator_trainable, generator_trainable
from toon3d.train.structure import STRUCTURE_MODES, base_features, structure_loss

STATE_KIND = "toon3d-gan-run"
# Settings that may change between a run and its resume (they do not change the maths).
RESUMABLE_CHANGES = ("iters", "ckpt_every", "sample_every", "log_every")


@dataclass
class GanConfig:
    """Everything that decides a training run (defaults: rosinality train.py, REFERENCE §2.8)."""

    size: int = 256
    generator: dict = field(default_factory=lambda: {"style_dim": 512, "n_mlp": 8, "channel_multiplier": 2,
                                                     "channel_max": 512})
    discriminator: dict = field(default_factory=lambda: {"channel_multiplier": 2, "channel_max": 512})
    batch: int = 16
    iters: int = 800_000
    lr: float = 0.002
    r1: float = 10.0
    path_regularize: float = 2.0
    path_batch_shrink: int = 2
    d_reg_every: int = 16
    g_reg_every: int = 4
    mixing: float = 0.9
    augment: bool = False
    augment_p: float = 0.0          # 0 with augment: adaptive p (ADA)
    ada_target: float = 0.6
    ada_length: int = 500_000
    ada_every: int = 8
    ema_decay: float = EMA_DECAY    # 0.5 ** (32 / 10000)
    seed: int = 0
    # cartoon fine-tuning (Cartoon-StyleGAN / the paper); 0 / -1 = off
    structure_k: int = 0
    structure_mode: str = "paper"
    structure_weight: float = 1.0
    freeze_d: int = -1
    freeze_g: int = -1
    freeze_style: int = -1
    # Keep G's per-layer noise strengths at the source's values. A regression-trained source
    # (the built-in base) learned to ignore its noise inputs; against a fresh discriminator the
    # fine-tune otherwise turns the last layer's noise into grain (cartoon: convs.7 0 -> -0.099).
    freeze_noise: bool = False
    # bookkeeping
    ckpt_every: int = 1000
    sample_every: int = 500
    log_every: int = 10
    n_sample: int = 16

    def check(self) -> None:
        """One-line Toon3dError on impossible settings."""
        if self.batch < 1 or self.iters < 0:
            raise Toon3dError(f"batch must be >= 1 and iters >= 0, got batch {self.batch}, iters {self.iters}")
        group = min(self.batch, 4)
        if self.batch % group:
            raise Toon3dError(f"batch {self.batch} must be divisible by {group} (the discriminator's minibatch-stddev "
                              "group); pass --batch 2, 4, 8, 12, 16, ...")
        if self.structure_mode not in STRUCTURE_MODES:
            raise Toon3dError(f"structure mode must be one of {', '.join(STRUCTURE_MODES)}, got {self.structure_mode!r}")
        if not 0.0 <= self.mixing <= 1.0:
            raise Toon3dError(f"mixing probability must be in [0,1], got {self.mixing}")
        if self.path_batch_shrink < 1:
            raise Toon3dError(f"path_batch_shrink must be >= 1, got {self.path_batch_shrink}")
        log_size = self.size.bit_length() - 1
        if self.structure_k > log_size - 2:
            raise Toon3dError(f"structure loss over {self.structure_k} blocks needs a generator above "
                              f"{2 ** (self.structure_k + 2)} px; this one is {self.size} px: lower --structure-k")


def changed_settings(saved_config_json: str, cfg, ignore: tuple[str, ...]) -> list[str]:
    """Names of the settings (dataclass fields) that differ between a saved run and `cfg`, except `ignore`.

    A setting the saved run predates counts as its default (runs started before a setting existed
    keep resuming as long as the new setting is left at the value that reproduces them).
    """
    saved, mine = json.loads(saved_config_json), json.loads(json.dumps(asdict(cfg), sort_keys=True))
    defaults = json.loads(json.dumps(asdict(type(cfg)()), sort_keys=True))
    saved = {**{k: defaults[k] for k in defaults if k not in saved}, **saved}
    return sorted(k for k in set(saved) | set(mine) if saved.get(k) != mine.get(k) and k not in ignore)


def distributed_context() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) when run alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    return int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0"))


def init_distributed(device: torch.device) -> tuple[int, int]:
    """Join torchrun's process group (NCCL on CUDA, gloo on CPU); returns (rank, world)."""
    rank, world, _ = distributed_context()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world


class _GeneratorCall(nn.Module):
    """G as one forward (z list, mixing index, noise maps) -> (image, W+, block features), so DDP sees every use.

    With FreezeStyle=i, W+ rows [:i] come from the frozen source generator's mapping of the same z.
    """

    def __init__(self, g: nn.Module, g_base: nn.Module | None, freeze_style: int):
        super().__init__()
        self.g = g
        self.g_base = [g_base]  # a list: the frozen base is not a submodule (no DDP sync, no optimiser)
        self.freeze_style = freeze_style

    def forward(self, zs: list[torch.Tensor], inject_index: int | None, noise: list[torch.Tensor],
                features: bool = False):
        ws = self.g.styles_to_latent([self.g.mapping(z) for z in zs], inject_index)
        if self.freeze_style > 0:
            base = self.g_base[0]
            with torch.no_grad():
                ws_base = base.styles_to_latent([base.mapping(z) for z in zs], inject_index)
            ws = torch.cat([ws_base[:, :self.freeze_style], ws[:, self.freeze_style:]], 1)
        if features:
            image, feats = self.g.synthesis(ws, noise=noise, return_features=True)
            return image, ws, feats
        return self.g.synthesis(ws, noise=noise), ws, {}


class GanTrainer:
    """A training (or fine-tuning) run in `run_dir`; call `train()`."""

    def __init__(self, cfg: GanConfig, run_dir: str | Path, stream, device: torch.device | str = "cpu",
                 init: dict | None = None, log=None):
        """`init` may hold 'g', 'g_ema', 'd' state dicts to start from, and 'g_base' (a frozen Generator)
        for the structure loss / FreezeStyle."""
        from toon3d.stylegan2.discriminator import Discriminator
        from toon3d.stylegan2.generator import Generator

        cfg.check()
        self.cfg = cfg
        self.dir = Path(run_dir)
        self.device = torch.device(device)
        self.stream = stream
        self.log = log
        self.rank, self.world = init_distributed(self.device)
        init = init or {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.g = Generator(cfg.size, **cfg.generator).to(self.device)
            self.d = Discriminator(cfg.size, **cfg.discriminator).to(self.device)
        if "g" in init:
            self.g.load_state_dict(init["g"])
        if "d" in init:
            self.d.load_state_dict(init["d"])
        self.g_ema = copy.deepcopy(self.g).eval()
        if "g_ema" in init:
            self.g_ema.load_state_dict(init["g_ema"])
        for p in self.g_ema.parameters():
            p.requires_grad_(False)
        self.g_base = init.get("g_base")
        if (cfg.structure_k > 0 or cfg.freeze_style > 0) and self.g_base is None:
            raise Toon3dError("the structure loss and FreezeStyle need the source generator; start from a checkpoint")
        if self.g_base is not None:
            self.g_base = self.g_base.to(self.device).eval()
            for p in self.g_base.parameters():
                p.requires_grad_(False)
        log_size = cfg.size.bit_length() - 1
        self.g_trainable = apply_freeze(self.g, generator_trainable, log_size, cfg.freeze_g)
        if cfg.freeze_noise:
            for name, p in self.g.named_parameters():
                if name.endswith("noise.weight"):
                    p.requires_grad_(False)
            self.g_trainable = [n for n in self.g_trainable if not n.endswith("noise.weight")]
        self.d_trainable = apply_freeze(self.d, discriminator_trainable, log_size, cfg.freeze_d)
        g_lr, g_betas = lazy_adam_params(cfg.lr, cfg.g_reg_every)
        d_lr, d_betas = lazy_adam_params(cfg.lr, cfg.d_reg_every)
        self.g_params = [p for p in self.g.parameters() if p.requires_grad]
        self.d_params = [p for p in self.d.parameters() if p.requires_grad]
        self.g_optim = torch.optim.Adam(self.g_params, lr=g_lr, betas=g_betas)
        self.d_optim = torch.optim.Adam(self.d_params, lr=d_lr, betas=d_betas)
        self.g_call: nn.Module = _GeneratorCall(self.g, self.g_base, cfg.freeze_style)
        self.d_call: nn.Module = self.d
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            # broadcast_buffers=False as rosinality: noise buffers and blur kernels stay per process.
            self.g_call = nn.parallel.DistributedDataParallel(self.g_call, device_ids=ids, broadcast_buffers=False)
            self.d_call = nn.parallel.DistributedDataParallel(self.d, device_ids=ids, broadcast_buffers=False)
        self.rng = torch.Generator().manual_seed(cfg.seed * 7919 + 104_729 * self.rank + 1)
        self.ada = None
        self.ada_p = cfg.augment_p
        if cfg.augment and cfg.augment_p == 0:
            from toon3d.train.ada import AdaptiveAugment

            self.ada = AdaptiveAugment(cfg.ada_target, cfg.ada_length, cfg.ada_every, self.device,
                                       reduce=self._all_reduce_sum if self.world > 1 else None)
        self.mean_path_length = 0.0
        self.iteration = 0
        self.train_seconds = 0.0
        self.sample_z = torch.randn(cfg.n_sample, self.g.style_dim, generator=torch.Generator().manual_seed(cfg.seed))

    # ---- randomness -----------------------------------------------------------------------
    def _randn(self, *shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=self.rng).to(self.device)

    def mixing_noise(self, batch: int) -> tuple[list[torch.Tensor], int | None]:
        """rosinality mixing_noise: two z and a mixing index in [1, n_latent) with probability `mixing`."""
        d = self.g.style_dim
        if self.cfg.mixing > 0 and float(torch.rand(1, generator=self.rng)) < self.cfg.mixing:
            zs = [self._randn(batch, d), self._randn(batch, d)]
            return zs, int(torch.randint(1, self.g.n_latent, (1,), generator=self.rng))
        return [self._randn(batch, d)], None

    def noise_maps(self, batch: int) -> list[torch.Tensor]:
        """Fresh per-sample noise maps, one [B,1,r,r] per layer (randomize_noise=True)."""
        return [self._randn(batch, 1, *b.shape[2:]) for b in self.g.noise_buffers()]

    def _augment(self, images: torch.Tensor) -> torch.Tensor:
        if not self.cfg.augment or self.ada_p <= 0:
            return images
        from toon3d.train.ada import augment

        return augment(images, self.ada_p, generator=self.rng)[0]

    def _all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    @staticmethod
    def _set_grad(params: list[torch.nn.Parameter], flag: bool) -> None:
        for p in params:
            p.requires_grad_(flag)

    # ---- one iteration ----------------------------------------------------------------------
    def step(self) -> dict[str, float]:
        """rosinality train.py's loop body for iteration `self.iteration`; returns logged values."""
        cfg, i = self.cfg, self.iteration
        real = self.stream.next().to(self.device)
        logs: dict[str, float] = {}

        # D step
        self._set_grad(self.g_params, False)
        self._set_grad(self.d_params, True)
        zs, inject = self.mixing_noise(cfg.batch)
        noise = self.noise_maps(cfg.batch)
        with torch.no_grad():
            fake, _, _ = self.g_call(zs, inject, noise)
        real_aug = self._augment(real)
        fake_pred = self.d_call(self._augment(fake))
        real_pred = self.d_call(real_aug)
        d_loss = d_logistic_loss(real_pred, fake_pred)
        self.d_optim.zero_grad(set_to_none=True)
        d_loss.backward()
        self.d_optim.step()
        logs.update(d=d_loss.item(), real_score=real_pred.mean().item(), fake_score=fake_pred.mean().item())
        if self.ada is not None:
            self.ada_p = self.ada.tune(real_pred)
        if i % cfg.d_reg_every == 0:
            real.requires_grad_(True)
            real_pred = self.d_call(self._augment(real))
            r1 = d_r1_penalty(real_pred, real)
            self.d_optim.zero_grad(set_to_none=True)
            # 0 * real_pred[0]: every D output takes part in the backward (DDP), as in the reference.
            (cfg.r1 / 2 * r1 * cfg.d_reg_every + 0 * real_pred[0]).sum().backward()
            self.d_optim.step()
            logs["r1"] = r1.item()

        # G step
        self._set_grad(self.g_params, True)
        self._set_grad(self.d_params, False)
        zs, inject = self.mixing_noise(cfg.batch)
        noise = self.noise_maps(cfg.batch)
        want_feats = cfg.structure_k > 0
        fake, ws, feats = self.g_call(zs, inject, noise, features=want_feats)
        fake_pred = self.d_call(self._augment(fake))
        g_loss = g_nonsaturating_loss(fake_pred)
        logs["g"] = g_loss.item()
        if want_feats:
            s_loss = structure_loss(feats, base_features(self.g_base, ws, noise, cfg.structure_k), cfg.structure_k,
                                    cfg.structure_mode)
            g_loss = g_loss + cfg.structure_weight * s_loss
            logs["structure"] = s_loss.item()
        self.g_optim.zero_grad(set_to_none=True)
        g_loss.backward()
        self.g_optim.step()

        # FreezeG trains no path-length term (FreezeG's own rule).
        if i % cfg.g_reg_every == 0 and cfg.path_regularize > 0 and cfg.freeze_g < 0:
            pb = max(1, cfg.batch // cfg.path_batch_shrink)
            zs, inject = self.mixing_noise(pb)
            noise = self.noise_maps(pb)
            fake, ws, _ = self.g_call(zs, inject, noise)
            penalty, self.mean_path_length, lengths = path_length_penalty(
                fake, ws, self.mean_path_length, generator=self.rng)
            self.g_optim.zero_grad(set_to_none=True)
            weighted = cfg.path_regularize * cfg.g_reg_every * penalty
            if cfg.path_batch_shrink:
                weighted = weighted + 0 * fake[0, 0, 0, 0]
            weighted.backward()
            self.g_optim.step()
            self.mean_path_length = self.mean_path_length.detach()
            logs.update(path=penalty.item(), path_length=lengths.mean().item())
        ema_update(self.g_ema, self.g, cfg.ema_decay)
        logs["ada_p"] = float(self.ada_p)
        self.iteration += 1
        return logs

    # ---- checkpoints -------------------------------------------------------------------------
    def state_path(self) -> Path:
        return self.dir / "state.pt"

    def _gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        if self.world == 1:
            return [t]
        out = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(out, t)
        return out

    def state(self) -> dict:
        """Everything a resume needs (RNG and data positions of every process)."""
        position = self.stream.state_dict()
        streams = torch.tensor([position["epoch"], position["position"]])
        return {
            "kind": STATE_KIND, "config": json.dumps(asdict(self.cfg), sort_keys=True), "world": self.world,
            "g": self.g.state_dict(), "d": self.d.state_dict(), "g_ema": self.g_ema.state_dict(),
            "g_optim": self.g_optim.state_dict(), "d_optim": self.d_optim.state_dict(),
            "ada_p": float(self.ada_p), "ada": self.ada.state_dict() if self.ada is not None else {},
            "mean_path_length": torch.as_tensor(self.mean_path_length).cpu(),
            "rng": self._gather(self.rng.get_state()), "streams": self._gather(streams),
            "iteration": self.iteration, "train_seconds": self.train_seconds,
        }

    def check_sync(self) -> None:
        """With several processes: G, D and G_ema must be identical on every rank, else a Toon3dError."""
        if self.world == 1:
            return
        sums = torch.stack([torch.stack([p.detach().double().sum() for p in m.parameters()]).sum()
                            for m in (self.g, self.d, self.g_ema)]).cpu()
        gathered = self._gather(sums)
        if any(not torch.equal(gathered[0], other) for other in gathered[1:]):
            raise Toon3dError(f"training processes diverged at iteration {self.iteration} (parameter sums "
                              f"{[t.tolist() for t in gathered]}); report this with the run's config.json")

    def save(self) -> None:
        """Write state.pt atomically (rank 0; every rank takes part in the gathers) after checking the ranks agree."""
        from toon3d.io.checkpoint import save_training_state

        self.check_sync()
        state = self.state()
        if self.rank == 0:
            save_training_state(self.state_path(), state)

    def load(self) -> None:
        """Resume from state.pt: same settings (except RESUMABLE_CHANGES) and process count, or an error."""
        from toon3d.io.checkpoint import load_training_state

        path = self.state_path()
        if not path.is_file():
            raise Toon3dError(f"nothing to resume in {self.dir} (no state.pt); drop --resume to start a new run")
        state = load_training_state(path)
        if state.get("kind") != STATE_KIND:
            raise Toon3dError(f"{path} is not a toon3d training state; pass the --out folder of a 'toon3d train' run")
        differ = changed_settings(state["config"], self.cfg, RESUMABLE_CHANGES)
        if differ:
            saved, mine = json.loads(state["config"]), asdict(self.cfg)
            shown = ", ".join(f"{k}: {saved.get(k)!r} in the run vs {mine.get(k)!r} now" for k in differ[:3])
            raise Toon3dError(f"{self.dir} was trained with other settings ({shown}); resume with the run's settings "
                              "or start a new --out")
        if int(state["world"]) != self.world:
            raise Toon3dError(f"{self.dir} was trained with {state['world']} processes, this resume has {self.world}; "
                              "resume with the same --nproc-per-node")
        self.g.load_state_dict(state["g"])
        self.d.load_state_dict(state["d"])
        self.g_ema.load_state_dict(state["g_ema"])
        self.g_optim.load_state_dict(state["g_optim"])
        self.d_optim.load_state_dict(state["d_optim"])
        self.ada_p = float(state["ada_p"])
        if self.ada is not None:
            self.ada.load_state_dict(state["ada"])
        self.mean_path_length = state["mean_path_length"].to(self.device)
        self.rng.set_state(state["rng"][self.rank])
        epoch, position = (int(v) for v in state["streams"][self.rank])
        self.stream.load_state_dict({"epoch": epoch, "position": position})
        self.iteration = int(state["iteration"])
        self.train_seconds = float(state["train_seconds"])

    # ---- the loop -------------------------------------------------------------------------------
    @torch.no_grad()
    def samples(self) -> torch.Tensor:
        """G_ema on the run's fixed sample latents: grid [3,H,W] in [-1,1]."""
        from toon3d.io.images import make_grid

        images = self.g_ema([self.sample_z.to(self.device)], randomize_noise=False)[0]
        return make_grid(images.clamp(-1, 1).cpu())

    def train(self, progress: bool = True, stop_after: int | None = None) -> None:
        """Train to cfg.iters, checkpointing every cfg.ckpt_every and at the end.

        `stop_after` ends the call after that many iterations (tests use it to simulate a kill).
        """
        from tqdm import tqdm

        bar = tqdm(total=self.cfg.iters, initial=self.iteration, disable=not progress or self.rank != 0,
                   desc="train", dynamic_ncols=True)
        done = 0
        while self.iteration < self.cfg.iters:
            if stop_after is not None and done >= stop_after:
                break
            t0 = time.perf_counter()
            logs = self.step()
            self.train_seconds += time.perf_counter() - t0
            done += 1
            it = self.iteration
            bar.update(1)
            bar.set_postfix(d=f"{logs['d']:.3f}", g=f"{logs['g']:.3f}", p=f"{self.ada_p:.3f}")
            if self.log is not None and self.rank == 0:
                if it % self.cfg.log_every == 0:
                    self.log.scalars(it, {f"train/{k}": v for k, v in logs.items()})
                if it % self.cfg.sample_every == 0 or it == self.cfg.iters:
                    self.log.images(it, "samples", self.samples())
            if it % self.cfg.ckpt_every == 0 or it == self.cfg.iters:
                self.save()
        bar.close()


def export_rosinality(trainer: GanTrainer, path: str | Path, mean_latent: torch.Tensor) -> Path:
    """Write a rosinality-format .pt ({g, d, g_ema, g_optim, d_optim, latent_avg, ada_aug_p}) atomically."""
    from toon3d.io.checkpoint import save_training_state

    return save_training_state(path, {
        "g": trainer.g.state_dict(), "d": trainer.d.state_dict(), "g_ema": trainer.g_ema.state_dict(),
        "g_optim": trainer.g_optim.state_dict(), "d_optim": trainer.d_optim.state_dict(),
        "latent_avg": mean_latent.reshape(-1).cpu(), "ada_aug_p": float(trainer.ada_p)})
