"""A small CNN that predicts a generator's W code from an image: the projector's starting point.

Optimisation from the mean W needs hundreds of steps; starting near the answer needs far
fewer, which matters on a CPU. The encoder is trained on the generator's own samples only
(no photos): each iteration draws z ~ N(0,1) and noise maps from a generator seeded by
(seed, iteration), renders images = G(mapping(z)) with that noise, and regresses w with the
per-dimension standardised squared error mean(((Ê(images) − w)/σ_w)²). The same iteration
always sees the same batch, so a run killed and resumed from its last `state.pt` ends with
the same weights as an uninterrupted one.

Network (`LatentEncoder`): images resized to `size` (area or bilinear) → 3×3 conv stem → per
resolution a stride-2 3×3 conv and a 3×3 conv (LeakyReLU 0.2, no normalisation) down to 4×4
→ 1×1 conv to `head_channels` → flatten → linear → LeakyReLU → linear to D, read as
w = mean_w + σ_w ⊙ output (mean_w, σ_w: buffers measured from the generator's mapping).

Files: `encoder.safetensors` (toon3d's model format: config = the constructor arguments;
meta = the generator it belongs to, with its file's sha256, and the training figures).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from toon3d.errors import Toon3dError

ENCODER_KIND = "toon3d-latent-encoder"
EVAL_SEED = 2**31 - 11  # held-out samples; training seeds stay far below
# Default channel width per resolution (the 64 px encoder: 24, 48, 96, 128, 128; 0.86M parameters).
CHANNELS_AT = {1024: 16, 512: 16, 256: 16, 128: 16, 64: 24, 32: 48, 16: 96, 8: 128, 4: 128}


class LatentEncoder(nn.Module):
    """images [B,3,H,W] in [-1,1] → W codes [B,style_dim]."""

    def __init__(self, style_dim: int, size: int = 64, channels: tuple[int, ...] | None = None,
                 head_channels: int = 32, hidden: int = 256) -> None:
        super().__init__()
        if size < 8 or size > 1024 or size & (size - 1):
            raise Toon3dError(f"encoder input size must be a power of two from 8 to 1024, got {size}")
        levels = int(math.log2(size)) - 2  # stride-2 steps from size down to 4
        if channels is None:
            channels = tuple(CHANNELS_AT[size >> k] for k in range(levels + 1))
        if len(channels) != levels + 1:
            raise Toon3dError(f"a {size} px encoder needs {levels + 1} channel widths (one per resolution "
                              f"{size}..4), got {len(channels)}")
        self._config = {"style_dim": style_dim, "size": size, "channels": list(channels),
                        "head_channels": head_channels, "hidden": hidden}
        self.size = size
        self.style_dim = style_dim
        layers: list[nn.Module] = [nn.Conv2d(3, channels[0], 3, padding=1), nn.LeakyReLU(0.2)]
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
                       nn.Conv2d(c_out, c_out, 3, padding=1), nn.LeakyReLU(0.2)]
        layers += [nn.Conv2d(channels[-1], head_channels, 1), nn.LeakyReLU(0.2)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(head_channels * 16, hidden), nn.LeakyReLU(0.2),
                                  nn.Linear(hidden, style_dim))
        self.register_buffer("w_mean", torch.zeros(style_dim))
        self.register_buffer("w_std", torch.ones(style_dim))

    @property
    def config(self) -> dict:
        """Constructor arguments (`LatentEncoder(**config)` rebuilds it)."""
        return dict(self._config, channels=list(self._config["channels"]))

    def set_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """W's per-dimension mean and std [D] (the output is read in these units)."""
        with torch.no_grad():
            self.w_mean.copy_(mean.reshape(-1))
            self.w_std.copy_(std.reshape(-1).clamp_min(1e-8))

    def normalized(self, images: torch.Tensor) -> torch.Tensor:
        """images [B,3,H,W] in [-1,1] → the raw output [B,D] (standardised W units)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise Toon3dError(f"the encoder takes [B,3,H,W] images in [-1,1], got {tuple(images.shape)}")
        if images.shape[-2:] != (self.size, self.size):
            mode = "area" if images.shape[-1] > self.size else "bilinear"
            images = F.interpolate(images, size=(self.size, self.size), mode=mode,
                                   **({} if mode == "area" else {"align_corners": False}))
        return self.head(self.body(images).flatten(1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.w_mean + self.w_std * self.normalized(images)


# ---- files -------------------------------------------------------------------------------------

def generator_fingerprint(loaded) -> str:
    """sha256 of a generator's parameters and buffers (names, shapes, float32 values): which weights an
    encoder belongs to, whatever file they came from."""
    h = hashlib.sha256()
    for name, tensor in sorted(loaded.generator.state_dict().items()):
        h.update(f"{name}{tuple(tensor.shape)}".encode())
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def save_encoder(path: str | os.PathLike, encoder: LatentEncoder, meta: dict, half: bool = False) -> Path:
    """Write the encoder as a toon3d model file (fp16 weights with `half`), atomically."""
    from toon3d.io.checkpoint import save_model

    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in encoder.state_dict().items()}
    return save_model(path, state, {"kind": ENCODER_KIND, **encoder.config}, meta)


def load_encoder(path: str | os.PathLike) -> tuple[LatentEncoder, dict]:
    """(encoder in float32 on the CPU, its meta) from a file written by `save_encoder`."""
    from toon3d.io.checkpoint import load_model_file

    model = load_model_file(path)
    config = dict(model.config)
    if config.pop("kind", None) != ENCODER_KIND:
        raise Toon3dError(f"{path} is a toon3d model but not a latent encoder; pass a file written by "
                          "toon3d train-encoder")
    try:
        encoder = LatentEncoder(**config)
        encoder.load_state_dict({k: v.float() for k, v in model.state_dict.items()}, strict=True)
    except (TypeError, RuntimeError) as err:
        raise Toon3dError(f"{path} does not match the encoder architecture ({str(err).splitlines()[0]}); "
                          "train it again with toon3d train-encoder") from None
    return encoder.eval(), model.meta


def check_encoder_for(encoder: LatentEncoder, meta: dict, loaded, path: str) -> list[str]:
    """Refuse an encoder of another W width; return warnings when it was trained for other weights."""
    if encoder.style_dim != loaded.config["style_dim"]:
        raise Toon3dError(f"{path} predicts {encoder.style_dim}-d W codes, the generator's W has "
                          f"{loaded.config['style_dim']}; train an encoder for it with toon3d train-encoder")
    warnings = []
    trained_for = meta.get("generator_fingerprint")
    if trained_for and trained_for != generator_fingerprint(loaded):
        warnings.append(f"{path} was trained for other generator weights ({meta.get('generator', '?')}); its "
                        "start may be poor: retrain with toon3d train-encoder")
    return warnings


# ---- training ---------------------------------------------------------------------------------

@dataclass
class EncoderTrainConfig:
    """Settings of an encoder training run (defaults: the shipped encoder_base recipe)."""

    batch: int = 32
    iters: int = 500
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.99)
    lr_final_fraction: float = 0.1  # cosine decay of the lr to this fraction at `iters`
    seed: int = 0
    stats_samples: int = 10000      # z drawn to measure W's per-dimension mean and std
    eval_count: int = 128
    eval_every: int = 100
    ckpt_every: int = 50
    noise_mode: str = "random"      # noise maps of the training renders: random | const
    encoder: dict = field(default_factory=dict)  # LatentEncoder arguments besides style_dim

    def check(self) -> None:
        """Raise a one-line Toon3dError on impossible settings."""
        if self.batch < 1 or self.iters < 1:
            raise Toon3dError(f"--batch and --iters must be positive, got {self.batch} and {self.iters}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise Toon3dError(f"--lr must be a positive number, got {self.lr}")
        if self.noise_mode not in ("random", "const"):
            raise Toon3dError(f"noise_mode must be random or const, got {self.noise_mode!r}")
        if self.ckpt_every < 1 or self.eval_every < 1:
            raise Toon3dError("--ckpt-every and --eval-every must be positive")


def iteration_rng(seed: int, iteration: int) -> torch.Generator:
    """The generator that draws iteration `iteration`'s latents and noise (the same after a resume)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + iteration) % (2**63 - 1))


