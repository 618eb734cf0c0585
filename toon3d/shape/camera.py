"""Pinhole camera and depth-map geometry with the Unsup3d / GAN2Shape conventions.

Camera space: x to the image right, y to the image bottom, z away from the camera.
Pixel (row v, column u) of an S×S image looks along K⁻¹ [u, v, 1] with
`f = (S-1) / (2 tan(fov/2))` and principal point `(S-1)/2`, so pixel centres sit on
integer coordinates and normalised grids divide by `S-1`: every `grid_sample` on these
grids must use `align_corners=True`.

A view moves the canonical surface by `P' = (P - c) Rᵀ + c + t`, rotating about the point
`c = (0, 0, rot_center_depth)` with `R = Rz·Ry·Rx`. Angles: pitch = rotation about x,
yaw = about y, roll = about z. A positive yaw moves points in front of the rotation centre
(a nose) towards the image left, so the face turns to show more of its image-right side.
"""

from __future__ import annotations

import math

import torch

from toon3d.errors import Toon3dError


def intrinsics(size: int, fov_deg: float = 10.0, device: torch.device | str | None = None,
               dtype: torch.dtype | None = None) -> torch.Tensor:
    """Camera matrix K [3,3] of an S×S image: f = (S-1)/(2 tan(fov/2)), c = (S-1)/2."""
    if size < 2:
        raise Toon3dError(f"image size {size} is too small for a camera; use at least 2 px")
    if not 0.0 < fov_deg < 180.0:
        raise Toon3dError(f"field of view {fov_deg}° is out of range; use a value in (0, 180)")
    f = (size - 1) / 2.0 / math.tan(math.radians(fov_deg) / 2.0)
    c = (size - 1) / 2.0
    return torch.tensor([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]],
                        device=device, dtype=dtype or torch.get_default_dtype())


def _k_parts(K: torch.Tensor, batch: int) -> tuple[torch.Tensor, ...]:
    """(fx, fy, cx, cy) each [B,1,1] from K [3,3] or [B,3,3] (no skew)."""
    if K.dim() == 2:
        K = K.unsqueeze(0)
    K = K.expand(batch, 3, 3)
    return tuple(K[:, i, j].view(batch, 1, 1) for i, j in ((0, 0), (1, 1), (0, 2), (1, 2)))


def pixel_grid(h: int, w: int, device: torch.device | str | None = None,
               dtype: torch.dtype | None = None) -> torch.Tensor:
    """Pixel coordinates [H,W,2] as (u = column, v = row), integers at pixel centres."""
    v, u = torch.meshgrid(torch.arange(h, device=device, dtype=dtype or torch.get_default_dtype()),
                          torch.arange(w, device=device, dtype=dtype or torch.get_default_dtype()),
                          indexing="ij")
    return torch.stack([u, v], dim=-1)


def check_depth(depth: torch.Tensor, name: str = "depth") -> None:
    """Raise a one-line Toon3dError unless depth is a finite, positive [B,H,W] tensor."""
    if not isinstance(depth, torch.Tensor) or depth.dim() != 3:
        shape = tuple(depth.shape) if isinstance(depth, torch.Tensor) else type(depth).__name__
        raise Toon3dError(f"{name} must be a [B,H,W] tensor, got {shape}; add a batch dimension")
    if not torch.isfinite(depth).all():
        raise Toon3dError(f"{name} contains NaN or inf values; fix the depth map before rendering")
    if (depth <= 0).any():
        raise Toon3dError(f"{name} has values ≤ 0; depths are distances in front of the camera (~0.9-1.1)")


