"""GAN2Shape steps 1-3, pseudo samples, the mapping-tail offset and L_dis features (REFERENCE §6.5-6.8)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shape_fakes import SIZE, STYLE_DIM, TinyEmbedder, TinyPerceptual, one_line_error, tiny_gan, tiny_target
from toon3d.nn.equalized import EqualLinear
from toon3d.shape.latent_offset import (DiscriminatorFeatureDistance, LatentProjector, PerceptualFeatureDistance,
                                        split_mapping)
from toon3d.shape.networks import ShapeNets
from toon3d.shape.photo_geometry import view_rt
from toon3d.shape.pseudo import (CanonicalState, LightRanges, PseudoSampler, ViewPrior, default_view_prior,
                                 load_view_prior, sample_pseudo)
from toon3d.shape.renderer import Renderer
from toon3d.shape.settings import preset
from toon3d.shape.steps import (STEP_NETS, LossTerms, LossWeights, ProjectedSamples, StepTools, canonical_state,
                                make_optimizer, step1, step1_losses, step2_losses, step2_train, step3, step3_losses)
from toon3d.stylegan2.layers import PixelNorm

torch.set_num_threads(1)
NET_NAMES = ("depth", "albedo", "view", "light", "encoder")


# ---- fixtures -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def world():
    settings = preset("tiny")
    g, d = tiny_gan()
    image, w = tiny_target(g)
    geometry = settings.geometry()
    renderer = Renderer(geometry.renderer_settings())
    return settings, g, d, image, w, geometry, renderer


def make_nets(settings, seed: int = 0) -> ShapeNets:
    torch.manual_seed(seed)
    return ShapeNets(settings.net_config(STYLE_DIM))


def make_tools(world, **weights) -> StepTools:
    settings, g, d, image, w, geometry, renderer = world
    return StepTools(renderer, geometry, LossWeights(**weights), TinyPerceptual(), TinyEmbedder())


def grads_of(nets: ShapeNets) -> dict[str, bool]:
    """Which networks got a non-zero gradient."""
    return {name: any(p.grad is not None and p.grad.abs().sum() > 0 for p in getattr(nets, name).parameters())
            for name in NET_NAMES}


def no_grads(*modules: nn.Module) -> bool:
    return all(p.grad is None for m in modules for p in m.parameters())


def projector_for(world, truncation: float = 0.7) -> LatentProjector:
    settings, g, *_ = world
    return LatentProjector(g, settings.tail_layers(8), truncation, False, SIZE)


def sampler_for(world) -> PseudoSampler:
    settings, g, d, image, w, geometry, renderer = world
    return PseudoSampler(renderer, geometry, default_view_prior(), LightRanges(), 1.0)


# ---- mapping tail ---------------------------------------------------------------------------

def _formula_mapping(dim: int = 6, n: int = 8) -> nn.Sequential:
    """A rosinality 8-layer mapping (PixelNorm + EqualLinear lr_mul 0.01) with weights from a formula."""
    layers = [PixelNorm()]
    for k in range(n):
        lin = EqualLinear(dim, dim, lr_mul=0.01, activation="fused_lrelu")
        i = torch.arange(dim, dtype=torch.float32).view(-1, 1)
        j = torch.arange(dim, dtype=torch.float32).view(1, -1)
        with torch.no_grad():
            lin.weight.copy_(torch.cos(0.3 * i + 0.7 * j + k) * 100.0)  # stored = effective / lr_mul
            lin.bias.copy_(torch.sin(torch.arange(dim, dtype=torch.float32) + k) * 10.0)
        layers.append(lin)
    return nn.Sequential(*layers)


def _manual_layer(x: torch.Tensor, lin: EqualLinear) -> torch.Tensor:
    """EqualLinear + fused leaky ReLU written out: lrelu(x (W·lr/√in)ᵀ + b·lr, 0.2)·√2."""
    weight = lin.weight * 0.01 / math.sqrt(lin.weight.shape[1])
    return F.leaky_relu(x @ weight.T + lin.bias * 0.01, 0.2) * math.sqrt(2.0)


def _pixel_norm(x: torch.Tensor) -> torch.Tensor:
    return x / torch.sqrt((x * x).mean(1, keepdim=True) + 1e-8)


class _MappingOnly(nn.Module):
    def __init__(self, style: nn.Sequential) -> None:
        super().__init__()
        self.style = style
        self.style_dim = style[1].weight.shape[1]


class _FixedEncoder(nn.Module):
    def __init__(self, e: torch.Tensor) -> None:
        super().__init__()
        self.e = e

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.e.expand(images.shape[0], -1)


def test_tail_is_lin6_to_lin8_for_f1d_2_and_everything_for_f1d_8():
    style = _formula_mapping()
    head, tail = split_mapping(style, 2)
    assert [id(m) for m in tail] == [id(style[6]), id(style[7]), id(style[8])]  # Lin6..Lin8: three layers
    assert [id(m) for m in head] == [id(style[k]) for k in range(6)]         # PixelNorm + Lin1..Lin5
    head, tail = split_mapping(style, 8)
    assert len(head) == 0 and [id(m) for m in tail] == [id(m) for m in style]  # PixelNorm included
    one_line_error(split_mapping, style, 9)


def test_offset_matches_the_reference_formula():
    style = _formula_mapping()
    e = torch.linspace(-1.0, 2.0, 6).view(1, 6)
    image = torch.zeros(1, 3, 8, 8)
    zero = torch.zeros(1, 6)
    center_w = zero
    for lin in style[1:]:
        center_w = _manual_layer(center_w, lin)
    # F1_d = 2: center_h = Lin5∘…∘Lin1(PixelNorm(0)) = Lin5∘…∘Lin1(0);
    # Δw = Lin8∘Lin7∘Lin6(center_h + e) − M(0)
    h = zero
    for lin in style[1:6]:
        h = _manual_layer(h, lin)
    x = h + e
    for lin in style[6:]:
        x = _manual_layer(x, lin)
    offset = LatentProjector(_MappingOnly(style), 2).offset(_FixedEncoder(e), image)
    torch.testing.assert_close(offset, x - center_w, rtol=1e-5, atol=1e-5)
    # F1_d = 8: center_h = 0 and the tail is the whole mapping: Δw = M(e) − M(0)
    x = _pixel_norm(e)
    for lin in style[1:]:
        x = _manual_layer(x, lin)
    offset = LatentProjector(_MappingOnly(style), 8).offset(_FixedEncoder(e), image)
    torch.testing.assert_close(offset, x - center_w, rtol=1e-5, atol=1e-5)
    # A zero encoder output is no offset at any split (tail(head(0)) = M(0)).
    for f1_d in (1, 2, 5):
        off = LatentProjector(_MappingOnly(style), f1_d).offset(_FixedEncoder(torch.zeros(1, 6)), image)
        assert off.abs().max() < 1e-5


def test_relative_encoding_subtracts_the_gan_image_code():
    style = _formula_mapping()
    enc = nn.Conv2d(3, 6, 8)  # any encoder: images [B,3,8,8] → [B,6]

    class Flat(nn.Module):
        def forward(self, x):
            return enc(x).flatten(1)

    images = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    relative = LatentProjector(_MappingOnly(style), 2, relative_enc=True)
    with torch.no_grad():
        same = relative.offset(Flat(), images, images)
        moved = relative.offset(Flat(), images, images[:1] * 0)
        absolute = LatentProjector(_MappingOnly(style), 2).offset(Flat(), images - 0, None)
    assert same.abs().max() < 1e-5  # E(I) − E(gan_im) = 0: no offset
    e = Flat()(images) - Flat()(images[:1] * 0)
    torch.testing.assert_close(moved, LatentProjector(_MappingOnly(style), 2).offset(_FixedEncoder(e), images))
    assert not torch.allclose(moved, absolute)
    assert "gan_image" in one_line_error(relative.offset, Flat(), images, None)


def test_f1d_is_rescaled_to_the_generators_mapping_depth():
    s = preset("paper")
    assert [s.tail_layers(n) for n in (8, 4, 2, 1)] == [2, 1, 1, 1]
    synface = preset("paper", f1_d=8)
    assert [synface.tail_layers(n) for n in (8, 4)] == [8, 4]


def test_projection_scales_the_offset_by_truncation(world):
    settings, g, d, image, w, *_ = world
    proj = projector_for(world, truncation=0.5)
    offset = torch.randn(2, STYLE_DIM, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = proj.generate(w, offset)
        want, _ = g([w + 0.5 * offset], input_is_latent=True, randomize_noise=False)
    torch.testing.assert_close(got, want.clamp(-1, 1))
    assert "16-d" in one_line_error(proj.check_latent, torch.zeros(1, 12))
    one_line_error(proj.check_latent, torch.zeros(2, STYLE_DIM))


# ---- L_dis features ---------------------------------------------------------------------------

def test_discriminator_features_distance(world):
    settings, g, d, image, *_ = world
    dist = DiscriminatorFeatureDistance(d, 3)
    gen = torch.Generator().manual_seed(1)
    fake = torch.rand(2, 3, SIZE, SIZE, generator=gen).mul(2).sub(1).requires_grad_()
    real = torch.rand(2, 3, SIZE, SIZE, generator=gen).mul(2).sub(1).requires_grad_()
    mask = (torch.rand(2, 1, SIZE, SIZE, generator=gen) > 0.3).float()
    value = dist(fake, real, mask)
    want = 0.0
    for f, r in zip(d.features(fake, 3), d.features(real, 3)):  # ResBlocks convs[1..3] of a 32 px D
        m = F.avg_pool2d(mask, SIZE // f.shape[-1]).expand_as(f)
        want = want + ((f - r).abs() * m).sum() / m.sum()
    torch.testing.assert_close(value, want)
    d.zero_grad(set_to_none=True)
    d.requires_grad_(False)
    value.backward()
    d.requires_grad_(True)
    assert fake.grad is not None and fake.grad.abs().sum() > 0 and real.grad is None
    with torch.no_grad():
        assert float(dist(real.detach(), real.detach(), mask)) == 0.0
    assert "has 3" in one_line_error(DiscriminatorFeatureDistance, d, 4)
    assert PerceptualFeatureDistance(TinyPerceptual()).kind == "perceptual substitute (TinyPerceptual)"


# ---- pseudo samples ---------------------------------------------------------------------------

def _state(world, mask: bool = True) -> CanonicalState:
    *_, geometry, renderer = world
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, SIZE), torch.linspace(-1, 1, SIZE), indexing="ij")
    depth = (1.0 - 0.05 * torch.clamp(1 - xx ** 2 - yy ** 2, min=0)).unsqueeze(0)
    albedo = torch.stack([xx, yy, xx * yy]).unsqueeze(0) * 0.8
    light = torch.tensor([[0.4, 0.6, 0.2, -0.1]])
    canon = ((xx ** 2 + yy ** 2) < 0.6).float()[None, None] if mask else None
    return CanonicalState(depth, albedo, light, canon)


def test_pseudo_lights_views_are_seeded_and_in_range(world):
    *_, geometry, renderer = world
    state = _state(world)
    ranges = LightRanges(-1, 1, -0.2, 0.8, -0.1, 0.6, -0.6)
    a = sample_pseudo(renderer, state, 6, geometry, default_view_prior(), ranges, torch.Generator().manual_seed(3))
    b = sample_pseudo(renderer, state, 6, geometry, default_view_prior(), ranges, torch.Generator().manual_seed(3))
    assert torch.equal(a.image, b.image) and torch.equal(a.view, b.view)
    assert ((-1 <= a.light[:, 2]) & (a.light[:, 2] <= 1)).all()
    assert ((-0.2 <= a.light[:, 3]) & (a.light[:, 3] <= 0.8)).all()
    assert ((-0.1 <= a.strength) & (a.strength <= 0.6)).all()
    assert torch.equal(a.light[:, :2], state.light[:, :2].expand(6, 2))
    assert a.image.shape == (6, 3, SIZE, SIZE) and a.image.abs().max() <= 1
    # Masks: the canonical mask sampled with nearest (0/1 only), inside the valid region.
    assert set(a.mask.unique().tolist()) <= {0.0, 1.0} and a.mask.sum() > 0


def test_view_prior_statistics_and_view_scale():
    prior = default_view_prior(60.0)
    views = prior.sample(20000, torch.Generator().manual_seed(0))
    want = torch.tensor([20 / 60, 40 / 60, 8 / 60]) / math.sqrt(3)
    torch.testing.assert_close(views[:, :3].std(0), want, rtol=0.03, atol=0)
    assert views[:, 3:].abs().max() == 0  # no translation in our worlds
    scaled = prior.sample(20000, torch.Generator().manual_seed(0), view_scale=1.2)
    torch.testing.assert_close(scaled[:, 1], views[:, 1] * 1.2)
    torch.testing.assert_close(scaled[:, [0, 2]], views[:, [0, 2]])


def test_pseudo_shading_formula(world):
    """Degenerate ranges: the sample equals the hand-shaded texture rendered at the drawn view."""
    *_, geometry, renderer = world
    state = _state(world, mask=False)
    ranges = LightRanges(0.5, 0.5, 0.3, 0.3, 0.25, 0.25, -0.6)
    prior = ViewPrior(torch.tensor([0.0, 0.3, 0.0, 0.0, 0.0, 0.0]), torch.zeros(6, 6))
    out = sample_pseudo(renderer, state, 2, geometry, prior, ranges, torch.Generator().manual_seed(0))
    from toon3d.shape.camera import normals_from_depth

    n = normals_from_depth(state.depth, renderer.K)
    ldir = torch.tensor([0.5, 0.3, 1.0])
    diff = (n * (ldir / ldir.norm())).sum(-1).clamp_min(0).unsqueeze(1)
    shading = 0.4 - 0.6 * 0.25 + (0.6 + 0.25) * diff
    texture = ((state.albedo / 2 + 0.5) * shading * 2 - 1).expand(2, -1, -1, -1)
    assert torch.allclose(out.view[:, 1], torch.full((2,), math.radians(0.3 * 60)))
    R, t = view_rt(out.view)
    want, valid, _ = renderer.render_view(texture, state.depth.expand(2, -1, -1), R, t)
    torch.testing.assert_close(out.image, want)
    torch.testing.assert_close(out.mask, valid)


def test_view_prior_file_validation(tmp_path):
    good = tmp_path / "view_mvn.pth"
    torch.save({"mean": torch.zeros(6), "cov": torch.eye(6) * 0.1}, good)
    prior = load_view_prior(good)
    assert prior.mean.shape == (6,) and prior.cov.shape == (6, 6)
    bad = tmp_path / "bad.pth"
    torch.save({"mean": torch.zeros(5), "cov": torch.eye(6)}, bad)
    assert "[6]" in one_line_error(load_view_prior, bad)
    torch.save({"mu": torch.zeros(6)}, bad)
    assert "'mean'" in one_line_error(load_view_prior, bad)
    cov = torch.eye(6)
    cov[0, 1] = 0.5
    assert "symmetric" in one_line_error(ViewPrior.from_dict, {"mean": torch.zeros(6), "cov": cov})
    assert "negative" in one_line_error(ViewPrior.from_dict, {"mean": torch.zeros(6), "cov": -torch.eye(6)})


# ---- gradients reach exactly the nets of each step ----------------------------------------------

def test_step1_trains_the_albedo_net_only(world):
    settings, g, d, image, *_ = world
    nets, tools = make_nets(settings), make_tools(world)
    losses = step1_losses(nets, image, tools, LossTerms())
    losses["total"].backward()
    assert grads_of(nets) == {"depth": False, "albedo": True, "view": False, "light": False, "encoder": False}
    assert no_grads(tools.perceptual, tools.embedder)


def test_step2_trains_the_encoder_only(world):
    settings, g, d, image, w, *_ = world
    nets = make_nets(settings)
    tools = make_tools(world)
    state = canonical_state(nets, image, tools, torch.ones(1, 1, SIZE, SIZE))
    flags = [p.requires_grad for p in g.parameters()]
    losses, pseudo, projected = step2_losses(nets, state, sampler_for(world), projector_for(world),
                                             DiscriminatorFeatureDistance(d, 3), w, 2,
                                             torch.Generator().manual_seed(0), LossWeights())
    assert set(losses) == {"l1", "dis", "reg", "total"}
    losses["total"].backward()
    assert grads_of(nets) == {"depth": False, "albedo": False, "view": False, "light": False, "encoder": True}
    assert no_grads(g, d)
    assert [p.requires_grad for p in g.parameters()] == flags  # `frozen` restores the flags
    torch.testing.assert_close(losses["total"], losses["l1"] + losses["dis"] + 0.01 * losses["reg"])


def test_step3_trains_depth_albedo_view_light(world):
    settings, g, d, image, *_ = world
    nets, tools = make_nets(settings), make_tools(world)
    proj = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2)) * 2 - 1
    losses = step3_losses(nets, image, proj, torch.ones(2, 1, SIZE, SIZE), tools, LossTerms())
    losses["total"].backward()
    assert grads_of(nets) == {"depth": True, "albedo": True, "view": True, "light": True, "encoder": False}
    assert no_grads(tools.perceptual, tools.embedder)


def test_optimisers_hold_exactly_the_step_nets(world):
    nets = make_nets(world[0])
    for step, names in STEP_NETS.items():
        opt = make_optimizer(nets, step)
        held = {id(p) for group in opt.param_groups for p in group["params"]}
        assert held == {id(p) for n in names for p in getattr(nets, n).parameters()}
        assert opt.param_groups[0]["weight_decay"] == 5e-4 and opt.param_groups[0]["lr"] == 1e-4


# ---- each ablation flag removes exactly its term --------------------------------------------

TERM_KEYS = {"sym": {"l1_flip", "perc_flip"}, "identity": {"id"}, "perceptual": {"perc", "perc_flip"},
             "smooth": {"smooth"}}
WEIGHT = {"l1_flip": 1.0, "perc_flip": 0.5, "perc": 0.5, "id": 1.0, "smooth": 0.01}


@pytest.mark.parametrize("flag", ["sym", "identity", "perceptual", "smooth"])
def test_step1_flag_removes_exactly_its_term(world, flag):
    settings, g, d, image, *_ = world
    nets, tools = make_nets(settings), make_tools(world)
    with torch.no_grad():
        on = step1_losses(nets, image, tools, LossTerms())
        off = step1_losses(nets, image, tools, LossTerms(**{flag: False}))
    removed = set(on) - set(off)
    assert removed == TERM_KEYS[flag] and set(off) <= set(on)
    for key in set(off) - {"total"}:
        torch.testing.assert_close(off[key], on[key])
    torch.testing.assert_close(on["total"] - off["total"], sum(WEIGHT[k] * on[k] for k in removed))


@pytest.mark.parametrize("flag", ["sym", "identity", "perceptual", "smooth"])
def test_step3_flag_removes_exactly_its_term(world, flag):
    settings, g, d, image, *_ = world
    nets, tools = make_nets(settings), make_tools(world)
    proj = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2)) * 2 - 1
    masks = torch.ones(2, 1, SIZE, SIZE)
    with torch.no_grad():
        on = step3_losses(nets, image, proj, masks, tools, LossTerms())
        off = step3_losses(nets, image, proj, masks, tools, LossTerms(**{flag: False}))
    removed = set(on) - set(off)
    want = TERM_KEYS[flag] | ({"proj_" + k for k in TERM_KEYS[flag]} if flag != "smooth" else set())
    assert removed == want
    for key in set(off) - {"total"}:
        torch.testing.assert_close(off[key], on[key])
    torch.testing.assert_close(on["total"] - off["total"],
                               sum(WEIGHT[k.split("proj_", 1)[-1]] * on[k] for k in removed))


def test_missing_networks_for_switched_on_terms_are_one_line_errors(world):
    settings, g, d, image, w, geometry, renderer = world
    nets = make_nets(settings)
    bare = StepTools(renderer, geometry, LossWeights())
    assert "perceptual" in one_line_error(step1_losses, nets, image, bare, LossTerms(identity=False))
    assert "--no-id" in one_line_error(step1_losses, nets, image, bare, LossTerms(perceptual=False))


# ---- training lowers each step's loss -----------------------------------------------------------

def test_each_step_lowers_its_loss(world):
    settings, g, d, image, w, *_ = world
    torch.manual_seed(0)
    nets, tools = make_nets(settings), make_tools(world)
    terms = LossTerms()
    opt = make_optimizer(nets, "step1", lr=1e-3)
    first = step1(nets, image, tools, terms, opt)["total"]
    for _ in range(15):
        last = step1(nets, image, tools, terms, opt)["total"]
    assert last < first * 0.97

    state = canonical_state(nets, image, tools, None)
    sampler, proj, dis = sampler_for(world), projector_for(world), DiscriminatorFeatureDistance(d, 3)
    opt = make_optimizer(nets, "step2", lr=1e-3)
    # The same pseudo batch every iteration (same seed), so the loss is comparable.
    totals = [step2_train(nets, state, sampler, proj, dis, w, 2, torch.Generator().manual_seed(4), LossWeights(),
                          opt)["total"] for _ in range(12)]
    assert totals[-1] < totals[0] * 0.97

    samples = ProjectedSamples(torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)) * 2 - 1,
                               torch.ones(2, 1, SIZE, SIZE))
    opt = make_optimizer(nets, "step3", lr=1e-3)
    rng = torch.Generator().manual_seed(0)
    totals = [step3(nets, image, samples, 2, tools, terms, opt, rng)["total"] for _ in range(12)]
    assert totals[-1] < totals[0] * 0.97


def test_projected_samples_cycle_and_reshuffle():
    images = torch.arange(5, dtype=torch.float32).view(5, 1, 1, 1).expand(5, 3, 2, 2)
    samples = ProjectedSamples(images, torch.ones(5, 1, 2, 2))
    rng = torch.Generator().manual_seed(0)
    seen = [samples.next_batch(2, rng)[0][:, 0, 0, 0].tolist() for _ in range(4)]
    assert seen[0] == [0.0, 1.0] and seen[1] == [2.0, 3.0]  # first pass in collection order
    assert sorted(seen[2] + seen[3]) == sorted(set(seen[2] + seen[3]))  # a reshuffled pass, no repeats
    again = ProjectedSamples(images, torch.ones(5, 1, 2, 2))
    rng = torch.Generator().manual_seed(0)
    assert [again.next_batch(2, rng)[0][:, 0, 0, 0].tolist() for _ in range(4)] == seen


def test_offset_fit_lowers_eq16_and_moves_only_the_offsets(world):
    from toon3d.shape.steps import OffsetFit, fit_offsets, step2_collect

    settings, g, d, image, w, *_ = world
    nets = make_nets(settings)
    tools = make_tools(world)
    state = canonical_state(nets, image, tools, torch.ones(1, 1, SIZE, SIZE))
    projector = projector_for(world)
    dis = DiscriminatorFeatureDistance(d, 3)
    pseudo = sampler_for(world)(state, 2, torch.Generator().manual_seed(0))
    start = projector.offset(nets.encoder, pseudo.image).detach()
    before = {k: v.clone() for k, v in [*g.state_dict().items(), *d.state_dict().items()]}

    @torch.no_grad()
    def eq16(offset):
        projected = projector.generate(w, offset)
        return float(torch.nn.functional.l1_loss(projected, pseudo.image, reduction="none").mul(pseudo.mask).sum()
                     / pseudo.mask.expand_as(projected).sum() + dis(projected, pseudo.image, pseudo.mask)
                     + 0.01 * offset.pow(2).mean())

    fit = OffsetFit(15, 0.05, dis, LossWeights())
    images, offsets = fit_offsets(projector, w, pseudo, start, fit)
    assert images.shape == pseudo.image.shape and not offsets.requires_grad
    assert eq16(offsets) < eq16(start)
    for k, v in [*g.state_dict().items(), *d.state_dict().items()]:
        assert torch.equal(v, before[k]), k
    assert no_grads(g, d, nets)
    # Collection with a fit: same pseudo samples (same seed), projections now fitted.
    plain = step2_collect(nets, state, sampler_for(world), projector, w, 2, 1, torch.Generator().manual_seed(0))
    fitted = step2_collect(nets, state, sampler_for(world), projector, w, 2, 1, torch.Generator().manual_seed(0),
                           fit=fit)
    torch.testing.assert_close(plain.masks, fitted.masks)
    torch.testing.assert_close(fitted.images, images)
    assert not torch.equal(plain.images, fitted.images)
    with pytest.raises(Exception, match="projection_fit_steps"):
        preset("tiny", projection_fit_steps=-1)
