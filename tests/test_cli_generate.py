"""`toon3d generate` end to end on the built-in (64 px) generator, and every bad input it must refuse."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import toon3d.models as models
from toon3d.cli import main
from toon3d.io.images import to_uint8


REAL_DEFAULT = dict(models.DEFAULT_GENERATOR_CONFIG)
# Most tests run a lighter stand-in (32 px, 32 channels) to stay fast; the first uses the real one.
LIGHT = {"size": 32, "style_dim": 512, "n_mlp": 2, "channel_multiplier": 2, "channel_max": 32}


@pytest.fixture(autouse=True)
def untrained_default(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    # Shipped weights (a later issue) must not change what these tests exercise.
    monkeypatch.setattr(models, "WEIGHTS_DIR", tmp_path_factory.mktemp("no_weights"))
    monkeypatch.setattr(models, "DEFAULT_GENERATOR_CONFIG", LIGHT)


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def _gen(out: Path, *extra: str) -> int:
    return main(["generate", "--out", str(out), *extra])


def test_end_to_end_outputs(tmp_path: Path, capsys: pytest.CaptureFixture,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "DEFAULT_GENERATOR_CONFIG", REAL_DEFAULT)
    out, raw = tmp_path / "run", tmp_path / "raw.npy"
    assert _gen(out, "--seeds", "0-3,7", "--batch", "2", "--raw", str(raw)) == 0
    names = [f"seed{s:04d}.png" for s in (0, 1, 2, 3, 7)]
    assert sorted(p.name for p in out.iterdir()) == sorted(names + ["grid.png", "latents.pt", "latents.npy",
                                                                    "generate.json", ".toon3d-output"])
    latents = torch.load(out / "latents.pt", weights_only=True)
    assert latents.shape == (5, models.resolve_generator("default").config["style_dim"]) and latents.dtype == torch.float32
    np.testing.assert_array_equal(np.load(out / "latents.npy"), latents.numpy())
    images = np.load(raw)
    assert images.shape == (5, 3, 64, 64) and images.dtype == np.float32
    for i, name in enumerate(names):
        np.testing.assert_array_equal(_png(out / name), to_uint8(torch.from_numpy(images[i])))
    assert images.std() > 0.1  # not a blank image
    grid = Image.open(out / "grid.png")
    assert grid.size == (3 * 66 + 2, 2 * 66 + 2)  # 3 per row, 2 px padding
    summary = json.loads((out / "generate.json").read_text())
    assert summary["images"] == names and summary["count"] == 5 and summary["size"] == 64
    assert summary["settings"]["truncation"] == 0.7 and summary["settings"]["seeds"] == [0, 1, 2, 3, 7]
    assert summary["model"]["meta"]["untrained"] is True and summary["raw"]["shape"] == [5, 3, 64, 64]
    captured = capsys.readouterr()
    assert "wrote 5 images" in captured.out and "untrained random weights" in captured.err


def test_seed_z_matches_the_documented_formula(tmp_path: Path) -> None:
    assert _gen(tmp_path / "a", "--seeds", "5", "--truncation", "1") == 0
    loaded = models.default_generator()
    z = torch.randn(1, 512, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        w = loaded.generator.mapping(z)
    torch.testing.assert_close(torch.load(tmp_path / "a" / "latents.pt", weights_only=True), w,
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("noise", ["const", "random"])
def test_same_seed_same_image_whatever_the_batch(tmp_path: Path, noise: str) -> None:
    raws = {}
    for batch, seeds in (("1", "2-5"), ("4", "2-5"), ("3", "4,5,2,3")):
        out = tmp_path / f"b{batch}"
        raws[batch] = tmp_path / f"b{batch}.npy"
        assert _gen(out, "--seeds", seeds, "--batch", batch, "--noise", noise, "--raw", str(raws[batch])) == 0
    one, four, shuffled = (np.load(raws[b]) for b in ("1", "4", "3"))
    # Batched and single-image convolutions round differently (float32); the seed decides the image.
    np.testing.assert_allclose(one, four, atol=2e-5)
    np.testing.assert_allclose(shuffled[[2, 3, 0, 1]], four, atol=2e-5)
    for seed in range(2, 6):
        diff = np.abs(_png(tmp_path / "b1" / f"seed{seed:04d}.png") - _png(tmp_path / "b4" / f"seed{seed:04d}.png"))
        assert diff.max() <= 1


def test_noise_modes_and_truncation(tmp_path: Path) -> None:
    raw = {}
    for name, extra in {"const": [], "random": ["--noise", "random"], "none": ["--noise", "none"],
                        "psi0": ["--truncation", "0"]}.items():
        raw[name] = tmp_path / f"{name}.npy"
        assert _gen(tmp_path / name, "--seeds", "0-2", "--raw", str(raw[name]), *extra) == 0
    const, random_, none, psi0 = (np.load(raw[k]) for k in ("const", "random", "none", "psi0"))
    assert np.abs(const - random_).max() > 1e-3 and np.abs(const - none).max() > 1e-3
    # psi = 0 maps every seed to the truncation mean: one image, three times.
    np.testing.assert_allclose(psi0[0], psi0[1], atol=1e-5)
    np.testing.assert_allclose(psi0[0], psi0[2], atol=1e-5)
    ws = torch.load(tmp_path / "psi0" / "latents.pt", weights_only=True)
    torch.testing.assert_close(ws, models.default_generator().mean_latent.expand(3, -1))


@pytest.mark.parametrize("fmt", ["latents.pt", "latents.npy"])
def test_w_round_trip_reproduces_images(tmp_path: Path, fmt: str) -> None:
    assert _gen(tmp_path / "first", "--seeds", "0-4", "--raw", str(tmp_path / "first.npy")) == 0
    assert _gen(tmp_path / "again", "--latents", str(tmp_path / "first" / fmt), "--space", "w", "--batch", "5",
                "--raw", str(tmp_path / "again.npy")) == 0
    np.testing.assert_allclose(np.load(tmp_path / "again.npy"), np.load(tmp_path / "first.npy"), atol=2e-5)
    assert (tmp_path / "again" / "latent0004.png").is_file()
    summary = json.loads((tmp_path / "again" / "generate.json").read_text())
    assert summary["settings"]["truncation"] == 1.0 and summary["settings"]["space"] == "w"


def test_z_latents_match_seeds(tmp_path: Path) -> None:
    z = torch.cat([torch.randn(1, 512, generator=torch.Generator().manual_seed(s)) for s in (3, 4)])
    torch.save(z, tmp_path / "z.pt")
    assert _gen(tmp_path / "a", "--latents", str(tmp_path / "z.pt"), "--raw", str(tmp_path / "a.npy")) == 0
    assert _gen(tmp_path / "b", "--seeds", "3-4", "--raw", str(tmp_path / "b.npy")) == 0
    np.testing.assert_allclose(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"), atol=2e-5)


def test_raw_inside_out_and_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert _gen(out, "--seeds", "0", "--raw", str(out / "raw" / "images.npy")) == 0
    assert np.load(out / "raw" / "images.npy").shape == (1, 3, 32, 32)
    assert _gen(out, "--seeds", "1", "--overwrite") == 0
    assert (out / "seed0001.png").is_file() and not (out / "seed0000.png").exists()


def test_rosinality_checkpoint_and_arch_overrides(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = models.default_generator()
    ckpt = tmp_path / "tiny.pt"
    state = {f"module.{k}": v for k, v in base.generator.state_dict().items()}
    torch.save({"g_ema": state, "latent_avg": base.mean_latent.view(-1)}, ckpt)
    assert _gen(tmp_path / "a", "--ckpt", str(ckpt), "--seeds", "0-1", "--raw", str(tmp_path / "a.npy")) == 0
    assert _gen(tmp_path / "b", "--seeds", "0-1", "--raw", str(tmp_path / "b.npy")) == 0
    np.testing.assert_allclose(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"), atol=1e-6)
    assert json.loads((tmp_path / "a" / "generate.json").read_text())["model"]["truncation_mean"] == "latent_avg"
    capsys.readouterr()
    assert _gen(tmp_path / "c", "--ckpt", str(ckpt), "--channel-max", "512") == 2
    err = capsys.readouterr().err
    assert err == ("toon3d generate: error: tiny.pt: generator weights for channel_max=32 expected by the file, "
                   "--channel-max 512 given; pass --channel-max 32\n")
    assert not (tmp_path / "c").exists()


def _bad(tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], expect: str) -> None:
    out = tmp_path / "out"
    before = set(tmp_path.iterdir())
    capsys.readouterr()
    assert main(["generate", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("toon3d generate: error: "), err
    assert expect in err, err
    assert "Traceback" not in err
    assert set(tmp_path.iterdir()) == before  # nothing written, no temporary folder left


def test_bad_latent_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _bad(tmp_path, capsys, ["--latents", str(tmp_path / "missing.pt")], "missing.pt not found")
    torch.save(torch.zeros(3, 14, 512), tmp_path / "wplus.pt")
    _bad(tmp_path, capsys, ["--latents", str(tmp_path / "wplus.pt")],
         "holds W+ codes [3, 14, 512], which have no z; pass --space w")
    np.save(tmp_path / "short.npy", np.zeros((2, 7), dtype=np.float32))
    _bad(tmp_path, capsys, ["--latents", str(tmp_path / "short.npy")], "[2, 7] given, [N,512] expected")
    bad = torch.zeros(4, 512)
    bad[2, 5] = float("nan")
    torch.save(bad, tmp_path / "nan.pt")
    _bad(tmp_path, capsys, ["--latents", str(tmp_path / "nan.pt")], "row 2 contains NaN or inf")
    inf = np.zeros((2, 512), dtype=np.float32)
    inf[1, 0] = np.inf
    np.save(tmp_path / "inf.npy", inf)
    _bad(tmp_path, capsys, ["--latents", str(tmp_path / "inf.npy")], "row 1 contains NaN or inf")
    (tmp_path / "corrupt.pt").write_bytes(b"PK\x03\x04 broken zip")
    _bad(tmp_path, capsys, ["--latents", str(tmp_path / "corrupt.pt")], "corrupt")
    good = tmp_path / "good.npy"
    np.save(good, np.zeros((4, 512), dtype=np.float32))
    (tmp_path / "cut.npy").write_bytes(good.read_bytes()[:200])
    _bad(tmp_path, capsys, ["--latents", str(tmp_path / "cut.npy")], "not a readable .npy array")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    _bad(tmp_path, capsys, ["--latents", str(tmp_path / "objects.npy")], "pickled Python objects")
    (tmp_path / "byte.npy").write_bytes(b"x")
    _bad(tmp_path, capsys, ["--latents", str(tmp_path / "byte.npy")], "not a .npy file (corrupt or truncated)")
    (tmp_path / "five.npy").write_bytes(good.read_bytes()[:5])
    _bad(tmp_path, capsys, ["--latents", str(tmp_path / "five.npy")], "not a .npy file (corrupt or truncated)")
    np.save(tmp_path / "scalar.npy", np.float32(0.5))
    _bad(tmp_path, capsys, ["--latents", str(tmp_path / "scalar.npy")], "holds a single number (a 0-d scalar)")
    torch.save(torch.tensor(0.5), tmp_path / "scalar.pt")
    _bad(tmp_path, capsys, ["--latents", str(tmp_path / "scalar.pt")], "holds a single number (a 0-d scalar)")
    (tmp_path / "latents.txt").write_text("0 1 2")
    _bad(tmp_path, capsys, ["--latents", str(tmp_path / "latents.txt")], "unknown latent file type '.txt'")
    torch.save({"g": torch.zeros(2, 512)}, tmp_path / "dict.pt")
    _bad(tmp_path, capsys, ["--latents", str(tmp_path / "dict.pt")], "not a latent tensor")


def test_malicious_latent_file_never_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    class Evil:
        def __reduce__(self):
            return (open, (str(tmp_path / "MARKER"), "w"))

    torch.save({"latents": Evil()}, tmp_path / "evil.pt")
    _bad(tmp_path, capsys, ["--latents", str(tmp_path / "evil.pt")], "refuses to execute code")
    assert not (tmp_path / "MARKER").exists()


def test_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _bad(tmp_path, capsys, ["--device", "tpu"], "unknown device 'tpu'")
    _bad(tmp_path, capsys, ["--seeds", "0-x"], "bad seed '0-x'")
    _bad(tmp_path, capsys, ["--seeds", "5-2"], "runs backwards; write it as 2-5")
    _bad(tmp_path, capsys, ["--seeds", "1,2,1"], "seed 1 is listed twice")
    _bad(tmp_path, capsys, ["--seeds", ""], "--seeds is empty")
    _bad(tmp_path, capsys, ["--batch", "0"], "--batch must be at least 1")
    _bad(tmp_path, capsys, ["--truncation", "nan"], "--truncation must be a finite number")
    _bad(tmp_path, capsys, ["--truncation-mean", "0"], "--truncation-mean must be at least 1")
    _bad(tmp_path, capsys, ["--space", "w"], "--space w needs --latents FILE")
    _bad(tmp_path, capsys, ["--raw", str(tmp_path / "raw.png")], "pass a name ending in .npy")
    (tmp_path / "dir.npy").mkdir()
    _bad(tmp_path, capsys, ["--raw", str(tmp_path / "dir.npy")], "is a folder")
    _bad(tmp_path, capsys, ["--raw", str(tmp_path / "out" / "latents.npy")], "would overwrite the latents.npy")
    _bad(tmp_path, capsys, ["--ckpt", str(tmp_path / "550000.pt")], "rosinality/stylegan2-pytorch")
    _bad(tmp_path, capsys, ["--size", "256"], "pass --size 32")


def test_unwritable_and_occupied_outputs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    capsys.readouterr()
    assert main(["generate", "--out", str(blocker / "sub"), "--seeds", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "choose a writable output path" in err
    assert main(["generate", "--out", str(tmp_path / "ok"), "--seeds", "0", "--raw", str(blocker / "r.npy")]) == 2
    assert "choose a writable output path" in capsys.readouterr().err
    assert not (tmp_path / "ok").exists()
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    assert main(["generate", "--out", str(occupied), "--seeds", "0"]) == 2
    assert "not empty; choose another --out or pass --overwrite" in capsys.readouterr().err
    assert [p.name for p in occupied.iterdir()] == ["keep.txt"]


def test_failure_mid_run_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture) -> None:
    import toon3d.stylegan2.sampling as sampling

    calls = {"n": 0}
    real = sampling.synthesize

    def flaky(*args, **kwargs):
        calls["n"] += 1
        images = real(*args, **kwargs)
        return images * float("nan") if calls["n"] == 2 else images

    monkeypatch.setattr(sampling, "synthesize", flaky)
    _bad(tmp_path, capsys, ["--seeds", "0-3", "--batch", "2", "--raw", str(tmp_path / "raw.npy")],
         "the generator produced NaN/inf for seed0002.png")


def test_out_may_not_hold_the_checkpoint_or_latents(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert _gen(run, "--seeds", "0") == 0
    capsys.readouterr()
    assert _gen(run, "--latents", str(run / "latents.pt"), "--space", "w", "--overwrite") == 2
    err = capsys.readouterr().err
    assert "contains the input" in err and "choose another --out" in err and err.count("\n") == 1
    assert (run / "latents.pt").is_file() and (run / "seed0000.png").is_file()
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    (models_dir / ".toon3d-output").write_text("")
    (models_dir / "550000.pt").write_bytes(b"weights")
    assert _gen(models_dir, "--ckpt", str(models_dir / "550000.pt"), "--seeds", "0", "--overwrite") == 2
    assert "contains the input" in capsys.readouterr().err
    assert (models_dir / "550000.pt").read_bytes() == b"weights"
    # Without the marker a folder is not toon3d's to delete, whatever it holds.
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    assert _gen(user, "--seeds", "0", "--overwrite") == 2
    assert "was not written by toon3d; remove it yourself or choose another --out" in capsys.readouterr().err
    assert (user / "notes.txt").read_text() == "mine"
