"""Atomic file/folder writes: all or nothing, normal permissions."""

import os
import stat

import pytest

from toon3d.errors import Toon3dError
from toon3d.io.atomic import atomic_dir, atomic_file


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
