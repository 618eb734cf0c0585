"""The pure-PyTorch z-buffer rasteriser (neural_renderer `render_depth` semantics)."""

import math

import pytest
import torch

from toon3d.errors import Toon3dError
from toon3d.shape.camera import depth_to_3d, intrinsics
from toon3d.shape.rasterise import grid_faces, interpolate, rasterise, render_depth


def uv_sphere(centre, radius, n_theta=64, n_phi=128, dtype=torch.float32):
    theta = torch.linspace(0, math.pi, n_theta, dtype=dtype)
    phi = torch.linspace(0, 2 * math.pi, n_phi, dtype=dtype)
    t, p = torch.meshgrid(theta, phi, indexing="ij")
    verts = torch.stack([t.sin() * p.cos(), t.sin() * p.sin(), t.cos()], -1).reshape(-1, 3)
    return verts * radius + torch.tensor(centre, dtype=dtype), grid_faces(n_theta, n_phi)


def sphere_depth(K, size, centre, radius, offset):
    """Closed-form depth (z of the first ray–sphere hit) per pixel, sampled at u = i + offset."""
    v, u = torch.meshgrid(torch.arange(size) + offset, torch.arange(size) + offset, indexing="ij")
    ray = torch.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], torch.ones_like(u)], -1)
    ray = ray / ray.norm(dim=-1, keepdim=True)
    c = torch.tensor(centre)
    b = (ray * c).sum(-1)
    disc = b ** 2 - (c @ c - radius ** 2)
    return (b - disc.clamp_min(0).sqrt()) * ray[..., 2], disc


def test_grid_faces_layout():
    faces = grid_faces(3, 4)
    assert faces.shape == (2 * 2 * 3, 3)
    # First quad: [tl, bl, tr] then, after all first triangles, [tr, bl, br].
    assert faces[0].tolist() == [0, 4, 1]
    assert faces[6].tolist() == [1, 4, 5]


@pytest.mark.parametrize("offset", [0.5, 0.0])
def test_sphere_depth_matches_ray_sphere_intersection(offset):
    size = 48
    K = intrinsics(size)
    centre, radius = (0.01, -0.005, 1.0), 0.05
    verts, faces = uv_sphere(centre, radius)
    depth = render_depth(verts[None], faces, K, size, anti_aliasing=False, pixel_offset=offset)[0]
    ref, disc = sphere_depth(K, size, centre, radius, offset)
    interior = disc > (0.3 * radius) ** 2
    # Tolerance: chord error of the 64x128 tessellation, r·(1 − cos(π/63)) ≈ 6e-5.
    assert (depth - ref)[interior].abs().max() < 1e-4
    assert torch.all(depth[disc < -(0.05 * radius) ** 2] == 10.0)


def test_anti_aliasing_averages_2x2_samples_and_mixes_far_at_silhouettes():
    size = 32
    K = intrinsics(size)
    verts, faces = uv_sphere((0.0, 0.0, 1.0), 0.04)
    aa = render_depth(verts[None], faces, K, size, anti_aliasing=True)[0]
    # Rendering at 2S with the same offset and averaging by hand gives the same image.
    frags = rasterise(verts[None], faces, K, size, supersample=2, pixel_offset=0.5)
    torch.testing.assert_close(aa, torch.nn.functional.avg_pool2d(frags.depth[:, None], 2)[0, 0])
    edge = (aa > 1.2) & (aa < 10.0)
    assert edge.sum() > 0  # silhouette pixels mix surface and background depth
    assert aa.min() > 0.95


def test_nearest_face_wins_and_faces_are_double_sided():
    size = 16
    K = intrinsics(size)
    plane = depth_to_3d(torch.full((1, size, size), 1.0), K).reshape(1, -1, 3)
    faces = grid_faces(size, size)
    near_plane = plane * 0.95
    verts = torch.cat([plane, near_plane], dim=1)
    both = torch.cat([faces, faces + size * size])
    depth = render_depth(verts, both, K, size, anti_aliasing=False, pixel_offset=0.0)
    assert torch.allclose(depth[0, :-1, :-1], torch.full((size - 1, size - 1), 0.95))
    flipped = render_depth(verts, both.flip(0)[:, [0, 2, 1]], K, size, anti_aliasing=False, pixel_offset=0.0)
    torch.testing.assert_close(flipped, depth)


