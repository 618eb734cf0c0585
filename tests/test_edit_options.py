"""`toon3d edit --mask` (wired to `choose_mask`) and `toon3d directions --name-by` (the avatar's naming rule)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import toon3d.edit.landmarks as landmarks_module
import toon3d.edit.naming as naming_module
import toon3d.models as models
from toon3d.cli import main
from toon3d.commands import directions as directions_cmd
from toon3d.commands import edit as edit_cmd
from toon3d.edit import name_by
from toon3d.edit.masks import MASK_SOURCES
from toon3d.errors import Toon3dError

LIGHT = {"size": 32, "style_dim": 512, "n_mlp": 2, "channel_multiplier": 2, "channel_max": 32}
SHIPPED = models.WEIGHTS_DIR  # the real weights folder, before any test swaps it


@pytest.fixture(scope="module")
def shared_landmarks():
    return landmarks_module.FaceLandmarks()


@pytest.fixture
def weights(monkeypatch, tmp_path_factory, shared_landmarks):
    """An empty built-in weights folder (the untrained 32 px stand-in); tests copy shipped nets into it."""
    folder = tmp_path_factory.mktemp("weights")
    monkeypatch.setattr(models, "WEIGHTS_DIR", folder)
    monkeypatch.setattr(models, "DEFAULT_GENERATOR_CONFIG", LIGHT)
    monkeypatch.setenv(models.MODELS_ENV, str(tmp_path_factory.mktemp("no_third_party_models")))
    for module in (landmarks_module, naming_module):
        monkeypatch.setattr(module, "FaceLandmarks", lambda *a, **k: shared_landmarks)

    def install(*names: str) -> None:
        for name in names:
            shutil.copy(SHIPPED / f"{name}.safetensors", folder / f"{name}.safetensors")

    return install


def _edit(out, *argv):
    return main(["edit", *argv, "--out", str(out)])


def _one_line_error(capsys, code: int, message: str) -> None:
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_command_choices_match_the_library():
    assert edit_cmd.MASK_CHOICES == MASK_SOURCES
    assert directions_cmd.NAME_BY_CHOICES == name_by.NAME_BY


# ---- --mask ---------------------------------------------------------------------------------------


def test_edit_mask_auto_uses_the_synface_parser_on_the_builtin_base(weights, tmp_path, capsys):
    weights("parser_synface")
    out = tmp_path / "auto"
    assert _edit(out, "--seed", "2", "--direction", "0", "--steps", "2", "--style", "none") == 0
    summary = json.loads((out / "edits.json").read_text())
    assert summary["settings"]["mask"] == "auto"
    assert summary["refinement"]["mask"]["source"] == "synface" and summary["refinement"]["mask"]["rule"] == "seed"
    assert "SynFace parser" in capsys.readouterr().err  # the choice is said, not silent


def test_edit_mask_auto_falls_back_to_the_ellipse_and_each_source_changes_the_edit(weights, tmp_path):
    # No parser shipped and no BiSeNet: auto is the ellipse. The mask enters L_low, so the refined
    # edit depends on it; with refine off it is not used at all.
    deltas = {}
    for mask in ("auto", "ellipse", "none"):
        out = tmp_path / mask
        assert _edit(out, "--seed", "2", "--direction", "0", "--steps", "3", "--style", "none", "--mask", mask) == 0
        summary = json.loads((out / "edits.json").read_text())
        assert summary["refinement"]["mask"]["source"] == ("ellipse" if mask == "auto" else mask)
        edits = torch.load(out / "edits.pt", weights_only=True)
        deltas[mask] = edits["refined_plus"] - edits["neutral"]
    torch.testing.assert_close(deltas["auto"], deltas["ellipse"], rtol=0, atol=0)
    assert not torch.allclose(deltas["ellipse"], deltas["none"], atol=1e-6)
    out = tmp_path / "off"
    assert _edit(out, "--seed", "2", "--direction", "0", "--refine", "off", "--style", "none", "--mask", "none") == 0
    assert json.loads((out / "edits.json").read_text())["refinement"] is None


@pytest.mark.parametrize("argv, message", [
    (["--mask", "blob"], "unknown --mask 'blob'"),
    (["--mask", "bisenet"], "79999_iter.pth"),                     # where to get BiSeNet
    (["--mask", "synface"], "SynFace parser"),                     # its weights are not installed here
    (["--mask", "bisenet", "--bisenet", "/nonexistent/79999_iter.pth"], "/nonexistent/79999_iter.pth"),
])
def test_edit_mask_bad_input_is_one_line_and_writes_nothing(weights, tmp_path, capsys, argv, message):
    out = tmp_path / "edit"
    _one_line_error(capsys, _edit(out, "--seed", "1", "--direction", "0", "--steps", "1", *argv), message)
    assert not out.exists() and list(tmp_path.iterdir()) == []


# ---- --name-by ------------------------------------------------------------------------------------


def test_naming_oracle_rule(weights, tmp_path):
    assert name_by.naming_oracle("landmarks", "base")[0] is None
    oracle, note = name_by.naming_oracle("auto", "base")
    assert oracle is None and "not installed" in note
    with pytest.raises(Toon3dError, match="attribute oracle"):
        name_by.naming_oracle("oracle", "base")
    weights("oracle_synface")
    oracle, note = name_by.naming_oracle("auto", "base")
    assert oracle is not None and "built-in base" in note
    assert name_by.naming_oracle("auto", "default")[0] is not None
    assert name_by.naming_oracle("auto", "ffhq256")[0] is None  # the oracle reads the built-in world only
    file = tmp_path / "base"  # a file called like the built-in is a user generator
    file.write_bytes(b"")
    assert not name_by.is_builtin_base(str(file)) and name_by.is_builtin_base("base")
    oracle, note = name_by.naming_oracle("oracle", str(file))
    assert oracle is not None and "SynFace" in note
    with pytest.raises(Toon3dError, match="--name-by"):
        name_by.naming_oracle("dlib", "base")


def test_the_avatar_names_directions_by_the_same_rule(weights, monkeypatch):
    from toon3d import pipeline

    calls = []
    monkeypatch.setattr(name_by, "naming_oracle", lambda *a: calls.append(a) or ("oracle", "note"))
    fake = type("Models", (), {"settings": type("S", (), {"ckpt": "base"})(), "device": "cpu"})()
    assert pipeline.AvatarModels.oracle(fake) == "oracle" and calls == [("auto", "base", "cpu")]


def test_directions_name_by(weights, tmp_path, capsys):
    common = ["directions", "--top", "2", "--samples", "4"]
    out = tmp_path / "default"
    assert main([*common, "--out", str(out)]) == 0  # auto without an installed oracle: the landmarks
    summary = json.loads((out / "directions.json").read_text())
    assert summary["naming"]["oracle"] is False and summary["oracle"] is None
    assert "not installed" in capsys.readouterr().out
    weights("oracle_synface")
    for choice, oracle in (("auto", True), ("oracle", True), ("landmarks", False)):
        out = tmp_path / choice
        assert main([*common, "--name-by", choice, "--out", str(out)]) == 0
        summary = json.loads((out / "directions.json").read_text())
        assert summary["settings"]["name_by"] == choice and summary["naming"]["oracle"] is oracle
        assert (summary["oracle"] is not None) is oracle
        if oracle:
            assert set(summary["oracle"]["names"]) == set(naming_module.NAMES)
            assert "Attribute oracle" in (out / "directions.md").read_text()
    capsys.readouterr()


def test_edit_measures_names_with_the_oracle_on_the_builtin_base(weights, tmp_path, capsys):
    weights("oracle_synface")
    out = tmp_path / "edit"
    # mouth_open is read well by the shipped oracle (held-out R² 0.85): the oracle decides it even
    # though dlib confirms no face on the stand-in.
    assert _edit(out, "--seed", "1", "--direction", "mouth_open", "--name-samples", "2", "--refine", "off",
                 "--style", "none") == 0
    summary = json.loads((out / "edits.json").read_text())
    assert "decided by oracle" in summary["direction"]["resolved_by"]
    assert "attribute oracle" in summary["direction"]["resolved_by"]


@pytest.mark.parametrize("argv, message", [
    (["--name-by", "dlib"], "unknown --name-by 'dlib'"),
    (["--name-by", "oracle"], "attribute oracle"),  # not installed in this weights folder
])
def test_directions_name_by_bad_input_is_one_line(weights, tmp_path, capsys, argv, message):
    out = tmp_path / "dirs"
    _one_line_error(capsys, main(["directions", "--top", "1", "--samples", "2", *argv, "--out", str(out)]), message)
    assert not out.exists() and list(tmp_path.iterdir()) == []
