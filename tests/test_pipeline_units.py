"""Avatar pipeline pieces that need no models: expression parsing, settings checks, the resumable work folder."""

import json

import pytest

from toon3d.errors import Toon3dError
from toon3d.pipeline import AvatarSettings, WorkFolder, check_settings, expression_key, parse_expression


def test_parse_expression():
    assert parse_expression("smile=+3") == ("smile", 3.0)
    assert parse_expression("mouth_open=-1.5") == ("mouth_open", -1.5)
    assert parse_expression("eyes_closed") == ("eyes_closed", 3.0)
    assert parse_expression("4=2") == ("4", 2.0)
    assert expression_key("4", 2.0) == "direction4"
    for bad, match in [("grin=+2", "unknown expression"), ("smile=abc", "not a number"),
                       ("smile=nan", "finite"), ("smile=0", "non-zero"), ("=3", "no name")]:
        with pytest.raises(Toon3dError, match=match):
            parse_expression(bad)


def test_check_settings_rejects_duplicates_and_bad_values():
    check_settings(AvatarSettings())
    with pytest.raises(Toon3dError, match="different expression"):
        check_settings(AvatarSettings(expressions=(("smile", 3.0), ("smile", 2.0))))
    with pytest.raises(Toon3dError, match="--refine"):
        check_settings(AvatarSettings(refine="magic"))
    with pytest.raises(Toon3dError, match="--format"):
        check_settings(AvatarSettings(formats=("avi",)))


def _record(**changes):
    return {"source": {"seed": 0}, "settings": {**AvatarSettings().record(), **changes}}


def test_work_folder_stages_are_atomic_and_resumable(tmp_path):
    out = tmp_path / "avatar"
    work = WorkFolder(out, _record(), resume=False, overwrite=False)
    folder, ran = work.run("faces", lambda f: (f / "x.txt").write_text("1") and None)
    assert ran and (folder / "x.txt").read_text() == "1" and work.done("faces")

    def boom(f):
        (f / "half.txt").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        work.run("edits", boom)
    assert not work.done("edits") and not (work.path / "edits").exists()
    assert not any(p.name.endswith(".partial") for p in work.path.iterdir())
    # A second run without --resume is refused; with --resume it skips the finished stage.
    with pytest.raises(Toon3dError, match="--resume"):
        WorkFolder(out, _record(), resume=False, overwrite=False)
    again = WorkFolder(out, _record(), resume=True, overwrite=False)
    calls = []
    _, ran = again.run("faces", lambda f: calls.append(1))
    assert not ran and not calls
    assert json.loads((again.path / "faces" / "stage.json").read_text())["stage"] == "faces"


def test_resume_with_other_settings_names_the_setting(tmp_path):
    out = tmp_path / "avatar"
    WorkFolder(out, _record(), resume=False, overwrite=False)
    with pytest.raises(Toon3dError, match="truncation"):
        WorkFolder(out, _record(truncation=0.5), resume=True, overwrite=False)


def test_shipped_direction_table_belongs_to_the_shipped_base(monkeypatch, tmp_path):
    """The avatar uses base_directions.json only for exactly the weights it was measured on."""
    import torch

    import toon3d.edit.naming as naming
    import toon3d.models as models
    from toon3d.pipeline import AvatarModels

    if not models.builtin_directions_path("base").is_file():
        pytest.skip("no shipped direction table")

    def no_measuring(*args, **kwargs):
        raise AssertionError("measured although a matching table ships")

    monkeypatch.setattr(naming, "measure_directions", no_measuring)
    factor, table = AvatarModels(AvatarSettings(), torch.device("cpu")).directions(progress=False)
    # fails when base.safetensors changed without `tools/ship_directions.py` being run again
    assert table is not None and table.checksum == naming.factor_checksum(factor, len(table.indices))
    assert table.resolve("smile")[0] in table.indices

    # a table of other weights (checksum differs) is ignored: the directions are measured afresh
    stale = json.loads(models.builtin_directions_path("base").read_text())
    stale["checksum"] = "0" * 64
    (tmp_path / "base_directions.json").write_text(json.dumps(stale))
    monkeypatch.setattr(models, "builtin_directions_path", lambda name: tmp_path / f"{name}_directions.json")
    calls = []
    monkeypatch.setattr(naming, "measure_directions", lambda *a, **k: calls.append(1) or table)
    AvatarModels(AvatarSettings(), torch.device("cpu")).directions(progress=False)
    assert calls == [1]
