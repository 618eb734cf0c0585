"""The table writer and the resumable evaluation folder of `toon3d eval`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from toon3d.errors import Toon3dError
from toon3d.io.eval_store import ARRAY_KINDS, ShapeEvalFolder, load_array, save_array, write_tables
from toon3d.metrics.tables import MISSING, Cell, Column, Row, Table


def test_cell_mean_and_population_std():
    cell = Cell.of([1.0, 2.0, 3.0, 6.0])
    assert cell.mean == pytest.approx(3.0)
    assert cell.std == pytest.approx(math.sqrt((4 + 1 + 0 + 9) / 4))
    assert cell.n == 4
    assert cell.text(2) == "3.00 ± 1.87"
    assert Cell.single(0.25).text(3) == "0.250"
    assert Cell.missing("why").text(3) == MISSING


@pytest.mark.parametrize("values", [[], [1.0, float("nan")], [float("inf")]])
def test_cell_refuses_empty_or_non_finite(values):
    with pytest.raises(Toon3dError) as info:
        Cell.of(values)
    assert "\n" not in str(info.value)


def _table() -> Table:
    table = Table("T", [Column("side", "SIDE", 3), Column("mad", "MAD", 1)])
    table.add(Row("prior", {"side": Cell.of([1.0, 3.0]), "mad": Cell.of([10.0, 20.0])}, key="prior"))
    table.add(Row("toon w/o structure", {"side": Cell.missing("no such fine-tune exists")}, key="nostruct"))
    table.notes.append("protocol note")
    return table


def test_markdown_rows_cells_and_notes():
    text = _table().to_markdown()
    lines = text.splitlines()
    assert lines[0] == "## T"
    assert "| | SIDE | MAD |" in lines
    assert "| prior | 2.000 ± 1.000 | 15.0 ± 5.0 |" in lines
    # a missing result prints as a dash and its reason is written under the table, once
    assert f"| toon w/o structure | {MISSING} | {MISSING} |" in lines
    assert text.count("no such fine-tune exists") == 1
    assert lines[-1] == "- protocol note"


def test_json_round_trip_and_unknown_column():
    data = json.loads(json.dumps(_table().to_json()))
    prior = data["rows"][0]
    assert prior["key"] == "prior" and prior["cells"]["side"]["mean"] == pytest.approx(2.0)
    assert prior["cells"]["mad"]["n"] == 2
    assert data["rows"][1]["cells"]["side"]["mean"] is None
    with pytest.raises(ValueError):
        _table().add(Row("bad", {"nope": Cell.single(1.0)}))


def test_write_tables_and_arrays(tmp_path):
    md, js = write_tables(tmp_path, _table().to_markdown(), {"table": _table().to_json()})
    assert md.read_text().startswith("## T")
    assert json.loads(js.read_text())["table"]["title"] == "T"
    x = torch.linspace(0.9, 1.1, 16).view(4, 4)
    path = save_array(tmp_path / "a" / "0000.npy", x)
    assert np.load(path).dtype == np.float32
    assert torch.equal(load_array(path), x)
    assert not list(tmp_path.glob("a/.*.tmp"))


def test_folder_config_resume_and_mismatch(tmp_path):
    root = tmp_path / "eval"
    folder = ShapeEvalFolder(root)
    assert folder.open({"preset": "tiny", "settings": {"image_size": 32}}) is False
    assert ShapeEvalFolder(root).open({"preset": "tiny", "settings": {"image_size": 32}}) is True
    with pytest.raises(Toon3dError) as info:
        ShapeEvalFolder(root).open({"preset": "tiny", "settings": {"image_size": 64}})
    assert "settings.image_size" in str(info.value) and "\n" not in str(info.value)
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "file.txt").write_text("x")
    with pytest.raises(Toon3dError):
        ShapeEvalFolder(stranger).open({"preset": "tiny"})


def test_result_files_and_done_marker(tmp_path):
    folder = ShapeEvalFolder(tmp_path / "eval")
    folder.open({"preset": "tiny"})
    assert not folder.is_done("synface", "prior", 3)
    ckpt = folder.checkpoint_dir("synface", "prior", 3)
    ckpt.mkdir(parents=True)
    arrays = {k: torch.full((4, 4), float(i)) for i, k in enumerate(ARRAY_KINDS)}
    with pytest.raises(ValueError):
        folder.save_result("synface", "prior", 3, {"pred": arrays["pred"]}, {"side_x100": 1.0})
    assert not folder.is_done("synface", "prior", 3)
    folder.save_result("synface", "prior", 3, arrays, {"side_x100": 1.5, "mad_deg": 20.0})
    assert folder.is_done("synface", "prior", 3)
    assert not ckpt.exists()  # the finished image's training state is dropped
    for i, kind in enumerate(ARRAY_KINDS):
        expected = tmp_path / "eval" / "synface" / "prior" / kind / "0003.npy"
        assert folder.array_path("synface", "prior", kind, 3) == expected
        assert torch.equal(folder.load("synface", "prior", kind, 3), torch.full((4, 4), float(i)))
    assert folder.load_scores("synface", "prior", [0, 3]) == [{"side_x100": 1.5, "mad_deg": 20.0}]
