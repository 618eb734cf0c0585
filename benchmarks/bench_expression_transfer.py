"""`--expression-from PHOTO` end to end on SynFace pairs: the expression wanted against the one the avatar wears.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_expression_transfer.py [--pairs 32] [--avatars 4] \
        [--refine off|code] [--json out.json]

Each pair is one SynFace face (frontal, data set 100+i, face 0; `tests/synface_expression.py`)
rendered at `--size` px neutral and with known expression parameters (smile, mouth_open,
eyes_closed, brows_raised, each drawn uniformly in [0, 1] by a seeded generator). The
expressive render goes through `toon3d avatar --expression-from`'s path onto a built-in avatar
(`--seed` a, a = i mod `--avatars`, truncation 0.7, on the built-in base):

  1. dlib's landmarks in the layout's cut, 9 cuts (`ExpressionReader.measure_photo`);
  2. strengths of the named directions of G_base's direction table (`named_strengths`; the
     table measured as the pipeline measures it, `AvatarModels.directions`), against two
     references: the same face's neutral render (`--neutral`) and the table's mean face (no
     `--neutral`); strengths under 0.25 are dropped, as the pipeline drops them;
  3. the edits on the avatar's w: the sum of each edit's Δw (`--refine off`: strength·sign·n;
     `code`: Stage 2's refinement of each edit as `stage_edits` runs it), the 2D counterpart of
     the GLB's morph targets all at weight 1 (`expression_from`'s end pose);
  4. the attribute oracle (`toon3d/faces/attribute_oracle.py`) reads the human face G_base draws
     from that code and from the avatar's own w: achieved = the difference, in parameter units.

Printed per expression: Pearson r and mean |achieved − target| over the pairs, the least-squares
gain (achieved ≈ gain·target), and two yardsticks: the oracle reading the source renders
themselves (expressive − neutral: the instrument's own accuracy, its held-out R² beside it) and
the "no transfer" MAE (achieved = 0); and each named direction's reach: the oracle change of its
own parameter at the ±6 strength limit, from the direction table (what the best-case transfer
could show). Pairs where dlib finds no face are counted and left out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from synface_expression import faces, render_uint8  # noqa: E402

# SynFace parameter the source carries → the name of the direction that should reproduce it.
TARGETS = (("smile", "smile"), ("mouth_open", "mouth_open"), ("eyes_closed", "eyes_closed"),
           ("brows_raised", "brows_up"))
FACE_SEED = 100
EXPRESSION_SEED = 2026


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of two [N] arrays (NaN when either is constant)."""
    if a.std() < 1e-12 or b.std() < 1e-12:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def source_pairs(count: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, torch.Tensor, torch.Tensor]:
    """(neutral [N,S,S,3] uint8, expressive [N,S,S,3] uint8, targets [N,4], neutral and expressive renders
    [N,3,S,S] in [-1,1]) for SynFace pairs i = 0..count-1."""
    from toon3d.synth.synface import render_synface

    rng = np.random.default_rng(EXPRESSION_SEED)
    targets = rng.uniform(0.0, 1.0, size=(count, len(TARGETS)))
    neutral, expressive, tn, te = [], [], [], []
    for i in range(count):
        face = faces(1, FACE_SEED + i)
        posed = face.replace(**{param: float(targets[i, j]) for j, (param, _) in enumerate(TARGETS)})
        neutral.append(render_uint8(face, size)[0])
        expressive.append(render_uint8(posed, size)[0])
        with torch.no_grad():
            tn.append(render_synface(face, size)["image"].clamp(-1, 1))
            te.append(render_synface(posed, size)["image"].clamp(-1, 1))
    return np.stack(neutral), np.stack(expressive), targets, torch.cat(tn), torch.cat(te)


