"""Expression transfer on SynFace faces with known expressions: drive-video and photo accuracy, speed, stability.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_drive.py [--faces 0-11] [--size 128] \
        [--figure docs/images/drive_synface.png]

The direction table is SynFace's own (tests/synface_expression.py: directions = SynFace's
smile, mouth_open and eyes_closed parameters, calibrated with dlib's landmarks on 8 faces of
data set 7), so solved strengths estimate the parameters and can be scored against them:

  - drive: per face (face 0 of data set k, k in --faces), a 36-frame clip neutral → smile →
    open mouth → eyes closed → neutral is measured as `toon3d avatar --drive` measures a video
    (first frame as neutral, one cut per frame, 3-frame moving average, weights in [0, 1]);
    correlation and mean absolute error of each weight against the known parameter;
  - photo: per face and expression, a render with that expression at 1 against the same face's
    neutral render (`--expression-from` with `--neutral`, 9 cuts per photo): the strength found
    for the expression (1 wanted) and the largest |strength| of the other two (0 wanted);
  - stability: one face drawn at 160 px, then 1.0x/1.2x/1.5x/2x larger elsewhere in a bigger
    picture: the spread of the four expression measures read in dlib's own detector box,
    and in the layout's cut with 1 and 9 cuts (`toon3d.faces.expression_measure`);
  - seconds per video frame and per photo;
  - --figure: the clip of face 5 driving a stand-in avatar (face 0 of data set 9, whose morph
    targets are its own canonical depth and albedo with each expression at 1), blended and
    rendered as `toon3d avatar --drive` renders drive.mp4; top row the clip, bottom the avatar.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from synface_expression import (EXPRESSIONS, NAMES, calibrated_table, expression_video, faces,  # noqa: E402
                                render_uint8)
from toon3d.edit.expression_transfer import MorphTarget, named_strengths, target_weights, z_change  # noqa: E402
from toon3d.edit.landmarks import face_measures  # noqa: E402
from toon3d.faces.expression_measure import JITTER, ExpressionReader  # noqa: E402
from toon3d.pipeline_drive import DEFAULT_DRIVE, measure_video, moving_average  # noqa: E402
from toon3d.seeds import parse_seeds  # noqa: E402


def drive_scores(reader, table, face_seed: int, size: int, folder: Path) -> tuple[np.ndarray, np.ndarray, float]:
    """(correlation [3], MAE [3], seconds per frame) of one face's clip."""
    path = folder / f"clip{face_seed}.mp4"
    seq = expression_video(path, face_seed=face_seed, size=size)

    class Flags:
        drive, drive_frames = path, 1000

    start = time.perf_counter()
    measures, _ = measure_video(Flags, reader, DEFAULT_DRIVE, progress=False)
    per_frame = (time.perf_counter() - start) / len(measures)
    targets = [MorphTarget(n, NAMES[n], 1, 1.0) for n in EXPRESSIONS]
    found = np.isfinite(measures).all(1)
    reference = measures[int(np.argmax(found))]
    weights, _ = target_weights(z_change(measures, reference, table, DEFAULT_DRIVE.transfer.measures), targets, table)
    weights = moving_average(np.where(np.isfinite(weights), weights, 0.0), DEFAULT_DRIVE.smooth_frames)
    corr = np.array([np.corrcoef(weights[:, j], seq[:, j])[0, 1] for j in range(len(EXPRESSIONS))])
    mae = np.abs(weights - seq).mean(0)
    return corr, mae, per_frame


