"""Toon: SynFace's own faces drawn as cartoons, with SynFace's ground truth.

A toon face is SynFace face i of seed s (same identity, expression, pose, light and
background), drawn with a cartoon look:

- flat, saturated, posterised colours (no skin variation, hair strands, iris streaks or
  nose detail: `toon_albedo`);
- enlarged eyes: the eye part masks are repainted with a larger eye width, so the albedo
  and the segmentation (`seg`, `canon_seg`) grow together, while the height field (and
  so `canon_depth`, `depth`, `normal`, `mask`) is exactly SynFace's;
- cel shading: the Lambertian term n·l of `Renderer.shade` is cut into a few flat bands;
- dark outlines on the occluding side of silhouettes, layer boundaries (hair, face, ears,
  neck), depth steps and normal creases, ~1 px at 64 px and proportionally thicker above.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from toon3d.errors import Toon3dError
from toon3d.synth.face_albedo import (GLASSES, HAIR, IRIS, LIP, SKIN_LIGHT_COOL, SKIN_WARM,
                                      canonical_segmentation)
from toon3d.synth.face_fields import col, coverage, edge_width, ellipse_q, ellipse_sdf, lerp_palette, over
from toon3d.synth.face_parts import EYE_Y, FaceLayout, FaceParts, upper_parts
from toon3d.synth.face_params import SynFaceParams
from toon3d.synth.synface import (SynFaceSettings, canonical_geometry, render_in_chunks, soften_edges,
                                  synface_background, synface_light, view_face)

# Layers of the head that draw a line where they meet (ids of `canonical_layers`).
LAYER_FACE, LAYER_EARS, LAYER_NECK, LAYER_HAIR = 1, 2, 3, 4


@dataclass(frozen=True)
class ToonStyle:
    """Settings of the toon look (the defaults are the `toon3d data toon` data set)."""

    band_edges: tuple[float, ...] = (0.25, 0.6)         # n·l thresholds between shading bands
    band_levels: tuple[float, ...] = (0.3, 0.7, 1.0)    # diffuse strength of each band (one more than edges)
    eye_scale: float = 1.5                   # eye width multiplier (albedo and segmentation)
    saturation: float = 1.45                 # chroma gain of skin, hair, lips, iris, brows
    colour_levels: int = 16                  # posterisation levels per channel of those colours
    outline_px_at_64: float = 1.0            # outline width in pixels at 64 px, scaled with size
    outline_rgb: tuple[float, float, float] = (0.09, 0.06, 0.07)
    shading_blur_px_at_64: float = 1.0       # radius of the box blur of n·l before banding, pixels at 64 px
    depth_step_px: float = 3.0               # a depth jump larger than this many pixel footprints draws a line
    crease_deg: float = 70.0                 # a normal turn larger than this between neighbours draws a line

    def __post_init__(self) -> None:
        if len(self.band_levels) != len(self.band_edges) + 1:
            raise Toon3dError(f"toon style: {len(self.band_edges)} band edges need {len(self.band_edges) + 1} "
                              f"band levels, got {len(self.band_levels)}")
        if list(self.band_edges) != sorted(self.band_edges):
            raise Toon3dError(f"toon style: band edges {self.band_edges} must increase")
        if self.eye_scale <= 0 or self.eye_scale > 1.6:
            # UPPER_BOX would hold eyes up to ~2x the largest SynFace eye, but past 1.6x they
            # run into the brows and the nose.
            raise Toon3dError(f"toon style: eye_scale {self.eye_scale} is outside (0, 1.6]")
        if self.colour_levels < 2:
            raise Toon3dError(f"toon style: colour_levels must be at least 2, got {self.colour_levels}")

    def outline_px(self, size: int) -> int:
        """Outline width in pixels at image size `size` (at least 1)."""
        return max(1, round(self.outline_px_at_64 * size / 64))

    def to_dict(self) -> dict:
        """JSON-ready settings (for meta.json)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def vivid(colour: torch.Tensor, saturation: float, levels: int) -> torch.Tensor:
    """Boost the chroma of [B,3] colours in [0,1] about their grey, then posterise to `levels` per channel."""
    grey = colour.mean(dim=1, keepdim=True)
    boosted = (grey + (colour - grey) * saturation).clamp(0.0, 1.0)
    return torch.round(boosted * (levels - 1)) / (levels - 1)


