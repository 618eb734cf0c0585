"""Expressions from another face: landmark measures → strengths of named directions (or morph weights).

The direction table (`toon3d.edit.naming.DirectionTable`) says, for each of G_base's top SeFa
directions, how far it moves each landmark measure (`toon3d.edit.landmarks.MEASURES`) in units
of the measure's spread over the generator's faces (z): ``slope[k,m]`` is the z-change for
``table.strength`` units of direction k. So one unit of W strength along sign·n_k moves
measure m by

    a[m] = sign · slope[k,m] / table.strength      (z per unit strength, `direction_response`).

A face's expression is a z-change from a reference, Δz[m] = (x[m] − x_ref[m]) / std[m]: from
the driving person's neutral frame or photo, or, for a single photo, from the table's mean face
(``table.mean``, the average of the generator's unedited faces, so an average expression gives
no edit). The strengths s [J] of J directions then solve a small bounded least-squares problem

    min_s  Σ_m (Σ_j a_j[m]·s_j − Δz[m])²  +  λ·Σ_j |a_j|²·s_j²,    lo_j ≤ s_j ≤ hi_j

(`solve_strengths`): one measure each for the named expressions (smile ← mouth width,
mouth_open ← mouth opening, eyes_closed ← eye opening, brows_up ← brow height), but a direction
usually moves several measures, and the solve shares a measure's change among the directions
that explain it. The penalty is scaled by each direction's own response, so λ
(`TransferSettings.ridge`) is relative: directions that do not overlap are shrunk by 1/(1+λ)
(1% at the default), and only directions so alike that the plain solve would trade large
opposite strengths are held back. Two names resolved to the same direction are one column.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from toon3d.edit.landmarks import MEASURES
from toon3d.edit.naming import DirectionTable
from toon3d.errors import Toon3dError

EXPRESSION_NAMES = ("smile", "mouth_open", "eyes_closed", "brows_up")
POSE_NAMES = ("yaw", "pitch")
EXPRESSION_MEASURES = ("mouth_width", "mouth_open", "eye_open", "brow_height")
POSE_MEASURES = ("yaw", "pitch")


@dataclass(frozen=True)
class TransferSettings:
    """How measures become strengths."""

    pose: bool = False                # also transfer head yaw/pitch (measures and names)
    ridge: float = 0.01               # Tikhonov weight relative to each direction's squared response
    strength_limit: float = 6.0       # |strength| bound in W units (twice the default edit strength of 3)
    min_strength: float = 0.25        # a photo's edits weaker than this (W units) are left out

    @property
    def measures(self) -> tuple[str, ...]:
        """The landmark measures the solve fits."""
        return EXPRESSION_MEASURES + (POSE_MEASURES if self.pose else ())

    @property
    def names(self) -> tuple[str, ...]:
        """The named directions a photo's expression is expressed in."""
        return EXPRESSION_NAMES + (POSE_NAMES if self.pose else ())


def measure_columns(measures: tuple[str, ...]) -> list[int]:
    """Indices of `measures` in `MEASURES` (a one-line error for an unknown one)."""
    unknown = [m for m in measures if m not in MEASURES]
    if unknown:
        raise Toon3dError(f"unknown landmark measure(s) {', '.join(unknown)}; use {', '.join(MEASURES)}")
    return [MEASURES.index(m) for m in measures]


def direction_response(table: DirectionTable, index: int, sign: int, measures: tuple[str, ...]) -> np.ndarray | None:
    """z-change [len(measures)] of each measure per unit W strength along sign·n_index; None when the
    table did not measure that direction."""
    if index not in table.indices:
        return None
    row = table.indices.index(index)
    return sign * table.slope[row, measure_columns(measures)] / table.strength


