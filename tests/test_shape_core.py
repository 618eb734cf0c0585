"""Stage-3 core: decompose/reconstruct (photo_geometry), the losses, the ellipsoid prior and its fitting."""

from __future__ import annotations

import math

import pytest
import torch

from toon3d.errors import Toon3dError
from toon3d.faces.lpips import VGG16Features
from toon3d.shape.losses import (DlibPerceptual, VGGPerceptual, identity_loss, load_perceptual, masked_l1,
                                 recon_loss, smoothness2)
from toon3d.shape.networks import ShapeNetConfig, ShapeNets
from toon3d.shape.photo_geometry import (Decomposition, GeometrySettings, decompose, mean_light, reconstruct,
                                         view_rt)
from toon3d.shape.prior import ellipsoid_depth, fit_depth_to, representable_shift
from toon3d.shape.renderer import Renderer

from dlib_helpers import one_line_error

torch.set_num_threads(1)

S = 32


def tiny_nets(seed: int = 0, size: int = S) -> ShapeNets:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ShapeNets(ShapeNetConfig(size=size, nf=8, nf_vl=8, zdim=16, nf_encoder=4, latent_dim=8))


def images(b: int = 2, size: int = S, seed: int = 1) -> torch.Tensor:
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def bumpy_depth(b: int = 1, size: int = S) -> torch.Tensor:
    v, u = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    d = 1.0 - 0.06 * torch.exp(-((u - 0.1) ** 2 + v ** 2) / 0.3)
    d[:, :2] = 1.04
    d[:, -2:] = 1.04
    return d.expand(b, size, size).clone()


def grads(nets: ShapeNets) -> dict[str, bool]:
    return {name: any(p.grad is not None and p.grad.abs().sum() > 0 for p in getattr(nets, name).parameters())
            for name in ("depth", "albedo", "view", "light", "encoder")}


# ---- decompose ---------------------------------------------------------------------------------

def test_decompose_ranges_and_border():
    s = GeometrySettings(S)
    nets = tiny_nets()
    # Large raw outputs push every tanh towards its limits; ranges must still hold.
    with torch.no_grad():
        for p in nets.parameters():
            p.mul_(3.0)
    dec = decompose(nets, images(), s)
    assert dec.depth.shape == (2, S, S) and dec.raw_depth.shape == (2, S, S)
    assert dec.raw_depth.min() >= 0.9 and dec.raw_depth.max() <= 1.1
    assert dec.depth.min() >= 0.9 and dec.depth.max() <= 1.1
    for cols in (slice(0, 2), slice(S - 2, S)):
        assert torch.all(dec.depth[:, :, cols] == 1.04)
    torch.testing.assert_close(dec.depth[:, :, 2:-2], dec.raw_depth[:, :, 2:-2])
    assert dec.albedo.shape == (2, 3, S, S) and dec.albedo.abs().max() <= 1
    assert dec.view[:, :3].abs().max() <= math.radians(60) + 1e-6
    assert dec.view[:, 3:5].abs().max() <= 0.1 + 1e-7 and torch.all(dec.view[:, 5] == 0)
    assert dec.light[:, :2].min() >= 0 and dec.light[:, :2].max() <= 1
    assert dec.light[:, 2:].abs().max() <= 1


def test_decompose_adds_means_before_scaling():
    nets = tiny_nets()
    plain = decompose(nets, images(), GeometrySettings(S))
    mean_v = (0.1, -0.2, 0.0, 0.5, 0.0, 0.3)
    shifted = decompose(nets, images(), GeometrySettings(S, view_mean=mean_v, light_mean=(0.2, 0.0, 0.4, -0.1)))
    scale = torch.tensor([math.radians(60)] * 3 + [0.1, 0.1, 0.0])
    torch.testing.assert_close(shifted.view - plain.view, (torch.tensor(mean_v) * scale).expand(2, 6))
    torch.testing.assert_close(shifted.light - plain.light, torch.tensor([0.1, 0.0, 0.4, -0.1]).expand(2, 4))
    with pytest.raises(Toon3dError):
        GeometrySettings(S, view_mean=(0.0, 0.0))


