"""Atomic file/folder writes: all or nothing, normal permissions."""

import os
import stat

import pytest

from toon3d.errors import Toon3dError
from toon3d.io.atomic import OUTPUT_MARKER, atomic_dir, atomic_file, check_inputs


def test_atomic_file_appears_only_on_success(tmp_path):
    target = tmp_path / "a.txt"
    with pytest.raises(RuntimeError):
        with atomic_file(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic_file(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole"
    mode = stat.S_IMODE(os.stat(target).st_mode)
    assert mode & 0o044, "result must be readable by others like a normal file (umask permitting)"


def test_atomic_dir_replaces_and_refuses_non_empty(tmp_path):
    out = tmp_path / "ds"
    with atomic_dir(out) as tmp:
        (tmp / "x").write_text("1")
    assert (out / "x").read_text() == "1"
    with pytest.raises(Toon3dError, match="not empty"):
        with atomic_dir(out):
            pass
    with pytest.raises(ValueError):
        with atomic_dir(out, overwrite=True) as tmp:
            (tmp / "y").write_text("2")
            raise ValueError
    assert (out / "x").exists() and not (out / "y").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]


def test_atomic_dir_overwrite_only_replaces_toon3d_output(tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "photo.png").write_text("precious")
    with pytest.raises(Toon3dError, match="not written by toon3d; remove it yourself or choose another --out"):
        with atomic_dir(user, overwrite=True):
            pass
    assert (user / "photo.png").read_text() == "precious"
    out = tmp_path / "run"
    with atomic_dir(out) as tmp:
        (tmp / "a").write_text("1")
    assert (out / OUTPUT_MARKER).is_file()
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "b").write_text("2")
    assert (out / "b").is_file() and not (out / "a").exists()


def test_atomic_dir_refuses_out_holding_or_inside_an_input(tmp_path):
    src = tmp_path / "outer" / "src"
    src.mkdir(parents=True)
    (src / "img.png").write_text("x")
    ckpt = tmp_path / "models" / "550000.pt"
    ckpt.parent.mkdir()
    ckpt.write_text("w")
    cases = [(tmp_path / "outer", src, "contains the input"), (src, src, "contains the input"),
             (src / "sub", src, "is inside the input"), (ckpt.parent, ckpt, "contains the input"),
             (ckpt, ckpt, "contains the input")]
    for out, source, message in cases:
        with pytest.raises(Toon3dError, match=message) as info:
            with atomic_dir(out, overwrite=True, inputs=[None, source]):
                pass
        assert "choose another --out" in str(info.value) and "\n" not in str(info.value)
    assert (src / "img.png").is_file() and ckpt.is_file()
    with atomic_dir(tmp_path / "fresh", inputs=[src, ckpt, None]) as tmp:
        (tmp / "ok").write_text("1")
    check_inputs(tmp_path / "fresh", [src, ckpt])  # siblings are fine


def test_check_output_dir_refuses_before_any_work(tmp_path):
    from toon3d.io.atomic import check_output_dir

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("user data")
    with pytest.raises(Toon3dError, match="not empty"):
        check_output_dir(tmp_path / "out")
    with pytest.raises(Toon3dError, match="not written by toon3d"):
        check_output_dir(tmp_path / "out", overwrite=True)
    with pytest.raises(Toon3dError, match="contains the input"):
        check_output_dir(tmp_path, inputs=[tmp_path / "out" / "mine.txt"])
    check_output_dir(tmp_path / "new", inputs=[None])
    assert (tmp_path / "out" / "mine.txt").read_text() == "user data"