def z_change(values: np.ndarray, reference: np.ndarray, table: DirectionTable,
             measures: tuple[str, ...]) -> np.ndarray:
    """Measures [...,6] (`MEASURES`, IOD units) minus a reference [6] → z-changes [...,len(measures)].

    A measure that never varied over the table's faces (std 0) gets z-change 0, as in the table.
    """
    cols = measure_columns(measures)
    std = np.asarray(table.std, dtype=np.float64)[cols]
    scale = np.where(std > 1e-9, std, np.inf)
    diff = np.asarray(values, dtype=np.float64)[..., cols] - np.asarray(reference, dtype=np.float64)[cols]
    return diff / scale


def population_reference(table: DirectionTable) -> np.ndarray:
    """The table's mean face, [6] measures: the reference of a single photo."""
    if table.mean is None:
        raise Toon3dError("this direction table (directions.json) predates the mean face a single photo is compared "
                          "with; rerun toon3d directions, or pass --neutral PHOTO of the same person")
    return np.asarray(table.mean, dtype=np.float64)


def solve_strengths(dz: np.ndarray, response: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                    ridge: float = 0.01) -> np.ndarray:
    """Bounded ridge least squares: z-changes [...,M] and responses [J,M] (z per unit) → strengths [...,J].

    Each row of `dz` is solved on its own: min |sᵀ·response − dz|² + ridge·Σ_j |response_j|²·s_j²,
    lower ≤ s ≤ upper. NaN rows of `dz` give NaN rows.
    """
    from scipy.optimize import lsq_linear

    a = np.asarray(response, dtype=np.float64)
    if a.ndim != 2:
        raise Toon3dError(f"responses must be [J,M], got shape {a.shape}")
    lower = np.broadcast_to(np.asarray(lower, dtype=np.float64), (a.shape[0],))
    upper = np.broadcast_to(np.asarray(upper, dtype=np.float64), (a.shape[0],))
    if (lower > upper).any():
        raise Toon3dError("each strength's lower bound must not exceed its upper bound")
    dz = np.asarray(dz, dtype=np.float64)
    flat = dz.reshape(-1, a.shape[1])
    out = np.full((flat.shape[0], a.shape[0]), np.nan)
    if a.shape[0] == 0:
        return out.reshape(*dz.shape[:-1], 0)
    norms = np.linalg.norm(a, axis=1)
    # a direction that moves nothing is held at 0 by a penalty of its own (1e-6 of the typical response)
    floor = 1e-6 * (float(norms.max()) if norms.max() > 0 else 1.0)
    reg = np.diag(np.sqrt(max(ridge, 1e-12)) * np.maximum(norms, floor))
    system = np.concatenate([a.T, reg], 0)  # [M+J, J]
    free = lower == upper
    for i, row in enumerate(flat):
        if not np.isfinite(row).all():
            continue
        target = np.concatenate([row, np.zeros(a.shape[0])])
        if free.all():
            out[i] = lower
            continue
        # lsq_linear needs lower < upper; pinned strengths are moved to the right-hand side.
        move = ~free
        rhs = target - system[:, free] @ lower[free]
        sol = lsq_linear(system[:, move], rhs, bounds=(lower[move], upper[move]), method="bvls")
        out[i, move] = sol.x
        out[i, free] = lower[free]
    return out.reshape(*dz.shape[:-1], a.shape[0])


@dataclass
class NamedStrengths:
    """A photo's expression as strengths of named directions, and how they were found."""

    strengths: dict[str, float]          # name → W strength (every solved name, before `min_strength`)
    edits: list[tuple[str, float]]       # the (name, strength) edits an avatar gets (|s| ≥ min_strength)
    dz: dict[str, float]                 # measure → z-change from the reference
    fitted: dict[str, float]             # measure → z-change the strengths explain
    directions: dict[str, dict]          # name → {"index", "sign", "response"} (z per unit)
    notes: list[str] = field(default_factory=list)

    def record(self) -> dict:
        """JSON-ready record."""
        return {"strengths": self.strengths, "edits": [[n, s] for n, s in self.edits], "z_change": self.dz,
                "z_change_explained": self.fitted, "directions": self.directions, "notes": list(self.notes)}


