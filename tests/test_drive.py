"""`toon3d avatar --drive VIDEO` / `--expression-from PHOTO`: video reading, driven weights, the blend, end to end."""

import json

import numpy as np
import pytest
import torch

from synface_expression import EXPRESSIONS, NAMES, calibrated_table, expression_video, faces, render_uint8
from toon3d.cli import main
from toon3d.errors import Toon3dError
from toon3d.io.video_frames import open_video
from toon3d.pipeline_drive import hold_missing, moving_average


def _write_video(path, frames: int, fps: float, size=(48, 32)):
    from toon3d.io.video import write_mp4

    w, h = size
    write_mp4([np.full((h, w, 3), 4 * i, np.uint8) for i in range(frames)], path, fps)


# ---- reading videos -----------------------------------------------------------------------------

def test_video_is_read_at_most_at_30_fps_and_capped(tmp_path):
    path = tmp_path / "v60.mp4"
    _write_video(path, 20, 60.0)
    with open_video(path) as video:
        assert (video.info.step, video.info.fps, video.info.size) == (2, 30.0, (48, 32))
        frames = list(video)
    assert len(frames) == 10 and frames[0].shape == (32, 48, 3)
    # frame k of the kept ones is source frame 2k (grey level 4·2k, within H.264 rounding)
    assert abs(int(frames[3].mean()) - 24) <= 2
    with open_video(path, max_frames=4) as video:
        assert len(list(video)) == 4
    path25 = tmp_path / "v25.mp4"
    _write_video(path25, 5, 25.0)
    with open_video(path25) as video:
        assert video.info.step == 1 and len(list(video)) == 5


def test_bad_videos_are_one_line_errors(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    good = tmp_path / "good.mp4"
    _write_video(good, 6, 12.0)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[:300])
    for path, match in [(tmp_path / "missing.mp4", "not found"), (text, "not a video"), (empty, "empty"),
                        (truncated, "not a video"), (tmp_path, "not a file")]:
        with pytest.raises(Toon3dError, match=match) as err:
            list(open_video(path))
        assert "\n" not in str(err.value)


# ---- per-frame weights ----------------------------------------------------------------------------

def test_missing_frames_hold_the_last_weights_and_smoothing_is_centred():
    w = np.array([[np.nan, np.nan], [0.2, 0.4], [np.nan, np.nan], [0.6, 0.0], [np.nan, np.nan]])
    held, count = hold_missing(w)
    assert count == 3
    assert np.allclose(held, [[0, 0], [0.2, 0.4], [0.2, 0.4], [0.6, 0.0], [0.6, 0.0]])
    smooth = moving_average(held, 3)
    assert np.allclose(smooth[2], held[1:4].mean(0)) and np.allclose(smooth[0], held[:2].mean(0))
    assert np.array_equal(moving_average(held, 1), held)


@pytest.fixture(scope="module")
def reader():
    from toon3d.faces.expression_measure import ExpressionReader

    return ExpressionReader("synface")


@pytest.fixture(scope="module")
def table(reader):
    return calibrated_table(reader)


def test_driven_weights_follow_the_known_expression_sequence(tmp_path, reader, table):
    # A SynFace face (seed 5) going neutral → smile → open mouth → eyes closed → neutral, 36 frames
    # at 128 px. Through the SynFace-calibrated table the weights of three targets (strength 1 =
    # the parameter 0 → 1) must follow the known parameters: correlation > 0.8 each.
    from toon3d.edit.expression_transfer import MorphTarget, target_weights, z_change
    from toon3d.pipeline_drive import DEFAULT_DRIVE, measure_video

    path = tmp_path / "face.mp4"
    seq = expression_video(path)

    class Flags:
        drive, drive_frames = path, 100

    measures, info = measure_video(Flags, reader, DEFAULT_DRIVE, progress=False)
    assert len(measures) == len(seq) and np.isfinite(measures).all()
    targets = [MorphTarget(name, NAMES[name], 1, 1.0) for name in ("smile", "mouth_open", "eyes_closed")]
    dz = z_change(measures, measures[0], table, DEFAULT_DRIVE.transfer.measures)
    weights, notes = target_weights(dz, targets, table, (0.0, 1.0))
    weights = moving_average(weights, 3)
    assert not notes and weights.shape == (len(seq), 3)
    for j, name in enumerate(("smile", "mouth_open", "eyes_closed")):
        r = np.corrcoef(weights[:, j], seq[:, EXPRESSIONS.index(name)])[0, 1]
        assert r > 0.8, (name, r)
    assert np.abs(weights[:3]).max() < 0.15  # the neutral start stays neutral


# ---- the blend the GLB does ------------------------------------------------------------------------

