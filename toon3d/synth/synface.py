"""SynFace: procedural 3-D human-like faces rendered with full ground truth.

A face is a canonical (frontal) height field with an albedo, a segmentation and a head
mask, all analytic functions of normalised image coordinates (`face_parts`,
`face_geometry`, `face_albedo`). It is shaded with the Unsup3d Lambertian model
(`toon3d.shape.renderer.Renderer.shade`), posed about (0, 0, 1) and composited over a
random background. Views are rendered by ray marching the height field
(`heightfield_view`, fast) or with the toon3d mesh renderer (`method="mesh"`, exact, slow).
Styles that redraw the same faces (`toon_style`) reuse `canonical_geometry`, `view_face` and
`render_in_chunks`, so they share SynFace's geometry and ground truth exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from toon3d.errors import Toon3dError
from toon3d.shape.camera import normals_from_depth, rt_from_angles
from toon3d.shape.renderer import Renderer, RenderSettings
from toon3d.synth.face_albedo import canonical_albedo, canonical_segmentation
from toon3d.synth.face_fields import col, image_grid
from toon3d.synth.face_geometry import canonical_depth
from toon3d.synth.face_parts import face_layout, face_parts
from toon3d.synth.face_params import SynFaceParams
from toon3d.synth.heightfield_view import MarchSettings, march_heightfield
from toon3d.synth.layout import EYE_LEFT_X, EYE_RIGHT_X, EYE_Y

MIN_SIZE, MAX_SIZE = 64, 256
VIEW_BACKGROUND_DEPTH = 1.2  # the renderer's background depth (max_depth + margin)
ROT_CENTER_DEPTH = 1.0       # poses rotate about (0, 0, 1), the renderer's convention
# SynFace views sample pixel centres (pixel i at u = i), unlike RenderSettings' default 0.5
# (neural_renderer parity). Scoring against SynFace ground truth must render with this offset.
PIXEL_OFFSET = 0.0


@dataclass
class SynFaceSettings:
    """How SynFace views are rendered."""

    fov_deg: float = 10.0
    method: str = "raymarch"   # "raymarch" (fast) or "mesh" (the toon3d rasteriser)
    antialias_edges: bool = True
    # Faces are rendered in chunks of about this many pixels (32 faces at 128 px): smaller
    # chunks pay per-operation overhead, larger ones allocate tens of MB per operation.
    chunk_pixels: int = 1 << 19
    # FFHQ-style anchoring: translate each posed head (in x, y only; the camera and depth range
    # stay) so the point between its eyes projects where a frontal face's does. Poses rotate about
    # (0,0,1), behind the face, so without it a 40° yaw moves the eyes by ~12 px at 64 px (std
    # 3.3 px over SynFace's poses, against ~7 px eyes): a regression decoder then averages the
    # parts over their positions. Off by default: the shipped models were trained without it.
    anchor_eyes: bool = False

    def camera(self) -> dict[str, float]:
        """The camera of the ground truth: {"fov_deg", "rot_center_depth", "pixel_offset"}."""
        return {"fov_deg": float(self.fov_deg), "rot_center_depth": ROT_CENTER_DEPTH, "pixel_offset": PIXEL_OFFSET}

    def render_settings(self, size: int) -> RenderSettings:
        """`RenderSettings` of the toon3d renderer with SynFace's camera (pixel centres, pixel_offset 0)."""
        return RenderSettings(size, **self.camera())


def check_size(size: object) -> int:
    """Validate an image size (an int in 64..256) or raise a one-line Toon3dError."""
    if isinstance(size, bool) or not isinstance(size, int):
        raise Toon3dError(f"size must be an integer number of pixels, got {size!r}; pass e.g. --size 128")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise Toon3dError(f"size {size} is outside {MIN_SIZE}-{MAX_SIZE}; "
                          f"pass --size between {MIN_SIZE} and {MAX_SIZE}")
    return size


def canonical_geometry(params: SynFaceParams, size: int, device: torch.device | str | None = None) -> dict:
    """Frontal shape: canon_depth [B,S,S], canon_mask [B,S,S] in {0,1}, and the pieces styles paint with.

    Also returns "params" (on `device`, float32), "layout" (`FaceLayout`), "x", "y" (the [1,S,S]
    grid) and "parts" (`FaceParts`), so an albedo painter need not recompute them.
    """
    p = params.to(device=device, dtype=torch.float32)
    x, y = image_grid(size, device=device)
    lay = face_layout(p)
    parts = face_parts(p, lay, x, y, size)
    depth = canonical_depth(p, lay, parts, x, y)
    mask = (parts.head > 0.5).to(torch.float32)
    return {"canon_depth": depth, "canon_mask": mask, "params": p, "layout": lay, "x": x, "y": y, "parts": parts}