def test_parts_switched_off_come_from_fixed_values_without_gradient():
    s = GeometrySettings(S)
    nets = tiny_nets()
    dec = decompose(nets, images(), s, depth=False, view=False, light=False)
    assert torch.all(dec.view == 0)
    torch.testing.assert_close(dec.light, mean_light(2, s, dec.view))
    torch.testing.assert_close(dec.light[0], torch.tensor([0.5, 0.5, 0.0, 0.0]))
    assert not dec.depth.requires_grad and dec.albedo.requires_grad
    fixed_view = torch.tensor([0.1, 0.2, 0.0, 0.01, 0.0, 0.0])
    fixed_depth = bumpy_depth()
    dec = decompose(nets, images(), s, depth=False, albedo=False, view=False, light=False, fixed_view=fixed_view,
                    fixed_light=torch.tensor([[0.3, 0.6, 0.5, 0.2]]), fixed_depth=fixed_depth)
    torch.testing.assert_close(dec.view, fixed_view.expand(2, 6))
    torch.testing.assert_close(dec.depth, fixed_depth.expand(2, S, S))
    assert dec.light[1, 1] == pytest.approx(0.6)
    with pytest.raises(Toon3dError):
        decompose(nets, images(), s, view=False, fixed_view=torch.zeros(5))


def test_decompose_rejects_wrong_image_size_in_one_line():
    message = one_line_error(decompose, tiny_nets(), images(size=16), GeometrySettings(S))
    assert "32" in message and "16" in message


# ---- reconstruct -------------------------------------------------------------------------------

def fixed_decomposition(b: int = 1, view=None, light=None) -> Decomposition:
    albedo = images(b, seed=5)
    depth = bumpy_depth(b)
    view = torch.zeros(b, 6) if view is None else view
    light = torch.tensor([[0.4, 0.6, 0.0, 0.0]]).expand(b, 4) if light is None else light
    return Decomposition(depth=depth, raw_depth=depth, albedo=albedo, view=view, light=light)


def test_zero_view_reconstruction_is_the_texture():
    s = GeometrySettings(S, pixel_offset=0.0, anti_aliasing=False)
    rec = reconstruct(Renderer(s.renderer_settings()), fixed_decomposition())
    assert rec.mask.min() == 1
    torch.testing.assert_close(rec.image, rec.texture.clamp(-1, 1), atol=1e-4, rtol=0)
    torch.testing.assert_close(rec.recon_depth, fixed_decomposition().depth, atol=1e-5, rtol=0)
    assert rec.normal.shape == (1, S, S, 3) and rec.diffuse.shape == (1, 1, S, S)
    torch.testing.assert_close(rec.normal.norm(dim=-1), torch.ones(1, S, S))


def test_flip_reconstruction_equals_reconstructing_flipped_factors():
    s = GeometrySettings(S)
    r = Renderer(s.renderer_settings())
    dec = fixed_decomposition(2, view=torch.tensor([[0.0, 0.3, 0.05, 0.02, -0.01, 0.0]] * 2),
                              light=torch.tensor([[0.3, 0.7, 0.4, 0.2]] * 2))
    flipped = reconstruct(r, dec, flip=True)
    mirrored = Decomposition(dec.depth.flip(-1), dec.raw_depth.flip(-1), dec.albedo.flip(-1), dec.view, dec.light)
    direct = reconstruct(r, mirrored)
    for a, b in ((flipped.image, direct.image), (flipped.mask, direct.mask), (flipped.recon_depth, direct.recon_depth)):
        torch.testing.assert_close(a, b)


