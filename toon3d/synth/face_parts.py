"""Where each part of a SynFace lies in the canonical frontal image: soft 2-D part masks.

The canonical face is laid out on the toon3d layout (`toon3d.synth.layout`): eyes, mouth
and chin sit near fixed image positions, and identity parameters move them a little.
Expression parameters enter only through `expression * region_window`, a field that is
exactly zero outside the expression's region, so an expression can change nothing
outside it (the locality the 3D and editing stages are measured with).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from toon3d.synth import layout
from toon3d.synth.face_fields import (col, compact_bump, coverage, edge_width, ellipse_q, ellipse_sdf,
                                      region_window, smoothstep)
from toon3d.synth.face_params import SynFaceParams

EYE_Y = 2 * layout.EYE_Y - 1
EYE_DX = 2 * (layout.EYE_RIGHT_X - layout.FACE_CENTER_X)
MOUTH_Y = 2 * layout.MOUTH_Y - 1
CHIN_Y = 2 * layout.CHIN_Y - 1
HALF_WIDTH = 2 * layout.FACE_HALF_WIDTH


@dataclass
class FaceLayout:
    """Per-face landmark positions and sizes in normalised coordinates, each [B,1,1]."""

    hw: torch.Tensor          # cranium half-width
    crown_y: torch.Tensor     # cranium centre
    crown_ry: torch.Tensor    # cranium half-height
    jaw_y: torch.Tensor       # jaw ellipse centre
    jaw_rx: torch.Tensor
    jaw_ry: torch.Tensor
    jaw_p: torch.Tensor       # superellipse exponent of the lower face
    eye_dx: torch.Tensor
    eye_w: torch.Tensor       # eye half-width
    brow_y: torch.Tensor      # neutral brow line
    brow_cx: torch.Tensor
    brow_len: torch.Tensor    # brow half-length
    nose_top: torch.Tensor
    nose_tip: torch.Tensor
    nose_w: torch.Tensor
    mouth_y: torch.Tensor
    mouth_w: torch.Tensor     # mouth half-width (neutral)
    chin_y: torch.Tensor
    top_y: torch.Tensor       # top of the skull


def face_layout(p: SynFaceParams) -> FaceLayout:
    """Landmarks of each face from its identity parameters."""
    hw = col(HALF_WIDTH * p.head_width)
    top_y = col(EYE_Y - 0.70 * p.head_height)
    crown_y = col(torch.full_like(p.head_width, EYE_Y - 0.08))
    chin_y = col(CHIN_Y * p.chin_length)
    jaw_y = col(torch.full_like(p.head_width, EYE_Y - 0.04))
    eye_w = col(0.09 * p.eye_size)
    eye_dx = col(EYE_DX * p.eye_spacing)
    return FaceLayout(
        hw=hw, crown_y=crown_y, crown_ry=crown_y - top_y,
        jaw_y=jaw_y, jaw_rx=hw * col(p.jaw_width), jaw_ry=chin_y - jaw_y, jaw_p=col(p.jaw_shape),
        eye_dx=eye_dx, eye_w=eye_w,
        brow_y=col(EYE_Y - 0.145 - 0.25 * (p.eye_size - 1.0) * 0.082),
        brow_cx=eye_dx - 0.01, brow_len=col(torch.full_like(p.head_width, 0.115)),
        nose_top=col(torch.full_like(p.head_width, EYE_Y + 0.02)),
        nose_tip=col(EYE_Y + 0.285 * p.nose_length),
        nose_w=col(p.nose_width),
        mouth_y=col(MOUTH_Y + 0.02 * (p.nose_length - 1.0)),
        mouth_w=col(0.165 * p.mouth_width),
        chin_y=chin_y, top_y=top_y,
    )


@dataclass
class ExpressionWindows:
    """Support of each expression: [B,H,W] in [0,1], exactly 0 outside its region."""

    mouth: torch.Tensor
    eyes: torch.Tensor
    brows: torch.Tensor

    def for_param(self, name: str) -> torch.Tensor:
        """Window of the expression parameter `name`."""
        return {"smile": self.mouth, "mouth_open": self.mouth, "eyes_closed": self.eyes,
                "brows_raised": self.brows}[name]


def mouth_window(lay: FaceLayout, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Support of smile and mouth_open: an ellipse around the mouth, [B,h,w] for the given grid."""
    return region_window(ellipse_q(x, y, 0.0, lay.mouth_y + 0.025, 0.30, 0.165))