def avatar_w(models, seed: int) -> torch.Tensor:
    """The built-in avatar's w [1,D] for `--seed seed`, as `stage_faces` makes it."""
    from toon3d.seeds import z_from_seed

    g = models.human.generator
    z, _ = z_from_seed(seed, g.style_dim)
    mean = models.human.mean_latent.to(models.device)
    with torch.no_grad():
        return mean + models.settings.truncation * (g.mapping(z.to(models.device)) - mean)


def edit_delta(models, factor, table, w: torch.Tensor, edits: list[tuple[str, float]], refine: str) -> torch.Tensor:
    """Σ over the edits of Δw [1,D] (refined per edit as `stage_edits` does with `refine` code|paper)."""
    from toon3d.edit.masks import face_ellipse_mask
    from toon3d.edit.refine import refine_direction

    g = models.human.generator
    total = torch.zeros_like(w)
    for name, strength in edits:
        index, sign = table.resolve(name)
        n = (sign * factor.direction(index)).to(models.device)
        if refine == "off":
            total = total + strength * n[None]
            continue
        embedder = models.embedder

        def low(images):
            return embedder.features(images, 4)[-1]

        result = refine_direction(g, w, n, strength, embedder.embed, low, face_ellipse_mask, refine,
                                  models.settings.refine_steps, models.settings.refine_lr, layers=factor.layers)
        total = total + result.delta_w
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=32, help="SynFace pairs (default 32)")
    parser.add_argument("--avatars", type=int, default=4, help="built-in avatars, seeds 0..A-1 (default 4)")
    parser.add_argument("--size", type=int, default=128, help="render size of the source faces (default 128)")
    parser.add_argument("--refine", choices=("off", "code"), default="off",
                        help="Stage 2 refinement of each edit (the pipeline's default is code)")
    parser.add_argument("--json", type=Path, default=None, help="also write every pair's figures here")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from toon3d.edit.expression_transfer import named_strengths, population_reference
    from toon3d.errors import Toon3dError
    from toon3d.faces.attribute_oracle import load_attribute_oracle
    from toon3d.pipeline import AvatarModels, AvatarSettings, _synth
    from toon3d.pipeline_drive import DEFAULT_DRIVE

    settings = AvatarSettings(expression_from="(benchmark)", refine=args.refine)
    models = AvatarModels(settings, torch.device("cpu"))
    t0 = time.perf_counter()
    factor, table = models.directions(progress=False)
    table_s = time.perf_counter() - t0
    reader = models.expression_reader
    oracle = load_attribute_oracle()
    columns = [oracle.index(param) for param, _ in TARGETS]
    resolved = {}
    for _, name in TARGETS:
        try:
            index, sign, how = table.resolved(name)
            resolved[name] = f"{'+' if sign > 0 else '-'}n{index} ({how.split(' (')[0]})"
        except Toon3dError as err:
            resolved[name] = f"unresolved ({err})"

    neutral, expressive, targets, render_n, render_e = source_pairs(args.pairs, args.size)
    with torch.no_grad():
        source_read = (oracle.predict(render_e) - oracle.predict(render_n))[:, columns].double().numpy()
    g = models.human.generator
    refs = {"--neutral (same face)": "neutral", "table mean (no --neutral)": "mean"}
    achieved = {k: np.full((args.pairs, len(TARGETS)), np.nan) for k in refs}
    records = []
    missed = 0
    seconds = []
    for i in range(args.pairs):
        start = time.perf_counter()
        try:
            photo = reader.measure_photo(expressive[i]).measures
            own = reader.measure_photo(neutral[i]).measures
        except Toon3dError:
            missed += 1
            continue
        seconds.append(time.perf_counter() - start)
        w = avatar_w(models, i % args.avatars)
        with torch.no_grad():
            before = oracle.predict(_synth(g, w))[:, columns].double().numpy()[0]
        record = {"pair": i, "avatar_seed": i % args.avatars, "target": dict(zip([p for p, _ in TARGETS],
                                                                                  targets[i].tolist()))}
        for label, ref in refs.items():
            reference = own if ref == "neutral" else population_reference(table)
            found = named_strengths(photo, reference, table, DEFAULT_DRIVE.transfer)
            delta = edit_delta(models, factor, table, w, found.edits, args.refine)
            with torch.no_grad():
                after = oracle.predict(_synth(g, w + delta))[:, columns].double().numpy()[0]
            achieved[label][i] = after - before
            record[ref] = {"edits": found.edits, "strengths": found.strengths,
                           "achieved": dict(zip([p for p, _ in TARGETS], (after - before).tolist()))}
        records.append(record)
        print(json.dumps(record), flush=True)

    limit = DEFAULT_DRIVE.transfer.strength_limit

    def reach(name: str, param: str) -> str:
        """The named direction's oracle change of `param` at the strength limit, from the table's oracle columns."""
        from toon3d.edit.naming import ORACLE_MEASURES

        if table.oracle_slope is None or param not in ORACLE_MEASURES:
            return "n/a"
        try:
            index, sign = table.resolve(name)
        except Toon3dError:
            return "unnamed"
        return f"{limit * sign * table.oracle_slope[table.indices.index(index), ORACLE_MEASURES.index(param)]:+.2f}"

    ok = np.isfinite(achieved[next(iter(refs))]).all(1)
    print(f"\n{models.human.source}, {args.pairs} SynFace pairs ({args.size} px; dlib found both faces in "
          f"{int(ok.sum())}), {args.avatars} built-in avatars (seeds 0-{args.avatars - 1}), refine {args.refine}; "
          f"direction table {table_s:.0f} s, {float(np.mean(seconds)):.2f} s per pair (2 photos, 9 cuts each); "
          "1 thread")
    print("Directions: " + ", ".join(f"{name} {how}" for name, how in resolved.items()))
    print("Per expression: Pearson r / mean |achieved − target| / gain (achieved ≈ gain·target), parameter "
          "units (0..1)\n")
    print("| | " + " | ".join(f"{param} ({name})" for param, name in TARGETS) + " |")
    print("|---|" + "---|" * len(TARGETS))
    t = targets[ok]

    def cells(values: np.ndarray) -> str:
        out = []
        for j in range(len(TARGETS)):
            a, b = values[:, j], t[:, j]
            gain = float((a * b).sum() / (b * b).sum())
            out.append(f"{pearson(a, b):.2f} / {np.abs(a - b).mean():.2f} / {gain:+.2f}")
        return " | ".join(out)

    for label in refs:
        print(f"| avatar, reference {label} | " + cells(achieved[label][ok]) + " |")
    print("| oracle on the source renders (expressive − neutral) | " + cells(source_read[ok]) + " |")
    print("| no transfer (achieved 0): MAE | " + " | ".join(f"{t[:, j].mean():.2f}" for j in range(len(TARGETS)))
          + " |")
    r2 = oracle.r2 or {}
    print("| oracle held-out R² | " + " | ".join(f"{r2.get(p, float('nan')):.2f}" for p, _ in TARGETS) + " |")
    print(f"| reach: oracle change of its parameter at the ±{limit:g} strength limit (direction table) | "
          + " | ".join(reach(name, param) for param, name in TARGETS) + " |")
    for label, ref in refs.items():
        values = [v for r in records for v in r[ref]["strengths"].values()]
        at_limit = sum(abs(abs(v) - limit) < 1e-6 for v in values)
        print(f"\nreference {label}: {at_limit} of {len(values)} solved strengths at the ±{limit:g} limit; "
              f"median |strength| {np.median(np.abs(values)):.2f}")
    if missed:
        print(f"\n{missed} pair(s) left out: dlib found no face")
    if args.json:
        args.json.write_text(json.dumps({"source": str(models.human.source), "refine": args.refine,
                                         "resolved": resolved, "pairs": records}, indent=2))


if __name__ == "__main__":
    main()