def photo_scores(reader, table, face_seed: int, size: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(strength found for each expression at 1 [3], largest |other strength| [3], seconds per photo)."""
    face = faces(1, face_seed)
    start = time.perf_counter()
    neutral = reader.measure_photo(render_uint8(face, size)[0]).measures
    seconds = time.perf_counter() - start
    found, other = np.zeros(len(EXPRESSIONS)), np.zeros(len(EXPRESSIONS))
    for j, name in enumerate(EXPRESSIONS):
        photo = reader.measure_photo(render_uint8(face.replace(**{name: 1.0}), size)[0]).measures
        s = named_strengths(photo, neutral, table).strengths
        found[j] = s.get(name, 0.0)
        other[j] = max(abs(s.get(n, 0.0)) for n in EXPRESSIONS if n != name)
    return found, other, seconds


def stability(reader, size: int = 160) -> dict[str, np.ndarray]:
    """Spread (max − min) of the 4 expression measures over one face placed 5 ways, per reading method."""
    from PIL import Image

    pixels = render_uint8(faces(1, 3).replace(mouth_open=0.6), size)[0]
    pictures = [pixels]
    for scale, place in ((1.0, (20, 30)), (1.2, (300, 100)), (1.5, (190, 70)), (2.0, (100, 20))):
        canvas = Image.new("RGB", (520, 400), (40, 90, 160))
        side = round(size * scale)
        canvas.paste(Image.fromarray(pixels).resize((side, side), Image.Resampling.BICUBIC), place)
        pictures.append(np.asarray(canvas))
    rows = {"detector box": [], "layout cut, 1 cut": [], f"layout cut, {len(JITTER)} cuts": []}
    for picture in pictures:
        box = reader.detector.detect(picture)[0]
        rows["detector box"].append(face_measures(box.landmarks)[:4])
        rows["layout cut, 1 cut"].append(reader.measure(picture, cuts=1).measures[:4])
        rows[f"layout cut, {len(JITTER)} cuts"].append(reader.measure(picture, cuts=len(JITTER)).measures[:4])
    return {k: np.ptp(np.stack(v), axis=0) for k, v in rows.items()}


def figure(reader, table, path: Path, folder: Path) -> None:
    """The --figure picture (see the module docstring) at four moments of the clip."""
    from PIL import Image

    from toon3d.io.images import to_uint8
    from toon3d.io.video_frames import open_video
    from toon3d.shape.morph_render import blend_morphs, render_blended
    from toon3d.shape.renderer import Renderer, RenderSettings
    from toon3d.synth.synface import canonical_face

    clip = folder / "figure.mp4"
    expression_video(clip, face_seed=5)

    class Flags:
        drive, drive_frames = clip, 1000

    measures, info = measure_video(Flags, reader, DEFAULT_DRIVE, progress=False)
    targets = [MorphTarget(n, NAMES[n], 1, 1.0) for n in EXPRESSIONS]
    weights, _ = target_weights(z_change(measures, measures[0], table, DEFAULT_DRIVE.transfer.measures), targets,
                                table)
    weights = moving_average(weights, DEFAULT_DRIVE.smooth_frames)
    avatar = faces(1, 9)
    neutral = canonical_face(avatar, 128)
    morphs = [canonical_face(avatar.replace(**{n: 1.0}), 128) for n in EXPRESSIONS]
    picks = [0, 9, 19, 27]  # neutral, smile, open mouth, eyes closed
    depth, albedo = blend_morphs(neutral["canon_depth"][0], neutral["albedo"][0],
                                 torch.stack([m["canon_depth"][0] for m in morphs]),
                                 torch.stack([m["albedo"][0] for m in morphs]),
                                 torch.as_tensor(weights[picks], dtype=torch.float32))
    yaw = DEFAULT_DRIVE.turn.yaw_deg(len(weights), info.fps)[picks]
    renders = render_blended(Renderer(RenderSettings(128)), depth, albedo, torch.tensor([0.55, 0.5, 0.3, -0.2]),
                             yaw, progress=False)
    frames = list(open_video(clip))
    top = np.concatenate([frames[i] for i in picks], 1)
    bottom = np.concatenate([to_uint8(r) for r in renders], 1)
    Image.fromarray(np.concatenate([top, bottom], 0)).save(path)
    print(f"figure: {path} (weights at frames {picks}: {np.round(weights[picks], 2).tolist()})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", default="0-11", help="SynFace data sets whose face 0 is scored")
    parser.add_argument("--size", type=int, default=128, help="render size of clips and photos")
    parser.add_argument("--figure", type=Path, default=None, help="also write the driven stand-in avatar figure")
    args = parser.parse_args()
    torch.set_num_threads(1)
    reader = ExpressionReader("synface")
    table = calibrated_table(reader)
    seeds = parse_seeds(args.faces)
    drive, photo = [], []
    with tempfile.TemporaryDirectory() as tmp:
        if args.figure is not None:
            figure(reader, table, args.figure, Path(tmp))
        for seed in seeds:
            drive.append(drive_scores(reader, table, seed, args.size, Path(tmp)))
            photo.append(photo_scores(reader, table, seed, args.size))
    names = " | ".join(EXPRESSIONS)
    print(f"SynFace, {len(seeds)} faces (data sets {args.faces}, face 0), {args.size} px, 1 thread\n")
    print(f"drive clip (36 frames): correlation of weight with the known parameter\n\n| face | {names} | MAE {names} |")
    print("|---|" + "---|" * (2 * len(EXPRESSIONS)))
    for seed, (corr, mae, _) in zip(seeds, drive):
        cells = [f"{c:.2f}" for c in corr] + [f"{m:.2f}" for m in mae]
        print(f"| {seed} | " + " | ".join(cells) + " |")
    corr = np.stack([d[0] for d in drive])
    print("| median | " + " | ".join(f"{c:.2f}" for c in np.median(corr, 0)) + " | " +
          " | ".join(f"{m:.2f}" for m in np.median(np.stack([d[1] for d in drive]), 0)) + " |")
    print("| faces with r > 0.8 | " + " | ".join(f"{(c > 0.8).sum()}/{len(c)}" for c in corr.T) + " |" +
          " |" * len(EXPRESSIONS))
    print(f"\nphoto vs the same face's neutral photo: strength found (1 wanted) / largest other |strength| (0 "
          f"wanted)\n\n| face | {names} |\n|---|" + "---|" * len(EXPRESSIONS))
    for seed, (found, other, _) in zip(seeds, photo):
        print(f"| {seed} | " + " | ".join(f"{f:+.2f} / {o:.2f}" for f, o in zip(found, other)) + " |")
    found = np.stack([p[0] for p in photo])
    other = np.stack([p[1] for p in photo])
    print("| median | " + " | ".join(f"{f:+.2f} / {o:.2f}" for f, o in zip(np.median(found, 0), np.median(other, 0)))
          + " |")
    print("| found > 0.3 | " + " | ".join(f"{(f > 0.3).sum()}/{len(f)}" for f in found.T) + " |")
    print("\nstability: spread of mouth_width, mouth_open, eye_open, brow_height (IOD) over one face drawn 5 ways\n")
    for name, spread in stability(reader).items():
        print(f"  {name:<22} " + " ".join(f"{v:.3f}" for v in spread))
    print(f"\nseconds per video frame ({args.size} px, 1 cut): {np.mean([d[2] for d in drive]):.3f}; per photo "
          f"({args.size} px, {len(JITTER)} cuts): {np.mean([p[2] for p in photo]):.3f}")


if __name__ == "__main__":
    main()
