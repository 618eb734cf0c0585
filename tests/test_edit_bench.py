"""benchmarks/bench_edit.py: the matched-α interpolation and the table by hand, and a tiny run end to end."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from bench_modules import load_bench



@pytest.fixture(scope="module")
def bench():
    return load_bench("bench_edit")


def _sefa(alpha, target, ident, dlib):
    return {"alpha": alpha, "target": target, "id_all": ident, "id_readable": 2 * ident, "dlib": dlib}


def test_matched_sefa_interpolates_in_target_change(bench):
    sweep = [_sefa(1.0, 0.0, 0.01, 0.1), _sefa(2.0, 0.2, 0.03, 0.3), _sefa(4.0, 0.6, 0.07, 0.5)]
    m = bench.matched_sefa(sweep, 0.4)  # halfway between α 2 and α 4
    assert m["alpha"] == pytest.approx(3.0) and m["dlib"] == pytest.approx(0.4)
    assert m["id_all"] == pytest.approx(0.05) and m["id_readable"] == pytest.approx(0.10)
    assert bench.matched_sefa(sweep, 0.7) is None and bench.matched_sefa(sweep, -0.1) is None
    # A non-monotone sweep: the first bracketing pair walking up in α.
    bumpy = [_sefa(1.0, 0.0, 0.0, 0.0), _sefa(2.0, 0.4, 0.1, 0.2), _sefa(3.0, 0.2, 0.5, 0.9)]
    assert bench.matched_sefa(bumpy, 0.3)["alpha"] == pytest.approx(1.75)


def test_summary_and_markdown_table(bench):
    scores = {"target": np.array([0.2, -0.1]), "id_all": np.array([0.01, 0.03]),
              "id_readable": np.array([0.02, 0.04]), "dlib": np.array([0.1, 0.3])}
    s = bench.summary(scores, np.array([3.0, 5.0]))
    assert s["target"] == pytest.approx(0.05) and s["target_sd"] == pytest.approx(0.15)
    assert s["delta_norm"] == 4.0 and s["target_positive"] == 0.5 and s["dlib"] == pytest.approx(0.2)
    base = {"name": "smile", "param": "smile", "r2": 0.06, "direction": "3+"}
    rows = [{**base, "method": "sefa", **s},
            {**base, "method": "refined code", **s, "sefa_matched": _sefa(2.5, 0.05, 0.02, 0.25)},
            {**base, "method": "refined paper", **s, "sefa_matched": None}]
    lines = bench.markdown_table(rows).splitlines()
    cells = [len(re.findall(r"(?<!\\)\|", line)) for line in lines]  # unescaped pipes
    assert len(lines) == 5 and cells == [10] * 5
    assert lines[2] == ("| smile (smile, 0.06) | 3+ | sefa | 4.00 | +0.050 ± 0.150 (50%) | 0.0200 | 0.0300 | "
                        "0.2000 ± 0.1000 |  |")
    assert lines[3].endswith("| 2.50 / 0.0400 / 0.2500 |") and lines[4].endswith("| – |")
    timing = bench.timing_table([bench._timing("g", "code", [(1.0, 0.5), (3.0, 1.5), (2.0, 1.0)], 1, "ellipse")])
    assert timing.splitlines()[2] == "| g | code | 2.00 | 1.00 | 3 | 1 |"


def test_tiny_run_end_to_end(bench, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main(["--n", "2", "--names", "mouth_open,eyes_closed", "--modes", "code,paper", "--steps", "2",
                       "--sweep", "1,2", "--name-samples", "2", "--top", "2", "--timing-repeats", "1",
                       "--timing-256", "0", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert [r["method"] for r in record["rows"]] == ["sefa", "refined code", "refined paper"] * 2
    for row in record["rows"]:
        assert np.isfinite([row["target"], row["id_all"], row["dlib"]]).all() and row["dlib"] >= 0
    sefa = record["rows"][0]
    assert sefa["delta_norm"] == pytest.approx(3.0) and [s["alpha"] for s in sefa["sweep"]] == [3.0, 6.0]
    assert len(record["per_latent"]["mouth_open/refined_code"]["dlib"]) == 2
    assert [t["mode"] for t in record["timings"]] == ["code", "paper"]
    printed = capsys.readouterr().out
    assert record["table"] in printed and "| expression (oracle R²)" in printed
