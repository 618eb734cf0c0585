"""A folder in the working directory named like a built-in model does not shadow the built-in."""

from __future__ import annotations

import pytest

from toon3d.errors import Toon3dError
from toon3d.models import resolve_generator
from toon3d.shape.instant import resolve_shape_model


def test_folder_named_like_a_builtin_does_not_shadow_it(tmp_path, monkeypatch):
    # `toon3d eval shape --out base` makes a folder `base`; the next command's `--ckpt base` must
    # still mean the built-in generator and reconstructor, not that folder.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "base").mkdir()
    (tmp_path / "toon").mkdir()
    assert resolve_generator("base").config["size"] >= 16
    nets, geometry, meta = resolve_shape_model("toon")
    assert geometry.size >= 16 and not nets.training


def test_missing_reconstructor_file_is_a_one_line_error(tmp_path):
    with pytest.raises(Toon3dError, match="not found; pass base, cartoon, toon"):
        resolve_shape_model(str(tmp_path / "nope.safetensors"))