def _rgb(c: torch.Tensor) -> torch.Tensor:
    """[B,3] colour → [B,3,1,1]."""
    return c[:, :, None, None]


def _const(rgb: tuple[float, float, float], like: torch.Tensor) -> torch.Tensor:
    """A fixed colour [1,3,1,1] on `like`'s device and dtype."""
    return torch.tensor(rgb, device=like.device, dtype=like.dtype)[None, :, None, None]


def toon_parts(p: SynFaceParams, lay: FaceLayout, parts: FaceParts, x: torch.Tensor, y: torch.Tensor,
               size: int, eye_scale: float) -> tuple[FaceLayout, FaceParts]:
    """SynFace's layout and part masks with the eyes repainted `eye_scale` times wider.

    Only the eye masks change. Glasses are also geometry (their frames stand off the face),
    so they keep SynFace's size; brows and forehead lines do not depend on the eye width.
    """
    lay = dataclasses.replace(lay, eye_w=lay.eye_w * eye_scale)
    big = upper_parts(p, lay, x, y, size)
    upper = dataclasses.replace(big, glasses=parts.upper.glasses, brows=parts.upper.brows,
                                wrinkles=parts.upper.wrinkles, brow_window=parts.upper.brow_window)
    return lay, dataclasses.replace(parts, upper=upper)


def toon_albedo(p: SynFaceParams, lay: FaceLayout, parts: FaceParts, x: torch.Tensor, y: torch.Tensor,
                style: ToonStyle) -> torch.Tensor:
    """Flat cartoon albedo [B,3,H,W] in [0,1]: one posterised colour per part, no texture.

    `lay`, `parts` are the (eye-enlarged) `toon_parts`; background pixels hold the skin colour.
    """
    sat, lv = style.saturation, style.colour_levels
    b = len(p)
    shape = (b, 3) + tuple(x.shape[-2:])
    e = edge_width(x.shape[-1])
    skin_c = lerp_palette(SKIN_LIGHT_COOL, p.skin_tone) * (1 - p.skin_warmth[:, None]) \
        + lerp_palette(SKIN_WARM, p.skin_tone) * p.skin_warmth[:, None]
    skin_c = vivid(skin_c, 1.0 + (sat - 1.0) * 0.4, lv)
    img = _rgb(skin_c).expand(shape).clone()

    # Cartoon blush: a flat pink oval on each cheek; the neck is one flat shadow tone.
    cheek = coverage(ellipse_sdf(ellipse_q(x.abs(), y, lay.hw * 0.55, EYE_Y + 0.2, 0.1, 0.055), 0.055), e)
    img = over(img, img * _const((1.05, 0.62, 0.62), x), cheek * (0.25 + 0.4 * col(p.blush)))
    img = over(img, img * 0.78, parts.neck)

    up = parts.upper
    ib = up.box.of(img)
    xs, ys = up.box.of(x), up.box.of(y)
    region = over(ib, ib * 0.6, up.crease * 0.7)
    region = over(region, _const((0.97, 0.96, 0.95), x), up.eye_open)
    iris_c = _rgb(vivid(lerp_palette(IRIS, p.iris_color), sat * 1.2, lv))
    region = over(region, iris_c, up.iris)
    # The upper half of the iris sits in the lid's shadow: one darker flat tone.
    region = over(region, iris_c * 0.55, up.iris * coverage(ys - (EYE_Y - 0.1 * lay.eye_w), e))
    region = over(region, _const((0.04, 0.03, 0.05), x), up.pupil)
    # One round glint per eye, on the same side of both (one light), as cartoons draw them.
    r = 0.14 * lay.eye_w
    glint_q = torch.minimum(ellipse_q(xs, ys, lay.eye_dx + 0.2 * lay.eye_w, EYE_Y - 0.12 * lay.eye_w, r, r),
                            ellipse_q(xs, ys, -lay.eye_dx + 0.2 * lay.eye_w, EYE_Y - 0.12 * lay.eye_w, r, r))
    glint = coverage(ellipse_sdf(glint_q, r), e) * up.eye_open
    region = over(region, _const((1.0, 1.0, 1.0), x), glint)
    region = over(region, _const((0.05, 0.04, 0.05), x), up.lash)
    hair_c = vivid(lerp_palette(HAIR, p.hair_color), sat, lv)
    brow_c = _rgb(hair_c) * (1 - 0.6 * _rgb(p.brow_darkness[:, None])) + 0.02
    region = over(region, brow_c, up.brows)
    ib.copy_(region)

    # No nostrils or warm tip: a cartoon nose is its shading bands and outline only.
    mouth = parts.mouth
    ib = mouth.box.of(img)
    lip_c = _rgb(vivid(lerp_palette(LIP, p.lip_color), sat * 1.2, lv))
    region = over(ib, lip_c * 0.85, mouth.lip_upper)
    region = over(region, lip_c, mouth.lip_lower)
    region = over(region, _const((0.35, 0.06, 0.08), x), mouth.inside)
    ib.copy_(over(region, _const((0.97, 0.96, 0.93), x), mouth.teeth))

    # Hair: one flat colour, a darker curtain and a zigzag highlight ring across the crown.
    angle = torch.atan2(x - 0.3 * col(p.hair_part) * lay.hw, -(y - lay.top_y + 0.3))
    zigzag = 0.04 * (2.0 * torch.remainder(angle * 5.0 + col(p.hair_phase), 1.0) - 1.0).abs()
    ring = (parts.hair_cap_q.clamp(min=0).sqrt() - 0.86 + zigzag).abs() * lay.hw - 0.022
    shine = coverage(ring, e) * coverage(y - lay.crown_y + 0.3, e)
    hair_rgb = over(_rgb(hair_c).expand(shape), (_rgb(hair_c) * 1.35 + 0.12).clamp(max=1.0).expand(shape), shine * 0.8)
    hair_rgb = over(hair_rgb, hair_rgb * 0.75, parts.hair_curtain)
    img = over(img, hair_rgb, parts.hair)

    glass_c = _rgb(vivid(lerp_palette(GLASSES, p.glasses_color), sat, lv))
    ib = up.box.of(img)
    ib.copy_(over(ib, glass_c, up.glasses))
    return img.clamp(0.0, 1.0)


