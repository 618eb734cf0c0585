"""`toon3d render`: all exports from a depth map, and one-line errors for bad input."""

import numpy as np
import pytest
from PIL import Image

from toon3d.cli import main
from toon3d.io.mesh import load_mesh


def write_inputs(tmp_path, size=24):
    v, u = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    rho = (u / 0.6) ** 2 + (v / 0.8) ** 2
    depth = np.where(rho < 1, 1.0 - 0.04 * np.sqrt(np.clip(1 - rho, 0, None)), 1.02).astype(np.float32)
    np.save(tmp_path / "depth.npy", depth)
    albedo = np.zeros((size, size, 3), np.uint8)
    albedo[..., 0] = 200
    albedo[: size // 2, :, 2] = 255
    Image.fromarray(albedo).save(tmp_path / "albedo.png")
    return depth


def test_render_writes_every_export(tmp_path, capsys):
    size = 24
    write_inputs(tmp_path, size)
    out = tmp_path / "out"
    code = main(["render", "--depth", str(tmp_path / "depth.npy"), "--albedo", str(tmp_path / "albedo.png"),
                 "--out", str(out), "--frames", "4", "--format", "gif,mp4", "--light", "0.4", "0.6", "0.3", "0"])
    assert code == 0
    names = {p.name for p in out.iterdir()}
    assert {"mesh.obj", "mesh.mtl", "mesh.png", "mesh.glb", "normal.png", "depth.png", "depth16.png",
            "canonical.png", "relight.png", "turntable.gif", "turntable.mp4", "turntable_sheet.png"} <= names
    mesh = load_mesh(out / "mesh.glb")
    assert mesh.vertices.shape[0] == size * size + (size - 1) ** 2
    frame0 = np.asarray(Image.open(out / "turntable_sheet.png").convert("RGB"))
    assert frame0.std() > 10  # not blank
    # Re-running into the same folder needs --overwrite.
    code = main(["render", "--depth", str(tmp_path / "depth.npy"), "--out", str(out), "--frames", "1",
                 "--format", "gif"])
    assert code == 2
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("make, match", [
    (lambda p: np.save(p / "d.npy", np.full((8, 8), np.nan, np.float32)), "NaN or inf"),
    (lambda p: np.save(p / "d.npy", np.ones((8, 6), np.float32)), "square"),
    (lambda p: np.save(p / "d.npy", -np.ones((8, 8), np.float32)), "≤ 0"),
    (lambda p: None, "not found"),
    (lambda p: np.save(p / "d.npy", np.full((8, 8), 255.0, np.float32)), "Unsup3d units"),
])
def test_render_bad_depth_is_one_line(tmp_path, capsys, make, match):
    make(tmp_path)
    code = main(["render", "--depth", str(tmp_path / "d.npy"), "--out", str(tmp_path / "o"), "--frames", "1"])
    err = capsys.readouterr().err
    assert code == 2 and match in err and err.count("\n") == 1 and err.startswith("toon3d render: error:")
    assert not (tmp_path / "o").exists()


def test_render_bad_options(tmp_path, capsys):
    write_inputs(tmp_path, 16)
    base = ["render", "--depth", str(tmp_path / "depth.npy"), "--out", str(tmp_path / "o"), "--frames", "1"]
    assert main(base + ["--format", "avi"]) == 2
    assert "unknown avi" in capsys.readouterr().err
    assert main(base + ["--light", "-1", "0.5", "0", "0"]) == 2
    assert "--light" in capsys.readouterr().err
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    base[base.index("--out") + 1] = str(blocker / "o")
    assert main(base) == 2
    assert "error" in capsys.readouterr().err


def test_render_out_may_not_hold_its_inputs(tmp_path, capsys):
    out = tmp_path / "out"
    write_inputs(out.parent)
    assert main(["render", "--depth", str(tmp_path / "depth.npy"), "--out", str(out), "--frames", "1",
                 "--format", "gif"]) == 0
    capsys.readouterr()
    (out / "d.npy").write_bytes((tmp_path / "depth.npy").read_bytes())
    outside = ["--depth", str(tmp_path / "depth.npy")]
    for args in (["--depth", str(out / "d.npy")], [*outside, "--albedo", str(out / "canonical.png")],
                 [*outside, "--mask", str(out / "canonical.png")]):
        assert main(["render", *args, "--out", str(out), "--frames", "1", "--format", "gif", "--overwrite"]) == 2
        err = capsys.readouterr().err
        assert "contains the input" in err and "choose another --out" in err
    assert (out / "d.npy").is_file() and (out / "canonical.png").is_file()