def test_flip_at_the_frontal_view_mirrors_the_reconstruction():
    # With centred pixels, a frontal view and a light without x component, mirroring the factors
    # mirrors the image: the flip branch really renders the mirror-image face.
    s = GeometrySettings(S, pixel_offset=0.0, anti_aliasing=False)
    r = Renderer(s.renderer_settings())
    dec = fixed_decomposition(light=torch.tensor([[0.3, 0.7, 0.0, 0.3]]))
    torch.testing.assert_close(reconstruct(r, dec, flip=True).image, reconstruct(r, dec).image.flip(-1),
                               atol=1e-4, rtol=0)


def test_view_rt_matches_the_renderer_convention():
    R, t = view_rt(torch.tensor([[0.0, math.radians(30), 0.0, 0.05, 0.0, 0.0]]))
    torch.testing.assert_close(R[0] @ torch.tensor([0.0, 0.0, 1.0]),
                               torch.tensor([math.sin(math.radians(30)), 0.0, math.cos(math.radians(30))]))
    torch.testing.assert_close(t, torch.tensor([[0.05, 0.0, 0.0]]))


# ---- losses ------------------------------------------------------------------------------------

def test_masked_l1_is_the_mean_over_valid_pixels():
    a, b = images(seed=2), images(seed=3)
    mask = torch.zeros(2, 1, S, S)
    mask[:, :, 4:20, 8:30] = 1
    expected = (a - b).abs()[:, :, 4:20, 8:30].mean()
    torch.testing.assert_close(masked_l1(a, b, mask), expected)
    torch.testing.assert_close(masked_l1(a, b), (a - b).abs().mean())
    sigma = torch.full((2, 1, S, S), 2.0)
    torch.testing.assert_close(masked_l1(a, b, mask, sigma), expected * math.sqrt(2) / 2 + math.log(2), atol=1e-5,
                               rtol=0)


def test_smoothness2_of_a_plane_is_zero_and_of_a_parabola_is_its_curvature():
    v, u = torch.meshgrid(torch.arange(16.0, dtype=torch.float64), torch.arange(20.0, dtype=torch.float64),
                          indexing="ij")
    plane = (0.3 * u - 0.7 * v + 2.0).expand(2, 16, 20)
    assert smoothness2(plane) == pytest.approx(0.0, abs=1e-12)
    assert smoothness2(plane.unsqueeze(1)) == pytest.approx(0.0, abs=1e-12)
    # u² has ∂xx = 2 and no other second difference.
    assert smoothness2((u ** 2).unsqueeze(0)) == pytest.approx(2.0)
    # u·v has ∂xy = ∂yx = 1.
    assert smoothness2((u * v).unsqueeze(0)) == pytest.approx(2.0)


def random_vgg() -> VGG16Features:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return VGG16Features()


@pytest.fixture(scope="module")
def dlib_perceptual():
    from toon3d.faces.dlib_resnet import load_dlib_resnet

    try:
        return DlibPerceptual(load_dlib_resnet())
    except Toon3dError as err:
        pytest.skip(str(err))


def perceptual_nets(dlib_perceptual):
    return [VGGPerceptual(random_vgg()), dlib_perceptual]


@pytest.mark.parametrize("which", [0, 1])
def test_perceptual_is_zero_for_identical_images_and_ignores_pixels_outside_the_mask(which, dlib_perceptual):
    perceptual = perceptual_nets(dlib_perceptual)[which]
    size = 128  # wide enough that the changed pixels lie outside the masked features' receptive fields
    a = images(1, size, seed=7)
    assert perceptual(a, a.clone()).item() == 0.0
    mask = torch.zeros(1, 1, size, size)
    mask[:, :, :, :24] = 1
    b = a.clone()
    b[:, :, :, 96:] = images(1, size, seed=8)[:, :, :, 96:]  # change only far to the right of the mask
    assert perceptual(a, b).item() > 0
    assert perceptual(a, b, mask).item() == pytest.approx(0.0, abs=1e-6)
    c = a.clone()
    c[:, :, :, :16] = images(1, size, seed=9)[:, :, :, :16]
    assert perceptual(a, c, mask).item() > 0


