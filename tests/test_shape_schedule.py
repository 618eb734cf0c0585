"""The GAN2Shape cycle scheduler: end-to-end tiny runs, resume after a kill, presets, one-line errors."""

from __future__ import annotations

import dataclasses
import time

import pytest
import torch

import toon3d.shape.schedule as schedule
from shape_fakes import SIZE, STYLE_DIM, TinyEmbedder, TinyPerceptual, one_line_error, tiny_gan, tiny_target
from toon3d.shape.networks import ShapeNetConfig, ShapeNets
from toon3d.shape.schedule import build_nets, reconstruct_image
from toon3d.shape.settings import PRESETS, changed_settings, preset, without

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def gan():
    g, d = tiny_gan()
    image, w = tiny_target(g)
    return g, d, image, w


def run(gan, settings=None, **kwargs):
    g, d, image, w = gan
    args = dict(discriminator=d, identity_embedder=TinyEmbedder(), perceptual=TinyPerceptual(), progress=False,
                seed=0)
    args.update(kwargs)
    return reconstruct_image(args.pop("image", image), args.pop("latent", w), g, settings or preset("tiny"), **args)


@pytest.fixture(scope="module")
def tiny_result(gan):
    started = time.perf_counter()
    result = run(gan)
    return result, time.perf_counter() - started


def test_tiny_preset_runs_end_to_end(tiny_result):
    result, seconds = tiny_result
    assert seconds < 30
    assert result.depth.shape == (1, SIZE, SIZE) and 0.9 <= result.depth.min() <= result.depth.max() <= 1.1
    assert result.albedo.shape == (1, 3, SIZE, SIZE) and result.recon.shape == (1, 3, SIZE, SIZE)
    assert result.normal.shape == (1, SIZE, SIZE, 3) and result.view.shape == (1, 6) and result.light.shape == (1, 4)
    assert result.canon_mask.shape == (1, 1, SIZE, SIZE) and result.prior_fitted
    assert result.dis_features == "discriminator"
    steps = [(h["stage"], h["step"]) for h in result.history]
    assert steps == [(0, "step1")] * 2 + [(0, "step2")] * 2 + [(0, "step3")] * 2
    assert {"l1", "l1_flip", "perc", "id", "smooth", "total"} <= set(result.history[0])
    assert set(result.history[2]) == {"stage", "step", "iteration", "l1", "dis", "reg", "total"}
    assert {"proj_l1", "proj_l1_flip", "proj_id"} <= set(result.history[-1])
    assert set(result.nets_state) == set(ShapeNets(preset("tiny").net_config(STYLE_DIM)).state_dict())


def test_same_seed_same_result_and_generator_untouched(gan, tiny_result):
    g = gan[0]
    before = {k: v.clone() for k, v in g.state_dict().items()}
    a, b = tiny_result[0], run(gan)
    for key in a.nets_state:
        assert torch.equal(a.nets_state[key], b.nets_state[key]), key
    assert all(torch.equal(before[k], v) for k, v in g.state_dict().items())
    assert all(p.requires_grad for p in g.parameters())


def test_two_stages_use_later_lengths_and_losses_decrease(gan):
    settings = dataclasses.replace(preset("tiny"), num_stages=2, stage0_steps=(6, 2, 6), later_steps=(3, 1, 4),
                                   flip1=(True, False), flip3=(True, False), lr=(1e-3,) * 3)
    result = run(gan, settings)
    counts = {}
    for h in result.history:
        counts[(h["stage"], h["step"])] = counts.get((h["stage"], h["step"]), 0) + 1
    assert counts == {(0, "step1"): 6, (0, "step2"): 2, (0, "step3"): 6,
                      (1, "step1"): 3, (1, "step2"): 1, (1, "step3"): 4}
    # Stage 1 switches symmetry off: its step-1 losses have no mirrored terms.
    assert "l1_flip" not in [h for h in result.history if h["stage"] == 1][0]
    step1 = [h["total"] for h in result.history if (h["stage"], h["step"]) == (0, "step1")]
    assert step1[-1] < step1[0]
    recon = [h["l1"] for h in result.history if h["step"] == "step3"]
    assert min(recon[-3:]) < recon[0]


