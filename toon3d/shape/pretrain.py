"""Unsup3d-style joint pretraining of the depth, albedo, view and light networks on many images.

GAN2Shape (and the seed code's `3D_pretrained_disney.pth`) start every per-image reconstruction
from such a model; alone it is the "instant" reconstructor (one forward pass per image). The
images come from a data folder or from samples of a generator, never from ground truth.

Loss per batch (Unsup3d, Wu et al. 2020): with the reconstruction R and the reconstruction of the
mirrored depth and albedo R_f, both scored over the pixels valid in both,

    L = L1(R) + λ_f·L1(R_f) + λ_p·(P(R) + λ_f·P(R_f)) + λ_s·(S(d) + S(diffuse)),   λ_f = 0.5, λ_p = 1,

where with confidence maps each L1/P term is the Laplacian negative log-likelihood
|Δ|·√2/σ + log σ with σ from `ConfidenceNet` (so the value can be negative). P is the
perceptual distance (`toon3d.shape.losses`: VGG16 when supplied, else the dlib substitute), and
S the second-order smoothness GAN2Shape adds to every step (λ_s = 0.01; 0 gives Unsup3d's loss).
Before the first iteration the depth net is fitted to the layout's ellipsoid prior (GAN2Shape's
depth initialisation). An optional warm-up (`warmup_iters`) then trains A, L and the confidence
net alone, D held at that fit and V at the frontal view (GAN2Shape's step 1): at CPU budgets the
albedo otherwise stays a mean face while the depth darkens the rim to explain hair and outlines.
Adam (lr 1e-4, weight decay 5e-4) over D, A, V, L and the confidence net.

A run folder holds config.json (settings and every command), state.pt (atomic; an exact
`--resume`), figures.jsonl, tb/ (TensorBoard scalars and image sheets), samples/*.png and, at
the end, model.safetensors (D, A, V, L: `toon3d.shape.instant`). Batches are a function of
(seed, iteration) or of the data stream's saved position, so a resumed run repeats exactly the
iterations an uninterrupted one would.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from toon3d.errors import Toon3dError
from toon3d.shape.confidence import ConfidenceNet
from toon3d.shape.losses import PerceptualDistance, recon_loss, smoothness2
from toon3d.shape.prior import PRIOR_SCHEDULES
from toon3d.shape.networks import ShapeNetConfig, ShapeNets
from toon3d.shape.settings import BUILTIN_PRIOR_NEAR
from toon3d.shape.photo_geometry import Decomposition, GeometrySettings, decompose, reconstruct
from toon3d.shape.renderer import Renderer

RUN_KIND = "toon3d-shape-pretrain"
SOURCES = ("folder", "generator")
PREVIEW_COUNT = 6
# Top of the head in the toon3d layout: the eye line sits about halfway between it and the chin.
HEAD_TOP_Y = 0.10


@dataclass
class PretrainConfig:
    """Settings of one pretraining run (defaults: the CPU recipe of the shipped reconstructors)."""

    source: str = "folder"          # "folder" (a FaceDataset) or "generator" (samples of a generator)
    data: str = ""                  # the folder, or the generator (base, cartoon, toon or a file)
    size: int = 64
    nf: int = 16                    # D and A width
    nf_vl: int = 8                  # V and L width
    zdim: int = 128
    nf_conf: int = 16
    batch: int = 8
    iters: int = 3000
    lr: float = 1e-4
    # learning-rate multipliers of (depth, albedo, view, light, confidence); all 1 = Unsup3d
    lr_mults: tuple[float, float, float, float, float] = (1.0, 1.0, 1.0, 1.0, 1.0)
    weight_decay: float = 5e-4
    lam_perc: float = 1.0
    lam_flip: float = 0.5
    lam_smooth: float = 0.01        # GAN2Shape's λ_smooth on smoothness2(depth) + smoothness2(diffuse); 0 = Unsup3d
    lam_pseudo: float = 0.0         # weight of the re-posed, re-lit pseudo samples' reconstruction (0 = Unsup3d)
    face_region: bool = False       # score only the layout's face box (the backdrop does not turn with the head)
    # The first warmup_iters iterations train A, L (and C) only: D stays at its prior fit and V at the frontal
    # view (GAN2Shape's step 1), so the albedo learns the faces before shading and pose can explain them away.
    warmup_iters: int = 0
    confidence: bool = True
    perceptual: str = "dlib"
    truncation: float = 1.0         # generator samples: truncation psi
    pixel_offset: float = 0.0       # the built-in worlds render at pixel centres
    seed: int = 0
    ckpt_every: int = 100
    sample_every: int = 250
    eval_every: int = 250
    eval_data: str | None = None    # a held-out ground-truth folder scored during training (SIDE/MAD)
    eval_count: int = 64
    prior_steps: int = 600          # fit D to the ellipsoid prior before training (GAN2Shape's init); 0 = none
    prior_lr: float = 1e-3
    prior_schedule: str = "cosine"  # rate decayed to 0: a constant rate leaves stripes (prior.fit_depth_to)
    prior_centre: bool = True       # fit the prior shifted so the mean-centred depth net holds it exactly
    # the ellipsoid's near depth: the built-in layout's calibrated relief (toon3d.shape.settings)
    prior_near: float = BUILTIN_PRIOR_NEAR

    def check(self) -> None:
        """Raise a one-line Toon3dError on impossible settings."""
        if self.source not in SOURCES:
            raise Toon3dError(f"source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        if not self.data:
            raise Toon3dError("no training images: pass --data FOLDER or --ckpt GENERATOR")
        if self.batch < 1 or self.iters < 1:
            raise Toon3dError(f"batch and iters must be positive, got batch {self.batch}, iters {self.iters}")
        if self.size < 16 or self.size & (self.size - 1):
            raise Toon3dError(f"--size must be a power of two ≥ 16, got {self.size}")
        for name in ("nf", "nf_vl", "nf_conf"):
            value = getattr(self, name)
            # GroupNorm groups come in 16s per width: widths must be 8 or a multiple of 16.
            if value < 1 or (value > 8 and value % 16):
                raise Toon3dError(f"--{name.replace('_', '-')} must be 1-8 or a multiple of 16, got {value}")
        if len(self.lr_mults) != 5 or min(self.lr_mults) <= 0:
            raise Toon3dError(f"--lr-mults takes 5 positive numbers (depth albedo view light confidence), "
                              f"got {list(self.lr_mults)}")
        if (self.lr <= 0 or self.lam_flip < 0 or self.lam_perc < 0 or self.lam_smooth < 0
                or self.lam_pseudo < 0):
            raise Toon3dError("lr must be positive and the loss weights non-negative")
        if self.warmup_iters < 0:
            raise Toon3dError(f"--warmup-iters must be ≥ 0, got {self.warmup_iters}")
        if self.prior_steps < 0 or self.prior_lr <= 0:
            raise Toon3dError("--prior-steps must be ≥ 0 and --prior-lr positive")
        if self.prior_schedule not in PRIOR_SCHEDULES:
            raise Toon3dError(f"--prior-schedule must be one of {', '.join(PRIOR_SCHEDULES)}, "
                              f"got {self.prior_schedule!r}")
        if min(self.ckpt_every, self.sample_every, self.eval_every) < 1:
            raise Toon3dError("--ckpt-every, --sample-every and --eval-every must be at least 1")

    def geometry(self) -> GeometrySettings:
        """The photo-geometric settings of this run."""
        return GeometrySettings(self.size, pixel_offset=self.pixel_offset)

    def net_config(self) -> ShapeNetConfig:
        """Sizes of D, A, V, L (the latent encoder is not trained here; kept minimal)."""
        return ShapeNetConfig(size=self.size, nf=self.nf, nf_vl=self.nf_vl, zdim=self.zdim, nf_encoder=4,
                              latent_dim=8)


def iteration_generator(seed: int, iteration: int) -> torch.Generator:
    """The torch.Generator that draws iteration `iteration`'s samples (identical on resume)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + iteration * 7_919 + 17) % (2 ** 63 - 1))


