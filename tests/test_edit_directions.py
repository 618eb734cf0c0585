"""Stage 2 directions: factorisation with layer ranges, factor.pt, landmark measures, naming, `toon3d directions`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import toon3d.edit.landmarks as landmarks_module
import toon3d.edit.naming as naming_module
import toon3d.models as models
from toon3d.cli import main
from toon3d.edit.directions import (
    apply_direction,
    factor_keys,
    factor_matrix,
    factorize,
    load_factor,
    off_diagonal_ratio,
    parse_layers,
    save_factor,
    wplus_index,
)
from toon3d.edit.landmarks import MEASURES, face_measures, face_rect_pixels
from toon3d.edit.naming import NAMES, DirectionTable, measure_directions, parse_direction
from toon3d.errors import Toon3dError
from toon3d.stylegan2.factorize import VARIANTS, closed_form_factorization
from toon3d.stylegan2.generator import Generator

LIGHT = {"size": 32, "style_dim": 512, "n_mlp": 2, "channel_multiplier": 2, "channel_max": 32}


def tiny_generator(seed: int = 0, size: int = 32, style_dim: int = 16) -> Generator:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Generator(size, style_dim=style_dim, n_mlp=1, channel_max=16).eval()


@pytest.fixture(scope="module")
def g() -> Generator:
    return tiny_generator()


# ---- factorisation -----------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_all_layers_equal_closed_form_factorization_and_diagonalise(g, variant):
    fac = factorize(g, variant)
    eigvec, singular = closed_form_factorization(g, variant)
    torch.testing.assert_close(fac.eigvec, eigvec)
    torch.testing.assert_close(fac.singular, singular)
    v, a = fac.eigvec.double(), factor_matrix(g, variant)
    torch.testing.assert_close(v.T @ v, torch.eye(16, dtype=torch.float64), atol=1e-5, rtol=0)
    gram = (a @ v).T @ (a @ v)
    torch.testing.assert_close(gram, torch.diag(fac.singular.double() ** 2), atol=1e-4, rtol=1e-4)
    assert torch.all(fac.singular[:-1] >= fac.singular[1:])
    assert off_diagonal_ratio(fac.eigvec, g, variant, None) < 1e-5


@pytest.mark.parametrize("variant", VARIANTS)
def test_layer_range_restricts_rows_and_still_diagonalises(g, variant):
    layers = [0, 1, 2]
    keys = factor_keys(g, variant, layers)
    assert keys and all(wplus_index(k) in layers for k in keys)
    expected = {"rosinality": ["conv1.conv.modulation.weight", "to_rgb1.conv.modulation.weight",
                               "convs.0.conv.modulation.weight", "convs.1.conv.modulation.weight"],
                "sefa": ["conv1.conv.modulation.weight", "convs.0.conv.modulation.weight",
                         "convs.1.conv.modulation.weight"]}[variant]
    assert keys == expected
    fac = factorize(g, variant, layers)
    assert fac.eigvec.shape == (16, 16) and fac.layers == layers
    v, a = fac.eigvec.double(), factor_matrix(g, variant, layers)
    assert a.shape[0] == 16 * len(keys)
    torch.testing.assert_close(v.T @ v, torch.eye(16, dtype=torch.float64), atol=1e-5, rtol=0)
    gram = (a @ v).T @ (a @ v)
    torch.testing.assert_close(gram, torch.diag(fac.singular.double() ** 2), atol=1e-4, rtol=1e-4)


def test_wplus_index_is_the_layer_synthesis_feeds_each_modulation(g):
    # Fill W+ layer l with the value l; every modulation must then see its own index.
    seen: dict[str, float] = {}
    hooks = []
    for name, module in g.named_modules():
        if name.endswith("conv.modulation"):
            hooks.append(module.register_forward_hook(
                lambda m, inp, out, name=name: seen.__setitem__(name, float(inp[0][0, 0]))))
    ws = torch.arange(g.n_latent, dtype=torch.float32)[None, :, None].expand(1, -1, g.style_dim).contiguous()
    with torch.no_grad():
        g.synthesis(ws)
    for h in hooks:
        h.remove()
    assert len(seen) == 3 * len(g.to_rgbs) + 2  # conv1, to_rgb1, two convs and a ToRGB per block
    for name, value in seen.items():
        assert wplus_index(name + ".weight") == value, name


def test_a_variant_refuses_layers_it_stacks_nothing_from(g):
    last = g.n_latent - 1  # read by the final ToRGB only, which rosinality's filter leaves out
    assert factor_keys(g, "sefa", [last]) == [f"to_rgbs.{len(g.to_rgbs) - 1}.conv.modulation.weight"]
    with pytest.raises(Toon3dError, match="stacks no modulation"):
        factor_keys(g, "rosinality", [last])


def test_parse_layers():
    assert parse_layers(None, 8) is None and parse_layers("all", 8) is None
    assert parse_layers("0-2,5", 8) == [0, 1, 2, 5]
    assert parse_layers("0-7", 8) is None  # every layer = a plain W edit
    for bad in ("0-8", "3-1", "x", "1-"):
        with pytest.raises(Toon3dError, match="--layers"):
            parse_layers(bad, 8)


def test_apply_direction_touches_only_the_chosen_layers():
    w = torch.randn(2, 4)
    n = torch.ones(4)
    ws = apply_direction(w, 2 * n, 5, [1, 3])
    assert ws.shape == (2, 5, 4)
    torch.testing.assert_close(ws[:, [0, 2, 4]], w[:, None].expand(-1, 3, -1))
    torch.testing.assert_close(ws[:, [1, 3]], (w + 2)[:, None].expand(-1, 2, -1))
    torch.testing.assert_close(apply_direction(w, n, 5), (w + 1)[:, None].expand(-1, 5, -1))


# ---- factor.pt ---------------------------------------------------------------------------------------


def test_factor_round_trip_and_seed_layout(g, tmp_path):
    fac = factorize(g, "sefa", [0, 2], ckpt="tiny")
    path = save_factor(tmp_path / "factor.pt", fac, g.config)
    raw = torch.load(path, weights_only=True)
    assert set(raw) >= {"ckpt", "eigvec"} and raw["ckpt"] == "tiny"
    back = load_factor(path, 16, g.n_latent)
    torch.testing.assert_close(back.eigvec, fac.eigvec, rtol=0, atol=0)
    assert back.variant == "sefa" and back.layers == [0, 2] and back.ckpt == "tiny"
    # The seed code's file: just {'ckpt', 'eigvec'} → rosinality, all layers.
    seed_file = tmp_path / "seed_factor.pt"
    torch.save({"ckpt": "ffhq256.pt", "eigvec": closed_form_factorization(g)[0]}, seed_file)
    seed = load_factor(seed_file, 16)
    assert seed.variant == "rosinality" and seed.layers is None and seed.singular is None
    assert off_diagonal_ratio(seed.eigvec, g, seed.variant, seed.layers) < 1e-5


def test_factor_from_another_generator_is_refused_or_detected(g, tmp_path):
    other = tiny_generator(seed=1, style_dim=8)
    path = save_factor(tmp_path / "factor.pt", factorize(other, "sefa"))
    with pytest.raises(Toon3dError, match="another generator") as err:
        load_factor(path, 16)
    assert "\n" not in str(err.value)
    # Same width, other weights: it loads, but does not diagonalise this generator's modulations.
    same_width = factorize(tiny_generator(seed=2), "sefa")
    assert off_diagonal_ratio(same_width.eigvec, g, "sefa", None) > 1e-2
    for bad in ({"eigvec": torch.zeros(3, 4)}, [1, 2], {"ckpt": "x"}):
        torch.save(bad, tmp_path / "bad.pt")
        with pytest.raises(Toon3dError):
            load_factor(tmp_path / "bad.pt", 16)


def test_direction_index_out_of_range(g):
    fac = factorize(g)
    assert fac.direction(15).shape == (16,)
    with pytest.raises(Toon3dError, match="out of range"):
        fac.direction(16)


# ---- landmark measures ---------------------------------------------------------------------------


def _template() -> np.ndarray:
    """A face-like set of 68 points (unit IOD, eyes on y = 0) for hand-checked measures."""
    p = np.zeros((68, 2))
    p[0:17] = np.stack([np.linspace(-1, 1, 17), np.linspace(0, 1.5, 17)], 1)  # jaw, 0 left .. 16 right
    p[8] = (0, 1.6)  # chin
    p[17:27] = np.stack([np.linspace(-0.8, 0.8, 10), np.full(10, -0.4)], 1)  # brows 0.4 above the eyes
    eye = np.array([[-0.2, 0], [-0.1, -0.1], [0.1, -0.1], [0.2, 0], [0.1, 0.1], [-0.1, 0.1]])
    p[36:42] = eye + (-0.5, 0)
    p[42:48] = eye + (0.5, 0)
    p[27:36] = [(0, 0.1), (0, 0.2), (0, 0.3), (0, 0.5), (-0.1, 0.6), (-0.05, 0.6), (0, 0.6), (0.05, 0.6), (0.1, 0.6)]
    p[48:60] = np.stack([0.3 * np.cos(np.linspace(np.pi, -np.pi, 12, endpoint=False)),
                         1.0 + 0.1 * np.sin(np.linspace(np.pi, -np.pi, 12, endpoint=False))], 1)
    p[48], p[54] = (-0.3, 1.0), (0.3, 1.0)
    p[60:68] = [(-0.2, 1.0), (-0.1, 0.95), (0, 0.95), (0.1, 0.95), (0.2, 1.0), (0.1, 1.05), (0, 1.05), (-0.1, 1.05)]
    return p


def test_face_measures_by_hand_and_similarity_invariant():
    p = _template()
    m = dict(zip(MEASURES, face_measures(p)))
    assert m["mouth_width"] == pytest.approx(0.6)
    assert m["mouth_open"] == pytest.approx(0.1)
    assert m["eye_open"] == pytest.approx(0.2)
    assert m["brow_height"] == pytest.approx(0.4)
    assert m["yaw"] == pytest.approx(0.0)
    assert m["pitch"] == pytest.approx((0.6 + 0.4) / (1.6 - 0.6))
    # Scale, rotation and translation change nothing.
    angle, scale = 0.3, 37.0
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    np.testing.assert_allclose(face_measures(p @ rot.T * scale + (5, -2)), face_measures(p), atol=1e-12)
    # Nose toward the image's right → yaw > 0.
    q = p.copy()
    q[30, 0] += 0.2
    assert face_measures(q)[MEASURES.index("yaw")] == pytest.approx(0.2)


def test_face_rect_pixels():
    assert face_rect_pixels(256) == (60, 74, 195, 210)


@pytest.fixture(scope="module")
def shared_landmarks():
    return landmarks_module.FaceLandmarks()


def test_dlib_landmarks_see_synface_smiles_and_closed_eyes(shared_landmarks):
    import dataclasses

    from toon3d.synth.face_params import SynFaceParams
    from toon3d.synth.synface import render_synface

    base = SynFaceParams.sample(6, seed=11)

    def render(**values):
        fields = {f.name: getattr(base, f.name).clone() for f in dataclasses.fields(base)}
        for key in ("smile", "mouth_open", "eyes_closed", "brows_raised", "yaw_deg", "pitch_deg", "roll_deg"):
            fields[key] = torch.full_like(fields[key], values.get(key, 0.0))
        return render_synface(SynFaceParams(**fields), 64)["image"]

    neutral = render()
    m0 = face_measures(shared_landmarks.landmarks(neutral))
    assert shared_landmarks.confirmed(neutral).sum() >= 4
    smile = face_measures(shared_landmarks.landmarks(render(smile=1.0)))
    closed = face_measures(shared_landmarks.landmarks(render(eyes_closed=1.0)))
    assert (smile - m0)[:, MEASURES.index("mouth_width")].mean() > 0
    assert (closed - m0)[:, MEASURES.index("eye_open")].mean() < 0
    assert not shared_landmarks.confirmed(torch.zeros(1, 3, 64, 64)).any()


# ---- naming ------------------------------------------------------------------------------------------


def test_parse_direction():
    assert parse_direction("smile") == "smile" and parse_direction(" 3 ") == 3
    for bad, match in (("frown", "unknown direction"), ("-2", "negative --strength"), ("", "unknown")):
        with pytest.raises(Toon3dError, match=match):
            parse_direction(bad)


class QuadrantMouthLandmarks:
    """Stand-in landmark model: the template face whose mouth widens as the top-left quadrant of the image
    brightens against the bottom-right one (on the tiny generator its top directions move that both ways)."""

    def __init__(self, confirm: bool = True) -> None:
        self.confirm = confirm

    def landmarks(self, images: torch.Tensor) -> np.ndarray:
        s = images.shape[-1] // 2
        x = (images[:, :, :s, :s].mean((1, 2, 3)) - images[:, :, s:, s:].mean((1, 2, 3))).double().numpy()
        p = np.repeat(_template()[None], len(images), 0)
        half = 0.3 + np.log1p(np.exp(x))  # softplus: the corners never cross
        p[:, 48, 0], p[:, 54, 0] = -half, half
        return p

    def confirmed(self, images: torch.Tensor) -> np.ndarray:
        return np.full(len(images), self.confirm)


def test_names_resolve_to_the_direction_that_moves_the_measure_most(g):
    mean = g.mean_latent(256, generator=torch.Generator().manual_seed(0))
    fac = factorize(g, "sefa")
    table = measure_directions(g, mean, fac, top=4, samples=6, strength=3.0, landmarks=QuadrantMouthLandmarks(),
                               progress=False)
    assert table.named and table.confirmed == 6
    # Expected: the mean change of the stand-in's mouth width per (direction, sign), recomputed here.
    stub, j = QuadrantMouthLandmarks(), MEASURES.index("mouth_width")
    w = naming_module.sample_w(g, mean, 6, 0, 0.7)

    def width(d: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return face_measures(stub.landmarks(g.synthesis(apply_direction(w, d, g.n_latent))))[:, j]

    base = width(torch.zeros(16))
    changes = np.array([[(width(s * 3.0 * fac.eigvec[:, k]) - base).mean() for s in (1, -1)] for k in range(4)])
    k, s = np.unravel_index(int(np.argmax(changes)), changes.shape)
    assert table.resolve("smile") == (k, 1 if s == 0 else -1)
    np.testing.assert_allclose(table.effect[:, :, j], changes, rtol=1e-4, atol=1e-6)
    # Measures that never vary get z = 0, so their names find nothing.
    assert table.names["mouth_open"] is None
    with pytest.raises(Toon3dError, match="no measured direction"):
        table.resolve("mouth_open")
    # JSON round trip.
    back = DirectionTable.from_json(json.loads(json.dumps(table.to_json())))
    assert back.resolve("smile") == table.resolve("smile") and back.checksum == table.checksum
    np.testing.assert_allclose(back.z, table.z)


def test_unconfirmed_faces_are_not_named(g):
    mean = g.mean_latent(64, generator=torch.Generator().manual_seed(0))
    table = measure_directions(g, mean, factorize(g), top=2, samples=4, landmarks=QuadrantMouthLandmarks(False),
                               progress=False)
    assert not table.named and "0 of 4" in table.reason
    assert "Not named" in table.to_markdown()
    with pytest.raises(Toon3dError, match="could not be named"):
        table.resolve("smile")


def test_command_constants_match_the_library():
    from toon3d.commands import directions as directions_cmd
    from toon3d.commands import edit as edit_cmd
    from toon3d.edit import directions as directions_lib

    assert set(directions_cmd.VARIANT_CHOICES) == set(VARIANTS) == set(edit_cmd.VARIANT_CHOICES)
    assert directions_cmd.DEFAULT_VARIANT == directions_lib.DEFAULT_VARIANT
    assert tuple(edit_cmd.DIRECTION_NAMES) == tuple(NAMES)
    assert (directions_cmd.DEFAULT_TOP, directions_cmd.DEFAULT_SAMPLES, directions_cmd.DEFAULT_STRENGTH,
            directions_cmd.DEFAULT_TRUNCATION) == (naming_module.DEFAULT_TOP, naming_module.DEFAULT_SAMPLES,
                                                   naming_module.DEFAULT_STRENGTH, naming_module.DEFAULT_TRUNCATION)


# ---- `toon3d directions` ---------------------------------------------------------------------------


@pytest.fixture
def light_builtins(monkeypatch, tmp_path_factory, shared_landmarks):
    monkeypatch.setattr(models, "WEIGHTS_DIR", tmp_path_factory.mktemp("no_weights"))
    monkeypatch.setattr(models, "DEFAULT_GENERATOR_CONFIG", LIGHT)
    # One dlib landmark model for every command run (it takes about a second to load).
    monkeypatch.setattr(landmarks_module, "FaceLandmarks", lambda *a, **k: shared_landmarks)


def test_directions_cli_on_the_untrained_standin(light_builtins, tmp_path, capsys):
    out = tmp_path / "dirs"
    assert main(["directions", "--top", "2", "--samples", "4", "--layers", "0-3", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [".toon3d-output", "directions.json", "directions.md",
                                                     "directions.png", "factor.pt"]
    fac = load_factor(out / "factor.pt", 512, 8)
    assert fac.variant == "sefa" and fac.layers == [0, 1, 2, 3] and fac.ckpt.startswith("builtin:base")
    summary = json.loads((out / "directions.json").read_text())
    assert summary["named"] is False and summary["faces_confirmed"] == 0
    assert [d["index"] for d in summary["directions"]] == [0, 1]
    assert all(v is None for v in summary["names"].values())
    assert "Not named" in (out / "directions.md").read_text()
    from PIL import Image

    assert Image.open(out / "directions.png").size == (14 * 34 + 2, 2 * 34 + 2)
    assert "directions not named" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--layers", "0-20"], "--layers"),
    (["--top", "0"], "--top"),
    (["--top", "600", "--samples", "2"], "--top 600 exceeds"),
    (["--samples", "1"], "--samples"),
    (["--strength", "nan"], "--strength"),
    (["--ckpt", "missing.pt"], "missing.pt"),
])
def test_directions_cli_bad_input_writes_nothing(light_builtins, tmp_path, capsys, argv, message):
    out = tmp_path / "dirs"
    assert main(["directions", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists() and list(tmp_path.iterdir()) == []
