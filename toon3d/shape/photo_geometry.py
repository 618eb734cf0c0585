"""The Unsup3d / GAN2Shape photo-geometric autoencoder as two functions: decompose and reconstruct.

`decompose` runs the depth, albedo, view and light networks on an image and maps their raw
outputs to physical quantities (REFERENCE §6.5, §12 items 16-17):

- depth: d = tanh(D(I) − mean D(I)) mapped to [0.9, 1.1], then the left and right 2 columns set to
  the border depth 1.04 (`raw_depth` keeps the map before that clamp: the ellipsoid prior is
  fitted to it, as GAN2Shape's `init_netD_ellipsoid` does);
- albedo: A(I) in [-1,1] (tanh);
- view: v = V(I) (+ view_mean), rotations × 60° in radians, x/y translation × 0.1, z × 0;
- light: l = L(I) (+ light_mean), l_a = l0/2 + .5, l_b = l1/2 + .5, (dx, dy) = (l2, l3).

The means are added to the networks' tanh outputs before scaling, GAN2Shape's `add_mean_V/L`.
A part switched off (`depth=False`, ...) carries no gradient: view and light then come from
`fixed_view` / `fixed_light` (default: the canonical view 0 and the light mean), depth and albedo
from `fixed_depth` / `fixed_albedo` or, when those are not given, from their network evaluated
without gradient (GAN2Shape's step 1 trains the albedo net while the depth net, fitted to the
prior, only predicts). So each training step can say exactly which networks it trains.

`reconstruct` is Φ(d, a, v, l): Lambertian shading of the albedo in the canonical frame, then
the canonical image seen from view v by depth warping and inverse-warp sampling (`Renderer`).
`flip=True` renders the horizontally mirrored depth and albedo with the same view and light,
the reconstruction the symmetry loss L_sym compares with the input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from toon3d.errors import Toon3dError
from toon3d.shape.camera import normals_from_depth, rotation_matrix
from toon3d.shape.renderer import Renderer, RenderSettings, light_from_tanh


@dataclass(frozen=True)
class GeometrySettings:
    """Ranges and camera of the photo-geometric model (defaults: the values common to every GAN2Shape config).

    view_mean [6] and light_mean [4] are added to the view/light networks' tanh outputs (GAN2Shape's
    `add_mean_V/L`, from its `view_mvn.pth` / `light_mvn.pth`); None adds nothing.
    pixel_offset 0.5 is neural_renderer's sampling (published numerics), 0.0 pixel centres
    (SynFace's ground truth is rendered that way).
    """

    size: int
    fov_deg: float = 10.0
    min_depth: float = 0.9
    max_depth: float = 1.1
    border_depth: float = 1.04
    rot_range_deg: float = 60.0
    trans_range: float = 0.1
    z_trans_range: float = 0.0
    view_mean: tuple[float, ...] | None = None
    light_mean: tuple[float, ...] | None = None
    pixel_offset: float = 0.5
    rot_center_depth: float = 1.0
    border_columns: int = 2
    anti_aliasing: bool = True

    def __post_init__(self) -> None:
        if self.view_mean is not None and len(self.view_mean) != 6:
            raise Toon3dError(f"view_mean must hold 6 numbers (rx, ry, rz, tx, ty, tz), got {len(self.view_mean)}")
        if self.light_mean is not None and len(self.light_mean) != 4:
            raise Toon3dError(f"light_mean must hold 4 numbers (l_a, l_b, dx, dy), got {len(self.light_mean)}")
        if not self.min_depth < self.max_depth:
            raise Toon3dError(f"min_depth {self.min_depth} must be below max_depth {self.max_depth}")

    def renderer_settings(self) -> RenderSettings:
        """The `RenderSettings` of this geometry (same size, camera, depth range and pixel convention)."""
        return RenderSettings(self.size, fov_deg=self.fov_deg, rot_center_depth=self.rot_center_depth,
                              min_depth=self.min_depth, max_depth=self.max_depth,
                              border_depth=self.border_depth, anti_aliasing=self.anti_aliasing,
                              pixel_offset=self.pixel_offset)

    def as_dict(self) -> dict:
        """Plain dict for checkpoints and model cards."""
        from dataclasses import asdict

        out = asdict(self)
        for key in ("view_mean", "light_mean"):
            if out[key] is not None:
                out[key] = list(out[key])
        return out


@dataclass
class Decomposition:
    """One image's factors. depth [B,S,S] canonical, border-clamped, in [min,max]; raw_depth [B,S,S]
    the same before the border clamp; albedo [B,3,S,S] in [-1,1]; view [B,6] = (rx, ry, rz) in radians
    and (tx, ty, tz) in scene units; light [B,4] = (l_a, l_b, dx, dy)."""

    depth: torch.Tensor
    raw_depth: torch.Tensor
    albedo: torch.Tensor
    view: torch.Tensor
    light: torch.Tensor

    def detach(self) -> "Decomposition":
        """A copy with every tensor detached."""
        return Decomposition(*(t.detach() for t in (self.depth, self.raw_depth, self.albedo, self.view, self.light)))

    def repeat(self, n: int) -> "Decomposition":
        """Each tensor repeated n times along the batch (one image's factors for n views/lights)."""
        return Decomposition(*(t.repeat(n, *([1] * (t.dim() - 1)))
                               for t in (self.depth, self.raw_depth, self.albedo, self.view, self.light)))


@dataclass
class Reconstruction:
    """Φ(d, a, v, l) and its by-products. image [B,3,S,S] in [-1,1]; mask [B,1,S,S] 0/1 (valid pixels,
    detached); recon_depth [B,S,S] depth seen from the view in [0.8,1.2]; texture [B,3,S,S] the shaded
    canonical image; diffuse [B,1,S,S] = max(0, n·l̂); normal [B,S,S,3] unit canonical normals."""

    image: torch.Tensor
    mask: torch.Tensor
    recon_depth: torch.Tensor
    texture: torch.Tensor
    diffuse: torch.Tensor
    normal: torch.Tensor


def check_image(image: torch.Tensor, size: int) -> None:
    """Raise a one-line Toon3dError unless image is a finite [B,3,size,size] tensor."""
    if not isinstance(image, torch.Tensor) or image.dim() != 4 or image.shape[1] != 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise Toon3dError(f"image must be a [B,3,H,W] tensor in [-1,1], got {shape}")
    if tuple(image.shape[2:]) != (size, size):
        raise Toon3dError(f"image is {image.shape[3]}x{image.shape[2]} but the 3D model is {size}x{size}; "
                          f"resize it to {size} px")
    if not torch.isfinite(image).all():
        raise Toon3dError("image contains NaN or inf values; check its source")


def depth_from_raw(raw: torch.Tensor, settings: GeometrySettings) -> tuple[torch.Tensor, torch.Tensor]:
    """Depth-net output [B,S,S] → (depth [B,S,S] border-clamped, raw_depth [B,S,S] before the clamp), in [min,max].

    raw_depth = min + (tanh(raw − mean(raw)) + 1)/2 · (max − min); depth sets the left and right
    `border_columns` columns to `border_depth` (Unsup3d's pad value 1: exactly 1.04).
    """
    centred = raw - raw.flatten(1).mean(1).view(-1, 1, 1)
    raw_depth = settings.min_depth + (torch.tanh(centred) + 1.0) / 2.0 * (settings.max_depth - settings.min_depth)
    k = settings.border_columns
    border = torch.zeros_like(raw_depth[:1])
    if k > 0:
        border[..., :k] = 1.0
        border[..., -k:] = 1.0
    depth = raw_depth * (1.0 - border) + border * settings.border_depth
    return depth, raw_depth


def view_from_tanh(raw: torch.Tensor, settings: GeometrySettings) -> torch.Tensor:
    """View-net output [B,6] in [-1,1] (+ view_mean) → view [B,6]: radians ×rot_range, scene units ×trans_range."""
    if settings.view_mean is not None:
        raw = raw + raw.new_tensor(settings.view_mean)
    scale = raw.new_tensor([math.radians(settings.rot_range_deg)] * 3
                           + [settings.trans_range] * 2 + [settings.z_trans_range])
    return raw * scale


def light_from_net(raw: torch.Tensor, settings: GeometrySettings) -> torch.Tensor:
    """Light-net output [B,4] in [-1,1] (+ light_mean) → light [B,4] = (l_a, l_b, dx, dy), l_a,l_b = t/2+.5."""
    if settings.light_mean is not None:
        raw = raw + raw.new_tensor(settings.light_mean)
    return light_from_tanh(raw)


def canonical_view(batch: int, like: torch.Tensor) -> torch.Tensor:
    """The frontal view [B,6] of zeros (dtype/device of `like`)."""
    return like.new_zeros(batch, 6)


def mean_light(batch: int, settings: GeometrySettings, like: torch.Tensor) -> torch.Tensor:
    """The light of a zero network output plus light_mean: [B,4] (0.5, 0.5, 0, 0) without a mean."""
    return light_from_net(like.new_zeros(batch, 4), settings)


def _expand(value: torch.Tensor, batch: int, shape: tuple[int, ...], name: str) -> torch.Tensor:
    if value.dim() == len(shape):
        value = value.unsqueeze(0)
    if tuple(value.shape[1:]) != shape or value.shape[0] not in (1, batch):
        raise Toon3dError(f"{name} must be [{batch},{','.join(map(str, shape))}] (or one row), got {tuple(value.shape)}")
    return value.detach().expand(batch, *shape)


def decompose(nets: nn.Module, image: torch.Tensor, settings: GeometrySettings, *, depth: bool = True,
              albedo: bool = True, view: bool = True, light: bool = True,
              fixed_view: torch.Tensor | None = None, fixed_light: torch.Tensor | None = None,
              fixed_depth: torch.Tensor | None = None, fixed_albedo: torch.Tensor | None = None) -> Decomposition:
    """image [B,3,S,S] in [-1,1] → `Decomposition` from `nets` (ShapeNets: .depth .albedo .view .light).

    Parts switched off carry no gradient: view/light = fixed_view [B,6] / fixed_light [B,4] (physical
    units, as in `Decomposition`) or the canonical view 0 / mean light; depth/albedo = fixed_depth
    [B,S,S] (raw_depth then equals it) / fixed_albedo [B,3,S,S], or their network run without gradient.
    """
    check_image(image, settings.size)
    b = image.shape[0]
    s = settings.size

    if depth:
        d, raw_d = depth_from_raw(nets.depth(image)[:, 0], settings)
    elif fixed_depth is not None:
        d = raw_d = _expand(fixed_depth, b, (s, s), "fixed_depth")
    else:
        with torch.no_grad():
            d, raw_d = depth_from_raw(nets.depth(image)[:, 0], settings)

    if albedo:
        a = nets.albedo(image)
    elif fixed_albedo is not None:
        a = _expand(fixed_albedo, b, (3, s, s), "fixed_albedo")
    else:
        with torch.no_grad():
            a = nets.albedo(image)

    if view:
        v = view_from_tanh(nets.view(image), settings)
    elif fixed_view is not None:
        v = _expand(fixed_view.to(image), b, (6,), "fixed_view")
    else:
        v = canonical_view(b, image)

    if light:
        lt = light_from_net(nets.light(image), settings)
    elif fixed_light is not None:
        lt = _expand(fixed_light.to(image), b, (4,), "fixed_light")
    else:
        lt = mean_light(b, settings, image)
    return Decomposition(depth=d, raw_depth=raw_d, albedo=a, view=v, light=lt)


def view_rt(view: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """view [B,6] (radians, scene units) → R [B,3,3] = Rz·Ry·Rx, t [B,3]."""
    if view.dim() != 2 or view.shape[1] != 6:
        raise Toon3dError(f"view must be [B,6] (rx, ry, rz, tx, ty, tz), got {tuple(view.shape)}")
    return rotation_matrix(view[:, 0], view[:, 1], view[:, 2]), view[:, 3:6]


def to_canonical(values: torch.Tensor, depth: torch.Tensor, view: torch.Tensor, renderer: Renderer) -> torch.Tensor:
    """Input-view maps [B,C,S,S] → the canonical frame: each canonical pixel of depth [B,S,S] takes the
    value where it lands in the view [B,6] (bilinear; GAN2Shape's canon_mask)."""
    R, t = view_rt(view)
    grid = renderer.warp_grid(depth, R, t)
    return torch.nn.functional.grid_sample(values.to(grid), grid, mode="bilinear", align_corners=True)


def reconstruct(renderer: Renderer, dec: Decomposition, *, flip: bool = False) -> Reconstruction:
    """Φ(depth, albedo, view, light) → `Reconstruction`; flip=True uses the mirrored depth and albedo (L_sym)."""
    d, a = dec.depth, dec.albedo
    if flip:
        d, a = d.flip(-1), a.flip(-1)
    texture, diffuse = renderer.shade(a, d, dec.light)
    normal = normals_from_depth(d, renderer.K)
    R, t = view_rt(dec.view)
    image, mask, recon_depth = renderer.render_view(texture, d, R, t)
    return Reconstruction(image=image, mask=mask, recon_depth=recon_depth, texture=texture,
                          diffuse=diffuse, normal=normal)