class FolderImages:
    """Batches [B,3,S,S] in [-1,1] from a FaceDataset folder (random flips, seeded epoch order)."""

    def __init__(self, folder: str, size: int, batch: int, seed: int) -> None:
        from toon3d.train.data_stream import ImageStream
        from toon3d.train.session import open_dataset

        self.stream = ImageStream(open_dataset(folder, size, resize=True, seed=seed), batch, seed=seed)
        self.description = f"folder {folder} ({len(self.stream.dataset)} images)"

    def next(self, iteration: int) -> torch.Tensor:
        return self.stream.next()

    def state_dict(self) -> dict:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state)


class GeneratorImages:
    """Batches [B,3,S,S] in [-1,1] sampled from a generator: z and noise drawn from (seed, iteration)."""

    def __init__(self, spec: str, size: int, batch: int, seed: int, truncation: float = 1.0) -> None:
        from toon3d.models import resolve_generator

        self.loaded = resolve_generator(spec)
        self.loaded.generator.eval().requires_grad_(False)
        self.size, self.batch, self.seed, self.truncation = size, batch, seed, truncation
        self.description = f"generator {self.loaded.source}, truncation {truncation}"

    @torch.no_grad()
    def next(self, iteration: int) -> torch.Tensor:
        from toon3d.stylegan2.sampling import synthesize, truncate

        g = self.loaded.generator
        rng = iteration_generator(self.seed, iteration)
        z = torch.randn(self.batch, g.style_dim, generator=rng)
        w = truncate(g.mapping(z), self.loaded.mean_latent, self.truncation)
        streams = [torch.Generator().manual_seed(int(torch.randint(0, 2 ** 62, (1,), generator=rng)))
                   for _ in range(self.batch)]
        images = synthesize(g, w, noise_mode="random", streams=streams).clamp(-1, 1)
        if images.shape[-1] != self.size:
            images = F.interpolate(images, size=(self.size, self.size), mode="bilinear", antialias=True,
                                   align_corners=False)
        return images

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def open_source(cfg: PretrainConfig):
    """The image source a config names."""
    if cfg.source == "folder":
        return FolderImages(cfg.data, cfg.size, cfg.batch, cfg.seed)
    return GeneratorImages(cfg.data, cfg.size, cfg.batch, cfg.seed, cfg.truncation)


