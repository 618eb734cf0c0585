"""Renderer Φ(depth, albedo, view, light): depth warp, inverse warp, shading, textured mesh renders."""

import pytest
import torch

from toon3d.errors import Toon3dError
from toon3d.shape.camera import rt_from_angles, view_to_rt
from toon3d.shape.renderer import (Renderer, RenderSettings, depth_from_network, light_direction,
                                   light_from_tanh, turntable_views)


def face_depth(size, nose=0.012):
    """An ellipsoidal head (0.95 at the centre, 1.0 at the rim) with a nose bump, background 1.02."""
    v, u = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    rho = (u / 0.6) ** 2 + (v / 0.8) ** 2
    head = 1.0 - 0.05 * (1 - rho).clamp_min(0).sqrt()
    depth = torch.where(rho < 1, head, torch.full_like(u, 1.02))
    depth = depth - nose * torch.exp(-(u ** 2 + (v + 0.05) ** 2) / 0.01)
    return depth.unsqueeze(0), (rho < 1).unsqueeze(0)


def test_zero_view_reconstruction_is_identity_with_centred_pixels():
    size = 24
    r = Renderer(RenderSettings(size, pixel_offset=0.0, anti_aliasing=False))
    depth = torch.rand(1, size, size, generator=torch.Generator().manual_seed(1)) * 0.02 + 0.99
    R, t = rt_from_angles(0.0)
    recon = r.warp_canon_depth(depth, R, t)
    torch.testing.assert_close(recon, depth, atol=1e-6, rtol=0)
    image = torch.rand(1, 3, size, size) * 2 - 1
    out, mask, _ = r.render_view(image, depth, R, t)
    torch.testing.assert_close(out, image, atol=1e-4, rtol=0)
    assert mask.min() == 1.0


def test_zero_view_with_neural_renderer_parity_is_within_half_a_pixel():
    size = 32
    r = Renderer(RenderSettings(size))  # pixel_offset 0.5, anti-aliasing on
    depth, _ = face_depth(size, nose=0.0)
    R, t = rt_from_angles(0.0)
    recon = r.warp_canon_depth(depth, R, t)
    # Sampling is shifted by +0.5 px: interior depth differs by at most half the local slope
    # in each axis; the last row/column see the background and are clamped to 1.2.
    slope = (depth[:, 1:, 1:] - depth[:, :-1, :-1]).abs().max()
    assert (recon[:, :-1, :-1] - depth[:, :-1, :-1]).abs().max() <= slope + 1e-5
    assert torch.all(recon[:, -1] == 1.2)
    mask = r.valid_mask(recon)
    assert mask[:, 0, :-1, :-1].min() == 1 and mask[:, 0, -1].max() == 0


def test_recon_depth_is_clamped_and_background_is_masked():
    size = 24
    r = Renderer(RenderSettings(size))
    depth, head = face_depth(size)
    R, t = rt_from_angles(40.0, 10.0)
    recon = r.warp_canon_depth(depth, R, t, canon_mask=head)
    assert recon.min() >= 0.8 and recon.max() <= 1.2
    uncovered = recon == 1.2
    assert uncovered.any() and (~uncovered).any()
    image, mask, _ = r.render_view(torch.zeros(1, 3, size, size), depth, R, t, canon_mask=head)
    assert torch.equal(mask[:, 0] > 0, mask[:, 0] * (recon < 1.2) > 0)


