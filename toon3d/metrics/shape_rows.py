"""The rows of Table II: what each one predicts for a test image, as canonical and input-view depth.

- `prior`: GAN2Shape's ellipsoid shape prior alone (`toon3d.shape.prior.ellipsoid_depth` of the
  face mask, with the preset's prior settings and the depth net's 2-column border clamp), seen
  from the frontal view: what the cycles start from when no pretrained reconstructor is used;
- `instant`: the pretrained reconstructor's feed-forward prediction (`toon3d.shape.instant`);
- `released`: the GAN2Shape cycles (`toon3d.shape.schedule.reconstruct_image`) with the released
  code's choices: no symmetry loss, no identity loss (the `released` preset's difference from
  `paper`, applied to the chosen preset);
- `no_id`, `no_sym`: the full method without L_id, without L_sym;
- `full`: every loss of the paper on.

Every row returns the canonical depth, the depth seen from the predicted view (`recon_depth`,
what SIDE/MAD score, REFERENCE §7.5) and the reconstruction's valid mask. Predictions are
rendered with the data set's camera (fov, rotation centre, pixel convention): SynFace renders at
pixel centres and half a pixel alone moves SIDE/MAD.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from toon3d.errors import Toon3dError
from toon3d.metrics.shape_worlds import ShapeCase
from toon3d.shape.settings import ReconstructionSettings, without

SHAPE_ROWS = ("prior", "instant", "released", "no_id", "no_sym", "full")
GAN_ROWS = ("released", "no_id", "no_sym", "full")
ROW_LABELS = {"prior": "ellipsoid prior alone", "instant": "instant (pretrained, feed-forward)",
              "released": "released code (no L_sym, no L_id)", "no_id": "w/o L_id", "no_sym": "w/o L_sym",
              "full": "full (L_recon + L_sym + L_id)"}


def parse_rows(spec: str | None) -> list[str]:
    """'prior,full' → ['prior', 'full'] (table order kept as given); None → every row; one-line errors."""
    if spec is None:
        return list(SHAPE_ROWS)
    rows = [r.strip() for r in str(spec).split(",") if r.strip()]
    if not rows:
        raise Toon3dError(f"--rows is empty; choose from {', '.join(SHAPE_ROWS)}")
    for row in rows:
        if row not in SHAPE_ROWS:
            raise Toon3dError(f"unknown row {row!r} in --rows; choose from {', '.join(SHAPE_ROWS)}")
    if len(set(rows)) != len(rows):
        raise Toon3dError(f"--rows {spec!r} names a row twice; list each row once")
    return rows


def with_camera(settings: ReconstructionSettings, camera: dict) -> ReconstructionSettings:
    """`settings` rendering with the data camera {'fov_deg', 'rot_center_depth', 'pixel_offset'}."""
    if float(camera.get("rot_center_depth", 1.0)) != 1.0:
        raise Toon3dError("the ground truth rotates about a centre other than depth 1.0, which the reconstruction's "
                          "camera cannot express; regenerate it with the default camera")
    return replace(settings, fov_deg=float(camera["fov_deg"]), pixel_offset=float(camera["pixel_offset"])).check()


def row_settings(row: str, settings: ReconstructionSettings) -> ReconstructionSettings:
    """The reconstruction settings of GAN row `row` derived from the chosen preset."""
    if row == "full":
        return settings
    if row == "no_id":
        return without(settings, identity=True)
    if row == "no_sym":
        return without(settings, sym=True)
    if row == "released":
        return without(settings, sym=True, identity=True)
    raise Toon3dError(f"{row!r} is not a GAN2Shape row; GAN rows are {', '.join(GAN_ROWS)}")


@dataclass
class RowPrediction:
    """canon_depth [S,S], view_depth [S,S] (the input view, background 1.2), mask [S,S] in {0,1}
    (the reconstruction's valid pixels), wall seconds, and row-specific facts for the scores file."""

    canon_depth: torch.Tensor
    view_depth: torch.Tensor
    mask: torch.Tensor
    seconds: float
    facts: dict


def _render(settings_geometry, depth: torch.Tensor, view: torch.Tensor, light: torch.Tensor):
    from toon3d.shape.photo_geometry import Decomposition, reconstruct
    from toon3d.shape.renderer import Renderer

    renderer = Renderer(settings_geometry.renderer_settings(), device=depth.device)
    albedo = depth.new_zeros(depth.shape[0], 3, *depth.shape[1:])
    return reconstruct(renderer, Decomposition(depth, depth, albedo, view, light))


@torch.no_grad()
def predict_prior(case: ShapeCase, settings: ReconstructionSettings) -> RowPrediction:
    """The ellipsoid prior of the case's face mask, border-clamped, seen from the frontal view."""
    from toon3d.shape.photo_geometry import mean_light
    from toon3d.shape.prior import ellipsoid_depth

    start = time.perf_counter()
    geometry = with_camera(settings, case.camera).geometry()
    target = ellipsoid_depth((case.face_mask[0, 0] >= settings.prior_mask_threshold).cpu(), settings.prior_kind,
                             settings.prior_near, settings.prior_far, settings.prior_radius)
    depth = target.clone()[None]
    k = geometry.border_columns
    if k > 0:
        # What the depth net fitted to the prior outputs: its left/right columns are clamped.
        depth[..., :k] = geometry.border_depth
        depth[..., -k:] = geometry.border_depth
    rec = _render(geometry, depth, depth.new_zeros(1, 6), mean_light(1, geometry, depth))
    return RowPrediction(depth[0], rec.recon_depth[0], rec.mask[0, 0], time.perf_counter() - start,
                         {"prior_kind": settings.prior_kind})


@torch.no_grad()
def predict_instant(case: ShapeCase, nets: nn.Module, geometry) -> RowPrediction:
    """The pretrained reconstructor's one-pass factors, rendered from its predicted view with the data camera."""
    from toon3d.shape.instant import instant_reconstruct

    start = time.perf_counter()
    if geometry.size != case.image.shape[-1]:
        raise Toon3dError(f"the pretrained reconstructor works at {geometry.size} px but the evaluation at "
                          f"{case.image.shape[-1]} px; pass a reconstructor of that size or another --preset")
    device = next(nets.parameters()).device
    dec = instant_reconstruct(nets, case.image.to(device), geometry)
    data_geometry = replace(geometry, fov_deg=float(case.camera["fov_deg"]),
                            pixel_offset=float(case.camera["pixel_offset"]))
    rec = _render(data_geometry, dec.depth, dec.view, dec.light)
    return RowPrediction(dec.depth[0].cpu(), rec.recon_depth[0].cpu(), rec.mask[0, 0].cpu(),
                         time.perf_counter() - start,
                         {"view_deg": [round(float(v), 3) for v in torch.rad2deg(dec.view[0, :3])]})


@dataclass
class GanModels:
    """What the GAN rows need besides the image: the world's generator module, its discriminator (or None:
    then L_dis uses the perceptual substitute), the identity embedder, the perceptual network, the
    pretrained reconstructor's state to start from (or None: the ellipsoid prior is fitted), and the
    settings that must follow that reconstructor (its view/light means: its networks' outputs only
    mean what they meant in training with them)."""

    generator: nn.Module
    discriminator: nn.Module | None
    identity_embedder: nn.Module | None
    perceptual: nn.Module | None
    nets_init: dict[str, torch.Tensor] | None
    device: torch.device | str = "cpu"
    settings_overrides: dict = field(default_factory=dict)


def gan_settings(row: str, settings: ReconstructionSettings, camera: dict, models: GanModels
                 ) -> ReconstructionSettings:
    """Row `row`'s settings with the data camera; L_dis features from the perceptual net without a discriminator."""
    out = row_settings(row, with_camera(replace(settings, **models.settings_overrides), camera))
    if models.discriminator is None and out.dis_features == "discriminator":
        out = replace(out, dis_features="perceptual")
    return out.check()


def predict_gan(case: ShapeCase, row: str, settings: ReconstructionSettings, models: GanModels,
                checkpoint_dir=None, progress: bool = False) -> RowPrediction:
    """GAN2Shape cycles on the case (seed = the image index), resumable through `checkpoint_dir`."""
    from toon3d.shape.schedule import reconstruct_image

    start = time.perf_counter()
    run = gan_settings(row, settings, case.camera, models)
    result = reconstruct_image(case.image, case.latent, models.generator, run, nets_init=models.nets_init,
                               discriminator=models.discriminator, identity_embedder=models.identity_embedder,
                               perceptual=models.perceptual, mask=case.face_mask, device=models.device,
                               seed=case.index, checkpoint_dir=checkpoint_dir, progress=progress)
    final = {k: round(float(v), 5) for k, v in result.history[-1].items()
             if isinstance(v, (int, float)) and k not in ("iteration", "stage")} if result.history else {}
    return RowPrediction(result.depth[0], result.recon_depth[0], result.recon_mask[0, 0],
                         time.perf_counter() - start,
                         {"iterations": len(result.history), "prior_fitted": result.prior_fitted,
                          "dis_features": result.dis_features, "final_losses": final,
                          "view_deg": [round(float(v), 3) for v in torch.rad2deg(result.view[0, :3])]})