def depth_to_3d(depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Back-project depth [B,H,W] to camera-space points [B,H,W,3]: P = d · K⁻¹ [u, v, 1]."""
    b, h, w = depth.shape
    fx, fy, cx, cy = _k_parts(K.to(depth), b)
    uv = pixel_grid(h, w, depth.device, depth.dtype)
    x = (uv[..., 0] - cx) / fx * depth
    y = (uv[..., 1] - cy) / fy * depth
    return torch.stack([x, y, depth], dim=-1)


def normals_from_depth(depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Unit normals [B,H,W,3] of a depth map [B,H,W]; a frontal plane gives (0,0,1).

    Central differences tu × tv on the back-projected points; the normal points away from the
    camera (the Unsup3d convention shared by the light direction (dx, dy, 1)). The 1-px border,
    where central differences are undefined, is set to (0, 0, 1) as in Unsup3d.
    """
    points = depth_to_3d(depth, K)
    tu = points[:, 1:-1, 2:] - points[:, 1:-1, :-2]
    tv = points[:, 2:, 1:-1] - points[:, :-2, 1:-1]
    inner = torch.linalg.cross(tu, tv, dim=-1)
    inner = inner / inner.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    # Pad the border with (0, 0, 1): pad x, y with 0 and z with 1.
    xy = torch.nn.functional.pad(inner[..., :2].permute(0, 3, 1, 2), (1, 1, 1, 1), value=0.0)
    z = torch.nn.functional.pad(inner[..., 2:].permute(0, 3, 1, 2), (1, 1, 1, 1), value=1.0)
    return torch.cat([xy, z], dim=1).permute(0, 2, 3, 1).contiguous()


def rotation_matrix(rx: torch.Tensor, ry: torch.Tensor, rz: torch.Tensor) -> torch.Tensor:
    """R = Rz·Ry·Rx [B,3,3] from angles [B] in radians (right-handed, per axis)."""
    one, zero = torch.ones_like(rx), torch.zeros_like(rx)

    def mat(rows: list[list[torch.Tensor]]) -> torch.Tensor:
        return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)

    cx, sx, cy, sy, cz, sz = rx.cos(), rx.sin(), ry.cos(), ry.sin(), rz.cos(), rz.sin()
    m_x = mat([[one, zero, zero], [zero, cx, -sx], [zero, sx, cx]])
    m_y = mat([[cy, zero, sy], [zero, one, zero], [-sy, zero, cy]])
    m_z = mat([[cz, -sz, zero], [sz, cz, zero], [zero, zero, one]])
    return m_z @ m_y @ m_x


