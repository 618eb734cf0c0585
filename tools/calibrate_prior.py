"""Calibrate the ellipsoid prior's relief for the built-in worlds: SIDE/MAD of the prior alone.

    .venv/bin/python tools/calibrate_prior.py --data /work/data/toon64 --n 256
    .venv/bin/python tools/calibrate_prior.py --data /work/data/toon64_test --n 256   # held out

For each `near` (far fixed at the preset's 1.02), scores the layout's ellipsoid prior, border-
clamped and seen frontally, against a SynFace/toon folder's ground-truth depth with Unsup3d's
protocol, and prints a table; `toon3d.shape.settings.BUILTIN_PRIOR_NEAR` is the SIDE-optimal
value on the training renders.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

NEARS = (0.91, 0.93, 0.95, 0.96, 0.965, 0.97, 0.975, 0.98, 0.985, 0.99)


def prior_scores(folder: str, n: int, nears=NEARS, far: float = 1.02) -> list[dict]:
    """[{near, relief, side_x100, mad_deg}] of the layout prior at each near on folder's first n images."""
    from toon3d.shape.depth_eval import load_ground_truth, score_view_depth, summarise
    from toon3d.shape.photo_geometry import Decomposition, canonical_view, mean_light
    from toon3d.shape.pretrain import layout_face_mask
    from toon3d.shape.prior import ellipsoid_depth
    from toon3d.shape.settings import preset

    gt = load_ground_truth(folder, n)
    size = gt.images.shape[-1]
    geometry = preset("cpu", image_size=size).geometry()
    b = gt.images.shape[0]
    rows = []
    for near in nears:
        raw = ellipsoid_depth(layout_face_mask(size), "box", near=near, far=far).expand(b, size, size).clone()
        depth = raw.clone()
        k = geometry.border_columns
        if k > 0:
            depth[..., :k] = geometry.border_depth
            depth[..., -k:] = geometry.border_depth
        dec = Decomposition(depth, raw, torch.zeros_like(gt.images), canonical_view(b, gt.images),
                            mean_light(b, geometry, gt.images))
        fig = summarise(score_view_depth(dec, gt, geometry))
        rows.append({"near": near, "relief": round(far - near, 4), "side_x100": fig["side_x100"],
                     "mad_deg": fig["mad_deg"]})
    return rows


def main(argv: list[str] | None = None) -> int:
    """Print the table for --data."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a SynFace/toon folder with gt/*.npz depth")
    parser.add_argument("--n", type=int, default=256, help="images (default 256)")
    args = parser.parse_args(argv)
    rows = prior_scores(args.data, args.n)
    print(f"| near | relief | SIDE×100 | MAD (°) |  ({args.data}, n={args.n})\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['near']} | {r['relief']} | {r['side_x100']:.3f} | {r['mad_deg']:.2f} |")
    best = min(rows, key=lambda r: r["side_x100"])
    print(f"SIDE-optimal near: {best['near']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
