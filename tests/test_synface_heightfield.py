"""The SynFace ray march uses the camera of `toon3d.shape.camera` exactly (to 1e-6)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from toon3d.shape.camera import (depth_to_3d, intrinsics, rt_from_angles, warp_points,
                                 warped_grid_from_depth)
from toon3d.synth.face_params import SynFaceParams
from toon3d.synth.heightfield_view import MarchSettings, march_heightfield, view_rays
from toon3d.synth.synface import canonical_face

torch.set_num_threads(1)


def _pose(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    return rt_from_angles(torch.tensor([-30.0, 0.0, 25.0]), torch.tensor([10.0, 0.0, -15.0]),
                          torch.tensor([5.0, 0.0, -4.0]), torch.tensor([0.02, 0.0, -0.03]),
                          torch.tensor([-0.01, 0.0, 0.02]), torch.tensor([0.0, 0.0, 0.01]), dtype=dtype)


def test_view_rays_are_the_camera_back_projection_and_inverse_warp():
    size, fov, centre = 24, 12.0, 1.05
    K = intrinsics(size, fov, dtype=torch.float64)
    R, t = _pose()
    a, o = view_rays(K, size, R, t, rot_center_depth=centre)
    for depth in (0.9, 1.0, 1.1):
        view_points = depth_to_3d(torch.full((3, size, size), depth, dtype=torch.float64), K)
        canonical = depth * a + o.view(3, 1, 1, 3)
        # Warping the ray's canonical point forward lands back on the view pixel's point.
        back = warp_points(canonical, R, t, rot_center_depth=centre)
        torch.testing.assert_close(back, view_points, atol=1e-6, rtol=0)


def test_march_grid_and_depth_follow_the_camera_functions():
    size = 32
    settings = MarchSettings(fov_deg=10.0, rot_center_depth=1.0)
    face = canonical_face(SynFaceParams.from_seeds([3, 4, 5]), size)
    depth_c = face["canon_depth"].double()
    R, t = _pose()
    depth, grid, hit = march_heightfield(depth_c, face["canon_mask"], R, t, settings)
    assert hit.sum() > 0.2 * hit.numel()
    K = intrinsics(size, settings.fov_deg, dtype=torch.float64)
    # The canonical grid of each view pixel is the camera's inverse-warped grid of its depth.
    expected = warped_grid_from_depth(depth, K, R, t, settings.rot_center_depth, inverse=True)
    torch.testing.assert_close(grid[hit], expected[hit], atol=1e-6, rtol=0)
    # And the hit lies on the canonical surface: its canonical z is the depth map sampled there
    # (to the march's accuracy: bisection + one secant step, coarser where the surface creases).
    surface = F.grid_sample(depth_c[:, None], grid, mode="bilinear", padding_mode="border",
                            align_corners=True)[:, 0]
    rays, origin = view_rays(K, size, R, t, settings.rot_center_depth)
    z_canonical = depth * rays[..., 2] + origin[:, 2].view(-1, 1, 1)
    gap = (z_canonical - surface)[hit].abs()
    assert gap.median() < 1e-6 and gap.max() < 1e-3