def test_blend_equals_the_glb_morph_blend():
    from toon3d.io.gltf_morph import avatar_glb_bytes, read_avatar_glb, vertex_colors
    from toon3d.io.mesh import mesh_from_depth
    from toon3d.shape.camera import intrinsics
    from toon3d.shape.morph_render import blend_morphs

    g = torch.Generator().manual_seed(0)
    s = 12
    d0 = 1.0 + 0.02 * torch.rand(s, s, generator=g)
    a0 = torch.rand(3, s, s, generator=g) * 2 - 1
    dj = d0 + 0.03 * torch.rand(2, s, s, generator=g)
    aj = (a0 + 0.5 * torch.rand(2, 3, s, s, generator=g)).clamp(-1, 1)
    K = intrinsics(s)
    glb = read_avatar_glb(avatar_glb_bytes((d0, a0), {"a": (dj[0], aj[0]), "b": (dj[1], aj[1])}, K))
    # weights summing to ≤ 1 keep every colour in [0,1], where the blend's clamp does nothing
    weights = torch.tensor([[0.3, 0.6], [1.0, 0.0]])
    depth, albedo = blend_morphs(d0, a0, dj, aj, weights)
    for t in range(2):
        w = weights[t].numpy()
        positions = glb.positions + w[0] * glb.targets["a"]["POSITION"] + w[1] * glb.targets["b"]["POSITION"]
        ours = mesh_from_depth(depth[t], albedo[t], K).vertices.numpy()
        assert np.allclose(ours, positions, atol=1e-4)  # float32 offsets in mesh units (×100)
        colours = glb.colors + w[0] * glb.targets["a"]["COLOR_0"] + w[1] * glb.targets["b"]["COLOR_0"]
        assert np.allclose(vertex_colors(albedo[t]), colours, atol=1e-5)


def test_blended_render_shows_the_face_and_turns():
    from toon3d.shape.morph_render import TurnSettings, render_blended
    from toon3d.shape.renderer import Renderer, RenderSettings

    s = 32
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, s), torch.linspace(-1, 1, s), indexing="ij")
    depth = (1.05 - 0.1 * (1 - xx ** 2 - yy ** 2).clamp_min(0)).expand(3, s, s)
    albedo = torch.stack([xx, yy, -xx]).expand(3, 3, s, s) * 0.8
    yaws = TurnSettings(turn_deg=20.0, period_s=4.0).yaw_deg(3, fps=1.0)  # 0°, +20°, 0° (sin at 0, π/2, π)
    assert np.allclose(yaws, [0.0, 20.0, 0.0], atol=1e-9)
    frames = render_blended(Renderer(RenderSettings(64)), depth, albedo, torch.tensor([0.6, 0.4, 0.3, 0.2]), yaws,
                            progress=False)
    assert frames.shape == (3, 3, 64, 64)
    assert frames[0].std() > 0.1                                # a shaded, coloured surface, not a blank
    assert (frames[1] - frames[0]).abs().mean() > 0.02          # the turn moves it
    assert torch.allclose(frames[2], frames[0], atol=1e-5)      # and back


# ---- end to end: toon3d avatar --expression-from PHOTO --neutral PHOTO --drive VIDEO -------------
# (marked slow: run with  pytest tests/test_drive.py -m slow)

BLANK = (11, 12)


@pytest.fixture(scope="module")
def named_factor(tmp_path_factory, table):
    """factor.pt of the built-in base with a constructed directions.json beside it: its first three SeFa
    directions carry the SynFace table's names and numbers."""
    from toon3d.edit.directions import DEFAULT_VARIANT, factorize, save_factor
    from toon3d.edit.naming import factor_checksum
    from toon3d.models import resolve_generator

    root = tmp_path_factory.mktemp("factor")
    loaded = resolve_generator("base")
    factor = factorize(loaded.generator, DEFAULT_VARIANT, None, ckpt=loaded.source)
    save_factor(root / "factor.pt", factor, loaded.config)
    table.checksum = factor_checksum(factor, len(table.indices))
    (root / "directions.json").write_text(json.dumps(table.to_json()))
    return root / "factor.pt"


@pytest.fixture(scope="module")
def driven(tmp_path_factory, named_factor):
    """A tiny avatar on the built-in models, its expression from a SynFace photo, driven by a SynFace clip."""
    from PIL import Image

    from toon3d.pipeline import AvatarSettings, AvatarSource, make_avatar

    root = tmp_path_factory.mktemp("drive")
    face = faces(1, 5)
    Image.fromarray(render_uint8(face, 192)[0]).save(root / "neutral.png")
    Image.fromarray(render_uint8(face.replace(smile=1.0, mouth_open=0.7), 192)[0]).save(root / "photo.png")
    seq = expression_video(root / "drive.mp4", blank=BLANK)
    settings = AvatarSettings(refine="off", preset="tiny", frames=2, formats=("gif",), factor=str(named_factor),
                              expression_from=str(root / "photo.png"), neutral=str(root / "neutral.png"),
                              drive=str(root / "drive.mp4"), drive_frames=100)
    out = root / "avatar"
    record = make_avatar(AvatarSource(seed=0), settings, out, progress=False, log=lambda _: None)
    return out, record, seq