def view_to_rt(view: torch.Tensor, rot_range_deg: float = 60.0, trans_range: float = 0.1,
               z_trans_range: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """View vector [B,6] in [-1,1] (rx, ry, rz, tx, ty, tz) → R [B,3,3], t [B,3].

    Scaling as in Unsup3d/GAN2Shape: rotations × rot_range_deg (in radians), x/y translation
    × trans_range, z translation × z_trans_range (0 by default: the scale is fixed).
    """
    if view.dim() != 2 or view.shape[1] != 6:
        raise Toon3dError(f"view must be [B,6] (rx, ry, rz, tx, ty, tz), got {tuple(view.shape)}")
    rot = view[:, :3] * math.radians(rot_range_deg)
    t = torch.cat([view[:, 3:5] * trans_range, view[:, 5:6] * z_trans_range], dim=1)
    return rotation_matrix(rot[:, 0], rot[:, 1], rot[:, 2]), t


def rt_from_angles(yaw_deg, pitch_deg=0.0, roll_deg=0.0, tx=0.0, ty=0.0, tz=0.0,
                   device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Explicit pose → R [B,3,3], t [B,3]; angles in degrees, translations in scene units.

    Scalars or [B] tensors; pitch rotates about x, yaw about y, roll about z (R = Rz·Ry·Rx).
    """
    vals = [torch.as_tensor(v, device=device, dtype=dtype or torch.get_default_dtype())
            for v in (yaw_deg, pitch_deg, roll_deg, tx, ty, tz)]
    vals = torch.broadcast_tensors(*[v.reshape(-1) for v in vals])
    yaw, pitch, roll = (torch.deg2rad(v) for v in vals[:3])
    return rotation_matrix(pitch, yaw, roll), torch.stack(vals[3:], dim=-1)


def _flat(points: torch.Tensor) -> tuple[torch.Tensor, torch.Size]:
    return points.reshape(points.shape[0], -1, 3), points.shape


def _rotate(points: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """points [B,M,3] → points Rᵀ (each point multiplied by R), as 9 broadcast multiply-adds.

    A batched matmul with an inner size of 3 is several times slower than this on CPU.
    """
    x, y, z = points.unbind(-1)
    r = R.unsqueeze(-1)  # [B,3,3,1]
    return torch.stack([r[:, i, 0] * x + r[:, i, 1] * y + r[:, i, 2] * z for i in range(3)], dim=-1)


def warp_points(points: torch.Tensor, R: torch.Tensor, t: torch.Tensor,
                rot_center_depth: float = 1.0) -> torch.Tensor:
    """Move canonical points [B,...,3] to a view: P' = (P - c) Rᵀ + c + t, c = (0,0,rot_center_depth)."""
    flat, shape = _flat(points)
    centre = flat.new_tensor([0.0, 0.0, rot_center_depth])
    out = _rotate(flat - centre, R) + centre + t.unsqueeze(1)
    return out.reshape(shape)


def inverse_warp_points(points: torch.Tensor, R: torch.Tensor, t: torch.Tensor,
                        rot_center_depth: float = 1.0) -> torch.Tensor:
    """Undo `warp_points` on [B,...,3]: P = (P' - t - c) R + c."""
    flat, shape = _flat(points)
    centre = flat.new_tensor([0.0, 0.0, rot_center_depth])
    out = _rotate(flat - t.unsqueeze(1) - centre, R.transpose(1, 2)) + centre
    return out.reshape(shape)


def project_points(points: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Camera-space points [B,...,3] → pixel coordinates [B,...,2] (u = column, v = row)."""
    flat, shape = _flat(points)
    b = flat.shape[0]
    fx, fy, cx, cy = (p.view(b, 1) for p in _k_parts(K.to(flat), b))
    z = flat[..., 2]
    uv = torch.stack([fx * flat[..., 0] / z + cx, fy * flat[..., 1] / z + cy], dim=-1)
    return uv.reshape(*shape[:-1], 2)


def points_to_grid(points: torch.Tensor, K: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Camera-space points [B,H,W,3] → grid [B,H,W,2] for `grid_sample(..., align_corners=True)`."""
    h, w = (size, size) if isinstance(size, int) else size
    uv = project_points(points, K)
    scale = uv.new_tensor([w - 1, h - 1])
    return uv / scale * 2.0 - 1.0


def _warped_planes(depth: torch.Tensor, K: torch.Tensor, R: torch.Tensor, t: torch.Tensor,
                   rot_center_depth: float, inverse: bool) -> tuple[torch.Tensor, ...]:
    """(x, y, z) planes [B,H,W] of the (inverse-)warped back-projected depth, plus (fx, fy, cx, cy).

    The maths of `depth_to_3d` + `warp_points` written per coordinate on [B,H,W] planes:
    about twice as fast on CPU as the composed [B,H,W,3] functions (batched data rendering).
    """
    b, h, w = depth.shape
    fx, fy, cx, cy = _k_parts(K.to(depth), b)
    uv = pixel_grid(h, w, depth.device, depth.dtype)
    x = (uv[..., 0] - cx) / fx * depth
    y = (uv[..., 1] - cy) / fy * depth
    z = depth - rot_center_depth
    t = t.view(-1, 3, 1, 1)
    if inverse:
        x, y, z = x - t[:, 0], y - t[:, 1], z - t[:, 2]
        m = R.transpose(1, 2)
    else:
        m = R
    m = m.reshape(-1, 3, 3, 1, 1)
    xw = m[:, 0, 0] * x + m[:, 0, 1] * y + m[:, 0, 2] * z
    yw = m[:, 1, 0] * x + m[:, 1, 1] * y + m[:, 1, 2] * z
    zw = m[:, 2, 0] * x + m[:, 2, 1] * y + m[:, 2, 2] * z + rot_center_depth
    if not inverse:
        xw, yw, zw = xw + t[:, 0], yw + t[:, 1], zw + t[:, 2]
    return xw, yw, zw, fx, fy, cx, cy


def warped_points_from_depth(depth: torch.Tensor, K: torch.Tensor, R: torch.Tensor, t: torch.Tensor,
                             rot_center_depth: float = 1.0) -> torch.Tensor:
    """Points [B,H,W,3] = `warp_points(depth_to_3d(depth, K), R, t)`, computed plane by plane."""
    xw, yw, zw = _warped_planes(depth, K, R, t, rot_center_depth, inverse=False)[:3]
    return torch.stack([xw, yw, zw], dim=-1)


def warped_grid_from_depth(depth: torch.Tensor, K: torch.Tensor, R: torch.Tensor, t: torch.Tensor,
                           rot_center_depth: float = 1.0, inverse: bool = False) -> torch.Tensor:
    """Grid [B,H,W,2] (align_corners=True) of `points_to_grid((inverse_)warp_points(depth_to_3d(depth)))`."""
    h, w = depth.shape[1:]
    xw, yw, zw, fx, fy, cx, cy = _warped_planes(depth, K, R, t, rot_center_depth, inverse)
    gx = (fx * xw / zw + cx) * (2.0 / (w - 1)) - 1.0
    gy = (fy * yw / zw + cy) * (2.0 / (h - 1)) - 1.0
    return torch.stack([gx, gy], dim=-1)