class Killed(RuntimeError):
    pass


def _kill_on(monkeypatch, name: str, call: int) -> None:
    """Make schedule.<name> raise on its `call`-th call (1-based): a killed process."""
    real = getattr(schedule, name)
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            raise Killed(f"killed in {name}")
        return real(*args, **kwargs)

    monkeypatch.setattr(schedule, name, wrapper)


RESUME_SETTINGS = dict(num_stages=2, checkpoint_every=1, flip1=(True, False), flip3=(False, True))


@pytest.fixture(scope="module")
def uninterrupted(gan):
    return run(gan, dataclasses.replace(preset("tiny"), **RESUME_SETTINGS))


# Kill points: inside step 1 of stage 0 (optimiser state restored), during the collection (step 2's
# training is replayed from its last checkpoint), inside step 3 of stage 1.
@pytest.mark.parametrize("where", [("step1", 2), ("step2_collect", 1), ("step3", 4)])
def test_resume_after_a_kill_gives_the_uninterrupted_result(gan, uninterrupted, tmp_path, monkeypatch, where):
    settings = dataclasses.replace(preset("tiny"), **RESUME_SETTINGS)
    folder = tmp_path / "ckpt"
    with monkeypatch.context() as patch:
        _kill_on(patch, *where)
        with pytest.raises(Killed):
            run(gan, settings, checkpoint_dir=folder)
    assert (folder / schedule.STATE_FILE).is_file()
    resumed = run(gan, settings, checkpoint_dir=folder)
    for key in uninterrupted.nets_state:
        assert torch.equal(uninterrupted.nets_state[key], resumed.nets_state[key]), key
    assert resumed.history == uninterrupted.history
    assert torch.equal(resumed.depth, uninterrupted.depth)


def test_resume_refuses_other_settings_image_or_seed(gan, tmp_path, monkeypatch):
    settings = preset("tiny")
    folder = tmp_path / "ckpt"
    with monkeypatch.context() as patch:
        _kill_on(patch, "step3", 1)
        with pytest.raises(Killed):
            run(gan, settings, checkpoint_dir=folder)
    message = one_line_error(run, gan, dataclasses.replace(settings, lam_perc=0.3), checkpoint_dir=folder)
    assert "lam_perc" in message
    assert "image" in one_line_error(run, gan, settings, checkpoint_dir=folder, image=-gan[2])
    assert "seed" in one_line_error(run, gan, settings, checkpoint_dir=folder, seed=3)
    # checkpoint_every does not change the result: resuming with another value is allowed.
    run(gan, dataclasses.replace(settings, checkpoint_every=5), checkpoint_dir=folder)


def test_pretrained_depth_skips_the_prior(gan):
    settings = dataclasses.replace(preset("tiny"), stage0_steps=(1, 0, 1), collect_iters=1)
    nets, _ = build_nets(settings, STYLE_DIM, 7, None)
    init = {k: v for k, v in nets.state_dict().items() if not k.startswith("encoder.")}
    result = run(gan, settings, nets_init=init)
    assert not result.prior_fitted
    partial = {k: v for k, v in init.items() if not k.startswith("depth.")}
    assert run(gan, settings, nets_init=partial).prior_fitted
    # prior_refit: the image's mask prior is fitted into the pretrained D; A, V, L start as given
    refit = dataclasses.replace(settings, prior_refit=True, stage0_steps=(0, 0, 0))
    result = run(gan, refit, nets_init=init)
    assert result.prior_fitted
    depth_keys = [k for k in init if k.startswith("depth.") and init[k].is_floating_point()]
    assert any(not torch.equal(result.nets_state[k], init[k]) for k in depth_keys)
    assert all(torch.equal(result.nets_state[k], v) for k, v in init.items() if k.startswith(("view.", "light.")))