def test_dlib_perceptual_features_keep_the_image_grid(dlib_perceptual):
    feats = dlib_perceptual.features(images(1, 64))
    assert len(feats) == 1 and feats[0].shape == (1, 32, 14, 14)
    pooled = dlib_perceptual.pool_mask(torch.ones(1, 1, 64, 64), feats[0])
    torch.testing.assert_close(pooled, torch.ones(1, 1, 14, 14))


def test_vgg_perceptual_compares_relu3_3_of_imagenet_normalised_images():
    vgg = random_vgg()
    perceptual = VGGPerceptual(vgg)
    x = images(1, 32, seed=3)
    feats = perceptual.features(x)
    assert len(feats) == 1 and feats[0].shape == (1, 256, 8, 8)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(feats[0], vgg.features[:16]((((x + 1) / 2) - mean) / std))
    y = images(1, 32, seed=4)
    expected = (perceptual.features(x)[0] - perceptual.features(y)[0]).abs().mean()
    torch.testing.assert_close(perceptual(x, y), expected)


def test_missing_vgg16_is_a_one_line_error_naming_where_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TOON3D_MODELS", str(tmp_path))
    message = one_line_error(load_perceptual, "vgg")
    assert "vgg16-397923af.pth" in message and "download.pytorch.org" in message
    assert "vgg16-397923af.pth" in one_line_error(load_perceptual, "vgg", str(tmp_path / "nope.pth"))
    assert "unknown perceptual" in one_line_error(load_perceptual, "lpips-alex")


class MeanEmbedder(torch.nn.Module):
    """A differentiable stand-in identity network: per-channel means of 4x4 blocks."""

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)


def test_identity_loss_is_squared_embedding_distance_with_target_detached():
    a, b = images(seed=2), images(seed=3)
    a.requires_grad_(True)
    b.requires_grad_(True)
    loss = identity_loss(MeanEmbedder(), a, b)
    e = MeanEmbedder().embed
    torch.testing.assert_close(loss, (e(a) - e(b)).pow(2).sum(1).mean())
    loss.backward()
    assert a.grad.abs().sum() > 0 and b.grad is None
    assert identity_loss(MeanEmbedder(), b, b).item() == 0.0


def test_recon_loss_needs_a_network_when_the_perceptual_term_is_weighted():
    s = GeometrySettings(S)
    rec = reconstruct(Renderer(s.renderer_settings()), fixed_decomposition())
    target = images(1, seed=4)
    out = recon_loss(rec, target, None, lam_perc=0.0)
    torch.testing.assert_close(out["total"], out["l1"])
    assert "perceptual" in one_line_error(recon_loss, rec, target, None)
    out = recon_loss(rec, target, VGGPerceptual(random_vgg()), lam_perc=0.5)
    torch.testing.assert_close(out["total"], out["l1"] + 0.5 * out["perc"])
    half = torch.zeros(1, 1, S, S)
    half[..., :16] = 1
    masked = recon_loss(rec, target, None, lam_perc=0.0, extra_mask=half)
    torch.testing.assert_close(masked["l1"], masked_l1(rec.image, target, rec.mask * half))


def test_each_loss_reaches_exactly_the_intended_networks():
    s = GeometrySettings(S)
    r = Renderer(s.renderer_settings())
    x = images()
    perceptual = VGGPerceptual(random_vgg())
    # Step-1 style: albedo only (depth predicted without gradient, canonical view, mean light).
    nets = tiny_nets()
    dec = decompose(nets, x, s, depth=False, view=False, light=False)
    rec, rec_f = reconstruct(r, dec), reconstruct(r, dec, flip=True)
    loss = (recon_loss(rec, x, perceptual)["total"] + recon_loss(rec_f, x, perceptual)["total"]
            + identity_loss(MeanEmbedder(), rec.image, x))
    loss.backward()
    assert grads(nets) == {"depth": False, "albedo": True, "view": False, "light": False, "encoder": False}
    assert all(p.grad is None for p in perceptual.parameters())
    # Smoothness of the depth alone reaches only the depth net.
    nets = tiny_nets()
    smoothness2(decompose(nets, x, s).depth).backward()
    assert grads(nets) == {"depth": True, "albedo": False, "view": False, "light": False, "encoder": False}
    # Joint step: the reconstruction reaches D, A, V and L (not the latent encoder).
    nets = tiny_nets()
    dec = decompose(nets, x, s)
    recon_loss(reconstruct(r, dec), x, perceptual)["total"].backward()
    assert grads(nets) == {"depth": True, "albedo": True, "view": True, "light": True, "encoder": False}