def eye_window(lay: FaceLayout, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Support of eyes_closed: an ellipse around each eye."""
    return region_window(ellipse_q(x.abs(), y, lay.eye_dx, EYE_Y, lay.eye_w * 1.55, lay.eye_w * 1.05))


def brow_window(lay: FaceLayout, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Support of brows_raised: an ellipse around each brow and the forehead above it."""
    return region_window(ellipse_q(x.abs(), y, lay.brow_cx, lay.brow_y - 0.03, lay.brow_len * 1.5, 0.125))


def expression_windows(lay: FaceLayout, x: torch.Tensor, y: torch.Tensor) -> ExpressionWindows:
    """The three expression regions (mouth, both eyes, both brows) of each face on grid (x, y)."""
    return ExpressionWindows(mouth=mouth_window(lay, x, y), eyes=eye_window(lay, x, y), brows=brow_window(lay, x, y))


@dataclass
class Box:
    """A pixel rectangle [r0:r1, c0:c1] of the image where a group of small parts lives."""

    r0: int
    r1: int
    c0: int
    c1: int

    def of(self, t: torch.Tensor) -> torch.Tensor:
        """The view of [..., H, W] tensor `t` inside the box."""
        return t[..., self.r0:self.r1, self.c0:self.c1]


def region_box(size: int, x0: float, x1: float, y0: float, y1: float) -> Box:
    """Pixels covering normalised x in [x0,x1], y in [y0,y1] at this size."""
    def idx(v: float) -> float:
        return (v + 1.0) / 2.0 * (size - 1)
    return Box(max(0, math.floor(idx(y0))), min(size, math.ceil(idx(y1)) + 1),
               max(0, math.floor(idx(x0))), min(size, math.ceil(idx(x1)) + 1))


# Small parts are computed only inside these boxes (normalised x0, x1, y0, y1); every part's
# support lies inside its box for all parameter values (checked by tests/test_synface.py),
# which makes the canonical face several times cheaper than evaluating every field everywhere.
UPPER_BOX = (-0.68, 0.68, -0.46, 0.18)   # eyes, brows, forehead lines, glasses
NOSE_BOX = (-0.17, 0.17, -0.12, 0.38)
MOUTH_BOX = (-0.36, 0.36, 0.17, 0.66)


@dataclass
class UpperParts:
    """Eyes, brows and glasses inside `box`: each [B,h,w] in [0,1]."""

    box: Box
    eye_window: torch.Tensor
    brow_window: torch.Tensor
    eye_open: torch.Tensor    # visible eyeball between the lids
    iris: torch.Tensor
    pupil: torch.Tensor
    iris_r: torch.Tensor      # distance from the iris centre / iris radius
    lash: torch.Tensor
    crease: torch.Tensor
    brows: torch.Tensor
    wrinkles: torch.Tensor    # forehead lines of raised brows
    glasses: torch.Tensor


@dataclass
class NoseParts:
    """Nostrils and the nose segmentation region inside `box`."""

    box: Box
    nostrils: torch.Tensor
    nose: torch.Tensor


@dataclass
class MouthParts:
    """Lips, mouth inside and teeth inside `box`."""

    box: Box
    window: torch.Tensor
    lip_upper: torch.Tensor
    lip_lower: torch.Tensor
    inside: torch.Tensor
    teeth: torch.Tensor


@dataclass
class FaceParts:
    """Soft masks of the canonical face: whole-image head layers [B,H,W] plus boxed small parts."""

    cranium_q: torch.Tensor   # squared normalised radius of the skull ellipse
    jaw_q: torch.Tensor       # superellipse radius^2 of the lower face
    face: torch.Tensor        # skin of the face oval
    ears: torch.Tensor
    neck: torch.Tensor
    hair: torch.Tensor        # hair in front of everything else
    hair_cap_q: torch.Tensor  # squared radius of the hair volume ellipse
    hair_curtain: torch.Tensor  # long hair hanging behind the face
    head: torch.Tensor        # where some head layer dominates: the canonical mask, soft
    upper: UpperParts
    nose: NoseParts
    mouth: MouthParts


def _between(y: torch.Tensor, top: torch.Tensor, bottom: torch.Tensor, side_sdf: torch.Tensor,
             edge: float) -> torch.Tensor:
    """Coverage of the band top < y < bottom, cut by a side distance (negative inside)."""
    sdf = torch.maximum(torch.maximum(top - y, y - bottom), side_sdf)
    return coverage(sdf, edge) * (bottom > top).to(y.dtype)


def _union(*alphas: torch.Tensor) -> torch.Tensor:
    out = alphas[0]
    for a in alphas[1:]:
        out = out + a - out * a
    return out


def face_parts(p: SynFaceParams, lay: FaceLayout, x: torch.Tensor, y: torch.Tensor, size: int) -> FaceParts:
    """Every part mask of each face at this image size (x, y: the [1,S,S] image grid)."""
    e = edge_width(size)
    head = _head_parts(p, lay, x, y, e)
    nose_box, mouth_box = (region_box(size, *b) for b in (NOSE_BOX, MOUTH_BOX))
    upper = upper_parts(p, lay, x, y, size)
    nose = _nose_parts(lay, nose_box, nose_box.of(x), nose_box.of(y), e)
    mouth = _mouth_parts(p, lay, mouth_box, mouth_box.of(x), mouth_box.of(y), e)
    return FaceParts(**head, upper=upper, nose=nose, mouth=mouth)


def upper_parts(p: SynFaceParams, lay: FaceLayout, x: torch.Tensor, y: torch.Tensor, size: int) -> UpperParts:
    """Eyes, brows, forehead lines and glasses of each face inside UPPER_BOX (x, y: the [1,S,S] image grid).

    A style may call this again with a changed layout (e.g. larger `eye_w`) to repaint the eyes.
    """
    box = region_box(size, *UPPER_BOX)
    return _upper_parts(p, lay, box, box.of(x), box.of(y), edge_width(size))


def _head_parts(p: SynFaceParams, lay: FaceLayout, x: torch.Tensor, y: torch.Tensor, e: float) -> dict:
    """Whole-image layers: face oval, ears, neck, hair, and the head mask."""
    ax = x.abs()
    # Head oval: a skull ellipse joined to a lower-face superellipse.
    cranium_q = ellipse_q(x, y, 0.0, lay.crown_y, lay.hw, lay.crown_ry)
    jx = (x / lay.jaw_rx).abs()
    jy = (y - lay.jaw_y) / lay.jaw_ry
    jaw_lower = (jx.clamp(min=1e-6).pow(lay.jaw_p) + jy.clamp(min=0).pow(lay.jaw_p)).pow(2.0 / lay.jaw_p)
    jaw_q = torch.where(jy > 0, jaw_lower, jx.square() + (jy * 2.2).square())
    face = torch.maximum(coverage(ellipse_sdf(cranium_q, lay.hw), e), coverage(ellipse_sdf(jaw_q, lay.jaw_rx), e))

    # Ears beside the cheek line, neck below the jaw.
    ear_y = EYE_Y + 0.09
    ear_x = lay.jaw_rx * 0.98 + 0.035
    es = col(p.ear_size)
    ear_q = ellipse_q(ax, y, ear_x, ear_y, 0.055 * es, 0.12 * es)
    ears = coverage(ellipse_sdf(ear_q, 0.05 * es), e) * (1 - face)
    neck_w = 0.44 * lay.jaw_rx + 0.6 * (y - 0.8).clamp(min=0).square()
    # The neck starts well inside the jaw outline, so its top edge stays hidden in turned views.
    neck = coverage(torch.maximum(ax - neck_w, lay.chin_y - 0.2 - y), e) * (1 - face)

    # Hair: a volume ellipse around the skull, cut by the hairline; long hair hangs behind.
    vol = col(p.hair_volume)
    cov = col(p.hair_coverage)
    cap_rx = lay.hw * (1.04 + 0.12 * vol)
    cap_ry = lay.crown_ry * (1.03 + 0.10 * vol)
    hair_cap_q = ellipse_q(x, y, 0.0, lay.crown_y - 0.01 * vol, cap_rx, cap_ry)
    cap = coverage(ellipse_sdf(hair_cap_q, cap_rx), e)
    front_y = EYE_Y - 0.27 - 0.30 * (1 - cov)
    bangs = smoothstep(0.5, 1.0, col(p.hair_bangs))
    phase = col(p.hair_phase) * 6.2832
    bang_edge = EYE_Y - 0.17 + 0.012 * torch.sin(x * 38.0 + phase) + 0.03 * (x / lay.hw).square()
    front_y = front_y + (bang_edge - front_y) * bangs
    part_x = 0.3 * col(p.hair_part) * lay.hw
    front_y = front_y - 0.03 * (1 - bangs) * compact_bump(((x - part_x) / 0.2).square())
    temple = smoothstep(0.5, 0.92, ax / lay.hw)
    hairline = front_y + (EYE_Y + 0.01 - front_y) * temple
    exposed = face * coverage(hairline - y, e)
    length = col(p.hair_length)
    curtain_end = EYE_Y - 0.06 + 1.0 * length
    wave = 0.02 * torch.sin(x * 17.0 + phase) * length
    bottom = curtain_end + wave - 0.12 * (ax / cap_rx).square() * (1 - length)
    curtain_w = cap_rx * (0.97 + 0.05 * length) - 0.08 * ((y - bottom + 0.2) / 0.2).clamp(0, 1).square()
    curtain = coverage(torch.maximum(torch.maximum(ax - curtain_w, y - bottom), lay.crown_y - y), e)
    # Short hair ends above the ears beside the face; longer hair reaches down to the curtain.
    cap = cap * torch.maximum(face, coverage(y - (EYE_Y + 0.03 + 0.6 * length), e))
    hair_sil = _union(cap, curtain)
    hair = hair_sil * (1 - exposed) * (1 - ears * (1 - cap) * (length < 0.35).to(x.dtype))
    hair_curtain = curtain * (1 - cap)

    # The head mask is where some layer dominates (> 0.5), so every head pixel has a layer's depth.
    head = torch.maximum(torch.maximum(face, ears), torch.maximum(neck, hair))
    return dict(cranium_q=cranium_q, jaw_q=jaw_q, face=face, ears=ears, neck=neck, hair=hair,
                hair_cap_q=hair_cap_q, hair_curtain=hair_curtain, head=head)


def _upper_parts(p: SynFaceParams, lay: FaceLayout, box: Box, x: torch.Tensor, y: torch.Tensor,
                 e: float) -> UpperParts:
    """Eyes, brows, forehead lines and glasses on the upper-face box grid."""
    ax = x.abs()
    eyes_w, brows_w = eye_window(lay, x, y), brow_window(lay, x, y)
    closed = col(p.eyes_closed) * eyes_w
    raised = col(p.brows_raised) * brows_w

    # Eyes: an almond between two lid curves; closing moves both lids to a line.
    ex = (ax - lay.eye_dx) / lay.eye_w
    slant = col(p.eye_slant) * 0.16
    ey = (y - EYE_Y) / lay.eye_w + slant * ex
    span = (1 - ex.square()).clamp(min=0)
    lid_up = -0.46 * span.pow(0.8)
    lid_lo = 0.30 * span.pow(0.9)
    shut = 0.20 * span
    lid_up = lid_up + (shut - lid_up) * closed
    lid_lo = lid_lo + (shut - lid_lo) * closed
    side = (ex.abs() - 1.0) * lay.eye_w
    eye_open = _between(ey * lay.eye_w, lid_up * lay.eye_w, lid_lo * lay.eye_w, side, e)
    iris_c = 0.03
    dist = torch.sqrt(ex.square() + (ey - iris_c).square())
    iris_r = dist / 0.43
    iris = coverage((dist - 0.43) * lay.eye_w, e) * eye_open
    pupil = coverage((dist - 0.17) * lay.eye_w, e) * eye_open
    lash_w = 0.07 + 0.06 * smoothstep(0.2, 1.0, ex)
    lash = coverage(((ey - lid_up).abs() - lash_w) * lay.eye_w, e) * coverage(side - 0.1 * lay.eye_w, e)
    crease_y = lid_up - 0.30 * span.pow(0.6) - 0.05
    crease = coverage(((ey - crease_y).abs() - 0.035) * lay.eye_w, e) * coverage(side, e) * (1 - closed * 0.6)

    # Brows: a tapered arc; raising moves it up.
    bx = (ax - lay.brow_cx) / lay.brow_len
    by = lay.brow_y - 0.07 * raised
    arch = (0.02 + 0.035 * col(p.brow_arch)) * (1 + 0.3 * raised)
    centre = by - arch * (1 - bx.square()).clamp(min=0) + 0.02 * col(p.brow_tilt) * bx
    thick = 0.018 * col(p.brow_thickness) * (1.0 - 0.45 * smoothstep(-0.6, 1.0, bx))
    brows = coverage(torch.maximum((y - centre).abs() - thick, (bx.abs() - 1.0) * lay.brow_len), e)
    wrinkle_y = (lay.brow_y - 0.1 - y) / 0.028
    wrinkles = raised * (0.5 + 0.5 * torch.cos(wrinkle_y * 2 * math.pi)) * compact_bump(
        ellipse_q(ax, y, lay.brow_cx * 0.7, lay.brow_y - 0.13, 0.2, 0.06))

    # Glasses: two rims (round to rectangular), a bridge and the temple arms.
    g_on = col(p.glasses)
    pexp = 2.0 + 4.0 * col(p.glasses_shape)
    rim_rx = lay.eye_w * 1.5
    rim_ry = lay.eye_w * 1.08
    gx = ((ax - lay.eye_dx) / rim_rx).abs()
    gy = ((y - EYE_Y - 0.012) / rim_ry).abs()
    rad = (gx.clamp(min=1e-6).pow(pexp) + gy.clamp(min=1e-6).pow(pexp)).pow(1.0 / pexp)
    rim = coverage(((rad - 1.0).abs() * rim_ry) - 0.008, e)
    inner = lay.eye_dx - rim_rx
    bridge_y = EYE_Y - 0.012 + 0.02 * (ax / inner.clamp(min=1e-3)).square()
    bridge = coverage(torch.maximum((y - bridge_y).abs() - 0.007, ax - inner), e)
    arm_y = EYE_Y - 0.01
    arm = coverage(torch.maximum((y - arm_y).abs() - 0.007, torch.maximum(lay.eye_dx + rim_rx * 0.95 - ax,
                                                                            ax - lay.hw * 1.02)), e)
    glasses = g_on * _union(rim, bridge, arm)

    return UpperParts(box=box, eye_window=eyes_w, brow_window=brows_w, eye_open=eye_open, iris=iris,
                      pupil=pupil, iris_r=iris_r, lash=lash, crease=crease, brows=brows, wrinkles=wrinkles,
                      glasses=glasses)


def _nose_parts(lay: FaceLayout, box: Box, x: torch.Tensor, y: torch.Tensor, e: float) -> NoseParts:
    """Nostrils and the nose region on the nose box grid."""
    ax = x.abs()
    # Nose: nostrils under the tip, a segmentation region around the ridge and wings.
    nw = lay.nose_w
    nostrils = coverage(ellipse_sdf(ellipse_q(ax, y, 0.036 * nw, lay.nose_tip + 0.032, 0.022 * nw, 0.011),
                                    0.011), e)
    s = (y - lay.nose_top) / (lay.nose_tip - lay.nose_top)
    nose_half = (0.03 + 0.045 * s.clamp(0, 1).square()) * nw
    nose = coverage(torch.maximum(torch.maximum(ax - nose_half, -s), y - lay.nose_tip - 0.045), e)
    nose = nose * (1 - coverage(ellipse_sdf(ellipse_q(ax, y, lay.eye_dx, EYE_Y, lay.eye_w * 1.1, lay.eye_w * 0.7),
                                            lay.eye_w * 0.5), e))

    return NoseParts(box=box, nostrils=nostrils, nose=nose)


def _mouth_parts(p: SynFaceParams, lay: FaceLayout, box: Box, x: torch.Tensor, y: torch.Tensor,
                 e: float) -> MouthParts:
    """Lips, mouth inside and teeth on the mouth box grid; smile and opening act here only."""
    window = mouth_window(lay, x, y)
    smile = col(p.smile) * window
    mopen = col(p.mouth_open) * window

    # Mouth: lips around a mouth line whose corners rise with the smile.
    mw = lay.mouth_w * (1 + 0.2 * smile)
    mx = x / mw
    mspan = (1 - mx.square()).clamp(min=0)
    line = lay.mouth_y - 0.075 * smile * (mx.square() - 0.3)
    gap = (0.05 * mopen + 0.012 * smile * (1 - mopen)) * mspan.sqrt()
    lt = col(p.lip_thickness) * (1 - 0.25 * smile)
    cupid = 1 - 0.25 * torch.exp(-(mx / 0.12).square())
    up_top = line - gap - 0.034 * lt * mspan.pow(0.5) * cupid - 0.004
    lo_bot = line + gap + 0.044 * lt * mspan.pow(0.6) + 0.003
    mside = (mx.abs() - 1.0) * mw
    lip_upper = _between(y, up_top, line - gap, mside, e)
    lip_lower = _between(y, line + gap, lo_bot, mside, e)
    mouth_inside = _between(y, line - gap, line + gap, mside, e)
    teeth = mouth_inside * coverage(y - (line - gap + 0.018 + 0.01 * mopen), e) * coverage(mx.abs() - 0.8, e)
    lip_upper = lip_upper * (1 - mouth_inside)
    lip_lower = lip_lower * (1 - mouth_inside)

    return MouthParts(box=box, window=window, lip_upper=lip_upper, lip_lower=lip_lower, inside=mouth_inside,
                      teeth=teeth)
