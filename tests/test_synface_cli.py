"""`toon3d data synface`: a tiny data set in the folder format, and one-line errors for bad input."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from toon3d.cli import main
from toon3d.data.dataset import FaceDataset
from toon3d.synth.face_params import PARAM_NAMES, SynFaceParams, face_seeds
from toon3d.synth.synface import render_synface


def test_synface_cli_writes_tiny_dataset(tmp_path, capsys):
    out = tmp_path / "sf"
    rc = main(["data", "synface", "--n", "4", "--size", "64", "--out", str(out), "--seed", "2", "--batch", "3"])
    assert rc == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["format"] == "toon3d-folder" and meta["kind"] == "synface"
    assert meta["size"] == 64 and meta["count"] == 4 and meta["seed"] == 2 and meta["far"] == 1.2
    # The ground truth's camera: pixel centres (pixel_offset 0, not the renderer's default 0.5).
    assert meta["pixel_offset"] == 0.0 and meta["fov_deg"] == 10.0 and meta["rot_center_depth"] == 1.0
    assert sorted(os.listdir(out / "images")) == [f"{i:06d}.png" for i in range(4)]
    assert sorted(os.listdir(out / "gt")) == [f"{i:06d}.npz" for i in range(4)]
    assert (out / "contact_sheet.png").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial folder left

    labels = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
    assert [r["index"] for r in labels] == [0, 1, 2, 3]
    assert set(PARAM_NAMES) <= set(labels[0]) and labels[1]["seed"] == face_seeds(4, 2)[1]

    gt = np.load(out / "gt" / "000001.npz")
    assert gt["canon_depth"].shape == (64, 64) and gt["canon_depth"].dtype == np.float32
    assert gt["depth"].shape == (64, 64) and gt["normal"].shape == (64, 64, 3)
    assert gt["seg"].dtype == np.uint8 and gt["seg"].max() <= 7 and gt["mask"].dtype == np.uint8
    assert np.all(gt["depth"][gt["mask"] == 0] == np.float32(1.2))
    # the stored face is the one the seed renders
    ref = render_synface(SynFaceParams.from_seeds([labels[1]["seed"]]), 64)
    np.testing.assert_allclose(gt["depth"], ref["depth"][0].numpy(), atol=1e-6)
    assert {k: meta[k] for k in ref["camera"]} == ref["camera"]
    image = np.asarray(Image.open(out / "images" / "000001.png"))
    ref_u8 = ((ref["image"][0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5 + 0.5).numpy().astype(np.uint8)
    assert np.abs(image.astype(int) - ref_u8.astype(int)).max() <= 1

    item = FaceDataset(out, flip=False)[2]
    assert tuple(item["image"].shape) == (3, 64, 64) and item["normal"].numel() == 3 * 64 * 64
    assert item["depth"].shape[-2:] == (64, 64) and item["seg"].shape[-2:] == (64, 64)
    assert "wrote 4 SynFace images" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--n", "0"], "n must be a positive integer"),
    (["--n", "-3"], "n must be a positive integer"),
    (["--n", "two"], "--n must be an integer"),
    (["--size", "32"], "outside 64-256"),
    (["--size", "512"], "outside 64-256"),
    (["--size", "96.5"], "--size must be an integer"),
    (["--batch", "0"], "batch must be a positive integer"),
])
def test_synface_cli_bad_numbers(tmp_path, capsys, args, message):
    out = tmp_path / "sf"
    rc = main(["data", "synface", "--n", "2", "--size", "64", "--out", str(out), *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and "\n" not in err and err.startswith("toon3d data: error:")
    assert not out.exists()


def test_synface_cli_refuses_non_empty_or_unwritable_out(tmp_path, capsys):
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("x")
    assert main(["data", "synface", "--n", "1", "--size", "64", "--out", str(full)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not empty" in err and "--overwrite" in err and "\n" not in err
    assert (full / "keep.txt").read_text() == "x"

    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    assert main(["data", "synface", "--n", "1", "--size", "64", "--out", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err.strip()
    assert "error:" in err and "\n" not in err

    # --overwrite replaces only a folder toon3d wrote (it holds the marker file).
    assert main(["data", "synface", "--n", "1", "--size", "64", "--out", str(full), "--overwrite"]) == 2
    assert "not written by toon3d" in capsys.readouterr().err and (full / "keep.txt").is_file()
    (full / ".toon3d-output").write_text("")
    assert main(["data", "synface", "--n", "1", "--size", "64", "--out", str(full), "--overwrite"]) == 0
    assert not (full / "keep.txt").exists() and (full / "meta.json").is_file()
