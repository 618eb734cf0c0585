"""Camera and depth-map geometry: Unsup3d/GAN2Shape conventions."""

import math

import pytest
import torch

from toon3d.errors import Toon3dError
from toon3d.shape.camera import (check_depth, depth_to_3d, intrinsics, inverse_warp_points,
                                 normals_from_depth, points_to_grid, project_points, rotation_matrix,
                                 rt_from_angles, view_to_rt, warp_points, warped_grid_from_depth,
                                 warped_points_from_depth)


def test_intrinsics_match_unsup3d_focal_lengths():
    # Reference values from REFERENCE.md §7.3: f = 360.05 at S=64 and 1457.33 at S=256.
    assert intrinsics(64)[0, 0].item() == pytest.approx(360.05, abs=0.01)
    assert intrinsics(256)[1, 1].item() == pytest.approx(1457.33, abs=0.01)
    assert intrinsics(64)[0, 2].item() == pytest.approx(31.5)
    assert intrinsics(64)[1, 2].item() == pytest.approx(31.5)


def test_depth_to_3d_is_d_times_inverse_k():
    size = 8
    K = intrinsics(size, dtype=torch.float64)
    depth = torch.rand(2, size, size, dtype=torch.float64) * 0.2 + 0.9
    points = depth_to_3d(depth, K)
    v, u = 3, 5
    ray = torch.linalg.inv(K) @ torch.tensor([u, v, 1.0], dtype=torch.float64)
    torch.testing.assert_close(points[1, v, u], depth[1, v, u] * ray)
    # Projection is the inverse of back-projection.
    uv = project_points(points, K)
    assert torch.allclose(uv[0, v, u], torch.tensor([u, v], dtype=torch.float64))


def test_constant_depth_gives_frontal_normals_and_border_convention():
    K = intrinsics(16)
    normal = normals_from_depth(torch.full((1, 16, 16), 1.03), K)
    torch.testing.assert_close(normal, torch.tensor([0.0, 0.0, 1.0]).expand(1, 16, 16, 3))


def test_normals_of_a_slanted_plane_point_away_from_camera():
    size = 16
    K = intrinsics(size, dtype=torch.float64)
    # Depth grows to the image right: the surface faces image-left and away from the camera.
    u = torch.arange(size, dtype=torch.float64)
    depth = (1.0 + 0.5 * (u - 7.5) / K[0, 0]).expand(1, size, size).contiguous()
    n = normals_from_depth(depth, K)[0, 5, 5]
    assert n[0] < 0 and n[2] > 0 and abs(n[1]) < 1e-9
    assert n.norm().item() == pytest.approx(1.0)
    # Border rows/columns keep (0, 0, 1).
    assert torch.equal(normals_from_depth(depth, K)[0, 0, 4], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))


def test_rotation_order_is_rz_ry_rx():
    a, b, c = torch.tensor([0.3]), torch.tensor([-0.2]), torch.tensor([0.5])
    rx = rotation_matrix(a, torch.zeros(1), torch.zeros(1))
    ry = rotation_matrix(torch.zeros(1), b, torch.zeros(1))
    rz = rotation_matrix(torch.zeros(1), torch.zeros(1), c)
    torch.testing.assert_close(rotation_matrix(a, b, c), rz @ ry @ rx)
    assert ry[0, 0, 2].item() == pytest.approx(math.sin(-0.2))  # right-handed: R_y[0,2] = +sin


def test_view_vector_scaling():
    view = torch.tensor([[0.5, -1.0, 0.25, 1.0, -0.5, 1.0]])
    R, t = view_to_rt(view)
    R_ref, _ = rt_from_angles(-60.0, 30.0, 15.0)
    torch.testing.assert_close(R, R_ref)
    torch.testing.assert_close(t, torch.tensor([[0.1, -0.05, 0.0]]))


