"""Joint 3D pretraining (train-shape), shape model files, instant reconstruction and depth scoring."""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from toon3d.cli import main
from toon3d.errors import Toon3dError
from toon3d.shape.depth_eval import load_ground_truth, score_view_depth, summarise
from toon3d.shape.instant import instant_reconstruct, load_shape_model, save_shape_model
from toon3d.shape.photo_geometry import Decomposition, GeometrySettings
from toon3d.shape.pretrain import (GeneratorImages, PretrainConfig, PretrainRun, build_nets, pretrain_loss,
                                   trained_parameters)
from toon3d.shape.renderer import Renderer

from dlib_helpers import one_line_error

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def toon_folder(tmp_path_factory) -> Path:
    """8 toon faces with ground truth at 64 px (seeded)."""
    from toon3d.synth.synface_dataset import write_synface_dataset
    from toon3d.synth.toon_style import ToonStyle

    out = tmp_path_factory.mktemp("data") / "toon"
    return write_synface_dataset(out, n=8, size=64, seed=5, batch=8, workers=1, progress=False, style=ToonStyle())


def tiny_config(folder: Path, **kw) -> PretrainConfig:
    base = dict(source="folder", data=str(folder), size=32, nf=8, nf_vl=8, zdim=16, nf_conf=8, batch=4, iters=6,
                lam_perc=0.0, ckpt_every=2, sample_every=1000, eval_every=1000, seed=3, prior_steps=3)
    base.update(kw)
    return PretrainConfig(**base)


class FixedImages:
    """The same batch every iteration: shaded renders of a bumpy surface (learnable by construction)."""

    description = "fixed renders"

    def __init__(self, size: int = 32, batch: int = 4) -> None:
        v, u = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
        depth = 1.0 - 0.05 * torch.exp(-(u ** 2 + v ** 2) / 0.25)
        albedo = torch.stack([0.4 + 0.3 * u, 0.2 + 0.0 * v, -0.3 + 0.3 * v]).clamp(-1, 1)
        renderer = Renderer(GeometrySettings(size, pixel_offset=0.0).renderer_settings())
        light = torch.tensor([[0.4, 0.6, 0.3, -0.2]]).expand(batch, 4)
        self.images = renderer.shade(albedo.expand(batch, 3, size, size), depth.expand(batch, size, size), light)[0]

    def next(self, iteration: int) -> torch.Tensor:
        return self.images

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def test_pretraining_reduces_the_reconstruction_loss(toon_folder):
    cfg = tiny_config(toon_folder, lr=2e-3, confidence=False, iters=10, batch=2)
    run = PretrainRun("unused", cfg, None, source=FixedImages(batch=2))
    losses = [run.step()["total"].item() for _ in range(10)]
    assert sum(losses[-3:]) / 3 < 0.5 * losses[0]


def test_pretraining_gradients_reach_d_a_v_l_and_confidence_but_not_the_latent_encoder(toon_folder):
    cfg = tiny_config(toon_folder)
    nets, conf = build_nets(cfg)
    images = FixedImages().images
    geometry = cfg.geometry()
    losses, _ = pretrain_loss(nets, conf, images, geometry, Renderer(geometry.renderer_settings()), None, 0.0)
    losses["total"].backward()
    for name in ("depth", "albedo", "view", "light"):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in getattr(nets, name).parameters()), name
    assert all(p.grad is None for p in nets.encoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in conf.parameters())
    encoder_ids = {id(p) for p in nets.encoder.parameters()}
    assert not encoder_ids & {id(p) for p in trained_parameters(nets, conf)}


def _state(run: PretrainRun) -> dict[str, torch.Tensor]:
    out = {f"nets.{k}": v for k, v in run.nets.state_dict().items()}
    out.update({f"conf.{k}": v for k, v in run.conf.state_dict().items()})
    return out


