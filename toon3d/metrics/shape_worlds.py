"""Test images with exact 3D ground truth for Table II, and the latent the GAN stage needs for each.

The built-in base generator is a regression decoder of SynFace (`toon3d.synth.latent_params`,
`toon3d.train.decoder`): it was trained so that G(z) reproduces the SynFace render of
`params_from_latent(z)`. So a latent z names one SynFace face exactly, and that face's render
carries its ground truth. Test image i is:

- z_i = `z_from_seed(TEST_SEED_BASE + i)`: the shipped base's training batches (run seed 0) came
  from streams seeded with the iteration (< 10^4) and, on the second process, 7,919,000,003 + the
  iteration (`toon3d.train.decoder.iteration_rng`), its held-out set from 2^31 − 7; test seeds
  start at 3·10^9, so no test face was trained on (the first row of a batch drawn from stream k
  equals `z_from_seed(k)`, which is why seeds 0-2199 must not be used);
- the face: `params_from_latent(z_i)`, rendered by SynFace (world `synface`) or by its cel-shaded
  toon style (world `toon`, the same geometry and so the same ground truth);
- its latent: w_i = mapping(z_i) of the world's generator (the built-in toon style blends with
  base and takes base's mapping, so w_i is the same in both worlds), which the GAN stage
  projects around. This is GAN2Shape's BFM protocol (a data image and its latent) with the
  latent known exactly instead of recovered by inversion;
- the input image: by default the render itself (`images="render"`: exact ground truth, as the
  BFM protocol scores data images); `images="generator"` feeds the generator's own image G(w_i)
  instead, scored against the same ground truth (the face the decoder was trained to draw; its
  imperfections then count as reconstruction error).

Renders are made at max(S, 64) px (SynFace's smallest size) and area-downsampled to the
reconstruction size S; a downsampled view-depth pixel that touches the background becomes
background (1.2).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from toon3d.errors import Toon3dError

WORLDS = ("synface", "toon")
IMAGE_SOURCES = ("render", "generator")
TEST_SEED_BASE = 3_000_000_000
MIN_RENDER, MAX_RENDER = 64, 256
BACKGROUND_DEPTH = 1.2


def case_seed(index: int) -> int:
    """The seed of test image `index` (its z is `z_from_seed(case_seed(index))`)."""
    if index < 0:
        raise Toon3dError(f"test image indices start at 0, got {index}")
    return TEST_SEED_BASE + index


@dataclass
class ShapeCase:
    """One test image with its ground truth.

    image [1,3,S,S] in [-1,1]; latent w [1,D]; gt_view [S,S] depth in the input view (background
    1.2); gt_canon [S,S] canonical (frontal) depth; gt_mask [S,S] in {0,1} the head in the view;
    face_mask [1,1,S,S] in [0,1] the mask the reconstruction is given; camera: the data camera
    {"fov_deg", "rot_center_depth", "pixel_offset"} the prediction must be rendered with.
    """

    world: str
    index: int
    seed: int
    image: torch.Tensor
    latent: torch.Tensor
    gt_view: torch.Tensor
    gt_canon: torch.Tensor
    gt_mask: torch.Tensor
    face_mask: torch.Tensor
    camera: dict


def render_size(size: int) -> int:
    """The size the world is rendered at for reconstruction size `size` (a multiple of it, 64-256 px)."""
    if size > MAX_RENDER:
        raise Toon3dError(f"ground-truth worlds render at most {MAX_RENDER} px, the preset asks for {size}")
    out = size
    while out < MIN_RENDER:
        out *= 2
    return out


def downsample_view_depth(depth: torch.Tensor, size: int) -> torch.Tensor:
    """View depth [B,R,R] (background 1.2) → [B,S,S]: area mean, background where any sub-pixel is background."""
    if depth.shape[-1] == size:
        return depth
    factor = depth.shape[-1] // size
    background = (depth >= BACKGROUND_DEPTH - 1e-6).float()
    mean = F.avg_pool2d(depth.unsqueeze(1), factor).squeeze(1)
    touches = F.max_pool2d(background.unsqueeze(1), factor).squeeze(1) > 0
    return torch.where(touches, torch.full_like(mean, BACKGROUND_DEPTH), mean)


def area_resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """[B,C,R,R] → [B,C,S,S] by area averaging (R a multiple of S) or bilinear enlarging."""
    if x.shape[-1] == size:
        return x
    if x.shape[-1] > size:
        return F.avg_pool2d(x, x.shape[-1] // size)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def render_world(world: str, z: torch.Tensor, size: int, anchored: bool = False) -> dict:
    """SynFace or toon render (with ground truth) of the faces `params_from_latent(z)` [B,D≥56] at `size` px.

    anchored: SynFace's anchored views (eyes and mouth at fixed pixels under pose), which a decoder
    trained with `--anchor-eyes` draws; plain views otherwise.
    """
    from toon3d.synth.latent_params import NUM_LATENT_PARAMS, params_from_latent
    from toon3d.synth.synface import SynFaceSettings

    if z.shape[1] < NUM_LATENT_PARAMS:
        raise Toon3dError(f"the generator's latent is {z.shape[1]}-d; a SynFace ground truth needs at least "
                          f"{NUM_LATENT_PARAMS} dimensions (a SynFace decoder such as the built-in base)")
    params = params_from_latent(z)
    settings = SynFaceSettings(anchor_eyes=anchored)
    if world == "synface":
        from toon3d.synth.synface import render_synface

        return render_synface(params, size, settings=settings)
    if world == "toon":
        from toon3d.synth.toon_style import render_toon

        return render_toon(params, size, settings=settings)
    raise Toon3dError(f"unknown world {world!r}; choose one of {', '.join(WORLDS)}")


@torch.no_grad()
def make_case(world: str, index: int, size: int, generator: torch.nn.Module, images: str = "render",
              face_mask: Callable[[torch.Tensor], torch.Tensor] | None = None, anchored: bool = False) -> ShapeCase:
    """Test image `index` of `world` at reconstruction size `size` with its ground truth and latent.

    generator: the world's generator (its mapping gives w; with images="generator" it draws the
    image). face_mask: image [1,3,S,S] → [1,1,S,S] in [0,1] (default: the layout ellipse).
    anchored: render the anchored views the generator was trained on, so that G(w) draws the input.
    """
    from toon3d.seeds import z_from_seed
    from toon3d.stylegan2.sampling import synthesize

    if images not in IMAGE_SOURCES:
        raise Toon3dError(f"unknown image source {images!r}; choose one of {', '.join(IMAGE_SOURCES)}")
    seed = case_seed(index)
    z = z_from_seed(seed, generator.style_dim)[0]
    out = render_world(world, z, render_size(size), anchored)
    device = next(generator.parameters()).device
    w = generator.mapping(z.to(device))
    if images == "render":
        image = out["image"]
    else:
        image = synthesize(generator, w, "const").float().clamp(-1, 1).cpu()
    image = area_resize(image.float(), size).clamp(-1, 1)
    gt_view = downsample_view_depth(out["depth"].float(), size)[0]
    gt_canon = area_resize(out["canon_depth"].float().unsqueeze(1), size)[0, 0]
    gt_mask = (gt_view < BACKGROUND_DEPTH).float()
    if face_mask is None:
        from toon3d.edit.masks import ellipse_mask

        mask = ellipse_mask(size)
    else:
        mask = face_mask(image)
    return ShapeCase(world=world, index=index, seed=seed, image=image, latent=w.detach().cpu().float(),
                     gt_view=gt_view, gt_canon=gt_canon, gt_mask=gt_mask, face_mask=mask.float().cpu(),
                     camera=dict(out["camera"]))