def canonical_face(params: SynFaceParams, size: int, device: torch.device | str | None = None) -> dict:
    """Frontal face: canon_depth [B,S,S], albedo [B,3,S,S] in [-1,1], canon_seg [B,S,S] uint8, canon_mask in {0,1}."""
    g = canonical_geometry(params, size, device)
    albedo = canonical_albedo(g["params"], g["layout"], g["parts"], g["x"], g["y"]) * 2.0 - 1.0
    seg = canonical_segmentation(g["parts"])
    return {"canon_depth": g["canon_depth"], "albedo": albedo, "canon_seg": seg, "canon_mask": g["canon_mask"],
            "parts": g["parts"]}


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """[B] hue/saturation/value in [0,1] → [B,3] RGB in [0,1]."""
    k = torch.tensor([5.0, 3.0, 1.0], device=h.device, dtype=h.dtype)
    kk = (k + h[:, None] * 6.0) % 6.0
    return v[:, None] - v[:, None] * s[:, None] * torch.clamp(torch.minimum(kk, 4.0 - kk), 0.0, 1.0)


def synface_background(params: SynFaceParams, size: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Random background [B,3,S,S] in [-1,1]: a two-colour gradient with soft blobs."""
    p = params.to(device=device, dtype=torch.float32)
    x, y = image_grid(size, device=device)
    c1 = _hsv_to_rgb(p.bg_hue, p.bg_saturation, p.bg_value)
    c2 = _hsv_to_rgb(p.bg_hue2, p.bg_saturation * 0.8, p.bg_value2)
    ang = col(p.bg_angle) * 2 * math.pi
    ph = col(p.bg_phase) * 2 * math.pi
    ramp = 0.5 + 0.35 * (x * torch.cos(ang) + y * torch.sin(ang))
    blobs = 0.08 * torch.sin(x * 3.1 + ph) * torch.sin(y * 2.3 - 2 * ph) + 0.04 * torch.sin((x - y) * 6.0 + 3 * ph)
    t = (ramp + blobs).clamp(0, 1)[:, None]
    img = c1[:, :, None, None] * (1 - t) + c2[:, :, None, None] * t
    return (img * 2.0 - 1.0).clamp(-1, 1)


def synface_light(params: SynFaceParams, device: torch.device | str | None = None) -> torch.Tensor:
    """Light [B,4] = (ambient, diffuse, dx, dy), the renderer's convention."""
    p = params.to(device=device, dtype=torch.float32)
    return torch.stack([p.light_ambient, p.light_diffuse, p.light_dx, p.light_dy], dim=1)


def synface_pose(params: SynFaceParams, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """R [B,3,3], t [B,3] of each face's pose (rotation about (0,0,1), no translation)."""
    p = params.to(device=device, dtype=torch.float32)
    return rt_from_angles(p.yaw_deg, p.pitch_deg, p.roll_deg, device=device, dtype=torch.float32)


def eye_anchor_translation(canon_depth: torch.Tensor, R: torch.Tensor, fov_deg: float) -> torch.Tensor:
    """t [B,3] (t_z = 0) that keeps the canonical point between the eyes on its frontal pixel after
    the rotation R [B,3,3] about (0,0,ROT_CENTER_DEPTH); canon_depth [B,S,S] gives that point's depth."""
    b, size = canon_depth.shape[0], canon_depth.shape[-1]
    row = min(size - 1, round(EYE_Y * (size - 1)))
    col = min(size - 1, round(0.5 * (EYE_LEFT_X + EYE_RIGHT_X) * (size - 1)))
    z = canon_depth[:, row, col]
    tan = math.tan(math.radians(fov_deg) / 2)
    # the frontal eye point: image position (fractions) → normalised coordinates → camera space
    x = (2 * (col / (size - 1)) - 1) * tan * z
    y = (2 * (row / (size - 1)) - 1) * tan * z
    eye = torch.stack([x, y, z], dim=-1)
    centre = eye.new_tensor([0.0, 0.0, ROT_CENTER_DEPTH])
    moved = torch.einsum("bij,bj->bi", R.to(eye), eye - centre) + centre
    t = torch.zeros(b, 3, dtype=eye.dtype, device=eye.device)
    t[:, 0] = eye[:, 0] * moved[:, 2] / eye[:, 2] - moved[:, 0]
    t[:, 1] = eye[:, 1] * moved[:, 2] / eye[:, 2] - moved[:, 1]
    return t


def soften_edges(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Blur only the pixels on the head silhouette: a cheap anti-aliasing of the binary mask."""
    m = mask.unsqueeze(1).float()
    edge = (F.max_pool2d(m, 3, 1, 1) - (-F.max_pool2d(-m, 3, 1, 1))) > 0
    blurred = F.avg_pool2d(F.pad(image, (1, 1, 1, 1), mode="replicate"), 3, 1)
    return torch.where(edge, 0.5 * (image + blurred), image)


@torch.no_grad()
def render_synface(params: SynFaceParams, size: int, device: torch.device | str | None = None,
                   settings: SynFaceSettings | None = None) -> dict:
    """Render faces with ground truth.

    Returns image [B,3,S,S] in [-1,1]; canonical canon_depth [B,S,S] (~[0.93,1.05], 1.1 off
    the head), albedo [B,3,S,S] in [-1,1], canon_image (shaded) [B,3,S,S], canon_seg,
    canon_mask; view depth [B,S,S] (background 1.2), normal [B,S,S,3] (Unsup3d convention,
    frontal plane (0,0,1)), seg [B,S,S] uint8, mask [B,S,S] uint8; background, R, t, light;
    and "camera", a plain dict {"fov_deg", "rot_center_depth", "pixel_offset": 0.0}: a renderer
    compared with this ground truth must use `pixel_offset=out["camera"]["pixel_offset"]`.
    """
    return render_in_chunks(_render_chunk, params, size, device, settings)


def render_in_chunks(render_chunk, params: SynFaceParams, size: int, device: torch.device | str | None,
                     settings: SynFaceSettings | None) -> dict:
    """Call `render_chunk(params, size, device, settings) -> dict` on chunks of faces and join the results.

    Shared by SynFace and its styles (`toon3d.synth.toon_style`); adds the "camera" entry.
    """
    size = check_size(size)
    s = settings or SynFaceSettings()
    chunk = max(1, s.chunk_pixels // (size * size))
    parts = [render_chunk(params[i:i + chunk], size, device, s) for i in range(0, len(params), chunk)]
    out = parts[0] if len(parts) == 1 else {k: torch.cat([part[k] for part in parts]) for k in parts[0]}
    out["camera"] = s.camera()
    return out


@dataclass
class FaceView:
    """Where each pixel of a posed view lands on the canonical face."""

    renderer: Renderer    # the toon3d renderer with SynFace's camera at this size
    R: torch.Tensor       # [B,3,3]
    t: torch.Tensor       # [B,3]
    depth: torch.Tensor   # view depth [B,S,S], VIEW_BACKGROUND_DEPTH off the head
    grid: torch.Tensor    # canonical sampling grid [B,S,S,2] (`grid_sample`, align_corners=True)
    hit: torch.Tensor     # [B,S,S] bool, the view's head mask

    def sample(self, canon_image: torch.Tensor) -> torch.Tensor:
        """Bilinear view [B,C,S,S] of a canonical image [B,C,S,S] (meaningful where `hit`)."""
        return F.grid_sample(canon_image, self.grid, mode="bilinear", align_corners=True)

    def sample_labels(self, canon_labels: torch.Tensor) -> torch.Tensor:
        """Nearest view [B,S,S] uint8 of canonical labels [B,S,S] uint8, 0 off the head."""
        labels = F.grid_sample(canon_labels.float().unsqueeze(1), self.grid, mode="nearest", align_corners=True)
        return torch.where(self.hit, labels[:, 0].round().to(torch.uint8), torch.zeros_like(self.hit, dtype=torch.uint8))

    def normal(self) -> torch.Tensor:
        """View normals [B,S,S,3] of the view depth (Unsup3d convention)."""
        return normals_from_depth(self.depth, self.renderer.K)


def view_face(canon_depth: torch.Tensor, canon_mask: torch.Tensor, params: SynFaceParams, size: int,
              device: torch.device | str | None, s: SynFaceSettings) -> FaceView:
    """Pose each face (its params' yaw/pitch/roll) and find the view pixels on its canonical height field."""
    renderer = Renderer(s.render_settings(size), device=device)
    R, t = synface_pose(params, device)
    if s.anchor_eyes:
        t = eye_anchor_translation(canon_depth, R, s.fov_deg)
    if s.method == "raymarch":
        depth_v, grid, hit = march_heightfield(canon_depth, canon_mask, R, t,
                                               MarchSettings(fov_deg=s.fov_deg, rot_center_depth=ROT_CENTER_DEPTH))
    elif s.method == "mesh":
        depth_v = renderer.warp_canon_depth(canon_depth, R, t, canon_mask)
        grid = renderer.inverse_warp_grid(depth_v, R, t)
        hit = depth_v < VIEW_BACKGROUND_DEPTH
    else:
        raise Toon3dError(f"unknown SynFace render method {s.method!r}; use 'raymarch' or 'mesh'")
    return FaceView(renderer=renderer, R=R, t=t, depth=depth_v, grid=grid, hit=hit)


def _render_chunk(params: SynFaceParams, size: int, device: torch.device | str | None,
                  s: SynFaceSettings) -> dict:
    """`render_synface` for one chunk of faces."""
    canon = canonical_face(params, size, device)
    depth_c, mask_c = canon["canon_depth"], canon["canon_mask"]
    view = view_face(depth_c, mask_c, params, size, device, s)
    light = synface_light(params, device)
    texture, _ = view.renderer.shade(canon["albedo"], depth_c, light)
    seg = view.sample_labels(canon["canon_seg"])
    background = synface_background(params, size, device)
    image = torch.where(view.hit.unsqueeze(1), view.sample(texture).clamp(-1, 1), background)
    if s.antialias_edges:
        image = soften_edges(image, view.hit)
    return {"image": image, "canon_depth": depth_c, "albedo": canon["albedo"], "canon_image": texture,
            "canon_seg": canon["canon_seg"], "canon_mask": mask_c, "depth": view.depth, "normal": view.normal(),
            "seg": seg, "mask": view.hit.to(torch.uint8), "background": background, "R": view.R, "t": view.t,
            "light": light}
