"""Canonical SynFace albedo (unlit colour) and segmentation, composited part by part."""

from __future__ import annotations

import torch

from toon3d.synth.face_fields import col, compact_bump, ellipse_q, lerp_palette, over
from toon3d.synth.face_parts import EYE_Y, FaceLayout, FaceParts
from toon3d.synth.face_params import SynFaceParams

SEG_BACKGROUND, SEG_SKIN, SEG_BROWS, SEG_EYES, SEG_NOSE, SEG_MOUTH, SEG_HAIR, SEG_GLASSES = range(8)
SEG_NAMES = ("background", "skin", "brows", "eyes", "nose", "lips/mouth", "hair", "glasses")

# Colour ramps (linear RGB-ish in [0,1]); parameters in [0,1] move along them.
SKIN_LIGHT_COOL = torch.tensor([[0.96, 0.82, 0.76], [0.86, 0.68, 0.58], [0.66, 0.47, 0.37],
                                [0.45, 0.30, 0.22], [0.27, 0.17, 0.12]])
SKIN_WARM = torch.tensor([[0.97, 0.83, 0.68], [0.88, 0.70, 0.52], [0.72, 0.52, 0.34],
                          [0.50, 0.34, 0.21], [0.30, 0.19, 0.11]])
LIP = torch.tensor([[0.86, 0.56, 0.56], [0.80, 0.33, 0.36], [0.70, 0.20, 0.24], [0.55, 0.30, 0.27]])
IRIS = torch.tensor([[0.22, 0.12, 0.06], [0.40, 0.25, 0.10], [0.45, 0.42, 0.18], [0.28, 0.45, 0.30],
                     [0.25, 0.42, 0.62], [0.48, 0.55, 0.62]])
HAIR = torch.tensor([[0.06, 0.05, 0.05], [0.18, 0.11, 0.07], [0.35, 0.22, 0.12], [0.55, 0.25, 0.12],
                     [0.78, 0.62, 0.38], [0.92, 0.82, 0.60], [0.72, 0.72, 0.72]])
GLASSES = torch.tensor([[0.05, 0.05, 0.05], [0.35, 0.18, 0.08], [0.70, 0.62, 0.40], [0.15, 0.20, 0.45],
                        [0.55, 0.10, 0.12]])


def _rgb(c: torch.Tensor) -> torch.Tensor:
    """[B,3] colour → [B,3,1,1]."""
    return c[:, :, None, None]


