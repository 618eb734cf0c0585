"""`toon3d reconstruct` on a built-in generator with the tiny preset: files, record, one-line errors."""

import json

import numpy as np
import torch

from toon3d.cli import main


def _run(*args):
    fmt = [] if "--format" in args else ["--format", "gif"]
    return main(["reconstruct", *args, "--preset", "tiny", "--frames", "2", *fmt, "--no-progress"])


def test_reconstruct_writes_every_product(tmp_path):
    out = tmp_path / "r"
    assert _run("--seed", "1", "--ckpt", "toon", "--out", str(out)) == 0
    for name in ("input.png", "sheet.png", "depth.npy", "albedo.png", "normal.png", "mesh.obj", "mesh.glb",
                 "relight.png", "rotations.png", "turntable.gif", "light.json", "reconstruct.json"):
        assert (out / name).is_file(), name
    depth = np.load(out / "depth.npy")
    # toon ships a 64 px reconstructor: the reconstruction starts from it, at its size
    assert depth.shape == (64, 64) and np.isfinite(depth).all() and 0.9 <= depth.min() and depth.max() <= 1.1
    record = json.loads((out / "reconstruct.json").read_text())
    assert record["reconstruction"]["start"].startswith("pretrained reconstructor")
    assert record["reconstruction"]["pretrained"].endswith("shape_toon.safetensors")
    assert record["reconstruction"]["mode"] == "gan2shape" and record["reconstruction"]["iterations"] > 0
    # toon ships its discriminator, so L_dis uses its features, not the substitute
    assert record["reconstruction"]["discriminator_features"].startswith("discriminator")
    light = json.loads((out / "light.json").read_text())
    assert len(light["view"]["rotation_rad"]) == 3
    assert not (tmp_path / ".r.toon3d-ckpt").exists()


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    wide = tmp_path / "w.pt"
    torch.save(torch.zeros(1, 512), wide)
    nan = tmp_path / "nan.pt"
    torch.save(torch.full((1, 64), float("nan")), nan)
    for args, match in [(["--latent", str(wide)], "width 512"), (["--latent", str(nan)], "NaN"),
                        (["--seed", "0", "--instant", "--reconstructor", str(tmp_path / "none.safetensors")],
                         "not found"),
                        (["--seed", "0", "--format", "avi"], "unknown avi")]:
        code = _run(*args, "--out", str(tmp_path / "x"))
        err = capsys.readouterr().err
        assert code == 2 and match in err and "Traceback" not in err, err
    assert not (tmp_path / "x").exists()
