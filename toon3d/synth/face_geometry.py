"""Canonical (frontal) SynFace depth: a head height field in Unsup3d depth units.

The depth map is the distance along the optical axis of the frontal view, in the scene
units of the Unsup3d renderer (camera at 0, rotation centre at depth 1, image width
≈ 0.175 at depth 1 for fov 10°). A head spans roughly [0.93, 1.01]: the face's front at
about 0.955, the nose tip ~0.02 nearer, the silhouette near 1.0, so the head turns about
its own centre like a real one.
"""

from __future__ import annotations

import torch

from toon3d.synth.face_fields import col, compact_bump, ellipse_q, smooth_min
from toon3d.synth.face_parts import EYE_Y, FaceLayout, FaceParts
from toon3d.synth.face_params import SynFaceParams

FACE_FRONT = 0.955        # depth of the forehead / cheek front
FAR_CANON = 1.1           # canonical depth outside the head (dropped by the canonical mask)


def _cap_depth(q: torch.Tensor, front, relief) -> torch.Tensor:
    """Depth of a rounded cap: `front` at q=0, `front + relief` at the rim q=1, sloping on outside.

    A sphere's sqrt profile has an infinite slope at the rim, which turns into long stretched
    triangles (streaks) in turned views; this profile keeps a finite slope (3·relief per unit q)
    and continues linearly past the rim so neighbouring layers meet without a cliff.
    """
    inner = (1.0 - (1.0 - 0.96 * q.clamp(max=1.0)).sqrt()) / 0.8
    return front + relief * torch.where(q < 1.0, inner, 1.0 + 3.0 * (q - 1.0))


