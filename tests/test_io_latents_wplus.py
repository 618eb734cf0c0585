"""W+ latent files [N,L,D]: read by `toon3d edit` and `toon3d generate`, refused in one line by W-only commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import toon3d.models as models
from toon3d.cli import main
from toon3d.errors import Toon3dError
from toon3d.io.latents import check_latents_fit, load_latents

LIGHT = {"size": 32, "style_dim": 512, "n_mlp": 2, "channel_multiplier": 2, "channel_max": 32}
N_LATENT = 8  # 32 px


@pytest.fixture
def light(monkeypatch, tmp_path_factory):
    monkeypatch.setattr(models, "WEIGHTS_DIR", tmp_path_factory.mktemp("no_weights"))
    monkeypatch.setattr(models, "DEFAULT_GENERATOR_CONFIG", LIGHT)


def _w(n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 512, generator=torch.Generator().manual_seed(seed)) * 0.3


def _png(path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.int16)


def test_load_latents_reads_wplus_only_when_asked(tmp_path):
    wplus = torch.randn(2, N_LATENT, 16)
    torch.save(wplus, tmp_path / "wplus.pt")
    np.save(tmp_path / "wplus.npy", wplus.numpy())
    for name in ("wplus.pt", "wplus.npy"):
        torch.testing.assert_close(load_latents(tmp_path / name, dim=16, wplus=True), wplus, rtol=0, atol=0)
        with pytest.raises(Toon3dError, match=r"not supported by --latent, which reads W codes only"):
            load_latents(tmp_path / name, dim=None, flag="--latent")
    torch.save({"latents": wplus, "order": ["a", "b"]}, tmp_path / "edits.pt")  # toon3d edit's layout
    assert load_latents(tmp_path / "edits.pt", dim=None, wplus=True).shape == (2, N_LATENT, 16)
    # A 2-D array is N W codes, even when N equals a generator's layer count.
    torch.save(torch.randn(N_LATENT, 16), tmp_path / "w.pt")
    assert load_latents(tmp_path / "w.pt", dim=16, wplus=True).shape == (N_LATENT, 16)
    bad = wplus.clone()
    bad[1, 3, 2] = float("nan")
    torch.save(bad, tmp_path / "nan.pt")
    with pytest.raises(Toon3dError, match="row 1 contains NaN"):
        load_latents(tmp_path / "nan.pt", dim=None, wplus=True)
    with pytest.raises(Toon3dError, match=r"\[N,L,32\] expected"):
        load_latents(tmp_path / "wplus.pt", dim=32, wplus=True)
    torch.save(torch.zeros(1, 2, 3, 4), tmp_path / "4d.pt")
    with pytest.raises(Toon3dError, match="or W\\+"):
        load_latents(tmp_path / "4d.pt", dim=None, wplus=True)


def test_check_latents_fit():
    check_latents_fit(torch.zeros(2, N_LATENT, 16), 16, N_LATENT, "x.pt")
    check_latents_fit(torch.zeros(2, 16), 16, N_LATENT, "x.pt")
    with pytest.raises(Toon3dError, match="with 14 layers given .* reads 8"):
        check_latents_fit(torch.zeros(1, 14, 16), 16, N_LATENT, "x.pt")
    with pytest.raises(Toon3dError, match="width 32 given"):
        check_latents_fit(torch.zeros(1, N_LATENT, 32), 16, N_LATENT, "x.pt")
    with pytest.raises(Toon3dError, match=r"\[N,16\] expected"):
        check_latents_fit(torch.zeros(1, 32), 16, N_LATENT, "x.pt")


def test_generate_renders_wplus_codes(light, tmp_path, capsys):
    w = _w(2)
    torch.save(w, tmp_path / "w.pt")
    # The same W on every layer is the W code itself: identical images.
    wplus = w[:, None].repeat(1, N_LATENT, 1)
    wplus[1, 5:] += 1.0  # and a real W+ code: the fine layers of image 1 differ
    torch.save(wplus, tmp_path / "wplus.pt")
    assert main(["generate", "--latents", str(tmp_path / "w.pt"), "--space", "w", "--out", str(tmp_path / "a")]) == 0
    assert main(["generate", "--latents", str(tmp_path / "wplus.pt"), "--space", "w",
                 "--out", str(tmp_path / "b")]) == 0
    np.testing.assert_array_equal(_png(tmp_path / "a/latent0000.png"), _png(tmp_path / "b/latent0000.png"))
    assert np.abs(_png(tmp_path / "a/latent0001.png") - _png(tmp_path / "b/latent0001.png")).max() > 8
    stored = torch.load(tmp_path / "b/latents.pt", weights_only=True)
    torch.testing.assert_close(stored, wplus)
    summary = json.loads((tmp_path / "b/generate.json").read_text())
    assert summary["latents"]["space"] == "w+" and summary["latents"]["shape"] == [2, N_LATENT, 512]
    torch.save(torch.zeros(1, 14, 512), tmp_path / "other.pt")  # W+ codes of a 256 px generator
    capsys.readouterr()
    for latents, argv, message in [("wplus.pt", [], "which have no z; pass --space w"),
                                   ("other.pt", ["--space", "w"], "with 14 layers given")]:
        out = tmp_path / "bad"
        assert main(["generate", "--latents", str(tmp_path / latents), *argv, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
        assert not out.exists()


def test_edit_takes_a_wplus_face(light, tmp_path):
    w = _w(1, seed=3)
    torch.save(w, tmp_path / "w.pt")
    torch.save(w[:, None].repeat(1, N_LATENT, 1), tmp_path / "wplus.pt")  # as toon3d invert --wplus writes it
    common = ["--direction", "1", "--strength", "2", "--style", "none", "--refine", "off"]
    assert main(["edit", "--latent", str(tmp_path / "w.pt"), *common, "--out", str(tmp_path / "a")]) == 0
    assert main(["edit", "--latent", str(tmp_path / "wplus.pt"), *common, "--out", str(tmp_path / "b")]) == 0
    a = torch.load(tmp_path / "a/edits.pt", weights_only=True)
    b = torch.load(tmp_path / "b/edits.pt", weights_only=True)
    assert a["latents"].shape == (3, 512) and b["latents"].shape == (3, N_LATENT, 512)
    torch.testing.assert_close(b["latents"], a["latents"][:, None].expand(-1, N_LATENT, -1))
    for name in ("human_neutral.png", "human_sefa_plus.png", "human_sefa_minus.png"):
        np.testing.assert_array_equal(_png(tmp_path / "a" / name), _png(tmp_path / "b" / name))
    assert json.loads((tmp_path / "b/edits.json").read_text())["latents"]["space"].startswith("W+ (a W+ face")
    # Both refinement modes run on a W+ face (paper mode refines ± as a batch of two).
    for mode in ("paper", "code"):
        out = tmp_path / mode
        assert main(["edit", "--latent", str(tmp_path / "wplus.pt"), "--direction", "1", "--style", "none",
                     "--refine", mode, "--steps", "2", "--mask", "none", "--out", str(out)]) == 0
        edits = torch.load(out / "edits.pt", weights_only=True)
        assert edits["refined_plus"].shape == (N_LATENT, 512)


def test_w_only_commands_refuse_wplus_in_one_line(light, tmp_path, capsys):
    torch.save(torch.zeros(1, N_LATENT, 512), tmp_path / "wplus.pt")
    for argv in (["avatar", "--latent", str(tmp_path / "wplus.pt"), "--preset", "tiny", "--refine", "off"],
                 ["reconstruct", "--latent", str(tmp_path / "wplus.pt")]):
        out = tmp_path / "out"
        assert main([*argv, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "W+ latents are not supported by toon3d" in err and "W codes only" in err, err
        assert err.count("\n") == 1 and not out.exists()