def test_canon_mask_drops_the_background_plane():
    size = 24
    r = Renderer(RenderSettings(size, pixel_offset=0.0, anti_aliasing=False))
    depth, head = face_depth(size)
    R, t = rt_from_angles(0.0)
    recon = r.warp_canon_depth(depth, R, t, canon_mask=head)
    assert torch.all(recon[~head] == 1.2)
    assert torch.all(recon[:, size // 2, size // 2 - 3:size // 2 + 3] < 1.0)
    # The fast slice-based face mask equals "every vertex of the face is inside the mask".
    generic = head.reshape(1, -1)[:, r.faces].all(-1)
    assert torch.equal(r._face_mask(head, 1), generic)


def test_shading_formula():
    size = 8
    r = Renderer(RenderSettings(size))
    albedo = torch.rand(2, 3, size, size) * 2 - 1
    depth = torch.full((2, size, size), 1.0)
    light = torch.tensor([[0.3, 0.5, 0.0, 0.0], [0.2, 0.6, 1.0, 0.0]])
    texture, diffuse = r.shade(albedo, depth, light)
    # Frontal normals (0,0,1): n·l̂ = 1 for a frontal light and 1/√2 for (1, 0, 1).
    expected_diffuse = torch.tensor([1.0, 2 ** -0.5]).view(2, 1, 1, 1)
    torch.testing.assert_close(diffuse, expected_diffuse.expand(2, 1, size, size))
    shading = light[:, :1].view(2, 1, 1, 1) + light[:, 1:2].view(2, 1, 1, 1) * expected_diffuse
    torch.testing.assert_close(texture, (albedo / 2 + 0.5) * shading * 2 - 1)
    torch.testing.assert_close(light_from_tanh(torch.tensor([[0.0, 1.0, 0.3, -0.2]])),
                               torch.tensor([[0.5, 1.0, 0.3, -0.2]]))
    torch.testing.assert_close(light_direction(torch.tensor([[0.0, 0.0, 1.0, 1.0]])),
                               torch.tensor([[1.0, 1.0, 1.0]]) / 3 ** 0.5)
    with pytest.raises(Toon3dError, match=r"\[B,4\]"):
        r.shade(albedo, depth, torch.zeros(2, 3))
    # Relighting with r = 0 is plain shading; r shifts ambient by −0.6·r and diffuse by +r.
    torch.testing.assert_close(r.relight(albedo, depth, light, 0.0), texture)
    relit = r.relight(albedo, depth, light, torch.tensor([0.5, 0.5]))
    shading_r = shading - 0.6 * 0.5 + 0.5 * expected_diffuse
    torch.testing.assert_close(relit, (albedo / 2 + 0.5) * shading_r * 2 - 1)


def test_reconstruction_gradients_reach_depth_albedo_view_and_light():
    size = 16
    r = Renderer(RenderSettings(size))
    depth, _ = face_depth(size)
    depth = depth.requires_grad_()
    albedo = torch.zeros(1, 3, size, size, requires_grad=True)
    view = torch.tensor([[0.1, 0.2, 0.0, 0.1, 0.0, 0.0]], requires_grad=True)
    light = torch.tensor([[0.5, 0.5, 0.2, 0.1]], requires_grad=True)
    R, t = view_to_rt(view)
    image, mask, _ = r.reconstruct(depth, albedo, R, t, light)
    (image * mask).sum().backward()
    for x in (depth, albedo, view, light):
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_render_mesh_rgb_zero_view_and_coverage():
    size = 16
    r = Renderer(RenderSettings(size, pixel_offset=0.0))
    depth = torch.full((1, size, size), 1.0)
    texture = torch.rand(1, 3, size, size) * 2 - 1
    R, t = rt_from_angles(0.0)
    image, cover = r.render_mesh_rgb(depth, texture, R, t, background=-1.0)
    # Interior pixels (all four supersamples inside the mesh) equal the bilinear texture at
    # the supersample positions; averaging 4 samples ±0.25 px reproduces the pixel colour
    # for a texture that is linear inside each triangle, so compare against a linear ramp.
    ramp = torch.linspace(-1, 1, size).expand(1, 3, size, size).contiguous()
    image, cover = r.render_mesh_rgb(depth, ramp, R, t, background=-1.0)
    torch.testing.assert_close(image[:, :, 1:-1, 1:-1], ramp[:, :, 1:-1, 1:-1], atol=1e-5, rtol=0)
    assert cover[:, :, 1:-1, 1:-1].min() == 1.0
    assert cover[0, 0, -1, -1] == pytest.approx(0.25)


def test_turntable_mesh_has_no_holes_and_positive_yaw_turns_nose_left():
    size = 32
    r = Renderer(RenderSettings(size))
    depth, head = face_depth(size, nose=0.02)
    texture = torch.ones(1, 3, size, size)
    R, t = rt_from_angles(60.0)
    image, cover = r.render_mesh_rgb(depth, texture, R, t, background=-1.0, canon_mask=head)
    covered = cover[0, 0] > 0.99
    # No holes: every row of the projected head is one contiguous covered run.
    for row in covered:
        cols = row.nonzero().flatten()
        if cols.numel():
            assert cols.max() - cols.min() + 1 == cols.numel()
    # Orientation: paint the nose white on black; +yaw moves it to the image left, -yaw right.
    v, u = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    nose = ((u ** 2 + (v + 0.05) ** 2) < 0.02).float()
    paint = (nose * 2 - 1).expand(1, 3, size, size)
    centre = {}
    for yaw in (-30.0, 0.0, 30.0):
        R, t = rt_from_angles(yaw)
        image, _ = r.render_mesh_rgb(depth, paint, R, t, background=-1.0, canon_mask=head)
        weight = (image[0, 0] + 1).clamp_min(0)
        centre[yaw] = (weight.sum(0) * torch.arange(size)).sum() / weight.sum()
    assert centre[30.0] < centre[0.0] - 2 and centre[-30.0] > centre[0.0] + 2


def test_turntable_views_loop_from_frontal():
    views = turntable_views(8)
    assert len(views) == 8
    R0, t0 = views[0]
    torch.testing.assert_close(R0, torch.eye(3).unsqueeze(0))
    assert torch.equal(t0, torch.zeros(1, 3))
    # Frame 2 of 8 is the +70° yaw extreme with zero pitch.
    torch.testing.assert_close(views[2][0], rt_from_angles(70.0, 0.0)[0], atol=1e-6, rtol=0)
    with pytest.raises(Toon3dError, match="at least 1 frame"):
        turntable_views(0)


def test_wrong_sizes_are_errors():
    r = Renderer(RenderSettings(16))
    R, t = rt_from_angles(0.0)
    with pytest.raises(Toon3dError, match="16x16"):
        r.warp_canon_depth(torch.ones(1, 8, 8), R, t)
    with pytest.raises(Toon3dError, match="canon_mask"):
        r.warp_canon_depth(torch.ones(1, 16, 16), R, t, canon_mask=torch.ones(1, 8, 8))
    with pytest.raises(Toon3dError, match="NaN"):
        r.warp_canon_depth(torch.full((1, 16, 16), float("nan")), R, t)
    with pytest.raises(Toon3dError, match="texture"):
        r.render_mesh_rgb(torch.ones(1, 16, 16), torch.ones(1, 3, 8, 8), R, t)


def test_depth_from_network_range_centering_and_border():
    settings = RenderSettings(8)
    raw = torch.randn(2, 8, 8, generator=torch.Generator().manual_seed(4)) * 3
    depth = depth_from_network(raw, settings)
    inner = depth[:, :, 2:-2]
    assert inner.min() >= 0.9 and inner.max() <= 1.1
    assert torch.all(depth[:, :, :2] == 1.04) and torch.all(depth[:, :, -2:] == 1.04)
    # Mean-centred before tanh: a constant offset of the raw output changes nothing.
    torch.testing.assert_close(depth_from_network(raw + 5.0, settings), depth)
    # A zero raw map is the middle of the range.
    assert torch.allclose(depth_from_network(torch.zeros(1, 8, 8), settings)[:, :, 2:-2], torch.tensor(1.0))


def test_warp_grid_and_inverse_warp_grid_are_inverse_at_zero_view_and_consistent():
    size = 16
    r = Renderer(RenderSettings(size, pixel_offset=0.0, anti_aliasing=False))
    depth, _ = face_depth(size, nose=0.0)
    R, t = rt_from_angles(0.0)
    ident = r.warp_grid(depth, R, t)
    torch.testing.assert_close(ident, r.inverse_warp_grid(depth, R, t))
    assert ident[0, 0, 0].tolist() == pytest.approx([-1.0, -1.0], abs=1e-5)
    # A canonical pixel warped into the view and looked up in the inverse-warp grid there
    # returns home (up to the bilinear interpolation of the rendered depth).
    R, t = rt_from_angles(10.0, 5.0)
    warped = r.warp_grid(depth, R, t)
    assert (warped - ident).abs().max() > 0.05
    inverse = r.inverse_warp_grid(r.warp_canon_depth(depth, R, t), R, t).permute(0, 3, 1, 2)
    home = torch.nn.functional.grid_sample(inverse, warped[:, 6:10, 6:10], align_corners=True)
    torch.testing.assert_close(home.permute(0, 2, 3, 1), ident[:, 6:10, 6:10], atol=5e-3, rtol=0)