def test_a_video_without_a_face_fails_before_the_3d_stages(tmp_path, named_factor):
    from toon3d.pipeline import AvatarSettings, AvatarSource, make_avatar

    grey = tmp_path / "grey.mp4"
    _write_video(grey, 4, 12.0, size=(96, 96))
    settings = AvatarSettings(expressions=(("smile", 1.0),), refine="off", preset="tiny", frames=2,
                              formats=("gif",), factor=str(named_factor), drive=str(grey))
    stages = []
    with pytest.raises(Toon3dError, match="no face found in any of the 4 frames") as err:
        make_avatar(AvatarSource(seed=0), settings, tmp_path / "out", progress=False, log=stages.append)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()
    assert not any("shape_" in line for line in stages)  # no 3D stage ran


@pytest.mark.slow  # the whole avatar pipeline (~30 s idle, ~50 s on a loaded 2-core machine)
def test_expression_from_sets_the_edits_and_is_recorded(driven):
    out, record, _ = driven
    transfer = record["expression_from"]
    assert transfer["reference"] == "--neutral" and transfer["neutral"]["photo"].endswith("neutral.png")
    assert set(transfer["face"]["measures"]) == {"mouth_width", "mouth_open", "eye_open", "brow_height", "yaw",
                                                 "pitch"}
    edits = dict(transfer["edits"])
    assert set(edits) == {"smile", "mouth_open"} and all(v > 0.25 for v in edits.values())
    assert record["expressions"] == list(edits)
    assert [list(e) for e in record["settings"]["expressions"]] == [[n, s] for n, s in transfer["edits"]]
    for name, strength in edits.items():  # each edit is its named direction at the measured strength
        edit = record["stages"]["edits"]["edits"][name]
        assert (edit["direction"], edit["sign"], edit["strength"]) == (NAMES[name], 1, strength)
    assert (out / "expression.png").is_file()


@pytest.mark.slow  # the whole avatar pipeline (~30 s idle, ~50 s on a loaded 2-core machine)
def test_drive_weights_follow_the_video_and_hold_through_faceless_frames(driven):
    out, record, seq = driven
    drive = json.loads((out / "drive.json").read_text())
    assert drive["frames"] == len(seq) and drive["frames_held"] == len(BLANK)
    assert drive["faces_found"] == len(seq) - len(BLANK)
    assert [t["name"] for t in drive["targets"]] == record["expressions"]
    weights = np.array(drive["per_frame"]["weights"])
    assert weights.min() >= 0.0 and weights.max() <= 1.0
    for j, name in enumerate(record["expressions"]):
        truth = seq[:, EXPRESSIONS.index(name)]
        assert np.corrcoef(weights[:, j], truth)[0, 1] > 0.7, name
    assert record["drive"]["frames_held"] == len(BLANK) and "per_frame" not in record["drive"]


@pytest.mark.slow  # the whole avatar pipeline (~30 s idle, ~50 s on a loaded 2-core machine)
def test_glb_carries_the_drive_animation_and_validates(driven):
    from toon3d.io.gltf_morph import read_avatar_glb
    from toon3d.io.gltf_validator import validate_gltf, validator_available

    out, record, seq = driven
    glb = read_avatar_glb(out / "avatar.glb")
    assert glb.target_names == record["expressions"]
    animations = {a.name: a for a in glb.animations}
    assert set(animations) == {"drive", "expression_from"}
    drive = animations["drive"]
    fps = record["drive"]["fps"]
    assert np.allclose(drive.times, np.arange(len(seq)) / fps, atol=1e-6)
    weights = np.array(json.loads((out / "drive.json").read_text())["per_frame"]["weights"])
    assert np.allclose(drive.weights, weights, atol=1e-4)
    assert np.allclose(animations["expression_from"].weights, [[0, 0], [1, 1]])
    if validator_available() is None:
        report = validate_gltf(out / "avatar.glb")
        assert not report.errors, report.errors


@pytest.mark.slow  # the whole avatar pipeline (~30 s idle, ~50 s on a loaded 2-core machine)
def test_drive_video_shows_the_frames_beside_the_avatar(driven):
    out, record, seq = driven
    with open_video(out / "drive.mp4") as video:
        frames = list(video)
        width, height = video.info.size
        fps = video.info.fps
    assert len(frames) == len(seq) and (width, height) == (512, 256) and fps == pytest.approx(record["drive"]["fps"])
    avatar = np.stack([f[:, 256:] for f in frames]).astype(float)
    assert avatar.std() > 10  # a rendered face, not a blank panel
    assert np.abs(np.diff(avatar, axis=0)).mean() > 0.5  # and it moves


def test_cli_bad_transfer_input_is_one_line(tmp_path, capsys):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    photo = tmp_path / "notes.jpg"
    photo.write_text("not an image")
    for args, match in [(["--expression", "smile=1", "--expression-from", str(photo)], "drop --expression"),
                        (["--neutral", str(photo)], "use it with --drive"),
                        (["--drive", str(text)], "--drive: "),
                        (["--drive", str(tmp_path / "missing.mp4")], "not found"),
                        (["--expression-from", str(photo)], "--expression-from: "),
                        (["--drive", str(text), "--drive-frames", "0"], "--drive-frames")]:
        code = main(["avatar", "--seed", "0", *args, "--preset", "tiny", "--refine", "off",
                     "--out", str(tmp_path / "x")])
        err = capsys.readouterr().err
        assert code == 2 and match in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x").exists()
