"""`toon3d eval shape` (Table II): ground truth, scoring protocol, per-image files, resume, bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch

from shape_fakes import TinyEmbedder, TinyPerceptual
from toon3d import cli
from toon3d.io.eval_store import ARRAY_KINDS, ShapeEvalFolder
from toon3d.metrics import shape_eval
from toon3d.metrics.shape_eval import ShapePlan, WorldModels, evaluate_shape, score_prediction
from toon3d.metrics.shape_rows import RowPrediction, GanModels, _render, predict_prior, with_camera
from toon3d.metrics.shape_worlds import make_case, case_seed
from toon3d.shape.instant import load_shape_model, save_shape_model
from toon3d.shape.networks import ShapeNets
from toon3d.shape.photo_geometry import mean_light
from toon3d.shape.settings import preset
from toon3d.stylegan2.generator import Generator

ROWS = ["prior", "instant", "full"]
WORLDS = ["synface", "toon"]


def _generator() -> Generator:
    """A 32 px generator with a 64-d latent (SynFace's 56 parameters fit), seeded random weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return Generator(32, style_dim=64, n_mlp=2, channel_multiplier=1, channel_max=16).eval()


class _Loaded:
    def __init__(self, g):
        self.generator = g
        self.meta = {}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    settings = preset("tiny")
    g = _generator()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        nets = ShapeNets(settings.net_config(64))
    path = save_shape_model(tmp_path_factory.mktemp("model") / "shape.safetensors", nets, settings.geometry())
    loaded_nets, geometry, _ = load_shape_model(path, {"latent_dim": 64, "nf_encoder": settings.nf_encoder})
    gan = GanModels(g, None, TinyEmbedder(), TinyPerceptual(), None)
    models = {w: WorldModels(_Loaded(g), gan, (loaded_nets, geometry), None) for w in WORLDS}
    plan = ShapePlan(WORLDS, ROWS, 2, settings)
    folder = ShapeEvalFolder(tmp_path_factory.mktemp("eval") / "out")
    folder.open({"preset": "tiny"})
    table = evaluate_shape(folder, plan, models, progress=False)
    return folder, plan, models, table


def test_per_image_files_and_table(setup):
    folder, plan, _, table = setup
    for world in WORLDS:
        for row in ROWS:
            for i in range(2):
                arrays = {k: folder.load(world, row, k, i) for k in ARRAY_KINDS}
                for kind, a in arrays.items():
                    assert a.shape == (32, 32) and torch.isfinite(a).all(), (world, row, kind)
                assert set(arrays["mask"].unique().tolist()) <= {0.0, 1.0} and arrays["mask"].sum() > 0
                scores = json.loads(folder.scores_path(world, row, i).read_text())
                assert scores["seed"] == case_seed(i) and scores["side_x100"] >= 0 and scores["mad_deg"] >= 0
                # the same image and ground truth in every row
                assert torch.equal(arrays["gt_view"], folder.load(world, "prior", "gt_view", i))
            assert folder.image_path(world, 0).is_file()
    assert [r.key for r in table.rows] == ROWS
    for row in table.rows:
        for world in WORLDS:
            assert row.cells[f"{world}/side"].n == 2 and math.isfinite(row.cells[f"{world}/mad"].mean)
    assert "Unsup3d protocol" in table.to_markdown()


def test_worlds_share_ground_truth(setup):
    """The toon world draws the same faces: same ground truth, so the mask-only prior scores alike."""
    folder, *_ = setup
    for i in range(2):
        for kind in ("gt", "gt_view", "pred", "pred_view"):
            assert torch.equal(folder.load("synface", "prior", kind, i), folder.load("toon", "prior", kind, i))
        assert not torch.equal(folder.load("synface", "full", "pred", i), folder.load("synface", "prior", "pred", i))


def test_resume_skips_finished_images(setup, monkeypatch):
    folder, plan, models, _ = setup
    calls = []
    real = shape_eval.predict_row

    def counting(row, case, *args, **kwargs):
        calls.append((case.world, row, case.index))
        return real(row, case, *args, **kwargs)

    monkeypatch.setattr(shape_eval, "predict_row", counting)
    before = {p: p.stat().st_mtime_ns for p in folder.root.rglob("scores/*.json")}
    evaluate_shape(folder, plan, models, progress=False)
    assert calls == []
    # a run killed after image 1's arrays but before its scores: only that image of that row runs again
    folder.scores_path("toon", "full", 1).unlink()
    evaluate_shape(folder, plan, models, progress=False)
    assert calls == [("toon", "full", 1)]
    after = {p: p.stat().st_mtime_ns for p in folder.root.rglob("scores/*.json")}
    changed = [p for p in before if before[p] != after[p]]
    assert changed == [folder.scores_path("toon", "full", 1)]


def test_prior_row_is_the_border_clamped_ellipsoid():
    from toon3d.shape.prior import ellipsoid_depth

    settings = preset("tiny")
    case = make_case("synface", 0, 32, _generator())
    pred = predict_prior(case, settings)
    expected = ellipsoid_depth(case.face_mask[0, 0] >= settings.prior_mask_threshold, settings.prior_kind,
                               settings.prior_near, settings.prior_far, settings.prior_radius)
    border = settings.geometry().border_depth
    assert torch.equal(pred.canon_depth[:, 2:-2], expected[:, 2:-2])
    assert (pred.canon_depth[:, :2] == border).all() and (pred.canon_depth[:, -2:] == border).all()
    # the frontal view: the view depth is the canonical depth, up to the rasteriser's 2x anti-aliasing
    # where the depth kinks (the border step, the cap's rim)
    diff = (pred.view_depth - pred.canon_depth)[pred.mask.bool()].abs()
    assert diff.max() < 0.01 and diff.mean() < 1e-3


def _oracle(case, view_sign: float = 1.0) -> RowPrediction:
    """The ground-truth canonical depth seen from the face's true pose (yaw sign optionally flipped)."""
    from toon3d.synth.latent_params import params_from_latent
    from toon3d.seeds import z_from_seed

    p = params_from_latent(z_from_seed(case.seed, 64)[0])
    view = torch.tensor([[math.radians(float(p.pitch_deg[0])), view_sign * math.radians(float(p.yaw_deg[0])),
                          math.radians(float(p.roll_deg[0])), 0.0, 0.0, 0.0]])
    geometry = with_camera(preset("cpu"), case.camera).geometry()
    depth = case.gt_canon[None].clamp(0.9, 1.1)
    rec = _render(geometry, depth, view, mean_light(1, geometry, depth))
    return RowPrediction(depth[0], rec.recon_depth[0], rec.mask[0, 0], 0.0, {})


def test_protocol_scores_the_truth_near_zero():
    """GT canonical depth from the true pose scores ~0 (renderer differences only); a mirrored yaw does not."""
    g = _generator()
    for index in range(2):
        case = make_case("synface", index, 64, g)
        good = score_prediction(_oracle(case), case, 10.0)
        bad = score_prediction(_oracle(case, -1.0), case, 10.0)
        assert good["side_x100"] < 0.2 and good["mad_deg"] < 5.0
        assert bad["mad_deg"] > 10.0 and bad["side_x100"] > 3 * good["side_x100"]
        exact = score_prediction(RowPrediction(case.gt_canon, case.gt_view, case.gt_mask, 0.0, {}), case, 10.0)
        assert exact["side_x100"].item() == pytest.approx(0.0, abs=1e-5)
        assert exact["mad_deg"].item() < 0.05  # float32 acos of dot products within 1e-7 of 1


def _fail(capsys, argv: list[str]) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "error" in err
    return err


def test_bad_input_one_line_errors(tmp_path, capsys):
    out = str(tmp_path / "out")
    assert "unknown row 'nope'" in _fail(capsys, ["eval", "shape", "--n", "2", "--out", out, "--rows", "prior,nope"])
    assert "at least 1" in _fail(capsys, ["eval", "shape", "--n", "0", "--out", out])
    assert "not found" in _fail(capsys, ["eval", "shape", "--n", "1", "--out", out, "--rows", "instant",
                                         "--reconstructor", f"synface={tmp_path / 'missing.safetensors'}",
                                         "--world", "synface"])
    assert not (tmp_path / "out").exists()


def test_cli_prior_rows_resume_and_config_mismatch(tmp_path, capsys):
    out = tmp_path / "shape"
    argv = ["eval", "shape", "--n", "2", "--out", str(out), "--rows", "prior", "--preset", "tiny",
            "--mask", "layout", "--no-progress"]
    assert cli.main(argv) == 0
    data = json.loads((out / "table.json").read_text())
    assert [r["key"] for r in data["table"]["rows"]] == ["prior"]
    assert data["table"]["rows"][0]["cells"]["toon/side"]["n"] == 2
    assert (out / "synface" / "sheet.png").is_file() and (out / "toon" / "prior" / "pred" / "0001.npy").is_file()
    assert cli.main(argv[:2] + ["--n", "3"] + argv[4:]) == 0  # continue with one more image
    assert (out / "toon" / "prior" / "scores" / "0002.json").is_file()
    capsys.readouterr()
    err = _fail(capsys, argv + ["--images", "generator"])
    assert "other settings" in err and "images" in err


def test_row_settings_switch_exactly_their_terms():
    from dataclasses import replace

    from toon3d.metrics.shape_rows import gan_settings, row_settings

    base = preset("cpu")
    full, no_id, no_sym, released = (row_settings(r, base) for r in ("full", "no_id", "no_sym", "released"))
    assert full == base and base.identity and all(base.flip1) and all(base.flip3)
    assert no_id == replace(base, identity=False)
    assert no_sym == replace(base, flip1=(False,), flip3=(False,))
    assert released == replace(base, identity=False, flip1=(False,), flip3=(False,))
    camera = {"fov_deg": 10.0, "rot_center_depth": 1.0, "pixel_offset": 0.0}
    without_d = gan_settings("full", base, camera, GanModels(_generator(), None, None, None, None))
    assert without_d.pixel_offset == 0.0 and without_d.dis_features == "perceptual"
    with_d = gan_settings("full", base, camera, GanModels(_generator(), torch.nn.Identity(), None, None, None))
    assert with_d.dis_features == "discriminator"


def test_cli_instant_row_from_a_reconstructor_file(tmp_path, capsys):
    settings = preset("tiny")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        nets = ShapeNets(settings.net_config(64))
    model = save_shape_model(tmp_path / "shape.safetensors", nets, settings.geometry())
    out = tmp_path / "shape"
    assert cli.main(["eval", "shape", "--n", "1", "--out", str(out), "--world", "synface", "--rows", "instant",
                     "--preset", "tiny", "--mask", "layout", "--reconstructor", f"synface={model}",
                     "--no-progress"]) == 0
    scores = json.loads((out / "synface" / "instant" / "scores" / "0000.json").read_text())
    assert math.isfinite(scores["side_x100"]) and len(scores["view_deg"]) == 3
    # a reconstructor of another size cannot start the cpu preset's cycles
    err = _fail(capsys, ["eval", "shape", "--n", "1", "--out", str(tmp_path / "other"), "--world", "synface",
                         "--rows", "full", "--preset", "cpu", "--start", "pretrained",
                         "--reconstructor", f"synface={model}"])
    assert "does not fit" in err and "32 px vs 64 px" in err


def test_generator_images_share_latent_and_ground_truth():
    from toon3d.stylegan2.sampling import synthesize

    g = _generator()
    render = make_case("toon", 1, 32, g, images="render")
    drawn = make_case("toon", 1, 32, g, images="generator")
    assert torch.equal(render.latent, drawn.latent) and torch.equal(render.gt_view, drawn.gt_view)
    with torch.no_grad():
        expected = synthesize(g, drawn.latent, "const").clamp(-1, 1)
    assert torch.allclose(drawn.image, expected, atol=1e-6)
    assert not torch.allclose(render.image, drawn.image, atol=0.1)
    # below SynFace's 64 px the world is rendered at 64 and area-downsampled, image and depth alike
    from toon3d.metrics.shape_worlds import render_world
    from toon3d.seeds import z_from_seed

    big = render_world("toon", z_from_seed(case_seed(1), 64)[0], 64)
    assert torch.allclose(render.image, torch.nn.functional.avg_pool2d(big["image"], 2), atol=1e-6)
    head = torch.nn.functional.avg_pool2d((big["depth"] < 1.2).float()[None], 2)[0, 0] == 1
    assert torch.equal(render.gt_mask.bool(), head)


def test_set_overrides_reach_the_settings_and_are_part_of_the_config(tmp_path, capsys):
    from toon3d.commands.eval import parse_overrides

    assert parse_overrides(["lam_smooth=0.1", "stage0_steps=(100, 20, 60)", "prior_schedule=cosine",
                            "flip1=[True]"]) == {"lam_smooth": 0.1, "stage0_steps": (100, 20, 60),
                                                  "prior_schedule": "cosine", "flip1": (True,)}
    out = tmp_path / "shape"
    argv = ["eval", "shape", "--n", "1", "--out", str(out), "--rows", "prior", "--preset", "tiny",
            "--mask", "layout", "--world", "toon", "--no-progress", "--set", "prior_near=0.95"]
    assert cli.main(argv) == 0
    config = json.loads((out / "table.json").read_text())["config"]
    assert config["settings"]["prior_near"] == 0.95
    capsys.readouterr()
    assert "other settings" in _fail(capsys, argv[:-1] + ["prior_near=0.97"])  # resume with another value
    assert "KEY=VALUE" in _fail(capsys, argv[:-2] + ["--set", "=1"])
    assert "unknown reconstruction setting" in _fail(capsys, argv[:-2] + ["--set", "lam_nope=1"])


def test_anchored_views_match_the_decoder_that_learned_them(tmp_path, capsys):
    """--views anchored renders SynFace's anchored views (same face and gt camera); auto follows --ckpt's training."""
    from toon3d.commands.eval import _anchored_views
    from toon3d.metrics.shape_worlds import render_world
    from toon3d.seeds import z_from_seed
    from toon3d.train.decoder import synface_targets

    g = _generator()
    index = next(i for i in range(16) if abs(float(render_world("synface", z_from_seed(case_seed(i), 64)[0],
                                                                64)["R"][0, 0, 2])) > 0.3)  # a turned head
    plain = make_case("synface", index, 64, g)
    anchored = make_case("synface", index, 64, g, anchored=True)
    assert torch.equal(plain.latent, anchored.latent) and torch.equal(plain.gt_canon, anchored.gt_canon)
    assert (plain.image - anchored.image).abs().mean() > 0.02  # the head moved
    # the anchored input is exactly what an --anchor-eyes decoder was trained to reproduce
    target, _ = synface_targets(z_from_seed(case_seed(index), 64)[0], 64, anchor_eyes=True)
    assert torch.allclose(anchored.image, target.clamp(-1, 1), atol=1e-5)
    assert _anchored_views("anchored", "base") and not _anchored_views("plain", "base")
    out = tmp_path / "shape"
    argv = ["eval", "shape", "--n", "1", "--out", str(out), "--rows", "prior", "--preset", "tiny",
            "--mask", "layout", "--world", "synface", "--no-progress", "--views", "plain"]
    assert cli.main(argv) == 0
    assert json.loads((out / "table.json").read_text())["config"]["views"] == "plain"
    capsys.readouterr()
    assert "other settings" in _fail(capsys, argv[:-1] + ["anchored"])  # views are part of the config