def named_strengths(values: np.ndarray, reference: np.ndarray, table: DirectionTable,
                    settings: TransferSettings | None = None) -> NamedStrengths:
    """A face's measures [6] against a reference [6] → strengths of the named directions (`NamedStrengths`).

    Names the table cannot resolve are left out (with a note); names sharing a direction are one
    column, reported under the first name (the others listed in its record).
    """
    settings = settings or TransferSettings()
    measures = settings.measures
    notes: list[str] = []
    columns: dict[int, dict] = {}
    for name in settings.names:
        try:
            index, sign = table.resolve(name)
        except Toon3dError as err:
            notes.append(f"{name}: left out ({err})")
            continue
        response = direction_response(table, index, sign, measures)
        if response is None:
            notes.append(f"{name}: left out (direction {index} is not in the table)")
            continue
        if index in columns:
            first = columns[index]
            first["shared_with"].append(name)
            notes.append(f"{name} resolves to direction {index} like {first['name']}: one strength for both, "
                         f"under {first['name']}")
            continue
        columns[index] = {"name": name, "index": index, "sign": sign, "response": response, "shared_with": []}
    if not columns:
        raise Toon3dError("no named expression direction is available (" + "; ".join(notes) + "); name the "
                          "directions first (toon3d directions) or use another G_base")
    cols = list(columns.values())
    response = np.stack([c["response"] for c in cols])
    dz = z_change(values, reference, table, measures)
    limit = settings.strength_limit
    s = solve_strengths(dz, response, -limit, limit, settings.ridge)
    fitted = s @ response
    strengths = {c["name"]: float(v) for c, v in zip(cols, s)}
    edits = [(c["name"], round(float(v), 3)) for c, v in zip(cols, s) if abs(v) >= settings.min_strength]
    for c, v in zip(cols, s):
        if abs(abs(v) - limit) < 1e-6:
            notes.append(f"{c['name']}: clamped at {v:+.1f} (the photo asks for more than ±{limit:g})")
    directions = {c["name"]: {"index": c["index"], "sign": c["sign"], "shared_with": c["shared_with"],
                              "response": dict(zip(measures, map(float, c["response"])))} for c in cols}
    return NamedStrengths(strengths, edits, dict(zip(measures, map(float, dz))),
                          dict(zip(measures, map(float, fitted))), directions, notes)


@dataclass(frozen=True)
class MorphTarget:
    """One morph target of an avatar: the edit sign·strength·n_index (nominal, before refinement)."""

    name: str
    index: int
    sign: int
    strength: float


def target_weights(dz: np.ndarray, targets: list[MorphTarget], table: DirectionTable,
                   weight_range: tuple[float, float] = (0.0, 1.0),
                   settings: TransferSettings | None = None) -> tuple[np.ndarray, list[str]]:
    """z-changes [T,M] (settings.measures) → morph weights [T,J] in `weight_range`, and notes.

    Weight = strength wanted / the target's strength, solved jointly over every target. A target
    whose direction the table did not measure keeps weight 0 (noted); NaN rows stay NaN.
    """
    settings = settings or TransferSettings()
    lo, hi = weight_range
    if not lo <= 0.0 <= hi:
        raise Toon3dError(f"the weight range must contain 0 (the neutral face), got {weight_range}")
    notes: list[str] = []
    rows, used = [], []
    for j, t in enumerate(targets):
        response = direction_response(table, t.index, t.sign, settings.measures)
        if response is None:
            notes.append(f"{t.name}: direction {t.index} is not in the direction table; its weight stays 0")
            continue
        rows.append(response * t.strength)  # z per unit weight
        used.append(j)
    dz = np.asarray(dz, dtype=np.float64)
    weights = np.zeros((dz.shape[0], len(targets)))
    weights[~np.isfinite(dz).all(1)] = np.nan
    if rows:
        solved = solve_strengths(dz, np.stack(rows), lo, hi, settings.ridge)
        weights[:, used] = solved
    return weights, notes
