"""Settings of one GAN2Shape-style reconstruction (stage 3) and its named presets.

One dataclass, `ReconstructionSettings`, holds everything that decides a reconstruction: image
size, cycle schedule, batch sizes, optimiser, loss weights and switches, pseudo-sample ranges,
mapping-tail split, ellipsoid prior and the 3D networks' widths. `preset(name)` returns one of

- `paper`: 256 px, 4 stages of 700/700/600 then 200/500/400 iterations (the seed's disney
  schedule), batch 8, 100 collect iterations, every loss of the paper on (L_sym in steps 1 and
  3, L_id, VGG perceptual). For a GPU.
- `released`: the seed's released 3D config (`disney.yml`): the paper preset with symmetry off,
  no identity loss and the seed's prior far depth 1.0.
- `cpu`: what 2 CPU cores finish in under 3 minutes (about 30 s measured) per 64 px image of the built-ins:
  narrow networks (the shipped reconstructors' widths), one short cycle, batch 4, 4 collect
  iterations, the dlib perceptual substitute, the pretrained reconstructor's A, V, L and E with the
  image's own ellipsoid prior as D's residual start (`depth_start="residual"`), its mask moved to the
  canonical frame of the view net's start view (`prior_frame="canonical"`).
- `tiny`: tests (32 px, steps 2/2/2, 1 stage, networks a few channels wide).

`check()` validates every field with a one-line `Toon3dError`; `changed_settings` names what
differs between a checkpoint's settings and these (a resume into other settings is refused).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace

from toon3d.errors import Toon3dError
from toon3d.shape.networks import ShapeNetConfig
from toon3d.shape.photo_geometry import GeometrySettings
from toon3d.shape.prior import DEPTH_STARTS, PRIOR_FRAMES, PRIOR_KINDS, PRIOR_SCHEDULES

STEP_NAMES = ("step1", "step2", "step3")
PERCEPTUAL_KINDS = ("vgg", "dlib", "none")
DIS_FEATURE_KINDS = ("discriminator", "perceptual")
# The mapping depth GAN2Shape's F1_d values are counted on (StyleGAN2's 8-layer mapping).
REFERENCE_MAPPING_DEPTH = 8


@dataclass(frozen=True)
class ReconstructionSettings:
    """Everything that decides one reconstruction (REFERENCE §6.2-6.8, SPEC Stage 3).

    Schedule: `num_stages` cycles of step1 → step2 → step3; stage 0 runs `stage0_steps`
    iterations of each step, later stages `later_steps`. `flip1[k]` / `flip3[k]` switch the
    symmetry loss L_sym in step 1 / step 3 of stage k. `f1_d` is GAN2Shape's mapping-tail
    split counted on a `f1_d_of`-layer mapping; it is rescaled to the generator's own depth
    (`tail_layers`). `truncation` ψ scales the encoder's offset: G(w + ψ·Δw) with w the
    (already truncated) latent of the image, which equals GAN2Shape's G(trunc_ψ(w_raw + Δw)).
    """

    image_size: int = 256
    num_stages: int = 4
    stage0_steps: tuple[int, int, int] = (700, 700, 600)
    later_steps: tuple[int, int, int] = (200, 500, 400)
    batch_size: int = 8
    collect_iters: int = 100
    flip1: tuple[bool, ...] = (True, True, True, True)
    flip3: tuple[bool, ...] = (True, True, True, True)
    identity: bool = True
    perceptual: str = "vgg"
    smooth: bool = True
    # Adam learning rate of (step1, step2, step3); GAN2Shape uses 1e-4 for all.
    lr: tuple[float, float, float] = (1e-4, 1e-4, 1e-4)
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 5e-4
    lam_perc: float = 0.5
    lam_smooth: float = 0.01
    lam_regular: float = 0.01
    lam_id: float = 1.0
    view_scale: float = 1.0
    f1_d: int = 2
    f1_d_of: int = REFERENCE_MAPPING_DEPTH
    truncation: float = 0.7
    relative_enc: bool = False
    use_mask: bool = True
    # Pseudo-sample lights: dx ~ U(x0,x1), dy ~ U(y0,y1), r ~ U(r0,r1), ambient shift α.
    rand_light: tuple[float, ...] = (-1.0, 1.0, -0.2, 0.8, -0.1, 0.6, -0.6)
    dis_features: str = "discriminator"
    dis_blocks: int = 4
    # Ellipsoid prior (§6.6): the seed's category "cartoon" matches none of GAN2Shape's bounding-box
    # adjustments ("box"); the seed's mask threshold 0.3. Far depth: GAN2Shape's 1.02, not the
    # seed's 1.0. The depth net's output is mean-centred before its tanh, so its atanh-space values
    # sum to zero; a prior with a 1.0 background (atanh 0) and a nearer face has a negative sum
    # and cannot be fitted (MSE plateaus at ~2e-4 on our 64 px layout, 6e-6 with 1.02).
    prior_kind: str = "box"
    prior_mask_threshold: float = 0.3
    prior_near: float = 0.91
    prior_far: float = 1.02
    prior_radius: float = 0.4
    prior_fit_steps: int = 1000
    prior_lr: float = 1e-4
    prior_schedule: str = "constant"   # or "cosine" (toon3d.shape.prior.fit_depth_to)
    prior_centre: bool = False         # fit the prior shifted so the mean-centred depth net holds it exactly
    # Fit D to this image's mask prior even when a pretrained reconstructor gives a depth net (GAN2Shape
    # fits the prior per image; the pretrained A, V, L and E are kept).
    prior_refit: bool = False
    # How D starts from the prior: "fit" trains it to the prior (GAN2Shape); "residual" zeroes D's
    # output layer and adds this image's prior as a fixed offset to its raw output, so the depth
    # starts exactly at the prior and D learns a correction (toon3d.shape.prior.prior_offset). The
    # 16-channel D cannot hold some images' priors (stripes: MAD 35.5° against the prior's 23.1°
    # on SynFace test image 0); the offset needs no fit. Implies the per-image prior (prior_refit).
    depth_start: str = "fit"
    # The frame the prior's mask is read in (toon3d.shape.prior.PRIOR_FRAMES): "view" (GAN2Shape) or
    # "canonical": the mask moved to the canonical frame through the pretrained view net's start
    # view (its prediction on the input before any step), so a head the view net sees turned gets
    # its ellipsoid in the frame where L_sym holds. Without a pretrained view net it is "view".
    prior_frame: str = "view"
    # Photo-geometric model (§6.2 common values).
    fov_deg: float = 10.0
    min_depth: float = 0.9
    max_depth: float = 1.1
    rot_range_deg: float = 60.0
    trans_range: float = 0.1
    z_trans_range: float = 0.0
    pixel_offset: float = 0.5
    view_mean: tuple[float, ...] | None = None
    light_mean: tuple[float, ...] | None = None
    # 3D network widths (None: GAN2Shape's size rule); latent_dim comes from the generator.
    nf: int | None = None
    nf_vl: int | None = None
    zdim: int = 256
    nf_encoder: int = 32
    # Checkpoint every this many iterations inside a step (and always at a step's end).
    checkpoint_every: int = 50
    # The generator resolution pseudo-sample projections run at (None: the generator's full size,
    # GAN2Shape's, in every preset). A size below the generator's stops it after that block and adds
    # the full image's residual at the image's latent (toon3d.stylegan2.early_exit): 3.7x less work
    # for a 256 px generator at 64 px, but on the built-in base the corrected image still misses
    # ~60% of how an offset changes the image (benchmarks/bench_early_exit.py), so it is opt-in
    # (`--set projection_size=64`); never below image_size, whose detail the 3D stage uses.
    projection_size: int | None = None
    # Per-sample fit of each pseudo sample's latent offset after the encoder's projection (0: the
    # encoder alone, GAN2Shape). GAN2Shape trains E per image for hundreds of iterations; a CPU
    # budget trains it for tens, and the shipped E does not turn heads: on the built-in base its
    # projections of truly turned faces keep the input's yaw (slope 0.00), while fitting Δw to them
    # directly turns the head as asked (slope 0.95; benchmarks/bench_projection_views.py).
    projection_fit_steps: int = 0
    projection_fit_lr: float = 0.05

    # ---- derived -------------------------------------------------------------------------
    def steps_of(self, stage: int) -> tuple[int, int, int]:
        """Iterations of (step1, step2, step3) in `stage`."""
        return self.stage0_steps if stage == 0 else self.later_steps

    def total_iterations(self) -> int:
        """Training iterations of the whole schedule (without the prior fit and collection)."""
        return sum(self.stage0_steps) + (self.num_stages - 1) * sum(self.later_steps)

    def synthesis_size(self) -> int | None:
        """The resolution the projector stops the generator at (None: all blocks); at least image_size."""
        return None if self.projection_size is None else max(self.projection_size, self.image_size)

    def tail_layers(self, n_mlp: int) -> int:
        """F1_d on a mapping of `n_mlp` linear layers: round(f1_d · n_mlp / f1_d_of), at least 1."""
        if n_mlp < 1:
            raise Toon3dError(f"the generator's mapping has {n_mlp} layers; a StyleGAN2 mapping needs at least 1")
        return min(n_mlp, max(1, int(math.floor(self.f1_d * n_mlp / self.f1_d_of + 0.5))))

    def geometry(self) -> GeometrySettings:
        """The photo-geometric settings (camera, depth and view ranges, means) of this reconstruction."""
        border = 0.7 * self.max_depth + 0.3 * self.min_depth
        return GeometrySettings(self.image_size, fov_deg=self.fov_deg, min_depth=self.min_depth,
                                max_depth=self.max_depth, border_depth=border, rot_range_deg=self.rot_range_deg,
                                trans_range=self.trans_range, z_trans_range=self.z_trans_range,
                                view_mean=self.view_mean, light_mean=self.light_mean,
                                pixel_offset=self.pixel_offset)

    def net_config(self, latent_dim: int) -> ShapeNetConfig:
        """The 3D networks' sizes; E's output is the generator's w width `latent_dim`."""
        return ShapeNetConfig(size=self.image_size, nf=self.nf, nf_vl=self.nf_vl, zdim=self.zdim,
                              nf_encoder=self.nf_encoder, latent_dim=latent_dim)

    def as_dict(self) -> dict:
        """JSON-ready dict of every field (tuples as lists)."""
        return json.loads(json.dumps(asdict(self)))

    # ---- validation ----------------------------------------------------------------------
    def check(self) -> ReconstructionSettings:
        """Raise a one-line Toon3dError naming the first bad field; return self."""
        s = self.image_size
        if not isinstance(s, int) or s < 16 or s & (s - 1):
            raise Toon3dError(f"image_size must be a power of two ≥ 16, got {s}")
        if self.num_stages < 1:
            raise Toon3dError(f"num_stages must be at least 1, got {self.num_stages}")
        for name in ("stage0_steps", "later_steps"):
            value = getattr(self, name)
            if len(value) != 3 or any((not isinstance(v, int)) or v < 0 for v in value):
                raise Toon3dError(f"{name} must be 3 iteration counts ≥ 0 (step1, step2, step3), got {value}")
        for name in ("flip1", "flip3"):
            if len(getattr(self, name)) < self.num_stages:
                raise Toon3dError(f"{name} holds {len(getattr(self, name))} values for {self.num_stages} stages; "
                                  "give one per stage")
        for name in ("batch_size", "collect_iters", "checkpoint_every", "dis_blocks", "f1_d", "f1_d_of",
                     "zdim", "nf_encoder"):
            if getattr(self, name) < 1:
                raise Toon3dError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.f1_d > self.f1_d_of:
            raise Toon3dError(f"f1_d {self.f1_d} exceeds the mapping depth it is counted on ({self.f1_d_of})")
        if self.projection_fit_steps < 0 or not self.projection_fit_lr > 0:
            raise Toon3dError(f"projection_fit_steps must be ≥ 0 and projection_fit_lr > 0, got "
                              f"{self.projection_fit_steps} and {self.projection_fit_lr}")
        p = self.projection_size
        if p is not None and (not isinstance(p, int) or p < 4 or p & (p - 1)):
            raise Toon3dError(f"projection_size must be a power of two ≥ 4 or None (the full generator), got {p}")
        for name in ("nf", "nf_vl"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise Toon3dError(f"{name} must be at least 1 or None (the size rule), got {getattr(self, name)}")
        if self.perceptual not in PERCEPTUAL_KINDS:
            raise Toon3dError(f"perceptual must be one of {', '.join(PERCEPTUAL_KINDS)}, got {self.perceptual!r}")
        if self.dis_features not in DIS_FEATURE_KINDS:
            raise Toon3dError(f"dis_features must be one of {', '.join(DIS_FEATURE_KINDS)}, got {self.dis_features!r}")
        if self.prior_kind not in PRIOR_KINDS:
            raise Toon3dError(f"prior_kind must be one of {', '.join(PRIOR_KINDS)}, got {self.prior_kind!r}")
        if len(self.lr) != 3 or not all(v > 0 and math.isfinite(v) for v in self.lr):
            raise Toon3dError(f"lr must be 3 positive numbers (step1, step2, step3), got {self.lr}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise Toon3dError(f"betas must be two numbers in [0, 1), got {self.betas}")
        if self.depth_start not in DEPTH_STARTS:
            raise Toon3dError(f"depth_start must be one of {', '.join(DEPTH_STARTS)}, got {self.depth_start!r}")
        if self.prior_frame not in PRIOR_FRAMES:
            raise Toon3dError(f"prior_frame must be one of {', '.join(PRIOR_FRAMES)}, got {self.prior_frame!r}")
        if self.prior_schedule not in PRIOR_SCHEDULES:
            raise Toon3dError(f"prior_schedule must be one of {', '.join(PRIOR_SCHEDULES)}, "
                              f"got {self.prior_schedule!r}")
        if not (self.prior_lr > 0 and math.isfinite(self.prior_lr)):
            raise Toon3dError(f"prior_lr must be a positive number, got {self.prior_lr}")
        for name in ("weight_decay", "lam_perc", "lam_smooth", "lam_regular", "lam_id", "prior_fit_steps"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise Toon3dError(f"{name} must be a number ≥ 0, got {value}")
        if not (0 < self.truncation <= 1):
            raise Toon3dError(f"truncation must be in (0, 1], got {self.truncation}")
        if not (self.view_scale >= 0 and math.isfinite(self.view_scale)):
            raise Toon3dError(f"view_scale must be a number ≥ 0, got {self.view_scale}")
        if len(self.rand_light) != 7:
            raise Toon3dError(f"rand_light must hold 7 numbers (x0, x1, y0, y1, r0, r1, ambient shift), "
                              f"got {len(self.rand_light)}")
        x0, x1, y0, y1, r0, r1, _ = self.rand_light
        if not (x0 <= x1 and y0 <= y1 and r0 <= r1):
            raise Toon3dError(f"rand_light ranges must be (low, high) pairs, got {self.rand_light}")
        if not (0 < self.prior_mask_threshold <= 1):
            raise Toon3dError(f"prior_mask_threshold must be in (0, 1], got {self.prior_mask_threshold}")
        if not (self.min_depth <= self.prior_near < self.prior_far <= self.max_depth):
            raise Toon3dError(f"the prior needs min_depth ≤ prior_near < prior_far ≤ max_depth, got "
                              f"{self.prior_near}, {self.prior_far} in [{self.min_depth}, {self.max_depth}]")
        self.geometry()  # validates the geometry fields
        return self


def _paper() -> ReconstructionSettings:
    return ReconstructionSettings()


def _released() -> ReconstructionSettings:
    return replace(_paper(), flip1=(False,) * 4, flip3=(False,) * 4, identity=False, prior_far=1.0)


# The ellipsoid's relief (far − near) for the built-in worlds' layout. GAN2Shape's 0.11 suits
# faces that fill the frame (CelebA/FFHQ crops); our layout's face is about half the image wide
# (toon3d.synth.layout), so that relief is ~2.5x the true head's and the prior reads as a cone.
# Calibrated on 256 training renders of /work/data/toon64 with ground truth (SIDE×100 / MAD of
# the prior alone: near 0.91 → 2.24 / 34.9°, 0.975 → 0.91 / 23.1°; 256 held-out toon64_test
# renders: 2.26 / 34.7° → 0.90 / 23.1°). `tools/calibrate_prior.py` re-measures it.
# The prior fit runs 600 steps (not 200) with the rate decayed to 0 (cosine): a short or
# constant-rate fit leaves the depth net's transposed-conv stripes in the depth, which the
# step-3 iterations then amplify (toon renders 0-7, full row: MAD 41.1° at 200 steps → 35.7° at
# 600; normal error of the fit itself on 4 SynFace images: 18.1° constant → 3.2° cosine).
BUILTIN_PRIOR_NEAR = 0.975


def _cpu() -> ReconstructionSettings:
    # Sized on 2 shared cores for the 64 px built-ins (measured in docs/reconstruct.md): one cycle,
    # narrow networks (the widths of the shipped reconstructors, toon3d.shape.pretrain), few pseudo
    # samples; the built-in worlds render at pixel centres (pixel_offset 0). Steps 1 and 2 each train
    # one network for a few iterations, at 10× the reference rate. Step 3 runs at a tenth of the
    # reference rate, 1e-5: at 1e-4 the depth decoder of most SynFace images collapsed to a spatially
    # constant output (a flat plane at the depth midpoint) within 30 iterations (N=32: MAD 36.3° vs
    # 24.6° at 1e-5; more pseudo samples and iterations did not prevent it, docs/shape.md; 1e-3
    # flattened or distorted every depth). Step 1 runs 100 iterations: after 20 the
    # albedo of a built-in cartoon was still the albedo net's initial noise (seed 0 cartoon;
    # after 100 it is the face, for +12 s). D starts at the image's own mask prior as a residual
    # (session 10): from the shipped reconstructors' fixed layout ellipsoid the full row lost to
    # the prior by 10° MAD on Table II (34.8° vs 24.1°, N=32); from the residual start it ties it.
    # The prior's mask is read in the canonical frame of the start view (prior_frame="canonical"):
    # with the jointly pretrained reconstructors, whose view net reads the pose, the full row then
    # beats the prior (README, Table II); with a frontal view net it is the view frame's prior.
    return replace(_paper(), image_size=64, num_stages=1, stage0_steps=(100, 20, 30), later_steps=(10, 20, 20),
                   batch_size=4, collect_iters=4, flip1=(True,), flip3=(True,), perceptual="dlib",
                   lr=(1e-3, 1e-3, 1e-5),
                   prior_fit_steps=600, prior_lr=1e-3, prior_schedule="cosine", prior_centre=True,
                   prior_near=BUILTIN_PRIOR_NEAR,
                   depth_start="residual", prior_frame="canonical",
                   nf=16, nf_vl=8, zdim=128, nf_encoder=16, pixel_offset=0.0,
                   checkpoint_every=10)


def _tiny() -> ReconstructionSettings:
    return replace(_paper(), image_size=32, num_stages=1, stage0_steps=(2, 2, 2), later_steps=(2, 2, 2),
                   batch_size=2, collect_iters=2, flip1=(True,), flip3=(True,), perceptual="dlib",
                   prior_fit_steps=3, nf=8, nf_vl=8, zdim=16, nf_encoder=4, checkpoint_every=1,
                   dis_blocks=3)


PRESETS = {"paper": _paper, "released": _released, "cpu": _cpu, "tiny": _tiny}


def preset(name: str, **overrides) -> ReconstructionSettings:
    """The named preset (paper, released, cpu, tiny) with `overrides` applied, validated."""
    try:
        base = PRESETS[name]()
    except KeyError:
        raise Toon3dError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
    known = {f.name for f in fields(ReconstructionSettings)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise Toon3dError(f"unknown reconstruction setting {unknown[0]!r}; known: {', '.join(sorted(known))}")
    return replace(base, **overrides).check()


def without(settings: ReconstructionSettings, *, sym: bool = False, identity: bool = False,
            perceptual: bool = False, smooth: bool = False) -> ReconstructionSettings:
    """An ablation: `settings` with the named loss terms switched off (`--no-sym`, `--no-id`, ...)."""
    out = settings
    if sym:
        out = replace(out, flip1=(False,) * len(out.flip1), flip3=(False,) * len(out.flip3))
    if identity:
        out = replace(out, identity=False)
    if perceptual:
        out = replace(out, perceptual="none")
    if smooth:
        out = replace(out, smooth=False)
    return out


# Fields that do not change the result: a resume may use other values.
RESUMABLE_FIELDS = ("checkpoint_every",)


def changed_settings(saved: dict, settings: ReconstructionSettings) -> list[str]:
    """Names of the fields that change the result and differ between a saved `as_dict()` and `settings` (sorted)."""
    mine = settings.as_dict()
    return sorted(k for k in set(saved) | set(mine)
                  if saved.get(k) != mine.get(k) and k not in RESUMABLE_FIELDS)


__all__ = ["ReconstructionSettings", "PRESETS", "preset", "without", "changed_settings", "STEP_NAMES",
           "PERCEPTUAL_KINDS", "DIS_FEATURE_KINDS"]
