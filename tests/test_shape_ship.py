"""tools/ship_shape.py: figures next to the ellipsoid prior, and no shipping of a reconstructor worse than it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from toon3d.shape.instant import load_shape_model, save_shape_model
from toon3d.shape.networks import ShapeNetConfig, ShapeNets
from toon3d.shape.photo_geometry import GeometrySettings

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]


def _ship_tool():
    spec = importlib.util.spec_from_file_location("ship_shape", REPO / "tools" / "ship_shape.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def toon_folder(tmp_path_factory) -> Path:
    """4 toon faces with ground truth at 64 px (seeded)."""
    from toon3d.synth.synface_dataset import write_synface_dataset
    from toon3d.synth.toon_style import ToonStyle

    out = tmp_path_factory.mktemp("data") / "toon"
    return write_synface_dataset(out, n=4, size=64, seed=5, batch=4, workers=1, progress=False, style=ToonStyle())


def _run_folder(tmp_path: Path) -> Path:
    """A run folder holding an untrained (random) 64 px reconstructor: far from any face."""
    torch.manual_seed(0)
    nets = ShapeNets(ShapeNetConfig(size=64, nf=8, nf_vl=8, zdim=16, nf_encoder=4, latent_dim=8))
    run = tmp_path / "run"
    run.mkdir()
    meta = {"iteration": 0, "command": "test", "train_minutes": 0.0, "config": {"seed": 0}, "data": "none"}
    save_shape_model(run / "model.safetensors", nets, GeometrySettings(64, pixel_offset=0.0), meta)
    (run / "config.json").write_text(json.dumps({"commands": ["test"]}))
    return run


def test_measure_reports_the_prior_next_to_the_instant_prediction(toon_folder, tmp_path):
    from toon3d.shape.depth_eval import load_ground_truth, score_view_depth, summarise
    from toon3d.shape.pretrain import prior_decomposition

    nets, geometry, _ = load_shape_model(_run_folder(tmp_path) / "model.safetensors")
    fig = _ship_tool().measure(nets, geometry, str(toon_folder), 4)
    gt = load_ground_truth(toon_folder, 4, 64)
    assert fig["prior"] == summarise(score_view_depth(prior_decomposition(gt.images, geometry), gt, geometry))
    expected = (fig["instant"]["side_x100"] <= fig["prior"]["side_x100"]
                and fig["instant"]["mad_deg"] <= fig["prior"]["mad_deg"])
    assert fig["instant_beats_prior"] == expected
    assert fig["instant"]["n"] == fig["prior"]["n"] == 4


def test_a_reconstructor_worse_than_the_prior_is_refused_unless_allowed(toon_folder, tmp_path, capsys):
    tool = _ship_tool()
    run = _run_folder(tmp_path)
    weights, sheets = tmp_path / "weights", tmp_path / "images"
    argv = ["--run", str(run), "--world", "toon", "--eval", f"toon={toon_folder}", "--n", "4",
            "--weights-dir", str(weights), "--sheet-dir", str(sheets)]
    assert tool.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "worse than the ellipsoid prior" in err and "--allow-worse" in err
    assert not weights.exists() and not sheets.exists()
    assert tool.main(argv + ["--allow-worse"]) == 0
    assert (weights / "shape_toon.safetensors").is_file() and (weights / "shape_toon.md").is_file()
    assert (sheets / "shape_toon.png").is_file()
    _, _, meta = load_shape_model(weights / "shape_toon.safetensors")
    assert meta["figures"]["toon"]["instant_beats_prior"] is False
    assert "ellipsoid prior alone" in (weights / "shape_toon.md").read_text()


def test_keep_encoder_carries_the_shipped_latent_encoder(toon_folder, tmp_path, capsys):
    tool = _ship_tool()
    run = _run_folder(tmp_path)
    weights, sheets = tmp_path / "weights", tmp_path / "images"
    argv = ["--run", str(run), "--world", "toon", "--eval", f"toon={toon_folder}", "--n", "4", "--allow-worse",
            "--weights-dir", str(weights), "--sheet-dir", str(sheets), "--keep-encoder"]
    # Nothing shipped yet: nothing to keep, a one-line error and nothing written.
    assert tool.main(argv) == 2
    assert "--keep-encoder needs a shipped shape_toon.safetensors" in capsys.readouterr().err
    assert not (weights / "shape_toon.safetensors").exists()
    # A shipped file with an encoder (16 wide, for a 64-d W) and its card section.
    torch.manual_seed(1)
    old = ShapeNets(ShapeNetConfig(size=64, nf=8, nf_vl=8, zdim=16, nf_encoder=16, latent_dim=64))
    weights.mkdir()
    save_shape_model(weights / "shape_toon.safetensors", old, GeometrySettings(64, pixel_offset=0.0),
                     {"encoder": {"generator": "toon", "iters": 7}}, with_encoder=True)
    (weights / "shape_toon.md").write_text("# old\n\n## Latent encoder\n\n- iterations: 7\n")
    assert tool.main(argv) == 0
    new, _, meta = load_shape_model(weights / "shape_toon.safetensors")
    fresh, _, _ = load_shape_model(run / "model.safetensors")
    assert meta["encoder_loaded"] and meta["encoder"] == {"generator": "toon", "iters": 7}
    for key, value in old.encoder.state_dict().items():  # E kept (fp16 on disk)
        torch.testing.assert_close(new.encoder.state_dict()[key], value.half().float())
    for part in ("depth", "albedo", "view", "light"):  # D, A, V, L from the run
        for key, value in getattr(fresh, part).state_dict().items():
            torch.testing.assert_close(getattr(new, part).state_dict()[key], value.half().float())
    card = (weights / "shape_toon.md").read_text()
    assert "- iterations: 7" in card and "--keep-encoder" in card
    # Re-shipping again keeps E and its section once, not a growing copy.
    assert tool.main(argv) == 0
    card = (weights / "shape_toon.md").read_text()
    assert card.count("## Latent encoder") == 1 and card.count("--keep-encoder`: it was") == 1
