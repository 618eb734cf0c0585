"""Result tables of `toon3d eval`: rows of mean ± std cells, rendered as Markdown and as JSON.

A `Table` has column groups (e.g. one per world or style) and rows (one per method or
ablation). A cell holds the mean, the population standard deviation and the sample count of
one metric, or nothing plus a note ("no toon fine-tune without the structure loss exists"):
a missing result is written as "—" and explained under the table, never invented.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from toon3d.errors import Toon3dError

MISSING = "—"


@dataclass
class Cell:
    """One metric of one row: mean, population std and count of per-item values; None when not measured."""

    mean: float | None = None
    std: float | None = None
    n: int | None = None
    note: str = ""

    @classmethod
    def of(cls, values: torch.Tensor | list[float], note: str = "") -> Cell:
        """The mean, population std and count of values [N] (N ≥ 1, finite)."""
        x = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
        if x.numel() == 0:
            raise Toon3dError("a table cell needs at least one value")
        if not torch.isfinite(x).all():
            raise Toon3dError("a table cell got NaN or inf values; check the scores it summarises")
        mean = float(x.mean())
        return cls(mean, math.sqrt(float(((x - mean) ** 2).mean())), int(x.numel()), note)

    @classmethod
    def single(cls, value: float, note: str = "") -> Cell:
        """A single number (no spread), e.g. an FD computed over a whole set."""
        if not math.isfinite(value):
            raise Toon3dError(f"a table cell got a non-finite value {value}; check the metric that produced it")
        return cls(float(value), None, None, note)

    @classmethod
    def missing(cls, note: str) -> Cell:
        """No result, with the reason written under the table."""
        return cls(None, None, None, note)

    def text(self, digits: int) -> str:
        """'0.802 ± 0.120', '0.258' or '—'."""
        if self.mean is None:
            return MISSING
        out = f"{self.mean:.{digits}f}"
        if self.std is not None:
            out += f" ± {self.std:.{digits}f}"
        return out

    def as_dict(self) -> dict:
        """JSON-ready {'mean', 'std', 'n', 'note'} (None where absent)."""
        return {"mean": self.mean, "std": self.std, "n": self.n, "note": self.note or None}


@dataclass
class Column:
    """A metric column: `key` in rows' cells, a header label, and the digits it is printed with."""

    key: str
    label: str
    digits: int = 3


@dataclass
class Row:
    """A table row: label, cells by column key (absent keys print '—'), an optional note."""

    label: str
    cells: dict[str, Cell] = field(default_factory=dict)
    note: str = ""
    key: str = ""


@dataclass
class Table:
    """A titled table with columns, rows and notes (printed under it)."""

    title: str
    columns: list[Column]
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, row: Row) -> Row:
        """Append a row whose cell keys are all known columns; returns it."""
        known = {c.key for c in self.columns}
        unknown = sorted(set(row.cells) - known)
        if unknown:
            raise ValueError(f"row {row.label!r} has cells for unknown columns {unknown}")
        self.rows.append(row)
        return row

    def _cell_notes(self) -> list[str]:
        seen: list[str] = []
        for row in self.rows:
            for text in [row.note] + [c.note for c in row.cells.values()]:
                if text and text not in seen:
                    seen.append(text)
        return seen

    def to_markdown(self) -> str:
        """The table as GitHub Markdown: title, header, one line per row, then the notes."""
        header = "| | " + " | ".join(c.label for c in self.columns) + " |"
        rule = "|---|" + "---|" * len(self.columns)
        lines = [f"## {self.title}", "", header, rule]
        for row in self.rows:
            cells = [row.cells.get(c.key, Cell()).text(c.digits) for c in self.columns]
            lines.append(f"| {row.label} | " + " | ".join(cells) + " |")
        notes = self._cell_notes() + list(self.notes)
        if notes:
            lines.append("")
            lines += [f"- {n}" for n in notes]
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict:
        """JSON-ready dict: title, columns, rows (label, key, note, cells by column key), notes."""
        return {"title": self.title,
                "columns": [{"key": c.key, "label": c.label} for c in self.columns],
                "rows": [{"label": r.label, "key": r.key or r.label, "note": r.note or None,
                          "cells": {k: v.as_dict() for k, v in r.cells.items()}} for r in self.rows],
                "notes": list(self.notes)}
