"""`toon3d avatar` end to end on the built-in 64 px models with the tiny 3D preset: outputs, morph targets, resume."""

import json

import numpy as np
import pytest
import torch

import toon3d.pipeline as pipeline
from toon3d.cli import main
from toon3d.errors import Toon3dError
from toon3d.io.gltf_morph import read_avatar_glb
from toon3d.io.mesh import mesh_from_depth
from toon3d.pipeline import AvatarSettings, AvatarSource, make_avatar
from toon3d.shape.camera import intrinsics

SETTINGS = AvatarSettings(expressions=(("0", 3.0), ("1", -3.0)), refine="off", preset="tiny", frames=2,
                          formats=("gif",))
KEYS = ["direction0", "direction1"]


def _make(out, **kw):
    return make_avatar(AvatarSource(seed=0), SETTINGS, out, progress=False, log=lambda _: None, **kw)


@pytest.fixture(scope="module")
def avatar(tmp_path_factory):
    out = tmp_path_factory.mktemp("a") / "avatar"
    record = _make(out)
    return out, record


def test_every_output_is_written(avatar):
    out, record = avatar
    for name in ("human.png", "cartoon.png", "sheet.png", "avatar.glb", "viewer.html", "avatar.json",
                 "turntable.gif", "latent.safetensors", "edits.safetensors"):
        assert (out / name).is_file(), name
    for key in ["neutral"] + KEYS:
        for name in ("depth.npy", "albedo.png", "normal.png", "mesh.obj", "mesh.glb", "relight.png",
                     "turntable.gif", "rotations.png", "light.json"):
            assert (out / "3d" / key / name).is_file(), (key, name)
    for key in KEYS:
        assert (out / "edits" / key / "human.png").is_file() and (out / "edits" / key / "cartoon.png").is_file()
    saved = json.loads((out / "avatar.json").read_text())
    assert saved["expressions"] == KEYS
    assert set(saved["timings_seconds"]) >= {"faces", "edits", "shape_neutral", *[f"shape_{k}" for k in KEYS]}
    assert len(saved["models"]["human"]["sha256"]) == 64
    assert not any(p.name.endswith(".toon3d-work") for p in out.parent.iterdir())


def test_morph_targets_equal_the_edits_vertex_offsets(avatar):
    out, _ = avatar
    glb = read_avatar_glb(out / "avatar.glb")
    assert glb.target_names == KEYS
    depth0 = torch.from_numpy(np.load(out / "3d" / "neutral" / "depth.npy"))
    K = intrinsics(depth0.shape[-1])
    texture = torch.zeros(3, *depth0.shape)
    base = mesh_from_depth(depth0, texture, K).vertices.numpy()
    assert np.allclose(glb.positions, base, atol=1e-5)
    for key in KEYS:
        d = torch.from_numpy(np.load(out / "3d" / key / "depth.npy"))
        offsets = mesh_from_depth(d, texture, K).vertices.numpy() - base
        assert np.allclose(glb.targets[key]["POSITION"], offsets, atol=1e-5)
        assert np.abs(offsets).max() > 0  # the edit moved the surface


@pytest.mark.parametrize("stage", [pytest.param("edits", marks=pytest.mark.slow), "shape_neutral",
                                   pytest.param("shape_direction1", marks=pytest.mark.slow)])
def test_resume_after_a_kill_gives_the_same_avatar(tmp_path, avatar, monkeypatch, stage):
    reference, _ = avatar
    out = tmp_path / "avatar"
    original = pipeline.WorkFolder.run

    def killing(self, name, work):
        if name == stage:
            raise KeyboardInterrupt("killed")
        return original(self, name, work)

    monkeypatch.setattr(pipeline.WorkFolder, "run", killing)
    with pytest.raises(KeyboardInterrupt):
        _make(out)
    assert not out.exists()  # nothing half-written under the final name
    with pytest.raises(Toon3dError, match="--resume"):
        _make(out)
    monkeypatch.setattr(pipeline.WorkFolder, "run", original)
    _make(out, resume=True)
    for key in ["neutral"] + KEYS:
        assert np.array_equal(np.load(out / "3d" / key / "depth.npy"), np.load(reference / "3d" / key / "depth.npy"))


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    for args, match in [(["--seed", "abc"], "not a whole number"),
                        (["--seed", "0", "--expression", "grin=+1"], "unknown expression"),
                        (["--seed", "0", "--expression", "smile=nan"], "finite"),
                        (["--seed", "0", "--style", str(tmp_path / "missing.safetensors")], "not found"),
                        (["--seed", "0", "--edit-size", "100"], "power of two")]:
        code = main(["avatar", *args, "--preset", "tiny", "--refine", "off", "--out", str(tmp_path / "x")])
        err = capsys.readouterr().err
        assert code == 2 and match in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_edit_encoder_neutral_skips_the_edits_step2(tmp_path, monkeypatch):
    import dataclasses

    import toon3d.shape.schedule as schedule

    steps = []
    original = schedule._run_step

    def counting(fixed, nets, rng, progress, stage, step_index, checkpoint):
        steps.append((fixed.settings.steps_of(stage)[step_index], step_index))
        return original(fixed, nets, rng, progress, stage, step_index, checkpoint)

    monkeypatch.setattr(schedule, "_run_step", counting)
    settings = dataclasses.replace(SETTINGS, edit_encoder="neutral", expressions=(("0", 3.0),))
    record = make_avatar(AvatarSource(seed=0), settings, tmp_path / "a", progress=False, log=lambda _: None)
    step2 = [length for length, index in steps if index == 1]
    assert step2 == [2, 0]  # the neutral trains its encoder (tiny: 2 iterations), the edit reuses it
    saved = json.loads((tmp_path / "a" / "avatar.json").read_text())
    assert saved["settings"]["edit_encoder"] == "neutral" and record["expressions"] == ["direction0"]
    assert (tmp_path / "a" / "3d" / "direction0" / "depth.npy").is_file()
    assert AvatarSettings().edit_encoder == "neutral" and AvatarSettings(preset="paper").edit_encoder == "train"
    with pytest.raises(Toon3dError, match="--edit-encoder"):
        make_avatar(AvatarSource(seed=0), dataclasses.replace(SETTINGS, edit_encoder="fresh"), tmp_path / "b",
                    progress=False, log=lambda _: None)
    with pytest.raises(Toon3dError, match="--edit-size"):
        make_avatar(AvatarSource(seed=0), dataclasses.replace(SETTINGS, edit_size=100), tmp_path / "c",
                    progress=False, log=lambda _: None)