def test_zero_view_grid_mesh_reproduces_depth():
    size = 24
    K = intrinsics(size)
    u = torch.linspace(-1, 1, size)
    depth = (1.0 - 0.03 * (1 - u[None] ** 2 - u[:, None] ** 2).clamp_min(0)).unsqueeze(0)
    verts = depth_to_3d(depth, K).reshape(1, -1, 3)
    faces = grid_faces(size, size)
    centred = render_depth(verts, faces, K, size, anti_aliasing=False, pixel_offset=0.0)
    torch.testing.assert_close(centred, depth, atol=1e-6, rtol=0)
    # neural_renderer parity samples half a pixel down-right: the last row/column is background
    # and the interior differs from the canonical depth by at most the half-pixel slope.
    parity = render_depth(verts, faces, K, size, anti_aliasing=True, pixel_offset=0.5)
    assert torch.all(parity[:, -1] == 10.0) and torch.all(parity[:, :, -1] == 10.0)
    slope = (depth[:, 1:, 1:] - depth[:, :-1, :-1]).abs().max()
    assert (parity[:, :-1, :-1] - depth[:, :-1, :-1]).abs().max() <= slope + 1e-6


def test_near_far_and_face_mask():
    size = 8
    K = intrinsics(size)
    faces = grid_faces(size, size)
    far_plane = depth_to_3d(torch.full((1, size, size), 12.0), K).reshape(1, -1, 3)
    assert torch.all(render_depth(far_plane, faces, K, size) == 10.0)
    plane = depth_to_3d(torch.full((2, size, size), 1.0), K).reshape(2, -1, 3)
    mask = torch.ones(2, faces.shape[0], dtype=torch.bool)
    mask[1] = False
    depth = render_depth(plane, faces, K, size, anti_aliasing=False, pixel_offset=0.0, face_mask=mask)
    assert torch.all(depth[1] == 10.0) and depth[0, :-1, :-1].max() == 1.0


def test_batch_equals_single_renders():
    size = 16
    K = intrinsics(size)
    g = torch.Generator().manual_seed(0)
    depth = torch.rand(3, size, size, generator=g) * 0.1 + 0.95
    verts = depth_to_3d(depth, K).reshape(3, -1, 3) + torch.tensor([0.002, 0.0, 0.0])
    faces = grid_faces(size, size)
    batched = render_depth(verts, faces, K, size)
    for i in range(3):
        torch.testing.assert_close(batched[i:i + 1], render_depth(verts[i:i + 1], faces, K, size))


def test_gradcheck_through_depth_with_fixed_visibility():
    size = 6
    K = intrinsics(size, dtype=torch.float64)
    # A tilted quad covering the image interior, its corners off the sample lattice so a 1e-6
    # perturbation cannot change which face a sample sees.
    verts = torch.tensor([[[-0.02, -0.021, 1.0], [0.023, -0.02, 1.01], [-0.019, 0.02, 0.99],
                           [0.02, 0.022, 1.02]]], dtype=torch.float64, requires_grad=True)
    faces = torch.tensor([[0, 2, 1], [1, 2, 3]])
    for aa in (False, True):
        assert torch.autograd.gradcheck(
            lambda v: render_depth(v, faces, K, size, anti_aliasing=aa, pixel_offset=0.5), (verts,))


def test_gradient_reaches_vertex_depths_like_neural_renderer():
    # For a sample with barycentrics w, ∂z/∂z_k = w_k z² / z_k² when the screen positions are fixed.
    size = 4
    K = intrinsics(size, dtype=torch.float64)
    uv = torch.tensor([[-1.3, -1.2], [5.1, -1.4], [-1.1, 5.2]], dtype=torch.float64)
    zk = torch.tensor([1.0, 1.05, 0.97], dtype=torch.float64, requires_grad=True)
    xy = (uv - K[0, 2]) / K[0, 0]
    verts = torch.cat([xy * zk[:, None], zk[:, None]], dim=1)[None]
    frags = rasterise(verts, torch.tensor([[0, 1, 2]]), K, size, pixel_offset=0.0)
    z = frags.depth[0, 1, 1]
    z.backward()
    w = frags.bary[(frags.pix == 1 * size + 1).nonzero()[0, 0]].detach()
    expected = w * z.detach() ** 2 / zk.detach() ** 2
    # zk also moves x, y = xy·z_k, which leaves the projection unchanged: pure ∂z/∂z_k.
    torch.testing.assert_close(zk.grad, expected)