def test_yaw_then_minus_yaw_returns_points_and_inverse_warp_undoes_warp():
    K = intrinsics(8)
    points = depth_to_3d(torch.rand(1, 8, 8) * 0.2 + 0.9, K)
    R1, t1 = rt_from_angles(35.0)
    R2, t2 = rt_from_angles(-35.0)
    back = warp_points(warp_points(points, R1, t1), R2, t2)
    torch.testing.assert_close(back, points, atol=1e-6, rtol=0)
    R, t = rt_from_angles(20.0, -10.0, 5.0, 0.03, -0.02, 0.01)
    torch.testing.assert_close(inverse_warp_points(warp_points(points, R, t), R, t), points, atol=1e-6, rtol=0)


def test_positive_yaw_moves_the_nose_to_image_left_and_pitch_moves_it_down():
    nose = torch.tensor([[[0.0, 0.0, 0.95]]])
    R, t = rt_from_angles(30.0)
    assert warp_points(nose, R, t)[0, 0, 0] < 0
    R, t = rt_from_angles(0.0, 30.0)
    assert warp_points(nose, R, t)[0, 0, 1] > 0


def test_zero_view_grid_is_identity_align_corners():
    size = 12
    K = intrinsics(size)
    depth = torch.rand(1, size, size) * 0.2 + 0.9
    R, t = rt_from_angles(0.0)
    grid = points_to_grid(inverse_warp_points(depth_to_3d(depth, K), R, t), K, size)
    image = torch.rand(1, 3, size, size)
    sampled = torch.nn.functional.grid_sample(image, grid, align_corners=True)
    torch.testing.assert_close(sampled, image, atol=1e-5, rtol=0)
    assert grid[0, 0, 0].tolist() == pytest.approx([-1.0, -1.0], abs=1e-5)
    assert grid[0, -1, -1].tolist() == pytest.approx([1.0, 1.0], abs=1e-5)


def test_warps_pass_gradcheck():
    K = intrinsics(5, dtype=torch.float64)
    depth = (torch.rand(1, 5, 5, dtype=torch.float64) * 0.2 + 0.9).requires_grad_()
    angles = torch.tensor([0.2, -0.3, 0.1], dtype=torch.float64, requires_grad=True)

    def fn(d, a):
        R = rotation_matrix(a[:1], a[1:2], a[2:])
        t = torch.zeros(1, 3, dtype=torch.float64)
        return points_to_grid(inverse_warp_points(warp_points(depth_to_3d(d, K), R, t), R, t), K, 5)

    assert torch.autograd.gradcheck(fn, (depth, angles))
    assert torch.autograd.gradcheck(lambda d: normals_from_depth(d, K), (depth,))


@pytest.mark.parametrize("bad, match", [
    (torch.ones(4, 4), r"\[B,H,W\]"),
    (torch.tensor([[[1.0, float("nan")]]]), "NaN or inf"),
    (torch.tensor([[[1.0, float("inf")]]]), "NaN or inf"),
    (torch.zeros(1, 2, 2), "≤ 0"),
])
def test_bad_depth_is_a_one_line_error(bad, match):
    with pytest.raises(Toon3dError, match=match) as err:
        check_depth(bad)
    assert "\n" not in str(err.value)


def test_bad_view_and_size():
    with pytest.raises(Toon3dError, match=r"\[B,6\]"):
        view_to_rt(torch.zeros(2, 5))
    with pytest.raises(Toon3dError, match="too small"):
        intrinsics(1)


def test_fused_warped_grid_equals_the_composed_functions():
    size = 10
    K = intrinsics(size, dtype=torch.float64)
    depth = torch.rand(2, size, size, dtype=torch.float64) * 0.2 + 0.9
    R, t = rt_from_angles(torch.tensor([25.0, -40.0]), torch.tensor([10.0, 5.0]), torch.tensor([3.0, -8.0]),
                          torch.tensor([0.02, -0.01]), torch.tensor([0.0, 0.03]), torch.tensor([0.01, 0.0]),
                          dtype=torch.float64)
    points = depth_to_3d(depth, K)
    torch.testing.assert_close(warped_grid_from_depth(depth, K, R, t),
                               points_to_grid(warp_points(points, R, t), K, size))
    torch.testing.assert_close(warped_points_from_depth(depth, K, R, t), warp_points(points, R, t))
    torch.testing.assert_close(warped_grid_from_depth(depth, K, R, t, inverse=True),
                               points_to_grid(inverse_warp_points(points, R, t), K, size))