# ---- prior -------------------------------------------------------------------------------------

def test_ellipsoid_centre_is_near_outside_is_far_and_aspect_follows_the_box():
    h = w = 48
    mask = torch.zeros(h, w, dtype=torch.bool)
    mask[8:41, 14:35] = True  # rows 8..40, columns 14..34: a 32 × 20 box centred on pixel (24, 24)
    depth = ellipsoid_depth(mask, "box", near=0.91, far=1.02, squeeze_about="box")
    assert depth[24, 24].item() == pytest.approx(0.91, abs=1e-6)
    assert depth.min() == depth[24, 24] and depth.max().item() == pytest.approx(1.02)
    assert torch.all(depth[~mask] == depth.max())
    # The cap reaches `far` exactly on the box's edges: its interior spans the box.
    cap = depth < 1.02 - 1e-6
    rows = torch.nonzero(cap.any(1)).flatten()
    cols = torch.nonzero(cap.any(0)).flatten()
    assert (rows.min().item(), rows.max().item()) == (9, 39)
    assert (cols.min().item(), cols.max().item()) == (15, 33)
    # The cap rises monotonically from the centre to the rim along the middle row and column.
    for line in (depth[24, 24:35], depth[24:41, 24]):
        assert torch.all(line[1:] >= line[:-1])
    # The same vertical profile, stretched by the aspect ratio 32/20 = 1.6.
    torch.testing.assert_close(depth[24 + 8, 24], depth[24, 24 + 5])


def test_ellipsoid_reference_squeeze_and_categories():
    h = w = 48
    mask = torch.zeros(h, w, dtype=torch.bool)
    mask[10:30, 14:34] = True
    # GAN2Shape's 'face': the box runs to the bottom (max_y = h-1) and loses width/12 per side;
    # rows are squeezed about h/2, so the cap's centre row is (c_y − h/2)·ratio + h/2.
    depth = ellipsoid_depth(mask, "face")
    max_y, min_y = h - 1, 10
    width = 33 - 14
    min_x, max_x = 14 + width / 12, 33 - width / 12
    ratio = (max_y - min_y) / (max_x - min_x)
    centre_row = ((max_y + min_y) / 2 - h / 2) * ratio + h / 2
    col = depth[:, 24]
    assert abs(col.argmin().item() - centre_row) <= 1.0
    synface = ellipsoid_depth(mask, "synface", squeeze_about="box")
    top = torch.nonzero((synface < 1.02 - 1e-6).any(1)).flatten().min().item()
    assert top == pytest.approx(10 - 19 / 6, abs=1.0)
    assert "empty" in one_line_error(ellipsoid_depth, torch.zeros(8, 8, dtype=torch.bool))
    assert "unknown prior" in one_line_error(ellipsoid_depth, mask, "car")


def test_fitting_the_depth_net_reduces_the_error():
    s = GeometrySettings(S)
    nets = tiny_nets()
    mask = torch.zeros(S, S, dtype=torch.bool)
    mask[4:28, 8:24] = True
    target = ellipsoid_depth(mask, "box")
    albedo_before = [p.clone() for p in nets.albedo.parameters()]
    losses = fit_depth_to(nets.depth, images(1), target, s, steps=40, lr=1e-3)
    assert len(losses) == 40
    assert losses[-1] < 0.3 * losses[0]
    assert all(torch.equal(a, b) for a, b in zip(albedo_before, nets.albedo.parameters()))
    with torch.no_grad():
        raw = decompose(nets, images(1), s).raw_depth
    assert torch.nn.functional.mse_loss(raw[0], target).item() == pytest.approx(losses[-1], rel=0.5)