def test_bad_inputs_are_one_line_errors(gan):
    g, d, image, w = gan
    assert "16-d" in one_line_error(run, gan, latent=torch.zeros(1, 12))
    assert "32x32" in one_line_error(run, gan, image=torch.zeros(1, 3, 16, 16))
    big = ShapeNets(ShapeNetConfig(size=64, nf=8, nf_vl=8, zdim=16, nf_encoder=4, latent_dim=STYLE_DIM))
    assert "pretrained reconstructor" in one_line_error(run, gan, nets_init=big.state_dict())
    assert "discriminator" in one_line_error(run, gan, discriminator=None)
    assert "--no-id" in one_line_error(run, gan, identity_embedder=None)
    assert "perceptual" in one_line_error(run, gan, perceptual=None)
    assert "mask" in one_line_error(run, gan, mask=torch.ones(1, 1, 8, 8))
    assert "unknown entry" in one_line_error(run, gan, nets_init={"netD.weight": torch.zeros(1)})


def test_substitute_features_and_ablations(gan):
    settings = without(dataclasses.replace(preset("tiny"), dis_features="perceptual", stage0_steps=(1, 1, 1),
                                           collect_iters=1), identity=True, sym=True)
    result = run(gan, settings, discriminator=None, identity_embedder=None)
    assert result.dis_features == "perceptual substitute (TinyPerceptual)"
    assert not any(k.endswith(("_flip", "id")) for h in result.history for k in h)
    none = run(gan, dataclasses.replace(without(settings, perceptual=True), dis_features="discriminator"),
               discriminator=gan[1], identity_embedder=None, perceptual=None)
    assert not any("perc" in k for h in none.history for k in h)


def test_presets():
    paper, released, cpu, tiny = (preset(n) for n in ("paper", "released", "cpu", "tiny"))
    assert set(PRESETS) == {"paper", "released", "cpu", "tiny"}
    assert paper.image_size == 256 and paper.num_stages == 4
    assert paper.stage0_steps == (700, 700, 600) and paper.later_steps == (200, 500, 400)
    assert paper.batch_size == 8 and paper.collect_iters == 100 and paper.identity and all(paper.flip1 + paper.flip3)
    assert paper.perceptual == "vgg" and paper.truncation == 0.7 and paper.f1_d == 2 and paper.f1_d_of == 8
    assert changed_settings(paper.as_dict(), released) == ["flip1", "flip3", "identity", "prior_far"]
    assert not any(released.flip1 + released.flip3) and not released.identity
    assert cpu.image_size == 64 and tiny.image_size == 32 and tiny.stage0_steps == (2, 2, 2) and tiny.num_stages == 1
    assert "unknown preset" in one_line_error(preset, "fast")
    assert "unknown reconstruction setting" in one_line_error(preset, "tiny", batchsize=3)
    assert "flip1" in one_line_error(preset, "tiny", num_stages=2)
    assert "perceptual" in one_line_error(preset, "tiny", perceptual="lpips")
    assert "image_size" in one_line_error(preset, "tiny", image_size=48)
    assert "truncation" in one_line_error(preset, "tiny", truncation=0.0)
    assert "lr" in one_line_error(preset, "tiny", lr=(1e-4, 0.0, 1e-4))
    assert "rand_light" in one_line_error(preset, "tiny", rand_light=(1.0, -1.0, 0, 1, 0, 1, -0.6))