def layout_face_mask(size: int) -> torch.Tensor:
    """[S,S] bool: the face box of the toon3d layout (head top to chin, cheek to cheek)."""
    from toon3d.synth import layout

    mask = torch.zeros(size, size, dtype=torch.bool)
    top = round(HEAD_TOP_Y * size)
    bottom = round(layout.CHIN_Y * size)
    left = round((layout.FACE_CENTER_X - layout.FACE_HALF_WIDTH) * size)
    right = round((layout.FACE_CENTER_X + layout.FACE_HALF_WIDTH) * size)
    mask[top:bottom + 1, left:right + 1] = True
    return mask


def layout_prior_depth(size: int, near: float | None = None) -> torch.Tensor:
    """[S,S] in [near, 1.02]: the ellipsoid prior of the layout's face box, what `fit_prior` fits D to.

    `near` defaults to the built-in layout's calibrated value (`settings.BUILTIN_PRIOR_NEAR`), the
    prior the `cpu` preset starts from and the baseline a shipped reconstructor must beat.
    """
    from toon3d.shape.prior import ellipsoid_depth

    return ellipsoid_depth(layout_face_mask(size), "box", near=BUILTIN_PRIOR_NEAR if near is None else near)


def prior_decomposition(images: torch.Tensor, geometry: GeometrySettings) -> Decomposition:
    """The layout prior as factors of images [B,3,S,S]: border-clamped prior depth, frontal view, mean light,
    grey albedo; the baseline an instant reconstructor must beat (SIDE/MAD of the prior alone)."""
    from toon3d.shape.photo_geometry import canonical_view, mean_light

    b, s = images.shape[0], geometry.size
    raw = layout_prior_depth(s).to(images).expand(b, s, s).clone()
    depth = raw.clone()
    k = geometry.border_columns
    if k > 0:
        depth[..., :k] = geometry.border_depth
        depth[..., -k:] = geometry.border_depth
    return Decomposition(depth, raw, torch.zeros_like(images), canonical_view(b, images), mean_light(b, geometry, images))


