"""Do the 3D stage's view and light networks read the pose and light of the test faces? (Stage 3 diagnosis)

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_shape_factors.py --n 64 [--world synface,toon]
        [--reconstructor base] [--table out/table2] [--out FILE.json]

Unsup3d and GAN2Shape explain an image as depth, albedo, view and light. The symmetry loss holds
only in the canonical (frontal) frame, so the view net must find the head's pose; the shading
carries shape only if the light net finds the light. On the built-in worlds the truth is known:
for Table II's test faces 0..n−1 (anchored renders of `params_from_latent(z)`), this compares the
pretrained reconstructor's one-pass prediction (what the `cpu` preset starts every image from)
with the renderer's own yaw, pitch and light direction. With `--table DIR` (a `toon3d eval shape`
folder) it also reads the views the GAN rows ended at (their `view_deg`).

Printed per world: slope and mean |error| of predicted against true yaw and pitch (slope 1 reads
the pose, 0 ignores it), the angle between predicted and true light direction (dx, dy, 1), and the
same for the constant guess (frontal view; the mean light of the test faces) for scale.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=64, help="test faces per world (default 64)")
    p.add_argument("--world", default="synface,toon", help="comma-separated worlds: synface, toon")
    p.add_argument("--ckpt", default="base", help="the SynFace decoder whose mapping gives w (default base)")
    p.add_argument("--reconstructor", default=None,
                   help="pretrained reconstructor (default: the world's built-in, shape_base / shape_toon)")
    p.add_argument("--table", default=None, help="a `toon3d eval shape` folder: also report its GAN rows' views")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="JSON file for the figures")
    args = p.parse_args(argv)
    worlds = [w.strip() for w in args.world.split(",") if w.strip()]
    unknown = [w for w in worlds if w not in ("synface", "toon")]
    if not worlds or unknown:
        p.error(f"--world takes synface and/or toon, got {args.world!r}")
    if args.n < 2:
        p.error(f"--n must be at least 2 (a slope needs two faces), got {args.n}")
    if args.table and not Path(args.table).is_dir():
        p.error(f"--table {args.table} is not a folder; pass a `toon3d eval shape --out` folder")
    args.worlds = worlds
    return args


def slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of y on x."""
    xc = x - x.mean()
    return float((xc * (y - y.mean())).sum() / max(float((xc * xc).sum()), 1e-12))


def light_angle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle in degrees between light directions (dx, dy, 1) of a [N,2] and b [N,2]."""
    va = np.concatenate([a, np.ones((len(a), 1))], 1)
    vb = np.concatenate([b, np.ones((len(b), 1))], 1)
    va /= np.linalg.norm(va, axis=1, keepdims=True)
    vb /= np.linalg.norm(vb, axis=1, keepdims=True)
    return np.degrees(np.arccos(np.clip((va * vb).sum(1), -1, 1)))


def pose_figures(true: np.ndarray, pred: np.ndarray) -> dict:
    """Slope and mean |error| of predicted [N] against true [N] angles (degrees)."""
    return {"slope": round(slope(true, pred), 3), "mae_deg": round(float(np.abs(pred - true).mean()), 2),
            "frontal_mae_deg": round(float(np.abs(true).mean()), 2)}


def table_views(folder: Path, world: str, n: int) -> dict[str, np.ndarray]:
    """The final views (pitch, yaw, roll in degrees) [k,3] of images 0..k−1 (k ≤ n, those scored) per GAN row."""
    out = {}
    for row_dir in sorted((folder / world).glob("*")):
        views = []
        for i in range(n):
            path = row_dir / "scores" / f"{i:04d}.json"
            view = json.loads(path.read_text()).get("view_deg") if path.is_file() else None
            if view is None:
                break
            views.append(view)
        if len(views) >= 2:
            out[row_dir.name] = np.array(views, dtype=np.float64)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from toon3d.metrics.shape_worlds import case_seed, make_case
    from toon3d.models import resolve_generator
    from toon3d.seeds import z_from_seed
    from toon3d.shape.instant import instant_reconstruct, resolve_shape_model
    from toon3d.synth.latent_params import params_from_latent

    generator = resolve_generator(args.ckpt).generator
    figures: dict = {}
    for world in args.worlds:
        spec = args.reconstructor or {"synface": "base", "toon": "toon"}[world]
        nets, geometry, _ = resolve_shape_model(spec)
        true_pose, pred_pose, true_light, pred_light = [], [], [], []
        for i in range(args.n):
            case = make_case(world, i, geometry.size, generator, anchored=True)
            dec = instant_reconstruct(nets, case.image, geometry)
            p = params_from_latent(z_from_seed(case_seed(i), generator.style_dim)[0])
            true_pose.append([float(p.pitch_deg), float(p.yaw_deg)])
            pred_pose.append(torch.rad2deg(dec.view[0, :2]).tolist())
            true_light.append([float(p.light_dx), float(p.light_dy)])
            pred_light.append(dec.light[0, 2:4].tolist())
        tp, pp = np.array(true_pose), np.array(pred_pose)
        tl, pl = np.array(true_light), np.array(pred_light)
        constant = np.repeat(tl.mean(0, keepdims=True), len(tl), 0)
        fig = {"reconstructor": spec, "n": args.n,
               "yaw": pose_figures(tp[:, 1], pp[:, 1]), "pitch": pose_figures(tp[:, 0], pp[:, 0]),
               "light_dir_err_deg": round(float(light_angle(pl, tl).mean()), 2),
               "light_dir_err_constant_deg": round(float(light_angle(constant, tl).mean()), 2),
               "light_dx_slope": round(slope(tl[:, 0], pl[:, 0]), 3),
               "light_dy_slope": round(slope(tl[:, 1], pl[:, 1]), 3)}
        if args.table:
            fig["gan_rows"] = {row: {"n": len(v), "yaw": pose_figures(tp[:len(v), 1], v[:, 1]),
                                     "pitch": pose_figures(tp[:len(v), 0], v[:, 0])}
                               for row, v in table_views(Path(args.table), world, args.n).items()}
        figures[world] = fig
        print(f"{world} ({spec}, {args.n} faces): yaw slope {fig['yaw']['slope']:+.3f}, |err| "
              f"{fig['yaw']['mae_deg']:.1f}° (frontal guess {fig['yaw']['frontal_mae_deg']:.1f}°); pitch slope "
              f"{fig['pitch']['slope']:+.3f}, |err| {fig['pitch']['mae_deg']:.1f}° (frontal "
              f"{fig['pitch']['frontal_mae_deg']:.1f}°); light direction error {fig['light_dir_err_deg']:.1f}° "
              f"(constant mean light {fig['light_dir_err_constant_deg']:.1f}°), dx slope "
              f"{fig['light_dx_slope']:+.2f}, dy slope {fig['light_dy_slope']:+.2f}")
        for row, g in fig.get("gan_rows", {}).items():
            print(f"  {row} row's final view ({g['n']} images): yaw slope {g['yaw']['slope']:+.3f}, |err| {g['yaw']['mae_deg']:.1f}°; "
                  f"pitch slope {g['pitch']['slope']:+.3f}, |err| {g['pitch']['mae_deg']:.1f}°")
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