def test_interpolate_vertex_colours():
    size = 8
    K = intrinsics(size)
    depth = torch.full((1, size, size), 1.0)
    verts = depth_to_3d(depth, K).reshape(1, -1, 3)
    colours = torch.rand(1, size * size, 3)
    frags = rasterise(verts, grid_faces(size, size), K, size, pixel_offset=0.0)
    image = interpolate(frags, colours, background=-1.0)
    torch.testing.assert_close(image[0, :, :-1, :-1],
                               colours.reshape(size, size, 3).permute(2, 0, 1)[:, :-1, :-1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("verts, faces, match", [
    (torch.ones(4, 3), torch.tensor([[0, 1, 2]]), r"\[B,N,3\]"),
    (torch.ones(1, 4, 3), torch.tensor([[0, 1, 7]]), "outside"),
    (torch.ones(1, 4, 3), torch.tensor([[0.0, 1.0, 2.0]]), "integer"),
    (torch.tensor([[[0.0, 0.0, float("nan")]] * 3]), torch.tensor([[0, 1, 2]]), "NaN or inf"),
])
def test_bad_inputs_raise_one_line_errors(verts, faces, match):
    with pytest.raises(Toon3dError, match=match):
        render_depth(verts, faces, intrinsics(8), 8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    size = 32
    K = intrinsics(size)
    verts, faces = uv_sphere((0.0, 0.0, 1.0), 0.05)
    cpu = render_depth(verts[None], faces, K, size)
    gpu = render_depth(verts[None].to("cuda"), faces.to("cuda"), K.to("cuda"), size)
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-5, rtol=0)


def brute_force_depth(verts, faces, K, size, offset):
    """Reference z-buffer: every sample against every triangle (tiny meshes only)."""
    uv = torch.stack([K[0, 0] * verts[:, 0] / verts[:, 2] + K[0, 2], K[1, 1] * verts[:, 1] / verts[:, 2] + K[1, 2]], -1)
    v, u = torch.meshgrid(torch.arange(size, dtype=uv.dtype) + offset, torch.arange(size, dtype=uv.dtype) + offset,
                          indexing="ij")
    px, py = u.reshape(-1, 1), v.reshape(-1, 1)
    x, y, z = uv[faces, 0], uv[faces, 1], verts[faces, 2]  # [F,3]
    x0, x1, x2 = x.unbind(1)
    y0, y1, y2 = y.unbind(1)
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    w0 = ((x1 - px) * (y2 - py) - (x2 - px) * (y1 - py)) / area
    w1 = ((x2 - px) * (y0 - py) - (x0 - px) * (y2 - py)) / area
    w2 = 1 - w0 - w1
    inside = (w0 >= -1e-7) & (w1 >= -1e-7) & (w2 >= -1e-7)
    depth = 1 / (w0 / z[:, 0] + w1 / z[:, 1] + w2 / z[:, 2])
    depth = torch.where(inside & (depth > 0.1) & (depth < 10), depth, torch.full_like(depth, 10.0))
    return depth.amin(1).reshape(size, size)


@pytest.mark.parametrize("rare, sliver", [(1, False), (1 << 20, False), (1, True)])
def test_matches_brute_force_for_mixed_triangle_sizes(monkeypatch, rare, sliver):
    """rare=1: no bucket merging; 1<<20: every shape merged; sliver: long thin triangles (scanlines)."""
    import toon3d.shape.rasterise as rast

    monkeypatch.setattr(rast, "_RARE", rare)
    size = 24
    K = intrinsics(size, dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    # Random triangles from sub-pixel to half the image, at overlapping depths, both windings.
    centres = torch.rand(150, 1, 2, generator=g, dtype=torch.float64) * 0.2 - 0.1  # some cross the border
    scales = torch.rand(150, 1, 1, generator=g, dtype=torch.float64) ** 3 * 0.08 + 0.001
    xy = centres + scales * (torch.rand(150, 3, 2, generator=g, dtype=torch.float64) * 2 - 1)
    if sliver:  # stretch along a random direction, squash across it
        angle = torch.rand(150, 1, generator=g, dtype=torch.float64) * math.pi
        d = torch.cat([angle.cos(), angle.sin()], 1).unsqueeze(1)
        along = ((xy - centres) * d).sum(-1, keepdim=True)
        xy = centres + along * d * 4 + (xy - centres - along * d) * 0.05
    z = 0.9 + 0.2 * torch.rand(150, 3, generator=g, dtype=torch.float64)
    verts = torch.cat([xy * z.unsqueeze(-1), z.unsqueeze(-1)], -1).reshape(-1, 3)
    faces = torch.arange(450).reshape(150, 3)
    ref = brute_force_depth(verts, faces, K, size, 0.5)
    out = render_depth(verts[None].float(), faces, K.float(), size, anti_aliasing=False)[0].double()
    # Samples within rounding distance of an edge may legitimately differ; they are rare.
    close = (out - ref).abs() < 1e-4
    assert close.float().mean() > 0.995


def test_degenerate_triangles_are_ignored():
    size = 16
    K = intrinsics(size)
    plane = depth_to_3d(torch.full((1, size, size), 1.0), K).reshape(1, -1, 3)
    faces = grid_faces(size, size)
    # Zero-area faces: a repeated vertex, and three collinear vertices of one row (a long sliver box).
    bad = torch.tensor([[0, 0, 1], [0, 5, 10], [3, 3, 3]])
    ref = render_depth(plane, faces, K, size)
    out = render_depth(plane, torch.cat([bad, faces]), K, size)
    torch.testing.assert_close(out, ref)