def canonical_layers(parts: FaceParts) -> torch.Tensor:
    """Head layer of each canonical pixel [B,H,W] uint8: 0 off the head, LAYER_FACE/EARS/NECK/HAIR.

    The same precedence as `canonical_depth` (hair over face over ears over neck), so a layer
    boundary is where the height field switches surface.
    """
    layer = torch.where(parts.face > 0.5, LAYER_FACE, torch.where(parts.ears > 0.5, LAYER_EARS, LAYER_NECK))
    layer = torch.where(parts.hair > 0.5, LAYER_HAIR, layer)
    return torch.where(parts.head > 0.5, layer, 0).to(torch.uint8)


def cel_bands(diffuse: torch.Tensor, style: ToonStyle) -> torch.Tensor:
    """Quantised diffuse term: n·l [B,1,H,W] in [0,1] → the level of its band (`style.band_levels`)."""
    edges = torch.tensor(style.band_edges, device=diffuse.device, dtype=diffuse.dtype)
    levels = torch.tensor(style.band_levels, device=diffuse.device, dtype=diffuse.dtype)
    return levels[torch.bucketize(diffuse.contiguous(), edges, right=True)]


def cel_shade(albedo01: torch.Tensor, diffuse: torch.Tensor, light: torch.Tensor, style: ToonStyle) -> torch.Tensor:
    """Unsup3d shading with banded n·l: albedo [B,3,H,W] in [0,1] → image [B,3,H,W] in [-1,1]."""
    shading = light[:, 0].view(-1, 1, 1, 1) + light[:, 1].view(-1, 1, 1, 1) * cel_bands(diffuse, style)
    return (albedo01 * shading * 2.0 - 1.0).clamp(-1, 1)


