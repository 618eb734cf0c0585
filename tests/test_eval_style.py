"""`toon3d eval style` (Table I) on tiny random generators and on the built-ins."""

from __future__ import annotations

import json

import pytest
import torch

from toon3d import cli
from toon3d.metrics.style_eval import (STYLE_ROWS, StyleEvalSettings, StyleVariants, FeatureL1Distance,
                                       make_descriptor, make_instance_distance, seed_latents, style_table,
                                       synthesize_seeds)
from toon3d.stylegan2.checkpoints import LoadedGenerator
from toon3d.stylegan2.generator import Generator

SIZE = 32
N = 8


def _loaded(seed: int, name: str) -> LoadedGenerator:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        g = Generator(SIZE, style_dim=16, n_mlp=2, channel_multiplier=1, channel_max=16).eval()
    with torch.no_grad():
        for key, p in g.named_parameters():
            if key.endswith("noise.weight"):
                p.fill_(0.1)
    return LoadedGenerator(g, torch.zeros(1, 16), dict(g.config), name, "zeros", "file", {})


@pytest.fixture(scope="module")
def measured():
    base, style = _loaded(0, "base"), _loaded(1, "style")
    variants = [StyleVariants("same", {"full": base}, {}),
                StyleVariants("style", {"full": style, "noblend": _loaded(2, "raw")}, {"nostruct": "none trained"})]
    data = torch.rand(N, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3)) * 2 - 1
    distance, label = make_instance_distance("dlib")
    settings = StyleEvalSettings(n=N, batch=4)
    return base, variants, data, distance, label, settings, style_table(
        base, variants, data, "noise", make_descriptor("port"), distance, label, settings)


def test_rows_present_and_numbers_finite(measured):
    *_, result = measured
    keys = [r.key for r in result.table.rows]
    assert keys == ["floor", "human"] + [f"{s}/{k}" for s in ("same", "style") for k in STYLE_ROWS]
    for row in result.table.rows:
        for cell in row.cells.values():
            assert cell.mean is None or (torch.isfinite(torch.tensor(cell.mean)) and cell.mean >= 0)
    perc = result.table.rows[keys.index("style/full")].cells["perc"]
    assert perc.n == N and perc.mean > 0 and perc.std > 0
    text = result.table.to_markdown()
    assert "none trained" in text and "FD-dlib" in text
    assert set(result.sheet) == {"human", "same\nfull", "style\nfull", "style\nno interp."}
    assert all(v.shape == (N, 3, SIZE, SIZE) for v in result.sheet.values())


def test_same_generator_scores_like_the_human_images(measured):
    """A 'style' that is the human generator itself: same w and noise → identical images, distance 0, same FD."""
    *_, result = measured
    rows = {r.key: r for r in result.table.rows}
    assert rows["same/full"].cells["perc"].mean == 0.0
    assert rows["same/full"].cells["fd"].mean == pytest.approx(rows["human"].cells["fd"].mean, abs=1e-9)
    assert rows["style/full"].cells["fd"].mean != pytest.approx(rows["human"].cells["fd"].mean, abs=1e-6)


def test_deterministic(measured):
    base, variants, data, distance, label, settings, result = measured
    again = style_table(base, variants, data, "noise", make_descriptor("port"), distance, label, settings)
    assert again.table.to_json() == result.table.to_json()


def test_rows_share_w_and_noise():
    """Every row is synthesised from the base's w and seed i's noise: a seed's image does not depend on its batch."""
    base = _loaded(0, "base")
    w = seed_latents(base.generator, [0, 1, 2])
    together = synthesize_seeds(base.generator, w, [0, 1, 2], "random", 3)
    alone = synthesize_seeds(base.generator, w[2:], [2], "random", 1)
    assert torch.allclose(together[2:], alone, atol=1e-6)


def test_feature_distance_zero_on_same_images():
    from toon3d.faces.dlib_resnet import load_dlib_resnet
    from toon3d.shape.losses import DlibPerceptual

    distance = FeatureL1Distance(DlibPerceptual(load_dlib_resnet()))
    a = torch.rand(2, 3, SIZE, SIZE) * 2 - 1
    d = distance(a, a.flip(0))
    assert d.shape == (2,) and (d > 0).all()
    assert torch.equal(distance(a, a), torch.zeros(2))


def _fail(capsys, argv: list[str]) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "error" in err
    return err


def test_bad_input_one_line_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TOON3D_MODELS", str(tmp_path / "models"))
    out = str(tmp_path / "out")
    assert "at least 4" in _fail(capsys, ["eval", "style", "--n", "3", "--out", out])
    assert "STYLE=FILE" in _fail(capsys, ["eval", "style", "--n", "4", "--out", out, "--ablation-nostruct", "x.pt"])
    assert "--data" in _fail(capsys, ["eval", "style", "--n", "4", "--out", out, "--ckpt", str(tmp_path / "g.pt")])
    err = _fail(capsys, ["eval", "style", "--n", "4", "--out", out, "--perceptual", "vgg", "--style", "toon"])
    assert "vgg16-397923af.pth" in err and "download.pytorch.org" in err
    assert not (tmp_path / "out").exists()


def test_cli_on_the_builtins(tmp_path, capsys):
    out = tmp_path / "style"
    assert cli.main(["eval", "style", "--n", "4", "--style", "toon", "--out", str(out), "--no-progress",
                     "--perceptual", "dlib"]) == 0
    data = json.loads((out / "table.json").read_text())
    keys = [r["key"] for r in data["table"]["rows"]]
    assert keys == ["floor", "human", "toon/full", "toon/nostruct", "toon/noblend"]
    assert data["table"]["rows"][3]["cells"]["fd"]["mean"] is None  # no toon ablation exists: a dash, not a number
    assert "no toon fine-tune without the structure loss" in (out / "table.md").read_text()
    assert data["settings"]["perceptual"] == "dlib"
    assert (out / "sheet.png").stat().st_size > 1000


def test_synface_data_uses_the_views_the_base_learned():
    """Table I's human data: anchored SynFace views for a decoder trained on them (the built-in base), else plain."""
    from toon3d.commands.eval import _anchored_views, _data_images
    from toon3d.synth.face_params import SynFaceParams
    from toon3d.synth.synface import SynFaceSettings, render_synface

    plain, plain_label = _data_images("synface", 4, 64, 0, 4)
    anchored, label = _data_images("synface", 4, 64, 0, 4, anchored=True)
    assert "anchored views" in label and "plain views" in plain_label
    expected = render_synface(SynFaceParams.sample(4, seed=0), 64, settings=SynFaceSettings(anchor_eyes=True))["image"]
    assert torch.equal(anchored, expected.float()) and not torch.allclose(plain, anchored, atol=1e-3)
    assert _anchored_views("auto", "base", {"phases": [{"anchor_eyes": False}, {"anchor_eyes": True}]})
    assert not _anchored_views("auto", "x.pt", {})
