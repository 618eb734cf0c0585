"""Score predicted depth against a ground-truth world (SynFace, toon) with Unsup3d's SIDE/MAD protocol.

The prediction scored is the depth *in the input view* (`Reconstruction.recon_depth` at the
predicted view) with the reconstruction's valid mask, against the data set's view depth `depth`
(background 1.2), as Unsup3d scores BFM (REFERENCE §7.5; `toon3d.metrics.depth_metrics`). The
prediction is rendered with the data set's camera (fov, rotation centre and pixel convention from
its meta.json): SynFace renders at pixel centres, and a half-pixel shift alone moves SIDE/MAD.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import torch

from toon3d.errors import Toon3dError
from toon3d.shape.photo_geometry import Decomposition, GeometrySettings, reconstruct
from toon3d.shape.renderer import Renderer


@dataclass
class GroundTruthSet:
    """Held-out images [N,3,S,S] in [-1,1], their view depth [N,S,S], the indices read and the data camera."""

    images: torch.Tensor
    depth: torch.Tensor
    indices: list[int]
    fov_deg: float
    rot_center_depth: float
    pixel_offset: float
    source: str


def load_ground_truth(folder: str | os.PathLike, n: int | None = None, size: int | None = None) -> GroundTruthSet:
    """The first n images of a SynFace/toon folder with their `depth` ground truth (no flips)."""
    from toon3d.data.dataset import FaceDataset

    data = FaceDataset(folder, size=size, flip=False, load_gt=True)
    count = len(data) if n is None else min(n, len(data))
    if count == 0:
        raise Toon3dError(f"{folder} holds no images; build a ground-truth set with 'toon3d data synface|toon'")
    items = [data[i] for i in range(count)]
    if "depth" not in items[0]:
        raise Toon3dError(f"{folder} has no depth ground truth (gt/*.npz with 'depth'); "
                          "score against a set from 'toon3d data synface' or 'toon3d data toon'")
    meta = data.meta
    return GroundTruthSet(images=torch.stack([it["image"] for it in items]),
                          depth=torch.stack([it["depth"].float() for it in items]), indices=list(range(count)),
                          fov_deg=float(meta.get("fov_deg", 10.0)),
                          rot_center_depth=float(meta.get("rot_center_depth", 1.0)),
                          pixel_offset=float(meta.get("pixel_offset", 0.0)), source=str(folder))


def data_geometry(settings: GeometrySettings, gt: GroundTruthSet) -> GeometrySettings:
    """`settings` with the ground-truth set's camera (fov, rotation centre, pixel convention)."""
    if gt.images.shape[-1] != settings.size:
        raise Toon3dError(f"ground truth is {gt.images.shape[-1]} px but the 3D model is {settings.size} px; "
                          f"load it with size={settings.size}")
    return replace(settings, fov_deg=gt.fov_deg, rot_center_depth=gt.rot_center_depth,
                   pixel_offset=gt.pixel_offset)


@torch.no_grad()
def score_view_depth(dec: Decomposition, gt: GroundTruthSet, settings: GeometrySettings) -> dict[str, torch.Tensor]:
    """SIDE (×100) and MAD (degrees) per image [N] of factors `dec` [N,...] against `gt`: {'side_x100', 'mad_deg'}."""
    from toon3d.metrics.depth_metrics import depth_scores

    geometry = data_geometry(settings, gt)
    renderer = Renderer(geometry.renderer_settings())
    rec = reconstruct(renderer, dec)
    scores = depth_scores(rec.recon_depth, gt.depth.to(rec.recon_depth), renderer.K, rec.mask, gt_max="batch")
    return {"side_x100": scores["side_x100"], "mad_deg": scores["mad_deg"]}


def summarise(scores: dict[str, torch.Tensor]) -> dict[str, float]:
    """Mean and population std of each per-image score: {'side_x100', 'side_x100_std', 'mad_deg', ...}."""
    from toon3d.metrics.depth_metrics import mean_std

    out: dict[str, float] = {}
    for key, values in scores.items():
        mean, std = mean_std(values)
        out[key] = round(mean, 4)
        out[f"{key}_std"] = round(std, 4)
    out["n"] = int(next(iter(scores.values())).numel())
    return out
