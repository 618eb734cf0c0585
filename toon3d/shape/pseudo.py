"""Pseudo samples for GAN2Shape's step 2: the current 3D face re-lit and re-posed (REFERENCE §6.7, §12 item 20).

From one canonical state (depth, albedo, light of the input, and its canonical face mask) each
sample gets

- a random light: dx ~ U(x0,x1), dy ~ U(y0,y1), strength r ~ U(r0,r1), shaded as
  `shading = l_a + α·r + (l_b + r)·max(0, n·normalise(dx, dy, 1))` with α = −0.6 (GAN2Shape
  samples lights from these uniforms, not from its light Gaussian, which it loads but leaves unused);
- a random view from a 6-d Gaussian (mean, cov) in the view network's units (tanh space: ×60°
  for rotations, ×0.1 for x/y translation), its yaw component multiplied by `view_scale`;
- rendered by depth warping and inverse-warp sampling: image bilinear, mask nearest.

The mask is the canonical face mask sampled (nearest) at the view times the renderer's valid
mask (`recon_depth < 1.2`). GAN2Shape keeps pixels the warped surface does not cover; their
colour is sampled from an arbitrary place of the canonical image, so they are left out here.

Viewpoint prior: GAN2Shape loads `view_mvn.pth` ({'mean': [6], 'cov': [6,6]}, user-supplied,
registry entry `view_mvn`; `load_view_prior`). `default_view_prior()` is our worlds' own: mean 0
and the variances of the uniform pose ranges SynFace renders (pitch ±20°, yaw ±40°, roll ±8°), no
translation. All randomness comes from one `torch.Generator`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from toon3d.errors import Toon3dError
from toon3d.shape.photo_geometry import GeometrySettings, view_rt
from toon3d.shape.renderer import Renderer

# SynFace's pose ranges in degrees (toon3d.synth.face_params: pitch ±20, yaw ±40, roll ±8).
WORLD_POSE_RANGE_DEG = {"pitch": 20.0, "yaw": 40.0, "roll": 8.0}


@dataclass(frozen=True)
class LightRanges:
    """Pseudo-sample light ranges (GAN2Shape's rand_light): dx ∈ [x0,x1], dy ∈ [y0,y1], strength r ∈ [r0,r1], shift α."""

    x0: float = -1.0
    x1: float = 1.0
    y0: float = -0.2
    y1: float = 0.8
    r0: float = -0.1
    r1: float = 0.6
    ambient_shift: float = -0.6

    @classmethod
    def from_sequence(cls, values) -> LightRanges:
        """From GAN2Shape's 7-number `rand_light` list (x0, x1, y0, y1, r0, r1, α)."""
        values = [float(v) for v in values]
        if len(values) != 7:
            raise Toon3dError(f"rand_light must hold 7 numbers (x0, x1, y0, y1, r0, r1, ambient shift), got {len(values)}")
        return cls(*values)


@dataclass(frozen=True)
class ViewPrior:
    """A Gaussian over views in the view network's units: mean [6], cov [6,6] (symmetric, positive semi-definite)."""

    mean: torch.Tensor
    cov: torch.Tensor

    @classmethod
    def from_dict(cls, obj, source: str = "view prior") -> ViewPrior:
        """Validate a GAN2Shape `view_mvn.pth`-style dict {'mean': [6], 'cov': [6,6]}."""
        if not isinstance(obj, dict) or "mean" not in obj or "cov" not in obj:
            keys = ", ".join(sorted(map(str, obj))) if isinstance(obj, dict) else type(obj).__name__
            raise Toon3dError(f"{source} must be a dict with 'mean' [6] and 'cov' [6,6], found {keys}; "
                              "pass GAN2Shape's view_mvn.pth")
        mean, cov = obj["mean"], obj["cov"]
        if not isinstance(mean, torch.Tensor) or not isinstance(cov, torch.Tensor):
            raise Toon3dError(f"{source}: 'mean' and 'cov' must be tensors; pass GAN2Shape's view_mvn.pth")
        mean, cov = mean.detach().double().reshape(-1), cov.detach().double()
        if mean.shape != (6,) or cov.shape != (6, 6):
            raise Toon3dError(f"{source}: mean must be [6] and cov [6,6], got {tuple(mean.shape)} and {tuple(cov.shape)}")
        if not (torch.isfinite(mean).all() and torch.isfinite(cov).all()):
            raise Toon3dError(f"{source} holds NaN or inf values; download it again")
        if not torch.allclose(cov, cov.T, atol=1e-6 * max(1.0, float(cov.abs().max()))):
            raise Toon3dError(f"{source}: cov is not symmetric; it is not a covariance matrix")
        if float(torch.linalg.eigvalsh(cov).min()) < -1e-8 * max(1.0, float(cov.abs().max())):
            raise Toon3dError(f"{source}: cov has negative eigenvalues; it is not a covariance matrix")
        return cls(mean.float(), cov.float())

    def _factor(self) -> torch.Tensor:
        """L with L Lᵀ = cov: Cholesky when positive definite, else from the eigen-decomposition (zero variances)."""
        cov = self.cov.double()
        chol, info = torch.linalg.cholesky_ex(cov)
        if int(info) == 0:
            return chol.float()
        values, vectors = torch.linalg.eigh(cov)
        return (vectors * values.clamp_min(0).sqrt()).float()

    def sample(self, n: int, generator: torch.Generator, view_scale: float = 1.0) -> torch.Tensor:
        """n views [n,6] in network units = mean + L·z, z ~ N(0, I) from `generator`; yaw (index 1) × view_scale."""
        z = torch.randn(n, 6, generator=generator, device=generator.device)
        views = self.mean.to(z.device) + z @ self._factor().to(z.device).T
        scale = torch.ones(6, device=z.device)
        scale[1] = view_scale
        return views * scale


def default_view_prior(rot_range_deg: float = 60.0) -> ViewPrior:
    """Our worlds' view prior: mean 0, the variances of SynFace's uniform pitch/yaw/roll ranges, no translation."""
    var = [(WORLD_POSE_RANGE_DEG[k] / rot_range_deg) ** 2 / 3.0 for k in ("pitch", "yaw", "roll")] + [0.0, 0.0, 0.0]
    return ViewPrior(torch.zeros(6), torch.diag(torch.tensor(var)))


def load_view_prior(path: str | os.PathLike) -> ViewPrior:
    """A `view_mvn.pth` file ({'mean','cov'}), loaded without executing code (toon3d.io.checkpoint)."""
    from toon3d.io.checkpoint import load_torch_checkpoint

    return ViewPrior.from_dict(load_torch_checkpoint(path), str(path))


def view_units_to_pose(views: torch.Tensor, geometry: GeometrySettings) -> torch.Tensor:
    """Views [n,6] in network units → [n,6] radians / scene units (×rot_range, ×trans_range, ×z_trans_range; no mean)."""
    scale = views.new_tensor([math.radians(geometry.rot_range_deg)] * 3
                             + [geometry.trans_range] * 2 + [geometry.z_trans_range])
    return views * scale


@dataclass
class CanonicalState:
    """The input's current 3D factors the pseudo samples start from (batch 1, no gradient).

    depth [1,S,S] canonical; albedo [1,3,S,S] in [-1,1]; light [1,4] = (l_a, l_b, dx, dy);
    canon_mask [1,1,S,S] in [0,1] (the face mask moved to the canonical frame) or None (all pixels).
    """

    depth: torch.Tensor
    albedo: torch.Tensor
    light: torch.Tensor
    canon_mask: torch.Tensor | None = None


@dataclass
class PseudoBatch:
    """Rendered pseudo samples: image [n,3,S,S] in [-1,1], mask [n,1,S,S] in [0,1],
    view [n,6] (radians / scene units), light [n,4] (l_a, l_b, dx, dy), strength r [n]."""

    image: torch.Tensor
    mask: torch.Tensor
    view: torch.Tensor
    light: torch.Tensor
    strength: torch.Tensor


def sample_lights(n: int, state_light: torch.Tensor, ranges: LightRanges, generator: torch.Generator
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """n random lights [n,4] = (l_a, l_b, dx, dy) keeping the input's l_a, l_b, and strengths r [n]."""
    u = torch.rand(3, n, generator=generator, device=generator.device).to(state_light)
    dx = ranges.x0 + (ranges.x1 - ranges.x0) * u[0]
    dy = ranges.y0 + (ranges.y1 - ranges.y0) * u[1]
    r = ranges.r0 + (ranges.r1 - ranges.r0) * u[2]
    base = state_light[:1].expand(n, 4)
    return torch.stack([base[:, 0], base[:, 1], dx, dy], dim=1), r


@torch.no_grad()
def sample_pseudo(renderer: Renderer, state: CanonicalState, n: int, geometry: GeometrySettings,
                  view_prior: ViewPrior, light_ranges: LightRanges, generator: torch.Generator,
                  view_scale: float = 1.0) -> PseudoBatch:
    """n pseudo samples of `state` at random lights and views (draws: lights, then views, from `generator`)."""
    if n < 1:
        raise Toon3dError(f"the number of pseudo samples must be at least 1, got {n}")
    depth = state.depth[:1].expand(n, -1, -1)
    albedo = state.albedo[:1].expand(n, -1, -1, -1)
    light, strength = sample_lights(n, state.light, light_ranges, generator)
    texture = renderer.relight(albedo, depth, light, strength, light_ranges.ambient_shift)
    view = view_units_to_pose(view_prior.sample(n, generator, view_scale).to(depth), geometry)
    R, t = view_rt(view)
    image, valid, recon_depth = renderer.render_view(texture, depth, R, t)
    mask = valid
    if state.canon_mask is not None:
        grid = renderer.inverse_warp_grid(recon_depth, R, t)
        canon = state.canon_mask[:1].to(grid.dtype).expand(n, -1, -1, -1)
        mask = mask * F.grid_sample(canon, grid, mode="nearest", align_corners=True)
    return PseudoBatch(image=image, mask=mask, view=view, light=light, strength=strength)


@dataclass
class PseudoSampler:
    """The fixed parts of pseudo sampling for one reconstruction; `sampler(state, n, generator)` → `PseudoBatch`."""

    renderer: Renderer
    geometry: GeometrySettings
    view_prior: ViewPrior
    light_ranges: LightRanges
    view_scale: float = 1.0

    def __call__(self, state: CanonicalState, n: int, generator: torch.Generator) -> PseudoBatch:
        return sample_pseudo(self.renderer, state, n, self.geometry, self.view_prior, self.light_ranges,
                             generator, self.view_scale)