def canonical_depth(p: SynFaceParams, lay: FaceLayout, parts: FaceParts, x: torch.Tensor,
                    y: torch.Tensor) -> torch.Tensor:
    """Canonical depth [B,H,W] (~[0.93,1.01] on the head, FAR_CANON outside)."""
    fd = col(p.face_depth)
    ax = x.abs()
    skull = _cap_depth(parts.cranium_q, FACE_FRONT + 0.002, 0.046 * fd)
    jaw = _cap_depth(parts.jaw_q, FACE_FRONT, 0.042 * fd)
    z = smooth_min(skull, jaw, 0.01)
    chin = (0.003 + 0.008 * col(p.chin_protrusion)) * fd * compact_bump(
        ellipse_q(x, y, 0.0, lay.chin_y - 0.1, 0.13, 0.08))
    z = z - chin

    # Relief features (negative offsets come towards the camera), each inside its part box.
    up, nb, mb = parts.upper, parts.nose.box, parts.mouth
    xs, ys = nb.of(x), nb.of(y)
    nw = lay.nose_w
    nh = col(p.nose_height) * 0.015 * fd
    s = (ys - lay.nose_top) / (lay.nose_tip - lay.nose_top)
    ridge_h = nh * (0.22 + 0.78 * s.clamp(0, 1).pow(1.3)) * (1 - smoothstep_drop(s))
    ridge_w = (0.048 + 0.035 * s.clamp(0, 1).square()) * nw
    ridge = ridge_h * compact_bump((xs / ridge_w).square()) * (1 - (-s / 0.15).clamp(0, 1))
    tip = nh * 0.25 * compact_bump(ellipse_q(xs, ys, 0.0, lay.nose_tip - 0.01, 0.05 * nw, 0.045))
    wings = nh * 0.35 * compact_bump(ellipse_q(xs.abs(), ys, 0.045 * nw, lay.nose_tip + 0.012, 0.04 * nw, 0.035))
    nb.of(z).sub_(ridge + tip + wings)

    xs, ys = up.box.of(x), up.box.of(y)
    axs = xs.abs()
    raised = col(p.brows_raised) * up.brow_window
    sockets = 0.005 * fd * compact_bump(ellipse_q(axs, ys, lay.eye_dx, EYE_Y - 0.01, lay.eye_w * 1.6, lay.eye_w * 1.25))
    eyeball = 0.0035 * fd * compact_bump(ellipse_q(axs, ys, lay.eye_dx, EYE_Y, lay.eye_w * 1.05, lay.eye_w * 0.8))
    ridge_brow = (0.002 + 0.005 * col(p.brow_ridge)) * fd * compact_bump(
        ellipse_q(axs, ys, lay.eye_dx * 0.55, lay.brow_y + 0.01, lay.eye_dx * 1.2, 0.06))
    cheek = (0.002 + 0.006 * col(p.cheekbones)) * fd * compact_bump(
        ellipse_q(axs, ys, lay.hw * 0.55, EYE_Y + 0.15, 0.15, 0.09))
    # brows_raised relief, scaled by its window (zero outside the brow region)
    brow_lift = 0.0015 * raised * compact_bump(ellipse_q(axs, ys, lay.brow_cx, lay.brow_y - 0.05, 0.12, 0.05))
    up.box.of(z).add_(sockets - eyeball - ridge_brow - cheek - brow_lift)

    xs, ys = mb.box.of(x), mb.box.of(y)
    smile = col(p.smile) * mb.window
    mopen = col(p.mouth_open) * mb.window
    muzzle = 0.006 * fd * compact_bump(ellipse_q(xs, ys, 0.0, lay.mouth_y - 0.03, 0.24, 0.17))
    lips = 0.0035 * mb.lip_upper + 0.0045 * mb.lip_lower
    smile_cheeks = 0.003 * smile * compact_bump(ellipse_q(xs.abs(), ys, 0.17, lay.mouth_y - 0.02, 0.08, 0.07))
    inside = 0.012 * mb.inside * (1 - 0.4 * mb.teeth) * mopen.clamp(min=0.2)
    mb.box.of(z).add_(inside - muzzle - lips - smile_cheeks)

    # Ears and neck sit behind the face oval.
    ear_z = FACE_FRONT + 0.036 * fd
    neck_z = FACE_FRONT + 0.05 * fd + 0.04 * (ax / (0.44 * lay.jaw_rx)).clamp(max=1.3).square()
    z = torch.where(parts.face > 0.5, z, torch.where(parts.ears > 0.5, ear_z.expand_as(z), neck_z))

    # Hair: a volume over the skull (in front of the face where it covers it), a curtain behind.
    vol = col(p.hair_volume)
    phase = col(p.hair_phase) * 6.2832
    # Strand ripples fade out towards the volume's rim, where the surface turns away steeply.
    strands = 0.0006 * torch.sin(torch.atan2(x, -(y - lay.top_y + 0.3)) * 70.0 + phase)
    cap = _cap_depth(parts.hair_cap_q, FACE_FRONT - 0.004 - 0.008 * vol, (0.05 + 0.01 * vol) * fd)
    cap = cap + strands * (1 - parts.hair_cap_q.clamp(0, 1))
    # Long hair wraps backwards around the head, so turned heads do not show a flat board.
    curtain = FACE_FRONT + 0.042 * fd + 0.04 * (x / lay.hw).square().clamp(max=1.6)
    hair_z = torch.minimum(cap, curtain)
    on_face = (parts.face > 0.5) | (parts.ears > 0.5)
    hair_z = torch.where(on_face, torch.minimum(hair_z, z - 0.001), hair_z)
    z = torch.where(parts.hair > 0.5, hair_z, z)

    # Glasses frames float a little in front of the surface under them.
    zb = up.box.of(z)
    zb.copy_(torch.where(up.glasses > 0.5, zb - 0.005, zb))

    return torch.where(parts.head > 0.5, z, torch.full_like(z, FAR_CANON)).clamp(0.85, FAR_CANON)


def smoothstep_drop(s: torch.Tensor) -> torch.Tensor:
    """0 up to the nose tip (s=1), 1 a little below it: where the nose ridge ends."""
    t = ((s - 1.0) / 0.12).clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)