def test_resume_after_a_kill_is_bit_identical(toon_folder, tmp_path, monkeypatch):
    cfg = tiny_config(toon_folder)
    straight = PretrainRun(tmp_path / "a", cfg, None)
    straight.train(progress=False)

    killed = PretrainRun(tmp_path / "b", cfg, None)
    original_step = PretrainRun.step

    def dying_step(self):
        if self.iteration == 3:
            raise KeyboardInterrupt  # killed during iteration 4; the last checkpoint is iteration 2
        return original_step(self)

    monkeypatch.setattr(PretrainRun, "step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        killed.train(progress=False)
    monkeypatch.setattr(PretrainRun, "step", original_step)

    resumed = PretrainRun(tmp_path / "b", cfg, None)
    resumed.load()
    assert resumed.iteration == 2
    resumed.train(progress=False)
    assert resumed.iteration == straight.iteration == 6
    a, b = _state(straight), _state(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    opt_a, opt_b = straight.opt.state_dict()["state"], resumed.opt.state_dict()["state"]
    assert all(torch.equal(opt_a[i]["exp_avg_sq"], opt_b[i]["exp_avg_sq"]) for i in opt_a)
    assert straight.source.state_dict() == resumed.source.state_dict()


def test_resume_with_other_settings_is_refused(toon_folder, tmp_path):
    cfg = tiny_config(toon_folder, iters=2)
    PretrainRun(tmp_path, cfg, None).train(progress=False)
    other = PretrainRun(tmp_path, replace(cfg, nf=16), None)
    assert "nf" in one_line_error(other.load)


def test_generator_batches_depend_only_on_seed_and_iteration():
    source = GeneratorImages("base", 32, 2, seed=4)
    a, b = source.next(7), source.next(7)
    assert a.shape == (2, 3, 32, 32) and torch.equal(a, b)
    assert not torch.equal(a, source.next(8))
    assert not torch.equal(a, GeneratorImages("base", 32, 2, seed=5).next(7))


def test_cli_trains_exports_and_scores_instantly(toon_folder, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train-shape", "--data", str(toon_folder), "--out", str(out), "--size", "32", "--nf", "8", "--nf-vl", "8",
            "--zdim", "16", "--iters", "2", "--batch", "4", "--lam-perc", "0", "--eval-data", str(toon_folder),
            "--eval-count", "4", "--eval-every", "2", "--sample-every", "2", "--prior-steps", "2", "--no-progress"]
    assert main(args) == 0
    for name in ("config.json", "state.pt", "model.safetensors", "figures.jsonl", "samples/preview_0000002.png"):
        assert (out / name).is_file(), name
    record = json.loads((out / "config.json").read_text())
    assert len(record["commands"]) == 1 and record["config"]["iters"] == 2
    figures = json.loads((out / "figures.jsonl").read_text().splitlines()[-1])
    assert figures["iteration"] == 2 and figures["side_x100"] > 0 and figures["n"] == 4
    nets, geometry, meta = load_shape_model(out / "model.safetensors")
    assert geometry.size == 32 and meta["iteration"] == 2
    capsys.readouterr()
    assert main(["train-shape", "--data", "x", "--out", str(out), "--instant", "--eval-data", str(toon_folder),
                 "--eval-count", "4"]) == 0
    scores = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert scores["n"] == 4 and scores["mad_deg"] > 0
    # Resuming with other settings and starting over a full folder are one-line errors.
    assert main(args[:-1] + ["--nf", "16", "--iters", "4", "--resume", "--no-progress"]) == 2
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "other settings" in err[0] and "not empty" in err[1]


def test_missing_vgg16_under_perceptual_vgg_is_one_line(toon_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TOON3D_MODELS", str(tmp_path / "models"))
    code = main(["train-shape", "--data", str(toon_folder), "--out", str(tmp_path / "run"), "--perceptual", "vgg",
                 "--iters", "1", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert "vgg16-397923af.pth" in err and "download.pytorch.org" in err
    assert not (tmp_path / "run").exists()


def test_shape_model_round_trip_in_half_precision_and_instant_speed(tmp_path):
    cfg = PretrainConfig(data="unused", size=64)  # the shipped size and widths
    nets, _ = build_nets(cfg)
    geometry = replace(cfg.geometry(), light_mean=(0.1, 0.0, 0.0, 0.2))
    path = save_shape_model(tmp_path / "shape.safetensors", nets, geometry, {"note": "test"}, dtype=torch.float16)
    assert path.stat().st_size < 5e6
    loaded, geometry2, meta = load_shape_model(path)
    assert geometry2 == geometry and meta["note"] == "test"
    images = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    t0 = time.perf_counter()
    fast = instant_reconstruct(loaded, images, geometry2)
    per_image = (time.perf_counter() - t0) / 4
    assert per_image < 1.0
    exact = instant_reconstruct(nets, images, geometry)
    torch.testing.assert_close(fast.depth, exact.depth, atol=2e-3, rtol=0)
    torch.testing.assert_close(fast.albedo, exact.albedo, atol=2e-2, rtol=0)
    assert not fast.depth.requires_grad


def test_loading_a_generator_file_as_a_shape_model_is_one_line(tmp_path):
    from toon3d.io.checkpoint import save_model

    save_model(tmp_path / "g.safetensors", {"w": torch.zeros(2)}, {"size": 64})
    assert "not a 3D reconstructor" in one_line_error(load_shape_model, tmp_path / "g.safetensors")


def test_scores_of_the_true_shape_are_near_zero_and_beat_a_flat_card(toon_folder):
    from toon3d.data.dataset import FaceDataset

    gt = load_ground_truth(toon_folder, 8)
    labels = [json.loads(line) for line in (toon_folder / "labels.jsonl").read_text().splitlines()]
    data = FaceDataset(toon_folder, flip=False)
    canon = torch.stack([data[i]["canon_depth"] for i in range(8)])
    view = torch.tensor([[math.radians(x["pitch_deg"]), math.radians(x["yaw_deg"]), math.radians(x["roll_deg"]),
                          0.0, 0.0, 0.0] for x in labels[:8]])
    albedo, light = torch.zeros(8, 3, 64, 64), torch.tensor([[0.5, 0.5, 0.0, 0.0]]).expand(8, 4)
    geometry = GeometrySettings(64)  # the data's pixel-centre camera is applied by the scorer
    true = summarise(score_view_depth(Decomposition(canon, canon, albedo, view, light), gt, geometry))
    flat = torch.ones_like(canon)
    card = summarise(score_view_depth(Decomposition(flat, flat, albedo, view, light), gt, geometry))
    assert true["side_x100"] < 0.15 and true["mad_deg"] < 4.0
    assert card["side_x100"] > 5 * true["side_x100"] and card["mad_deg"] > 5 * true["mad_deg"]


def test_smoothness_weight_adds_exactly_its_term(toon_folder):
    cfg = tiny_config(toon_folder)
    nets, conf = build_nets(cfg)
    images = FixedImages().images
    geometry = cfg.geometry()
    renderer = Renderer(geometry.renderer_settings())
    without, _ = pretrain_loss(nets, conf, images, geometry, renderer, None, 0.0, 0.5, 0.0)
    with_smooth, _ = pretrain_loss(nets, conf, images, geometry, renderer, None, 0.0, 0.5, 0.1)
    assert without["smooth"].item() > 0
    torch.testing.assert_close(with_smooth["total"] - without["total"], 0.1 * without["smooth"])


def test_layout_prior_mask_is_the_face_box():
    from toon3d.shape.pretrain import layout_face_mask
    from toon3d.synth import layout

    mask = layout_face_mask(64)
    rows = torch.nonzero(mask.any(1)).flatten()
    cols = torch.nonzero(mask.any(0)).flatten()
    assert rows.max().item() == round(layout.CHIN_Y * 64)
    assert cols.min().item() == round((0.5 - layout.FACE_HALF_WIDTH) * 64)
    assert cols.max().item() == round((0.5 + layout.FACE_HALF_WIDTH) * 64)
    assert mask.sum() == len(rows) * len(cols)


def test_prior_decomposition_is_the_clamped_layout_prior_seen_frontally():
    from toon3d.shape.photo_geometry import mean_light
    from toon3d.shape.pretrain import layout_face_mask, layout_prior_depth, prior_decomposition
    from toon3d.shape.prior import ellipsoid_depth

    geometry = GeometrySettings(32, pixel_offset=0.0)
    dec = prior_decomposition(torch.zeros(3, 3, 32, 32), geometry)
    from toon3d.shape.settings import BUILTIN_PRIOR_NEAR

    target = ellipsoid_depth(layout_face_mask(32), "box", near=BUILTIN_PRIOR_NEAR)  # the cpu preset's prior
    assert torch.equal(layout_prior_depth(32), target)
    assert torch.equal(layout_prior_depth(32, 0.91), ellipsoid_depth(layout_face_mask(32), "box"))
    assert torch.equal(dec.raw_depth[1], target)
    assert torch.equal(dec.depth[:, :, 2:-2], target[:, 2:-2].expand(3, 32, 28))
    assert (dec.depth[..., :2] == geometry.border_depth).all() and (dec.depth[..., -2:] == geometry.border_depth).all()
    assert (dec.view == 0).all()
    torch.testing.assert_close(dec.light, mean_light(3, geometry, dec.depth))


def test_each_net_gets_its_learning_rate_multiplier(toon_folder):
    run = PretrainRun("unused", tiny_config(toon_folder, lr=2e-4, lr_mults=(1.0, 3.0, 5.0, 5.0, 0.5)), None,
                      source=FixedImages())
    parts = [run.nets.depth, run.nets.albedo, run.nets.view, run.nets.light, run.conf]
    assert [g["lr"] for g in run.opt.param_groups] == pytest.approx([2e-4, 6e-4, 1e-3, 1e-3, 1e-4])
    for group, part in zip(run.opt.param_groups, parts):
        assert {id(p) for p in group["params"]} == {id(p) for p in part.parameters()}
    assert "--lr-mults" in one_line_error(replace(tiny_config(toon_folder), lr_mults=(1.0, 1.0)).check)


def test_pseudo_sample_term_trains_view_and_light_on_rendered_poses(toon_folder):
    cfg = tiny_config(toon_folder)
    nets, conf = build_nets(cfg)
    images = FixedImages().images
    geometry = cfg.geometry()
    renderer = Renderer(geometry.renderer_settings())

    def run(seed):
        nets.zero_grad(set_to_none=True)
        losses, _ = pretrain_loss(nets, conf, images, geometry, renderer, None, 0.0, 0.5, 0.0, 1.0,
                                  torch.Generator().manual_seed(seed))
        return losses

    losses = run(0)
    losses["pseudo"].backward()
    for name in ("depth", "albedo", "view", "light"):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in getattr(nets, name).parameters()), name
    assert all(p.grad is None for p in nets.encoder.parameters())
    assert run(0)["pseudo"].item() == losses["pseudo"].item()
    assert run(1)["pseudo"].item() != losses["pseudo"].item()
    with_term = run(0)
    without, _ = pretrain_loss(nets, conf, images, geometry, renderer, None, 0.0, 0.5, 0.0, 0.0)
    torch.testing.assert_close(with_term["total"] - without["total"], with_term["pseudo"])
    assert without["pseudo"].item() == 0.0


def test_face_region_limits_the_image_terms_to_the_region(toon_folder):
    from toon3d.shape.losses import masked_l1
    from toon3d.shape.photo_geometry import decompose, reconstruct

    cfg = tiny_config(toon_folder, confidence=False)
    nets, _ = build_nets(cfg)
    images = FixedImages().images
    geometry = cfg.geometry()
    renderer = Renderer(geometry.renderer_settings())
    region = torch.zeros(1, 1, 32, 32)
    region[..., 4:28, 8:24] = 1
    losses, _ = pretrain_loss(nets, None, images, geometry, renderer, None, 0.0, 0.5, 0.0, region=region)
    with torch.no_grad():
        dec = decompose(nets, images, geometry)
        rec, rec_flip = reconstruct(renderer, dec), reconstruct(renderer, dec, flip=True)
    both = rec.mask * rec_flip.mask * region
    torch.testing.assert_close(losses["l1"], masked_l1(rec.image, images, both))
    torch.testing.assert_close(losses["l1_flip"], masked_l1(rec_flip.image, images, both))
    everywhere, _ = pretrain_loss(nets, None, images, geometry, renderer, None, 0.0, 0.5, 0.0)
    assert everywhere["l1"].item() != pytest.approx(losses["l1"].item())


def test_warmup_trains_only_albedo_light_and_confidence_then_everything(toon_folder):
    cfg = tiny_config(toon_folder, warmup_iters=2, iters=3, prior_steps=0, lam_pseudo=1.0)
    run = PretrainRun("unused", cfg, None, source=FixedImages())
    frozen = {name: [p.detach().clone() for p in getattr(run.nets, name).parameters()] for name in ("depth", "view")}
    moving = [p.detach().clone() for p in run.nets.albedo.parameters()]
    for _ in range(2):
        losses = run.step()
        # the warm-up scores the frontal view and no pseudo samples (they need V)
        assert losses["pseudo"].item() == 0.0
        for name in ("depth", "view"):
            assert all(p.grad is None for p in getattr(run.nets, name).parameters()), name
        for name in ("albedo", "light"):
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in getattr(run.nets, name).parameters())
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in run.conf.parameters())
    for name, before in frozen.items():
        assert all(torch.equal(a, b) for a, b in zip(before, getattr(run.nets, name).parameters())), name
    assert not all(torch.equal(a, b) for a, b in zip(moving, run.nets.albedo.parameters()))
    losses = run.step()  # iteration 2: joint
    assert losses["pseudo"].item() > 0.0
    for name in ("depth", "albedo", "view", "light"):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in getattr(run.nets, name).parameters()), name
    assert all(p.grad is None for p in run.nets.encoder.parameters())
    assert "--warmup-iters" in one_line_error(replace(cfg, warmup_iters=-1).check)
