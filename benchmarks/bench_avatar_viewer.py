"""Avatar GLB + viewer.html on a SynFace toon face with ground-truth expressions: sizes, times, validator, screenshots.

    .venv/bin/python benchmarks/bench_avatar_viewer.py --out /work/runs/avatar_viewer [--size 128] [--seed 3]

One SynFace identity is rendered canonically (toon albedo, exact depth) neutral and with each
expression parameter set (smile, mouth_open, eyes_closed, brows_raised): every edit is the
same face with one expression changed, so the morph targets are ground truth. Writes
avatar.glb (with a short animation through the expressions) and viewer.html, runs the
Khronos validator, opens the viewer in headless Chromium, screenshots the neutral face and
each expression at weight 1, and prints what it measured. Skips the steps whose tools are missing.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from toon3d.io.gltf_morph import MorphAnimation, read_avatar_glb, write_avatar_glb
from toon3d.io.gltf_validator import validate_gltf, validator_available
from toon3d.io.viewer import write_viewer_html
from toon3d.io.viewer_capture import browser_available, capture_viewer, save_capture_sheet
from toon3d.shape.camera import intrinsics
from toon3d.synth.face_params import SynFaceParams
from toon3d.synth.synface import canonical_geometry
from toon3d.synth.toon_style import ToonStyle, toon_albedo, toon_parts

EXPRESSIONS = {"smile": 1.0, "mouth_open": 1.0, "eyes_closed": 1.0, "brows_raised": 1.0}


def toon_face(params: SynFaceParams, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Canonical depth [S,S] and toon albedo [3,S,S] in [-1,1] of one face."""
    style = ToonStyle()
    g = canonical_geometry(params, size)
    lay, parts = toon_parts(g["params"], g["layout"], g["parts"], g["x"], g["y"], size, style.eye_scale)
    albedo = toon_albedo(g["params"], lay, parts, g["x"], g["y"], style) * 2.0 - 1.0
    return g["canon_depth"][0], albedo[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for avatar.glb, viewer.html and the screenshots")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=3, help="SynFace face seed (identity)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    neutral_params = SynFaceParams.from_seeds([args.seed]).replace(
        smile=0.0, mouth_open=0.0, eyes_closed=0.0, brows_raised=0.0, yaw_deg=0.0, pitch_deg=0.0, roll_deg=0.0)
    start = time.perf_counter()
    neutral = toon_face(neutral_params, args.size)
    edits = {name: toon_face(neutral_params.replace(**{name: value}), args.size) for name, value in EXPRESSIONS.items()}
    t_faces = time.perf_counter() - start

    names = list(edits)
    n = len(names)
    # 1 s per expression: rise to 1, back to 0.
    times = np.arange(2 * n + 1) * 0.5
    weights = np.zeros((2 * n + 1, n))
    for j in range(n):
        weights[2 * j + 1, j] = 1.0
    anim = MorphAnimation(times=times, weights=weights, name="tour")
    start = time.perf_counter()
    glb_path = write_avatar_glb(neutral, edits, intrinsics(args.size), out / "avatar.glb", animation=anim,
                                metadata={"source": "SynFace toon", "seed": args.seed, "size": args.size})
    t_glb = time.perf_counter() - start
    start = time.perf_counter()
    html_path = write_viewer_html(glb_path, out / "viewer.html", title=f"SynFace toon #{args.seed}")
    t_html = time.perf_counter() - start
    glb = read_avatar_glb(glb_path)
    print(f"faces: {n + 1} at {args.size} px rendered in {t_faces:.2f} s")
    print(f"avatar.glb: {glb_path.stat().st_size / 1e6:.2f} MB, {len(glb.positions)} vertices, {len(glb.faces)} "
          f"triangles, {n} targets ({', '.join(names)}), written in {t_glb:.2f} s")
    for name in names:
        moved = np.linalg.norm(glb.targets[name]["POSITION"], axis=1)
        recoloured = np.abs(glb.targets[name].get("COLOR_0", np.zeros(1))).sum(-1) > 0
        print(f"  {name:13s} max offset {moved.max():.3f} mesh units ({moved.max() * 10:.2f} mm), "
              f"{(moved > 1e-6).mean() * 100:5.1f}% vertices moved, {recoloured.mean() * 100:5.1f}% recoloured")
    print(f"viewer.html: {html_path.stat().st_size / 1e6:.2f} MB, written in {t_html:.2f} s")

    reason = validator_available()
    if reason is None:
        start = time.perf_counter()
        report = validate_gltf(glb_path)
        seconds = time.perf_counter() - start
        print(f"Khronos validator {report.validator_version}: {report.summary()} in {seconds:.1f} s")
    else:
        print(f"validator skipped: {reason}")

    reason = browser_available()
    if reason is None:
        poses = {"neutral": {}} | {name: {name: 1.0} for name in names}
        capture = capture_viewer(html_path, poses, width=900, height=560, play_s=0.7, orbit_px=120)
        sheet = save_capture_sheet(capture, out / "viewer_shots.png")
        diffs = {k: float(np.abs(v.astype(float) - capture.images["neutral"].astype(float)).sum(-1).__gt__(30).mean())
                 for k, v in capture.images.items() if k not in ("neutral", "orbit")}
        print(f"viewer in headless Chromium: {capture.status}, {len(capture.console_errors)} console errors, "
              f"{capture.seconds:.1f} s; pixels changed per expression: "
              + ", ".join(f"{k} {v * 100:.1f}%" for k, v in diffs.items()))
        print(f"  weights shown after Play ran >= 0.7 s of the animation: {capture.played_weights}")
        print(f"  screenshots: {sheet}")
    else:
        print(f"viewer capture skipped: {reason}")


if __name__ == "__main__":
    main()