def outline_mask(layers: torch.Tensor, depth: torch.Tensor, normal: torch.Tensor, hit: torch.Tensor,
                 width: int, depth_step: float, crease_cos: float) -> torch.Tensor:
    """Where to draw lines in a view [B,S,S] bool.

    A pair of pixels up to `width` apart (along rows or columns) is an edge when their layers
    differ (silhouettes: the background is layer 0), their depths differ by more than
    `depth_step` per pixel of distance, or their normals turn by more than acos(`crease_cos`).
    The nearer pixel of an edge pair is drawn, so lines lie on the occluding side: on the head
    at silhouettes, on the hair over the forehead. layers [B,S,S] uint8, depth [B,S,S],
    normal [B,S,S,3], hit [B,S,S] bool.
    """
    line = torch.zeros_like(hit)
    for d in range(1, width + 1):
        for dim in (1, 2):
            def pair(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                """Views of `t` at pixels p and p + d along `dim`."""
                n = t.shape[dim] - d
                return t.narrow(dim, 0, n), t.narrow(dim, d, n)

            (za, zb), (la, lb), (na, nb), (line_a, line_b) = pair(depth), pair(layers), pair(normal), pair(line)
            edge = (la != lb) | ((za - zb).abs() > depth_step * d) | ((na * nb).sum(-1) < crease_cos)
            line_a.logical_or_(edge & (za < zb))
            line_b.logical_or_(edge & (zb < za))
    return line & hit


def _render_toon_chunk(params: SynFaceParams, size: int, device: torch.device | str | None,
                       s: SynFaceSettings, style: ToonStyle) -> dict:
    """`render_toon` for one chunk of faces."""
    g = canonical_geometry(params, size, device)
    depth_c, mask_c = g["canon_depth"], g["canon_mask"]
    lay, parts = toon_parts(g["params"], g["layout"], g["parts"], g["x"], g["y"], size, style.eye_scale)
    albedo01 = toon_albedo(g["params"], lay, parts, g["x"], g["y"], style)
    canon_seg = canonical_segmentation(parts)
    view = view_face(depth_c, mask_c, params, size, device, s)
    light = synface_light(params, device)
    _, diffuse = view.renderer.shade(albedo01, depth_c, light)
    # Hair strands and small bumps would fray the band edges into hatching: cel shading reads
    # the light of a smoothed surface (a 3x3 box blur at 64 px, scaled with size).
    radius = max(0, round(style.shading_blur_px_at_64 * size / 64))
    if radius:
        diffuse = F.avg_pool2d(F.pad(diffuse, (radius,) * 4, mode="replicate"), 2 * radius + 1, 1)
    canon_image = cel_shade(albedo01, diffuse, light, style)

    # Albedo and n·l are sampled separately and the bands cut in the view, so band edges stay
    # sharp instead of being blurred by the bilinear resampling of a shaded image.
    sampled = view.sample(torch.cat([albedo01, diffuse], dim=1))
    shaded = cel_shade(sampled[:, :3], sampled[:, 3:], light, style)
    background = synface_background(params, size, device)
    image = torch.where(view.hit.unsqueeze(1), shaded, background)
    normal = view.normal()
    footprint = 2.0 * math.tan(math.radians(s.fov_deg) / 2.0) / size   # pixel width at depth 1
    line = outline_mask(view.sample_labels(canonical_layers(parts)), view.depth, normal, view.hit,
                        style.outline_px(size), style.depth_step_px * footprint,
                        math.cos(math.radians(style.crease_deg)))
    ink = _const(style.outline_rgb, image) * 2 - 1
    image = torch.where(line.unsqueeze(1), ink, image)
    if s.antialias_edges:
        # Soften the silhouette's outer side only; the lines themselves stay solid.
        image = torch.where(line.unsqueeze(1), ink, soften_edges(image, view.hit))
    return {"image": image, "canon_depth": depth_c, "albedo": albedo01 * 2.0 - 1.0, "canon_image": canon_image,
            "canon_seg": canon_seg, "canon_mask": mask_c, "depth": view.depth, "normal": normal,
            "seg": view.sample_labels(canon_seg), "mask": view.hit.to(torch.uint8), "background": background,
            "R": view.R, "t": view.t, "light": light}


@torch.no_grad()
def render_toon(params: SynFaceParams, size: int, device: torch.device | str | None = None,
                style: ToonStyle | None = None, settings: SynFaceSettings | None = None) -> dict:
    """Render SynFace faces as toons, with the same keys as `render_synface`.

    image [B,3,S,S] in [-1,1] is the cartoon; albedo [B,3,S,S] in [-1,1] is the flat toon
    albedo; seg / canon_seg have the enlarged eyes; canon_depth, depth, normal, mask, R, t,
    light, background and camera equal SynFace's for the same params.
    """
    render_chunk = functools.partial(_render_toon_chunk, style=style or ToonStyle())
    return render_in_chunks(render_chunk, params, size, device, settings)