def build_nets(cfg: PretrainConfig) -> tuple[ShapeNets, ConfidenceNet | None]:
    """Fresh networks of cfg's sizes, weights drawn from cfg.seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        nets = ShapeNets(cfg.net_config())
        conf = ConfidenceNet(cfg.size, cfg.nf_conf, cfg.zdim) if cfg.confidence else None
    return nets, conf


def trained_parameters(nets: ShapeNets, conf: ConfidenceNet | None) -> list[torch.nn.Parameter]:
    """D, A, V, L (and the confidence net): everything pretraining optimises; never the latent encoder."""
    params = [p for part in (nets.depth, nets.albedo, nets.view, nets.light) for p in part.parameters()]
    return params + (list(conf.parameters()) if conf is not None else [])


def make_optimizer(nets: ShapeNets, conf: ConfidenceNet | None, cfg: PretrainConfig) -> torch.optim.Adam:
    """Adam (betas 0.9/0.999, cfg.weight_decay): one parameter group per trained net, lr × cfg.lr_mults.

    Groups in order depth, albedo, view, light (, confidence). V and L start with outputs near 0 (a
    frontal view, the mean light) and the albedo net from a blur: at Unsup3d's lr they barely moved in
    the first thousand CPU iterations, while a higher lr on D striped the depth (docs/shape.md).
    """
    parts = [nets.depth, nets.albedo, nets.view, nets.light] + ([conf] if conf is not None else [])
    groups = [{"params": list(part.parameters()), "lr": cfg.lr * mult} for part, mult in zip(parts, cfg.lr_mults)]
    return torch.optim.Adam(groups, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)


@torch.no_grad()
def render_pseudo(dec: Decomposition, renderer: Renderer, geometry: GeometrySettings, rng: torch.Generator
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's current factors re-lit and re-posed at random (GAN2Shape's pseudo samples, one per image):
    images [B,3,S,S] in [-1,1] and valid masks [B,1,S,S]. Views from `pseudo.default_view_prior`, lights from
    GAN2Shape's uniform ranges (`pseudo.LightRanges`); draws come from `rng`."""
    from toon3d.shape.photo_geometry import view_rt
    from toon3d.shape.pseudo import LightRanges, default_view_prior, view_units_to_pose

    b = dec.depth.shape[0]
    ranges = LightRanges()
    u = torch.rand(3, b, generator=rng).to(dec.depth)
    light = torch.stack([dec.light[:, 0], dec.light[:, 1], ranges.x0 + (ranges.x1 - ranges.x0) * u[0],
                         ranges.y0 + (ranges.y1 - ranges.y0) * u[1]], dim=1)
    strength = ranges.r0 + (ranges.r1 - ranges.r0) * u[2]
    texture = renderer.relight(dec.albedo, dec.depth, light, strength, ranges.ambient_shift)
    view = view_units_to_pose(default_view_prior(geometry.rot_range_deg).sample(b, rng).to(dec.depth), geometry)
    image, mask, _ = renderer.render_view(texture, dec.depth, *view_rt(view))
    return image, mask


