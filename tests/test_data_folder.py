"""The folder dataset writer/reader: layout, atomicity, validation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from toon3d.data import folder
from toon3d.errors import Toon3dError


def _image(value: int, size: int = 16) -> np.ndarray:
    return np.full((size, size, 3), value, np.uint8)


def test_writer_produces_the_documented_layout(tmp_path):
    out = tmp_path / "ds"
    with folder.FolderWriter(out, "synface", 16, seed=3, created_by="test", extra_meta={"far": 1.2}) as w:
        w.add(_image(10), gt={"depth": np.ones((16, 16), np.float32)}, label={"yaw_deg": 5.0})
        w.add(torch.zeros(3, 16, 16), label={"yaw_deg": -5.0})
    meta = folder.read_meta(out)
    assert meta == {"format": "toon3d-folder", "version": 1, "kind": "synface", "size": 16, "count": 2,
                    "seed": 3, "created_by": "test", "far": 1.2}
    assert folder.image_path(out, 1) == out / "images" / "000001.png"
    with Image.open(folder.image_path(out, 1)) as im:
        assert im.mode == "RGB" and im.size == (16, 16)
        assert np.asarray(im)[0, 0].tolist() == [128, 128, 128]  # 0.0 in [-1,1] → 127.5 rounds up
    assert folder.gt_path(out, 0).is_file() and not folder.gt_path(out, 1).exists()
    assert folder.read_labels(out) == [{"index": 0, "yaw_deg": 5.0}, {"index": 1, "yaw_deg": -5.0}]
    assert (out / "contact_sheet.png").is_file()


def test_out_of_order_puts_must_end_contiguous(tmp_path):
    with folder.FolderWriter(tmp_path / "a", "images", 8) as w:
        w.put(1, _image(1, 8))
        w.put(0, _image(0, 8))
    assert folder.read_meta(tmp_path / "a")["count"] == 2
    with pytest.raises(RuntimeError, match="contiguous"):
        with folder.FolderWriter(tmp_path / "b", "images", 8) as w:
            w.put(0, _image(0, 8))
            w.put(2, _image(2, 8))
    assert not (tmp_path / "b").exists()


def test_a_failure_leaves_nothing_behind(tmp_path):
    with pytest.raises(KeyError):
        with folder.FolderWriter(tmp_path / "ds", "images", 8) as w:
            w.add(_image(0, 8))
            raise KeyError("boom")
    assert list(tmp_path.iterdir()) == []


def test_wrong_image_size_and_kind_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="kind"):
        folder.FolderWriter(tmp_path / "x", "anime", 8)
    with pytest.raises(ValueError, match="size"):
        with folder.FolderWriter(tmp_path / "y", "images", 8) as w:
            w.add(_image(0, 16))


def test_non_empty_out_needs_overwrite(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(Toon3dError, match="--overwrite"):
        with folder.FolderWriter(out, "images", 8) as w:
            w.add(_image(0, 8))
    assert (out / "keep.txt").is_file()
    with pytest.raises(Toon3dError, match="not written by toon3d"):
        with folder.FolderWriter(out, "images", 8, overwrite=True) as w:
            w.add(_image(0, 8))
    assert (out / "keep.txt").is_file()
    (out / ".toon3d-output").write_text("")  # a folder toon3d wrote may be replaced
    with folder.FolderWriter(out, "images", 8, overwrite=True) as w:
        w.add(_image(0, 8))
    assert not (out / "keep.txt").exists() and folder.read_meta(out)["count"] == 1


def test_read_meta_errors_are_one_line(tmp_path):
    with pytest.raises(Toon3dError, match="not found"):
        folder.read_meta(tmp_path / "missing")
    with pytest.raises(Toon3dError, match="no meta.json"):
        folder.read_meta(tmp_path)
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(Toon3dError, match="not valid JSON"):
        folder.read_meta(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(Toon3dError, match="not a toon3d-folder"):
        folder.read_meta(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({"format": "toon3d-folder", "version": 9}))
    with pytest.raises(Toon3dError, match="version") as err:
        folder.read_meta(tmp_path)
    assert "\n" not in str(err.value)


def test_contact_sheet_shrinks_large_tiles(tmp_path):
    with folder.FolderWriter(tmp_path / "big", "images", 200) as w:
        for i in range(3):
            w.add(_image(40 * i, 200))
    with Image.open(tmp_path / "big" / "contact_sheet.png") as sheet:
        # 2 columns x 2 rows of 128px tiles with 2px gaps.
        assert sheet.size == (2 * 130 + 2, 2 * 130 + 2)
        assert sheet.getpixel((2 + 130 + 64, 2 + 64)) == (40, 40, 40)
