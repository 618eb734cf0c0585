"""Table II on toon3d's ground-truth worlds: SIDE and MAD of every row on the same test images.

`evaluate_shape` runs each requested row (`toon3d.metrics.shape_rows`) on test images 0..N-1 of
each world (`toon3d.metrics.shape_worlds`), scores them with Unsup3d's protocol
(`toon3d.metrics.depth_metrics.depth_scores`: the predicted depth in the input view against the
ground-truth view depth, each image scored on its own, masks `gt < max(gt)` and the
reconstruction's valid mask, both eroded by one pixel; SIDE ×100, MAD in degrees) and writes
every image's arrays and scores (`toon3d.io.eval_store.ShapeEvalFolder`) before the next one, so
a killed run continues where it stopped. `shape_table` summarises the folder as mean ± std.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from toon3d.errors import Toon3dError
from toon3d.io.eval_store import ShapeEvalFolder
from toon3d.metrics.shape_rows import (GAN_ROWS, ROW_LABELS, GanModels, RowPrediction, predict_gan, predict_instant,
                                       predict_prior)
from toon3d.metrics.shape_worlds import TEST_SEED_BASE, ShapeCase, make_case
from toon3d.metrics.tables import Cell, Column, Row, Table
from toon3d.shape.settings import ReconstructionSettings

# Table II of the paper and its anchors, on BFM (Unsup3d's synface): context, not our data.
PAPER_BFM = ("on BFM the paper reports SIDE ×10⁻² / MAD: Unsup3d 0.793 / 16.51, GAN2Shape 0.838 / 15.80, "
             "ours 0.802 / 15.41")
SHEET_IMAGES = 6


@dataclass
class WorldModels:
    """One world's models: its generator (LoadedGenerator), GAN-row models, the instant reconstructor
    (ShapeNets, GeometrySettings) or None, and a face-mask function (image [1,3,S,S] → [1,1,S,S])."""

    generator: object
    gan: GanModels | None
    instant: tuple | None
    face_mask: Callable[[torch.Tensor], torch.Tensor] | None = None


@dataclass
class ShapePlan:
    """What to evaluate: worlds, rows, images 0..n-1, the preset settings and the image source."""

    worlds: Sequence[str]
    rows: Sequence[str]
    n: int
    settings: ReconstructionSettings
    images: str = "render"
    notes: list[str] = field(default_factory=list)
    # Render the worlds' anchored views (what a decoder trained with --anchor-eyes draws for w).
    anchored: bool = False

    def check(self) -> ShapePlan:
        """One-line errors on impossible plans; returns self."""
        if self.n < 1:
            raise Toon3dError(f"--n must be at least 1, got {self.n}")
        if not self.worlds or not self.rows:
            raise Toon3dError("nothing to evaluate: give at least one world and one row")
        return self


def score_prediction(pred: RowPrediction, case: ShapeCase, fov_deg: float) -> dict[str, torch.Tensor]:
    """Unsup3d SIDE/MAD of one prediction: {'side_x100': [1], 'mad_deg': [1], 'mask': [1,S,S]}."""
    from toon3d.metrics.depth_metrics import depth_scores
    from toon3d.shape.camera import intrinsics

    size = case.gt_view.shape[-1]
    K = intrinsics(size, fov_deg)
    return depth_scores(pred.view_depth[None].float().cpu(), case.gt_view[None].float(), K,
                        pred.mask[None].float().cpu(), gt_max="batch")


def predict_row(row: str, case: ShapeCase, plan: ShapePlan, models: WorldModels, checkpoint_dir,
                progress: bool) -> RowPrediction:
    """Run row `row` on one case."""
    if row == "prior":
        return predict_prior(case, plan.settings)
    if row == "instant":
        if models.instant is None:
            raise Toon3dError(f"the instant row needs a pretrained reconstructor for the {case.world} world; "
                              "pass --reconstructor WORLD=FILE or leave instant out of --rows")
        nets, geometry = models.instant
        return predict_instant(case, nets, geometry)
    if row in GAN_ROWS:
        if models.gan is None:
            raise Toon3dError(f"row {row} needs the GAN stage's models for the {case.world} world")
        return predict_gan(case, row, plan.settings, models.gan, checkpoint_dir, progress)
    raise Toon3dError(f"unknown row {row!r}")


def evaluate_shape(folder: ShapeEvalFolder, plan: ShapePlan, models: dict[str, WorldModels],
                   progress: bool = True, inner_progress: bool = False) -> Table:
    """Score every (world, row, image) not yet done in `folder`, then return the table of all of them."""
    from tqdm import tqdm

    from toon3d.io.images import save_png

    plan.check()
    todo = [(world, i) for world in plan.worlds for i in range(plan.n)
            if any(not folder.is_done(world, row, i) for row in plan.rows)]
    total = sum(1 for world, i in todo for row in plan.rows if not folder.is_done(world, row, i))
    bar = tqdm(total=total, desc="eval shape", disable=not progress, dynamic_ncols=True)
    for world, index in todo:
        wm = models[world]
        case = make_case(world, index, plan.settings.image_size, wm.generator.generator, plan.images, wm.face_mask,
                         plan.anchored)
        image_path = folder.image_path(world, index)
        if not image_path.is_file():
            save_png(case.image[0], image_path)
        for row in plan.rows:
            if folder.is_done(world, row, index):
                continue
            bar.set_postfix(world=world, row=row, image=index)
            pred = predict_row(row, case, plan, wm, folder.checkpoint_dir(world, row, index), inner_progress)
            scores = score_prediction(pred, case, float(case.camera["fov_deg"]))
            folder.save_result(world, row, index,
                               {"pred": pred.canon_depth, "gt": case.gt_canon, "mask": scores["mask"][0],
                                "pred_view": pred.view_depth, "gt_view": case.gt_view},
                               {"index": index, "seed": case.seed, "side_x100": float(scores["side_x100"][0]),
                                "mad_deg": float(scores["mad_deg"][0]), "seconds": round(pred.seconds, 3),
                                "scored_pixels": int(scores["mask"][0].sum()), **pred.facts})
            bar.update(1)
    bar.close()
    return shape_table(folder, plan)


def shape_table(folder: ShapeEvalFolder, plan: ShapePlan) -> Table:
    """Table II from the scores in `folder` of images 0..n-1: SIDE and MAD mean ± std and seconds per image."""
    columns = []
    for world in plan.worlds:
        columns += [Column(f"{world}/side", f"{world}: SIDE (×10⁻²) ↓", 3),
                    Column(f"{world}/mad", f"{world}: MAD (°) ↓", 2),
                    Column(f"{world}/seconds", f"{world}: s/image", 1)]
    table = Table("Table II: 3D accuracy on ground-truth worlds (Unsup3d protocol)", columns)
    indices = list(range(plan.n))
    for row in plan.rows:
        cells: dict[str, Cell] = {}
        for world in plan.worlds:
            scores = folder.load_scores(world, row, indices)
            if not scores:
                for key in ("side", "mad", "seconds"):
                    cells[f"{world}/{key}"] = Cell.missing(f"{ROW_LABELS[row]} on {world}: no image scored yet")
                continue
            cells[f"{world}/side"] = Cell.of([s["side_x100"] for s in scores])
            cells[f"{world}/mad"] = Cell.of([s["mad_deg"] for s in scores])
            cells[f"{world}/seconds"] = Cell.of([s["seconds"] for s in scores])
        table.add(Row(ROW_LABELS[row], cells, key=row))
    s = plan.settings
    table.notes += [
        f"test images 0-{plan.n - 1} of each world (seeds {TEST_SEED_BASE:,}+i, never seen in training), "
        f"{plan.images} images at {s.image_size} px; the same images in every row; mean ± population std over images.",
        "SIDE and MAD as Unsup3d scores BFM: depth in the input view (the prediction rendered from its own "
        "view with the data camera) vs the ground-truth view depth; masks gt < max(gt) and the prediction's "
        "valid mask, each eroded by 1 px; each image scored on its own.",
        PAPER_BFM + " (not comparable: other data).",
    ] + list(plan.notes)
    return table


def _shape_image(depth: torch.Tensor, mask: torch.Tensor, fov_deg: float) -> torch.Tensor:
    """View depth [S,S] → a grey shaded render [3,S,S] in [-1,1] (light from the upper left), black off the mask."""
    from toon3d.shape.camera import intrinsics, normals_from_depth

    n = normals_from_depth(depth[None].float(), intrinsics(depth.shape[-1], fov_deg))[0]
    light = torch.tensor([-0.4, -0.4, 1.0])
    shade = (n * (light / light.norm())).sum(-1).clamp(0, 1) * mask
    return (shade * 2 - 1).expand(3, -1, -1)


def shape_sheet(folder: ShapeEvalFolder, plan: ShapePlan, world: str, fov_deg: float = 10.0) -> list:
    """Rows for `toon3d.io.sheet.labelled_sheet`: the input images, the ground truth and every row's shape."""
    from toon3d.io.images import load_image

    shown = [i for i in range(min(plan.n, SHEET_IMAGES)) if folder.image_path(world, i).is_file()]
    if not shown:
        return []
    rows = [("input", [load_image(folder.image_path(world, i)) for i in shown])]
    first = next((r for r in plan.rows if all(folder.is_done(world, r, i) for i in shown)), None)
    if first is not None:
        rows.append(("ground truth", [_shape_image(folder.load(world, first, "gt_view", i),
                                                   (folder.load(world, first, "gt_view", i) < 1.2).float(), fov_deg)
                                      for i in shown]))
    for row in plan.rows:
        if not all(folder.is_done(world, row, i) for i in shown):
            continue
        # Shown on the scored pixels only (the evaluation mask), where SIDE/MAD compare it with the truth.
        images = [_shape_image(folder.load(world, row, "pred_view", i), folder.load(world, row, "mask", i), fov_deg)
                  for i in shown]
        rows.append((row, images))
    return rows