def pretrain_loss(nets: ShapeNets, conf: ConfidenceNet | None, images: torch.Tensor, geometry: GeometrySettings,
                  renderer: Renderer, perceptual: PerceptualDistance | None, lam_perc: float = 1.0,
                  lam_flip: float = 0.5, lam_smooth: float = 0.0, lam_pseudo: float = 0.0,
                  rng: torch.Generator | None = None, region: torch.Tensor | None = None,
                  train_depth: bool = True, train_view: bool = True
                  ) -> tuple[dict[str, torch.Tensor], Decomposition]:
    """Unsup3d's loss (+ λ_smooth·L_smooth, + λ_pseudo·L_pseudo) of images [B,3,S,S] in [-1,1] → ({'total', 'l1',
    'l1_flip', 'perc', 'perc_flip', 'smooth', 'pseudo'} plus the detached monitors 'l1_plain' and
    'mask_fraction', factors).

    `region` [1,1,S,S] in [0,1] (or None) multiplies the mask of the image terms: the built-in worlds
    paint a flat backdrop that stays put when the head turns, which a turned depth map cannot
    reproduce, so scoring it holds the view net at the frontal view.

    L_pseudo (GAN2Shape's step-3 idea without the GAN projection): each image's factors rendered at a
    random view and light (`render_pseudo`, no gradient) must be reconstructed from the image's depth
    and albedo with V and L of the pseudo image, so V and L learn views and lights they can check.

    `train_depth=False` runs D without gradient, `train_view=False` uses the frontal view instead of V
    (the warm-up of `PretrainConfig.warmup_iters`).
    """
    dec = decompose(nets, images, geometry, depth=train_depth, view=train_view)
    rec = reconstruct(renderer, dec)
    rec_flip = reconstruct(renderer, dec, flip=True)
    s_l1 = s_perc = None
    if conf is not None:
        s_l1, s_perc = conf(images)
    pick = (lambda s, i: None if s is None else s[:, i:i + 1])
    area = (lambda m: m if region is None else m * region.to(m))
    plain = recon_loss(rec, images, perceptual, lam_perc, extra_mask=area(rec_flip.mask),
                       sigma_l1=pick(s_l1, 0), sigma_perc=pick(s_perc, 0))
    mirrored = recon_loss(rec_flip, images, perceptual, lam_perc, extra_mask=area(rec.mask),
                          sigma_l1=pick(s_l1, 1), sigma_perc=pick(s_perc, 1))
    smooth = smoothness2(dec.depth) + smoothness2(rec.diffuse)
    total = plain["total"] + lam_flip * mirrored["total"] + lam_smooth * smooth
    pseudo = total.new_zeros(())
    if lam_pseudo:
        if rng is None:
            raise Toon3dError("the pseudo-sample loss needs a torch.Generator for its random views")
        pseudo_images, pseudo_mask = render_pseudo(dec.detach(), renderer, geometry, rng)
        posed = decompose(nets, pseudo_images, geometry, depth=False, albedo=False,
                          fixed_depth=dec.depth, fixed_albedo=dec.albedo)
        # fixed_* are detached by decompose; reattach the input's depth and albedo (GAN2Shape trains D and A here too).
        posed = Decomposition(dec.depth, dec.raw_depth, dec.albedo, posed.view, posed.light)
        pseudo = recon_loss(reconstruct(renderer, posed), pseudo_images, perceptual, lam_perc,
                            extra_mask=pseudo_mask)["total"]
        total = total + lam_pseudo * pseudo
    mask = area(rec.mask * rec_flip.mask).detach()
    # Monitoring only: the plain masked L1 (without σ, which makes the loss terms negative) and
    # the share of valid pixels (a view that pushes the face out of frame shows here first).
    with torch.no_grad():
        plain_l1 = (rec.image - images).abs().mul(mask).sum() / (mask.sum() * 3).clamp_min(1e-7)
    return {"total": total, "l1": plain["l1"], "l1_flip": mirrored["l1"], "perc": plain["perc"],
            "perc_flip": mirrored["perc"], "smooth": smooth, "pseudo": pseudo, "l1_plain": plain_l1, "mask_fraction": mask.mean()}, dec