@torch.no_grad()
def render_samples(generator: nn.Module, rng: torch.Generator, batch: int, noise_mode: str,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(images [B,3,S,S] clamped to [-1,1], w [B,D]) for z ~ N(0,1) and noise drawn from rng."""
    z = torch.randn(batch, generator.style_dim, generator=rng)
    noise = None
    if noise_mode == "random":
        noise = [torch.randn(batch, 1, *b.shape[2:], generator=rng).to(device) for b in generator.noise_buffers()]
    w = generator.style(z.to(device))
    ws = w[:, None].repeat(1, generator.n_latent, 1)
    images = generator.synthesis(ws, noise_mode="const", noise=noise)
    return images.clamp(-1, 1), w


def standardized_error(pred: torch.Tensor, w: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """mean(((pred − w)/std)²) over dimensions → [B]."""
    return ((pred - w) / std).pow(2).mean(1)


class EncoderRun:
    """One encoder training run in a folder: config.json, state.pt (atomic, resumable), history."""

    def __init__(self, run_dir: str | Path, loaded, cfg: EncoderTrainConfig, device: torch.device | str = "cpu"):
        cfg.check()
        self.dir = Path(run_dir)
        self.cfg = cfg
        self.device = torch.device(device)
        self.loaded = loaded
        self.generator = loaded.generator.to(self.device).eval().requires_grad_(False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            encoder_args = {"size": min(64, self.generator.size), **cfg.encoder}
            self.encoder = LatentEncoder(self.generator.style_dim, **encoder_args).to(self.device)
        mean, std = self._w_statistics()
        self.encoder.set_statistics(mean, std)
        self.opt = torch.optim.Adam(self.encoder.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
        self.iteration = 0
        self.history: list[dict] = []
        self.train_seconds = 0.0  # CPU seconds of the training steps (process time, all threads)

    def _w_statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        rng = torch.Generator().manual_seed(self.cfg.seed + 1)
        with torch.no_grad():
            z = torch.randn(self.cfg.stats_samples, self.generator.style_dim, generator=rng).to(self.device)
            w = self.generator.style(z)
        return w.mean(0), w.std(0)

    # ---- persistence ----
    def state_path(self) -> Path:
        return self.dir / "state.pt"

    def save(self) -> None:
        """Write everything a resume needs, atomically."""
        from toon3d.io.checkpoint import save_training_state

        save_training_state(self.state_path(), {
            "kind": "toon3d-encoder-run", "config": json.dumps(asdict(self.cfg), sort_keys=True),
            "generator_fingerprint": generator_fingerprint(self.loaded),
            "encoder": self.encoder.state_dict(), "opt": self.opt.state_dict(), "iteration": self.iteration,
            "history": json.dumps(self.history), "train_seconds": self.train_seconds})

    def load(self) -> None:
        """Restore from state.pt; another config or generator is a one-line error."""
        from toon3d.io.checkpoint import load_training_state
        from toon3d.train.gan import changed_settings

        state = load_training_state(self.state_path())
        if state.get("kind") != "toon3d-encoder-run":
            raise Toon3dError(f"{self.state_path()} is not an encoder run state; pass the folder of an encoder run")
        differ = changed_settings(state["config"], self.cfg, ("iters", "eval_every", "ckpt_every"))
        if differ:
            raise Toon3dError(f"{self.dir} was started with other settings ({', '.join(differ)}); "
                              "resume with the same settings or use a new --out")
        if state.get("generator_fingerprint") != generator_fingerprint(self.loaded):
            raise Toon3dError(f"{self.dir} was trained for other generator weights; resume with the same --ckpt "
                              "or use a new --out")
        self.encoder.load_state_dict(state["encoder"])
        self.opt.load_state_dict(state["opt"])
        self.iteration = int(state["iteration"])
        self.history = json.loads(state["history"])
        self.train_seconds = float(state["train_seconds"])

    # ---- training ----
    def lr_at(self, iteration: int) -> float:
        """Cosine decay from lr to lr·lr_final_fraction over cfg.iters."""
        t = min(1.0, iteration / self.cfg.iters)
        floor = self.cfg.lr_final_fraction
        return self.cfg.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))

    def step(self) -> float:
        """One optimisation step on iteration `self.iteration`'s batch → its loss."""
        rng = iteration_rng(self.cfg.seed, self.iteration)
        images, w = render_samples(self.generator, rng, self.cfg.batch, self.cfg.noise_mode, self.device)
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(self.iteration)
        loss = standardized_error(self.encoder(images), w, self.encoder.w_std).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.iteration += 1
        return float(loss.detach())

    def evaluate(self) -> dict[str, float]:
        """Held-out figures: standardised W error, and PSNR of G(Ê(x)) against x (same noise)."""
        return evaluate_encoder(self.encoder, self.generator, self.cfg.eval_count, self.cfg.noise_mode, self.device)

    def train(self, until: int | None = None, max_minutes: float | None = None, progress: bool = True) -> bool:
        """Train to `until` (default cfg.iters) or until the run has used max_minutes of CPU time in its
        training steps (counted over resumes); True when finished."""
        from tqdm import tqdm

        until = self.cfg.iters if until is None else until
        bar = tqdm(total=until, initial=self.iteration, disable=not progress, desc="encoder", dynamic_ncols=True)
        try:
            while self.iteration < until:
                t0 = time.process_time()
                loss = self.step()
                self.train_seconds += time.process_time() - t0
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}")
                it = self.iteration
                if it % self.cfg.eval_every == 0 or it == until:
                    figures = self.evaluate()
                    figures.update(iteration=it, train_loss=round(loss, 5),
                                   train_minutes=round(self.train_seconds / 60, 2))
                    self.history.append(figures)
                out_of_time = max_minutes is not None and self.train_seconds > 60 * max_minutes
                if it % self.cfg.ckpt_every == 0 or it == until or out_of_time:
                    self.save()
                if out_of_time:
                    return False
        finally:
            bar.close()
        return True