@pytest.mark.slow
def test_cosine_prior_fit_leaves_less_high_frequency_error_than_a_constant_rate():
    # The cpu preset's fit at its widths and length (600 steps, its `fit` start and train-shape's
    # prior fit): the same steps and peak rate, decayed to 0. The MSE ends about the same, but a
    # constant rate keeps more of the decoder's stripes (second differences of the error).
    # Session 10 re-measured this seed on torch 2.13 CPU: 0.89x at 600 steps, and no gain at 300
    # (1.03x), where sessions 6-7 had measured 0.61-0.70x; the gain is smaller than the docs said.
    from toon3d.shape.networks import ShapeNetConfig, ShapeNets

    s = GeometrySettings(64)
    mask = torch.zeros(64, 64, dtype=torch.bool)
    mask[12:52, 18:46] = True
    target = ellipsoid_depth(mask, "box", near=0.975)
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    rough = {}
    for schedule in ("constant", "cosine"):
        torch.manual_seed(0)
        nets = ShapeNets(ShapeNetConfig(size=64, nf=16, nf_vl=8, zdim=128))
        fit_depth_to(nets.depth, image, target, s, steps=600, lr=1e-3, schedule=schedule)
        with torch.no_grad():
            err = decompose(nets, image, s).raw_depth[0] - target
        rough[schedule] = (err[2:] - 2 * err[1:-1] + err[:-2]).abs().mean().item()
    assert rough["cosine"] < 0.95 * rough["constant"]


def test_prior_fit_schedule_is_checked():
    s = GeometrySettings(S)
    target = torch.ones(S, S)
    assert "schedule" in one_line_error(fit_depth_to, tiny_nets().depth, images(1), target, s, steps=1,
                                        schedule="step")
    from toon3d.shape.settings import preset

    assert preset("cpu").prior_schedule == "cosine" and preset("paper").prior_schedule == "constant"
    # The cpu preset starts D at the image's own prior (residual); the paper fits it as GAN2Shape does.
    assert preset("cpu").depth_start == "residual" and preset("paper").depth_start == "fit"
    assert preset("released").depth_start == "fit"
    # ... and reads the prior's mask in the canonical frame of the pretrained view net's start view.
    assert preset("cpu").prior_frame == "canonical" and preset("paper").prior_frame == "view"
    assert "prior_schedule" in one_line_error(preset, "cpu", prior_schedule="linear")


def test_centred_prior_is_the_same_shape_and_what_a_mean_centred_net_can_hold():
    s = GeometrySettings(S)
    mask = torch.zeros(S, S, dtype=torch.bool)
    mask[6:26, 10:22] = True
    target = ellipsoid_depth(mask, "box", near=0.975)
    delta = representable_shift(target, s.min_depth, s.max_depth)
    shifted = target + delta
    assert torch.atanh((shifted - 1.0) / 0.1).mean().abs() < 1e-6
    assert -0.03 < delta < 0  # a far plane of 1.02 averages above the centre: the fit wants it nearer
    # a depth the net produces exactly (mean-centred atanh) needs no shift
    raw = torch.randn(S, S)
    made = s.min_depth + (torch.tanh(raw - raw.mean()) + 1) / 2 * (s.max_depth - s.min_depth)
    assert abs(representable_shift(made, s.min_depth, s.max_depth)) < 1e-6
    final = {}
    for centre in (False, True):
        torch.manual_seed(0)
        losses = fit_depth_to(tiny_nets().depth, images(1), target, s, steps=150, lr=3e-3, schedule="cosine",
                              centre=centre)
        final[centre] = losses[-1]
    # uncentred, the offset cannot be fitted (measured 1.6e-4 at 64 px, 1e-6 centred: docs)
    assert final[True] < 0.1 * final[False]