class PretrainRun:
    """One pretraining run in a folder: build, step, checkpoint, resume, evaluate, export."""

    def __init__(self, run_dir: str | Path, cfg: PretrainConfig, perceptual: PerceptualDistance | None,
                 device: torch.device | str = "cpu", source=None) -> None:
        cfg.check()
        self.dir = Path(run_dir)
        self.cfg = cfg
        self.device = torch.device(device)
        self.geometry = cfg.geometry()
        self.renderer = Renderer(self.geometry.renderer_settings(), device=self.device)
        self.perceptual = perceptual.to(self.device) if perceptual is not None else None
        if cfg.lam_perc and self.perceptual is None:
            raise Toon3dError("lam_perc > 0 needs a perceptual network; pass --perceptual dlib|vgg or --lam-perc 0")
        self.source = source if source is not None else open_source(cfg)
        self.nets, self.conf = build_nets(cfg)
        self.nets.to(self.device)
        if self.conf is not None:
            self.conf.to(self.device)
        self.opt = make_optimizer(self.nets, self.conf, cfg)
        self.iteration = 0
        self.train_seconds = 0.0
        self.history: list[dict] = []
        self.prior_fitted = False
        self.prior_losses: list[float] = []
        self._eval_set = None

    # ---- persistence --------------------------------------------------------------------
    def state_path(self) -> Path:
        return self.dir / "state.pt"

    def save(self) -> None:
        """Write everything an exact resume needs, atomically."""
        from toon3d.io.checkpoint import save_training_state

        save_training_state(self.state_path(), {
            "kind": RUN_KIND, "config": json.dumps(asdict(self.cfg), sort_keys=True),
            "nets": self.nets.state_dict(), "conf": self.conf.state_dict() if self.conf is not None else {},
            "opt": self.opt.state_dict(), "iteration": self.iteration, "source": self.source.state_dict(),
            "history": json.dumps(self.history), "train_seconds": self.train_seconds,
            "prior_fitted": self.prior_fitted, "prior_losses": json.dumps(self.prior_losses)})

    def load(self) -> None:
        """Restore from state.pt; a folder of another config is a one-line error."""
        from toon3d.io.checkpoint import load_training_state
        from toon3d.train.gan import changed_settings

        state = load_training_state(self.state_path())
        if state.get("kind") != RUN_KIND:
            raise Toon3dError(f"{self.state_path()} is not a 3D pretraining run; pass the folder of a train-shape run")
        differ = changed_settings(state["config"], self.cfg,
                                  ("iters", "ckpt_every", "sample_every", "eval_every", "eval_data", "eval_count"))
        if differ:
            raise Toon3dError(f"{self.dir} was started with other settings ({', '.join(differ)}); "
                              "resume with the same settings or use a new --out")
        self.nets.load_state_dict(state["nets"])
        if self.conf is not None:
            self.conf.load_state_dict(state["conf"])
        self.opt.load_state_dict(state["opt"])
        self.iteration = int(state["iteration"])
        self.source.load_state_dict(state["source"])
        self.history = json.loads(state["history"])
        self.train_seconds = float(state["train_seconds"])
        self.prior_fitted = bool(state["prior_fitted"])
        self.prior_losses = json.loads(state["prior_losses"])

    # ---- training -----------------------------------------------------------------------
    def step(self) -> dict[str, torch.Tensor]:
        """One optimisation step on iteration `self.iteration`'s batch; returns detached losses."""
        images = self.source.next(self.iteration).to(self.device)
        # The pseudo samples' draws depend only on (seed, iteration): a resumed run repeats them.
        rng = iteration_generator(self.cfg.seed + 7_777, self.iteration)
        region = layout_face_mask(self.cfg.size).to(images).view(1, 1, self.cfg.size, self.cfg.size) \
            if self.cfg.face_region else None
        joint = self.iteration >= self.cfg.warmup_iters
        losses, _ = pretrain_loss(self.nets, self.conf, images, self.geometry, self.renderer, self.perceptual,
                                  self.cfg.lam_perc, self.cfg.lam_flip, self.cfg.lam_smooth,
                                  self.cfg.lam_pseudo if joint else 0.0, rng, region,
                                  train_depth=joint, train_view=joint)
        self.opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        self.opt.step()
        self.iteration += 1
        return {k: v.detach() for k, v in losses.items()}

    def train(self, until: int | None = None, log=None, progress: bool = True) -> None:
        """Train to iteration `until` (default cfg.iters): checkpoints, sheets and evaluations on schedule."""
        from tqdm import tqdm

        until = self.cfg.iters if until is None else until
        if self.iteration == 0 and not self.prior_fitted and self.cfg.prior_steps:
            self.fit_prior(progress)
            self.save()
        bar = tqdm(total=until, initial=self.iteration, disable=not progress, desc="train-shape", dynamic_ncols=True)
        while self.iteration < until:
            t0 = time.perf_counter()
            losses = self.step()
            self.train_seconds += time.perf_counter() - t0
            it = self.iteration
            bar.update(1)
            bar.set_postfix(loss=f"{losses['total'].item():.3f}", l1=f"{losses['l1_plain'].item():.3f}")
            if log is not None:
                log.scalars(it, {f"train/{k}": v.item() for k, v in losses.items()})
            if self.cfg.eval_data and (it % self.cfg.eval_every == 0 or it == until):
                figures = self.evaluate()
                figures.update(iteration=it, train_minutes=round(self.train_seconds / 60, 2))
                self.history.append(figures)
                if log is not None:
                    log.scalars(it, {f"eval/{k}": v for k, v in figures.items()
                                     if k in ("side_x100", "mad_deg")})
                    log.figures(figures)
            if log is not None and (it % self.cfg.sample_every == 0 or it == until):
                log.images(it, "preview", self.preview())
            if it % self.cfg.ckpt_every == 0 or it == until:
                self.save()
        bar.close()

    def fit_prior(self, progress: bool = False) -> list[float]:
        """Fit D to the ellipsoid prior of the toon3d face layout on a fixed batch (GAN2Shape's depth init).

        Every built-in world draws its face at `toon3d.synth.layout`'s place, so one mask (the box
        from the top of the head to the chin, cheek to cheek) stands in for GAN2Shape's parsing mask.
        """
        from toon3d.shape.prior import fit_depth_to

        t0 = time.perf_counter()
        target = layout_prior_depth(self.cfg.size, self.cfg.prior_near).to(self.device)
        images = self.fixed_batch(self.cfg.batch)
        self.prior_losses = fit_depth_to(self.nets.depth, images, target, self.geometry, steps=self.cfg.prior_steps,
                                         lr=self.cfg.prior_lr, wd=self.cfg.weight_decay, progress=progress,
                                         schedule=self.cfg.prior_schedule, centre=self.cfg.prior_centre)
        self.train_seconds += time.perf_counter() - t0
        self.prior_fitted = True
        return self.prior_losses

    def fixed_batch(self, n: int) -> torch.Tensor:
        """n images that do not depend on the training position: the data's first ones or seed-fixed samples."""
        if isinstance(self.source, GeneratorImages):
            return self.source.next(-1)[:n].to(self.device)
        if isinstance(self.source, FolderImages):
            from toon3d.data.dataset import FaceDataset

            data = FaceDataset(self.cfg.data, size=self.cfg.size, flip=False, load_gt=False)
            return torch.stack([data[i]["image"] for i in range(min(n, len(data)))]).to(self.device)
        return self.source.next(0)[:n].to(self.device)

    # ---- figures ------------------------------------------------------------------------
    def eval_set(self):
        """The held-out ground-truth images (loaded once)."""
        from toon3d.shape.depth_eval import load_ground_truth

        if self._eval_set is None:
            self._eval_set = load_ground_truth(self.cfg.eval_data, self.cfg.eval_count, self.cfg.size)
        return self._eval_set

    def evaluate(self) -> dict[str, float]:
        """SIDE (×100) and MAD of the instant prediction on the held-out ground-truth set."""
        from toon3d.shape.depth_eval import score_view_depth, summarise
        from toon3d.shape.instant import instant_reconstruct

        gt = self.eval_set()
        dec = instant_reconstruct(self.nets, gt.images.to(self.device), self.geometry)
        return summarise(score_view_depth(dec, gt, self.geometry))

    @torch.no_grad()
    def preview(self) -> torch.Tensor:
        """Sheet [3,H,W] of fixed images: input, reconstructions, albedo, depth, shading, rotations."""
        from toon3d.shape.instant import instant_reconstruct
        from toon3d.shape.preview import preview_grid

        images = self.preview_images()
        dec = instant_reconstruct(self.nets, images, self.geometry)
        return preview_grid(images, dec, self.renderer)

    def preview_images(self) -> torch.Tensor:
        """The same PREVIEW_COUNT images at every call: held-out ones if there are, else seed-fixed samples."""
        if self.cfg.eval_data:
            return self.eval_set().images[:PREVIEW_COUNT].to(self.device)
        return self.fixed_batch(PREVIEW_COUNT)

    def export(self, path: str | Path, command: str) -> Path:
        """Write D, A, V, L as a shape model file (float32) with the run's provenance."""
        from toon3d.shape.instant import save_shape_model

        meta = {"recipe": "unsup3d-joint-pretraining", "iteration": self.iteration, "command": command,
                "train_minutes": round(self.train_seconds / 60, 2), "config": asdict(self.cfg),
                "data": self.source.description, "heldout": self.history[-1] if self.history else {}}
        return save_shape_model(path, self.nets.cpu(), self.geometry, meta)