@torch.no_grad()
def evaluate_encoder(encoder: LatentEncoder, generator: nn.Module, count: int, noise_mode: str = "random",
                     device: torch.device | str = "cpu") -> dict[str, float]:
    """On `count` held-out samples (EVAL_SEED): mean standardised W error and PSNR (dB, [-1,1] images) of the
    re-rendered prediction with the sample's own noise."""
    rng = torch.Generator().manual_seed(EVAL_SEED)
    was_training = encoder.training
    encoder.eval()
    errors, psnrs = [], []
    for start in range(0, count, 32):
        n = min(32, count - start)
        z = torch.randn(n, generator.style_dim, generator=rng)
        noise = [torch.randn(n, 1, *b.shape[2:], generator=rng).to(device) for b in generator.noise_buffers()]
        if noise_mode != "random":
            noise = None
        w = generator.style(z.to(device))
        images = generator.synthesis(w[:, None].repeat(1, generator.n_latent, 1), noise=noise).clamp(-1, 1)
        pred = encoder(images)
        again = generator.synthesis(pred[:, None].repeat(1, generator.n_latent, 1), noise=noise).clamp(-1, 1)
        errors.append(standardized_error(pred, w, encoder.w_std))
        psnrs.append(psnr(again, images))
    encoder.train(was_training)
    return {"w_error": round(float(torch.cat(errors).mean()), 5), "psnr_db": round(float(torch.cat(psnrs).mean()), 3)}


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per sample of images [B,3,H,W] in [-1,1] (peak-to-peak 2) → [B]."""
    mse = (a - b).pow(2).mean((1, 2, 3)).clamp_min(1e-12)
    return 10 * torch.log10(4.0 / mse)


def export_encoder(run: EncoderRun, path: str | os.PathLike, command: str, half: bool = False) -> Path:
    """Write the run's encoder with its provenance (generator, fingerprint, figures) as a model file."""
    meta = {"generator": str(run.loaded.source), "generator_fingerprint": generator_fingerprint(run.loaded),
            "generator_config": dict(run.loaded.config), "iteration": run.iteration, "command": command,
            "train_minutes": round(run.train_seconds / 60, 2), "config": asdict(run.cfg),
            "heldout": run.history[-1] if run.history else {}}
    return save_encoder(path, run.encoder.cpu(), meta, half=half)


def ship_encoder(source: str | os.PathLike, name: str, weights_dir: str | os.PathLike, phases: list[dict],
                 figures: dict, notes: str = "", machine: str | None = None) -> list[Path]:
    """Write `<name>.safetensors` (fp16 encoder, provenance kept) and its model card `<name>.md` in weights_dir.

    `phases` lists the training phases, each {"what", "command", "iterations", "minutes", "data"}.
    """
    from toon3d.train.ship import machine_description, write_card

    weights_dir = Path(weights_dir)
    if not weights_dir.is_dir():
        raise Toon3dError(f"{weights_dir} is not a folder; pass the package's toon3d/weights")
    encoder, meta = load_encoder(source)
    meta = {**meta, "name": name, "phases": phases, "figures": figures,
            "machine": machine or machine_description()}
    path = save_encoder(weights_dir / f"{name}.safetensors", encoder, meta, half=True)
    card = write_card(weights_dir / f"{name}.md", name, {"kind": ENCODER_KIND, **encoder.config}, meta, [path], notes)
    return [path, card]