@pytest.mark.slow
def test_cpu_preset_on_the_builtin_cartoon_generator():
    """The cpu preset on the shipped 64 px cartoon generator and discriminator: a face-shaped relief in minutes."""
    from toon3d.faces.identity import load_identity_embedder
    from toon3d.models import builtin_discriminator_path, resolve_generator
    from toon3d.shape.losses import load_perceptual
    from toon3d.stylegan2.checkpoints import load_discriminator
    from toon3d.stylegan2.sampling import truncate

    loaded = resolve_generator("cartoon")
    g = loaded.generator
    d = load_discriminator(builtin_discriminator_path("cartoon"))
    z = torch.randn(1, g.style_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        w = truncate(g.style(z), loaded.mean_latent, 0.7)
        image = g([w], input_is_latent=True, randomize_noise=False)[0].clamp(-1, 1)
    started = time.perf_counter()
    result = reconstruct_image(image, w, g, preset("cpu"), discriminator=d, identity_embedder=load_identity_embedder(),
                               perceptual=load_perceptual("dlib"), progress=False)
    assert time.perf_counter() - started < 300
    depth = result.depth[0]
    centre, border = depth[28:36, 28:36].mean(), depth[:, 4:10].mean()
    # The face stands out of the background by most of the calibrated prior's relief (far − near,
    # 0.045): not flattened by the cycles.
    settings = preset("cpu")
    assert border - centre > 0.8 * (settings.prior_far - settings.prior_near)
    step1 = [h["total"] for h in result.history if h["step"] == "step1"]
    assert step1[-1] < step1[0]


def test_residual_depth_starts_exactly_at_the_prior_and_resumes(gan, tmp_path, monkeypatch):
    from toon3d.shape.photo_geometry import depth_from_raw
    from toon3d.shape.prior import add_output_offset, ellipsoid_depth, prior_offset, representable_shift, zero_output_layer

    settings = preset("tiny")
    geometry = settings.geometry()
    nets, _ = build_nets(settings, STYLE_DIM, 0, None)
    mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    mask[6:28, 8:24] = True
    target = ellipsoid_depth(mask, "box", 0.975, 1.02)
    zero_output_layer(nets.depth)
    handle = add_output_offset(nets.depth, prior_offset(target, geometry.min_depth, geometry.max_depth))
    _, raw = depth_from_raw(nets.depth(gan[2])[:, 0], geometry)
    shift = representable_shift(target, geometry.min_depth, geometry.max_depth)
    torch.testing.assert_close(raw[0], target + shift, rtol=0, atol=1e-5)  # no fit, no stripes
    handle.remove()
    _, bare = depth_from_raw(nets.depth(gan[2])[:, 0], geometry)
    assert bare.std() < 1e-6  # the zeroed net alone: a constant plane
    # End to end: the depth net learns a residual (its output layer moved off zero), and a resume
    # re-attaches the image's prior offset (it is not in the state) and repeats the result exactly.
    residual = dataclasses.replace(preset("tiny"), depth_start="residual", **RESUME_SETTINGS)
    whole = run(gan, residual)
    assert whole.prior_fitted and 0.9 <= whole.depth.min() <= whole.depth.max() <= 1.1
    last = max((k for k in whole.nets_state if k.startswith("depth.network.") and k.endswith(".weight")
                and whole.nets_state[k].dim() == 4), key=lambda k: int(k.split(".")[2]))
    assert whole.nets_state[last].abs().max() > 0
    folder = tmp_path / "ckpt"
    with monkeypatch.context() as patch:
        _kill_on(patch, "step3", 4)
        with pytest.raises(Killed):
            run(gan, residual, checkpoint_dir=folder)
    resumed = run(gan, residual, checkpoint_dir=folder)
    assert torch.equal(resumed.depth, whole.depth) and resumed.history == whole.history
    assert "depth_start" in one_line_error(preset, "tiny", depth_start="warp")


def _prior_of(mask: torch.Tensor, view: torch.Tensor | None, settings):
    """schedule._prior_target for a mask [S,S] and a start view [1,6] (None: prior_frame='view')."""
    from types import SimpleNamespace

    from toon3d.shape.renderer import Renderer

    renderer = Renderer(settings.geometry().renderer_settings())
    fixed = SimpleNamespace(settings=settings, face_mask=mask.float()[None, None], device=torch.device("cpu"),
                            prior_view=view, tools=SimpleNamespace(renderer=renderer))
    return schedule._prior_target(fixed), renderer


def test_canonical_prior_frame_covers_the_mask_at_the_start_view():
    from toon3d.shape.photo_geometry import view_rt

    settings = dataclasses.replace(preset("tiny"), prior_near=0.975, prior_frame="canonical")
    mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    mask[6:28, 11:25] = True
    in_view, renderer = _prior_of(mask, None, settings)
    frontal, _ = _prior_of(mask, torch.zeros(1, 6), settings)
    # At the frontal view the canonical frame is the view's: the same ellipsoid.
    torch.testing.assert_close(frontal, in_view, rtol=0, atol=1e-4)
    # A head the view net sees turned by 25°: GAN2Shape's prior (the view's ellipsoid taken as the
    # canonical depth) rendered at that view slides off the mask; the canonical-frame prior covers it.
    view = torch.tensor([[0.0, torch.deg2rad(torch.tensor(25.0)).item(), 0.0, 0.0, 0.0, 0.0]])
    turned, _ = _prior_of(mask, view, settings)
    assert not torch.allclose(turned, in_view)

    def iou(depth):
        R, t = view_rt(view)
        _, valid, seen = renderer.render_view(torch.zeros(1, 3, SIZE, SIZE), depth[None], R, t)
        face = (seen[0] < settings.prior_far - 1e-3) & (valid[0, 0] > 0.5)
        return float((face & mask).sum() / (face | mask).sum())

    assert iou(turned) > iou(in_view) + 0.05


def _turned_view_net(settings, image: torch.Tensor, yaw_deg: float) -> dict[str, torch.Tensor]:
    """A 'pretrained' view net (nets_init entries) that predicts yaw `yaw_deg` and nothing else for `image`."""
    nets, _ = build_nets(settings, STYLE_DIM, 0, None)
    last = [m for m in nets.view.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        keep = last.weight[1].clone()
        last.weight.zero_()
        last.weight[1] = keep  # yaw only
        raw = torch.atanh(nets.view(image)[0, 1])
        last.weight[1] *= torch.atanh(torch.tensor(yaw_deg / settings.rot_range_deg)) / raw
    return {"view." + k: v.clone() for k, v in nets.view.state_dict().items()}


def test_canonical_prior_frame_resumes_exactly(gan, tmp_path, monkeypatch):
    views = []
    real = schedule.start_view
    monkeypatch.setattr(schedule, "start_view", lambda *a: views.append(real(*a)) or views[-1])
    settings = dataclasses.replace(preset("tiny"), depth_start="residual", prior_frame="canonical",
                                   **RESUME_SETTINGS)
    # Without a pretrained view net the start view would be a fresh net's noise: the view frame's prior.
    assert torch.equal(run(gan, settings).depth, run(gan, dataclasses.replace(settings, prior_frame="view")).depth)
    assert not views
    turned = _turned_view_net(settings, gan[2], 20.0)
    whole = run(gan, settings, nets_init=turned)
    assert len(views) == 1 and torch.rad2deg(views[0][0, 1]).item() == pytest.approx(20.0, abs=1e-3)
    plain = run(gan, dataclasses.replace(settings, prior_frame="view"), nets_init=turned)
    assert not torch.equal(whole.depth, plain.depth)
    folder = tmp_path / "ckpt"
    with monkeypatch.context() as patch:
        _kill_on(patch, "step3", 4)
        with pytest.raises(Killed):
            run(gan, settings, checkpoint_dir=folder, nets_init=turned)
    # The start view comes from the networks as built, before the saved state is loaded.
    resumed = run(gan, settings, checkpoint_dir=folder, nets_init=turned)
    assert torch.equal(views[-1], views[0])
    assert torch.equal(resumed.depth, whole.depth) and resumed.history == whole.history
    assert "prior_frame" in one_line_error(preset, "tiny", prior_frame="sideways")