def canonical_albedo(p: SynFaceParams, lay: FaceLayout, parts: FaceParts, x: torch.Tensor,
                     y: torch.Tensor) -> torch.Tensor:
    """Canonical albedo [B,3,H,W] in [0,1] (background pixels hold the skin colour)."""
    ax = x.abs()
    b = len(p)
    shape = (b, 3) + tuple(x.shape[-2:])
    skin_c = lerp_palette(SKIN_LIGHT_COOL, p.skin_tone) * (1 - p.skin_warmth[:, None]) \
        + lerp_palette(SKIN_WARM, p.skin_tone) * p.skin_warmth[:, None]
    phase = col(p.skin_phase) * 6.2832
    mottle = 1 + 0.035 * torch.sin(x * 9.0 + phase) * torch.sin(y * 7.0 - 1.3 * phase) \
        + 0.02 * torch.sin((x + y) * 23.0 + 2.0 * phase)
    img = _rgb(skin_c).expand(shape) * mottle[:, None]

    # Warm cheeks, slightly darker neck and ear folds.
    flush = (0.15 + 0.35 * col(p.blush)) * compact_bump(ellipse_q(ax, y, lay.hw * 0.52, EYE_Y + 0.2, 0.14, 0.1))
    red = torch.tensor([0.85, 0.35, 0.35], device=x.device, dtype=x.dtype)[None, :, None, None]
    img = img * (1 - 0.25 * flush[:, None]) + red * img * 0.25 * flush[:, None] * 1.6
    # The neck sits in the jaw's shadow, darkest just under the chin.
    under_chin = 0.16 + 0.3 * (1 - ((y - lay.chin_y) / 0.25).clamp(0, 1))
    img = img * (1 - under_chin * parts.neck)[:, None]
    ear_fold = parts.ears * compact_bump(ellipse_q(ax, y, lay.jaw_rx * 0.98 + 0.04, EYE_Y + 0.09, 0.03, 0.08))
    img = img * (1 - 0.3 * ear_fold[:, None])

    # Eyes: lid crease, sclera, iris with a dark rim, pupil, lash line; then forehead lines and brows.
    up = parts.upper
    xs, ys = up.box.of(x), up.box.of(y)
    axs = xs.abs()
    ib = up.box.of(img)
    region = ib * (1 - 0.12 * compact_bump(
        ellipse_q(axs, ys, lay.eye_dx, EYE_Y - 0.02, lay.eye_w * 1.5, lay.eye_w * 1.1)))[:, None]
    region = over(region, region * 0.7, up.crease)
    sclera = torch.tensor([0.93, 0.91, 0.88], device=x.device, dtype=x.dtype)[None, :, None, None]
    region = over(region, sclera, up.eye_open)
    iris_c = _rgb(lerp_palette(IRIS, p.iris_color))
    rim = (up.iris_r - 0.7).clamp(0, 0.3) / 0.3
    streaks = 1 + 0.12 * torch.sin(torch.atan2(ys - EYE_Y, axs - lay.eye_dx) * 40.0)
    region = over(region, iris_c * ((1.1 - 0.6 * rim) * streaks)[:, None], up.iris)
    region = over(region, torch.full_like(region, 0.03), up.pupil)
    glint = up.iris * compact_bump(ellipse_q(axs, ys, lay.eye_dx + 0.012, EYE_Y - 0.012, 0.012, 0.012))
    region = over(region, torch.full_like(region, 0.95), glint)
    region = over(region, torch.full_like(region, 0.06), up.lash)
    region = region * (1 - 0.18 * up.wrinkles[:, None])
    hair_c = _rgb(lerp_palette(HAIR, p.hair_color))
    brow_c = hair_c * (1 - 0.6 * _rgb(p.brow_darkness[:, None])) + 0.02
    strand = torch.sin(xs * 160.0 + 7.0 * ys)
    region = over(region, brow_c * (1 + 0.15 * strand[:, None]), up.brows * 0.92)
    ib.copy_(region)

    # Nostrils and a warm nose tip.
    nose = parts.nose
    xs, ys = nose.box.of(x), nose.box.of(y)
    ib = nose.box.of(img)
    tip = 0.2 * compact_bump(ellipse_q(xs, ys, 0.0, lay.nose_tip - 0.01, 0.05, 0.04))[:, None]
    region = ib * (1 - 0.25 * tip) + red * ib * 0.4 * tip
    ib.copy_(over(region, region * 0.35, nose.nostrils))

    # Lips, mouth inside, teeth.
    mouth = parts.mouth
    ib = mouth.box.of(img)
    lip_c = _rgb(lerp_palette(LIP, p.lip_color)) * (0.55 + 0.45 * _rgb(skin_c).mean(1, keepdim=True) / 0.7)
    region = over(ib, lip_c * 0.9, mouth.lip_upper)
    region = over(region, lip_c, mouth.lip_lower)
    mouth_dark = torch.tensor([0.22, 0.06, 0.07], device=x.device, dtype=x.dtype)[None, :, None, None]
    region = over(region, mouth_dark, mouth.inside)
    teeth_c = torch.tensor([0.92, 0.9, 0.84], device=x.device, dtype=x.dtype)[None, :, None, None]
    ib.copy_(over(region, teeth_c, mouth.teeth))

    # Hair over everything but the glasses.
    hphase = col(p.hair_phase) * 6.2832
    angle = torch.atan2(x - 0.3 * col(p.hair_part) * lay.hw, -(y - lay.top_y + 0.3))
    fibres = 0.5 + 0.5 * torch.sin(angle * 90.0 + 1.5 * torch.sin(y * 11.0 + hphase) + hphase)
    clumps = 0.5 + 0.5 * torch.sin(angle * 23.0 + 2.0 * hphase)
    sheen = compact_bump(ellipse_q(x, y, -0.15, lay.top_y + 0.25, 0.35, 0.12))
    hair_rgb = hair_c * (0.72 + 0.22 * fibres[:, None] + 0.14 * clumps[:, None]) + 0.18 * sheen[:, None]
    hair_rgb = hair_rgb * (1 - 0.25 * parts.hair_curtain[:, None])
    img = over(img, hair_rgb, parts.hair)

    glass_c = _rgb(lerp_palette(GLASSES, p.glasses_color))
    ib = up.box.of(img)
    ib.copy_(over(ib, glass_c, up.glasses))
    return img.clamp(0.0, 1.0)


def canonical_segmentation(parts: FaceParts) -> torch.Tensor:
    """Canonical segmentation [B,H,W] uint8: 0 bg, 1 skin, 2 brows, 3 eyes, 4 nose, 5 mouth, 6 hair, 7 glasses."""
    seg = torch.where(parts.head > 0.5, SEG_SKIN, SEG_BACKGROUND).to(torch.uint8)
    up, nose, mouth = parts.upper, parts.nose, parts.mouth

    def paint(box, alpha: torch.Tensor, label: int) -> None:
        view = box.of(seg)
        view.copy_(torch.where(alpha > 0.5, torch.full_like(view, label), view))

    paint(nose.box, nose.nose * nose.box.of(parts.face), SEG_NOSE)
    paint(up.box, up.brows, SEG_BROWS)
    paint(up.box, up.eye_open, SEG_EYES)
    paint(mouth.box, mouth.lip_upper + mouth.lip_lower + mouth.inside, SEG_MOUTH)
    seg = torch.where(parts.hair > 0.5, torch.full_like(seg, SEG_HAIR), seg)
    paint(up.box, up.glasses, SEG_GLASSES)
    return seg
