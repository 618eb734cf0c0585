"""Expressions from another face in `toon3d avatar`: `--expression-from PHOTO` and `--drive VIDEO`.

Both read a face with dlib's 68 landmarks (`toon3d.faces.expression_measure`) and turn its
measures into strengths of G_base's named directions through the direction table
(`toon3d.edit.expression_transfer`):

  - ``expression`` stage (before the edits): the photo's expression, relative to `--neutral`
    or else the table's mean face, becomes the avatar's expression edits (name, strength); the
    avatar is then built with those edits, and the package adds an ``expression_from``
    animation (neutral → the photo's expression, every morph weight 1) and `expression.png`.
  - ``drive`` stage (after the 3D stages): every kept frame of the video (≤ 30 fps, at most
    `drive_frames`) is measured against the driver's neutral face (`--neutral`, else the first
    frame with a face); one bounded least-squares solve per frame gives the morph weights of
    the avatar's targets (weight = strength wanted / the target's strength, in [0, 1]); frames
    without a face hold the last weights; a short centred moving average removes landmark
    jitter. The weights become the GLB's ``drive`` animation, and `drive.mp4` shows the video
    beside the avatar (the targets' depth and albedo blended by the weights, as the GLB blends
    them, rendered from a slowly turning view).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from toon3d.edit.expression_transfer import TransferSettings
from toon3d.errors import Toon3dError
from toon3d.shape.morph_render import TurnSettings

if TYPE_CHECKING:  # the pipeline imports this module inside its functions
    from toon3d.faces.expression_measure import ExpressionReader
    from toon3d.io.gltf_morph import MorphAnimation
    from toon3d.io.video_frames import VideoInfo
    from toon3d.pipeline import AvatarModels, AvatarSettings, WorkFolder

# --drive without --expression: the targets a face video moves most visibly.
DRIVE_EXPRESSIONS: tuple[tuple[str, float], ...] = (("smile", 3.0), ("mouth_open", 3.0), ("eyes_closed", 3.0))
EXPRESSION_RECORD = "expression.json"
DRIVE_RECORD = "drive.json"
DRIVE_WEIGHTS = "weights.npy"
DRIVE_VIDEO = "drive.mp4"


@dataclass(frozen=True)
class DriveSettings:
    """How a video drives the avatar (the user-facing flags are in `AvatarSettings`)."""

    max_fps: float = 30.0
    weight_range: tuple[float, float] = (0.0, 1.0)   # the viewer's slider range
    smooth_frames: int = 3                            # centred moving average (1 = none)
    frame_cuts: int = 1                               # jittered landmark cuts per frame (photos: all 9)
    min_render_size: int = 128                        # results smaller than this are rendered at it
    panel_size: int = 256                             # height of each half of drive.mp4
    turn: TurnSettings = field(default_factory=TurnSettings)
    transfer: TransferSettings = field(default_factory=TransferSettings)


DEFAULT_DRIVE = DriveSettings()


def check_drive_settings(settings: AvatarSettings) -> None:
    """One-line errors for the expression-transfer flags of `AvatarSettings` before any model loads: the
    photos must be readable images and the video one ffmpeg opens (faces are looked for later)."""
    from toon3d.io.photos import read_photo
    from toon3d.io.video_frames import open_video

    if settings.neutral is not None and settings.expression_from is None and settings.drive is None:
        raise Toon3dError("--neutral is the driving person's neutral face; use it with --drive or --expression-from")
    if settings.drive_frames < 1:
        raise Toon3dError(f"--drive-frames must be at least 1, got {settings.drive_frames}")
    for flag, path in (("--expression-from", settings.expression_from), ("--neutral", settings.neutral)):
        if path is not None:
            try:
                read_photo(path)
            except Toon3dError as err:
                raise Toon3dError(f"{flag}: {err}") from None
    if settings.drive is not None:
        try:
            open_video(settings.drive, DEFAULT_DRIVE.max_fps, 1).close()
        except Toon3dError as err:
            raise Toon3dError(f"--drive: {err}") from None


def expression_reader(models: AvatarModels) -> ExpressionReader:
    """An `ExpressionReader` cutting faces to G_base's layout, as the direction table's images are."""
    from toon3d.faces.align import layout_for_generator
    from toon3d.faces.expression_measure import ExpressionReader

    return ExpressionReader(layout_for_generator(models.human))


def _reference(settings: AvatarSettings, reader: ExpressionReader) -> tuple[np.ndarray | None, dict]:
    """The neutral measures [6] from --neutral (None without it) and their record."""
    if settings.neutral is None:
        return None, {}
    face = reader.measure_photo(settings.neutral)
    return face.measures, {"neutral": {"photo": str(settings.neutral), **face.record()}}


# ---------------------------------------------------------------------------------------------
# --expression-from PHOTO


def stage_expression_from(folder: Path, settings: AvatarSettings, models: AvatarModels, progress: bool) -> dict:
    """Measure the photo's expression → expression.json (measures, z-changes, strengths, edits) and face.png."""
    from toon3d.edit.expression_transfer import named_strengths, population_reference
    from toon3d.faces.align import crop_quad, ffhq_quad
    from toon3d.io.images import save_png
    from toon3d.io.photos import read_photo

    _, table = models.directions(progress)
    reader = models.expression_reader
    photo = read_photo(settings.expression_from)
    face = reader.measure_photo(photo)
    reference, ref_record = _reference(settings, reader)
    if reference is None:
        reference = population_reference(table)
        ref_record = {"reference": "the direction table's mean face (the generator's average expression)"}
    else:
        ref_record = {"reference": "--neutral", **ref_record}
    result = named_strengths(face.measures, reference, table, DEFAULT_DRIVE.transfer)
    record = {"photo": str(settings.expression_from), "face": face.record(), **ref_record, **result.record()}
    (folder / EXPRESSION_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    save_png(crop_quad(photo.pixels, ffhq_quad(face.landmarks), 256).image, folder / "face.png")
    return {"edits": record["edits"], "notes": record["notes"]}


def settings_with_photo_expression(settings: AvatarSettings, folder: Path) -> AvatarSettings:
    """`AvatarSettings` whose expressions are the edits the expression stage measured."""
    record = json.loads((folder / EXPRESSION_RECORD).read_text())
    return dataclasses.replace(settings, expressions=tuple((str(n), float(s)) for n, s in record["edits"]))


# ---------------------------------------------------------------------------------------------
# --drive VIDEO


def _targets(work: WorkFolder, keys: list[str]) -> list:
    from toon3d.edit.expression_transfer import MorphTarget
    from toon3d.pipeline import STAGE_RECORD

    edits = json.loads((work.folder("edits") / STAGE_RECORD).read_text())["edits"]
    return [MorphTarget(key, int(edits[key]["direction"]), int(edits[key]["sign"]), float(edits[key]["strength"]))
            for key in keys]


def hold_missing(weights: np.ndarray) -> tuple[np.ndarray, int]:
    """Per-frame weights [T,J] with NaN rows (no face) → rows held from the last face (0 before the first),
    and how many rows were held."""
    out = np.array(weights, dtype=np.float64, copy=True)
    last = np.zeros(out.shape[1])
    held = 0
    for t in range(len(out)):
        if np.isfinite(out[t]).all():
            last = out[t]
        else:
            out[t] = last
            held += 1
    return out, held


def moving_average(weights: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average of [T,J] over `window` frames (edges use the frames that exist)."""
    if window <= 1 or len(weights) < 2:
        return np.asarray(weights, dtype=np.float64)
    half = window // 2
    edge = np.full((half, weights.shape[1]), np.nan)
    padded = np.concatenate([edge, weights, edge])
    stack = np.stack([padded[i:i + len(weights)] for i in range(2 * half + 1)])
    return np.nanmean(stack, axis=0)


def _panel(frame: np.ndarray, height: int) -> np.ndarray:
    """A video frame [H,W,3] uint8 resized to `height` (even width, aspect kept)."""
    from PIL import Image

    h, w = frame.shape[:2]
    width = max(2, 2 * round(w * height / h / 2))
    return np.asarray(Image.fromarray(frame).resize((width, height), Image.Resampling.BILINEAR))


def measure_video(settings: AvatarSettings, reader: ExpressionReader, drive: DriveSettings,
                  progress: bool) -> tuple[np.ndarray, VideoInfo]:
    """(measures [T,6], NaN rows where no face, VideoInfo) of the kept frames of `settings.drive`."""
    from tqdm import tqdm

    from toon3d.io.video_frames import open_video

    measures = []
    with open_video(settings.drive, drive.max_fps, settings.drive_frames) as video:
        for frame in tqdm(video, desc="drive: faces", unit="frame", leave=False, disable=not progress):
            face = reader.measure(frame, cuts=drive.frame_cuts)
            measures.append(np.full(6, np.nan) if face is None else face.measures)
        info = video.info
    return np.stack(measures), info


def video_panels(settings: AvatarSettings, drive: DriveSettings, frames: int) -> list[np.ndarray]:
    """The first `frames` kept frames of `settings.drive`, each resized to the panel height (uint8)."""
    from toon3d.io.video_frames import open_video

    with open_video(settings.drive, drive.max_fps, frames) as video:
        return [_panel(frame, drive.panel_size) for frame in video]


def stage_drive(folder: Path, work: WorkFolder, settings: AvatarSettings, models: AvatarModels, keys: list[str],
                progress: bool, drive: DriveSettings = DEFAULT_DRIVE) -> dict:
    """Video → per-frame morph weights of the avatar's targets (weights.npy) and drive.json.

    Runs right after the edits (it needs only the targets' directions and strengths), so a video
    without a usable face fails before the 3D stages.
    """
    from toon3d.edit.expression_transfer import target_weights, z_change

    if not keys:
        raise Toon3dError("--drive needs morph targets to move; give expressions (e.g. --expression smile=+3)")
    _, table = models.directions(progress)
    targets = _targets(work, keys)
    reader = models.expression_reader
    measures, info = measure_video(settings, reader, drive, progress)
    found = np.isfinite(measures).all(1)
    if not found.any():
        raise Toon3dError(f"no face found in any of the {len(measures)} frames read from {settings.drive}; dlib's "
                          "detector needs a frontal face at least 40 px wide")
    reference, ref_record = _reference(settings, reader)
    if reference is None:
        first = int(np.argmax(found))
        reference = measures[first]
        ref_record = {"reference": f"frame {first} (the first with a face)"}
    else:
        ref_record = {"reference": "--neutral", **ref_record}
    transfer = drive.transfer
    dz = z_change(measures, reference, table, transfer.measures)
    raw, notes = target_weights(dz, targets, table, drive.weight_range, transfer)
    held_weights, held = hold_missing(raw)
    weights = moving_average(held_weights, drive.smooth_frames)
    np.save(folder / DRIVE_WEIGHTS, weights.astype(np.float32))
    record = {
        "video": info.record(), "frames": len(measures), "fps": info.fps, "faces_found": int(found.sum()),
        "frames_held": held, **ref_record, "targets": [dataclasses.asdict(t) for t in targets],
        "weight_range": list(drive.weight_range), "smooth_frames": drive.smooth_frames,
        "measures_fitted": list(transfer.measures), "notes": notes + list(info.notes),
        "per_frame": {"face_found": found.tolist(),
                      "z_change": np.round(np.where(np.isfinite(dz), dz, 0.0), 4).tolist(),
                      "weights": np.round(weights, 4).tolist()},
    }
    (folder / DRIVE_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return {"frames": len(measures), "fps": info.fps, "faces_found": int(found.sum()), "frames_held": held}


def stage_drive_video(folder: Path, work: WorkFolder, settings: AvatarSettings, models: AvatarModels,
                      keys: list[str], progress: bool, drive: DriveSettings = DEFAULT_DRIVE) -> dict:
    """drive.mp4 (each video frame beside the avatar blended by that frame's weights), after the 3D stages."""
    measured = work.folder("drive")
    weights = np.load(measured / DRIVE_WEIGHTS).astype(np.float64)
    fps = float(json.loads((measured / DRIVE_RECORD).read_text())["fps"])
    panels = video_panels(settings, drive, len(weights))
    if len(panels) != len(weights):
        raise Toon3dError(f"{settings.drive} now yields {len(panels)} frames where {len(weights)} were measured; "
                          "the video changed during the run: start over without --resume")
    render_drive_video(folder / DRIVE_VIDEO, work, keys, weights, panels, fps, models.device, drive, progress)
    return {"frames": len(weights), "fps": fps}


def _faces(work: WorkFolder, keys: list[str]) -> dict[str, dict[str, torch.Tensor]]:
    from toon3d.pipeline import _load_tensors

    return {key: _load_tensors(work.folder(f"shape_{key}") / "result.safetensors") for key in ["neutral"] + keys}


def _blend_render(work: WorkFolder, keys: list[str], weights: np.ndarray, yaw_deg: np.ndarray, device: torch.device,
                  drive: DriveSettings, progress: bool) -> torch.Tensor:
    """Frames [T,3,R,R] in [-1,1] of the avatar blended by weights [T,J]."""
    from toon3d.shape.morph_render import blend_morphs, render_blended
    from toon3d.shape.renderer import Renderer, RenderSettings

    faces = _faces(work, keys)
    neutral = faces["neutral"]
    size = max(neutral["depth"].shape[-1], drive.min_render_size)
    renderer = Renderer(RenderSettings(size), device=device)
    frames = []
    chunk = 32  # bounds the blended maps held at once
    for start in range(0, len(weights), chunk):
        w = torch.as_tensor(weights[start:start + chunk], dtype=torch.float32)
        if keys:
            depth, albedo = blend_morphs(neutral["depth"], neutral["albedo"],
                                         torch.stack([faces[k]["depth"] for k in keys]),
                                         torch.stack([faces[k]["albedo"] for k in keys]), w)
        else:
            depth, albedo = neutral["depth"].expand(len(w), -1, -1), neutral["albedo"].expand(len(w), -1, -1, -1)
        frames.append(render_blended(renderer, depth, albedo, neutral["light"], yaw_deg[start:start + chunk],
                                     progress=progress))
    return torch.cat(frames)


def render_drive_video(path: Path, work: WorkFolder, keys: list[str], weights: np.ndarray, panels: list[np.ndarray],
                       fps: float, device: torch.device, drive: DriveSettings, progress: bool) -> None:
    """drive.mp4: each video frame (at the panel height) beside the avatar blended by that frame's weights."""
    from PIL import Image

    from toon3d.io.images import to_uint8
    from toon3d.io.video import write_mp4

    yaw = drive.turn.yaw_deg(len(weights), fps)
    renders = _blend_render(work, keys, weights, yaw, device, drive, progress)
    p = drive.panel_size
    frames = []
    for panel, render in zip(panels, renders):
        avatar = np.asarray(Image.fromarray(to_uint8(render)).resize((p, p), Image.Resampling.BICUBIC))
        frames.append(np.concatenate([panel, avatar], axis=1))
    write_mp4(frames, path, fps)


# ---------------------------------------------------------------------------------------------
# The package: animations for the GLB, files and records for the final folder.


def package_transfer(work: WorkFolder, tmp: Path, keys: list[str], device: torch.device
                     ) -> tuple[list[MorphAnimation], dict, dict]:
    """(animations for avatar.glb, avatar.json additions, outputs additions) from the expression/drive stages,
    copying their files into the final folder `tmp`."""
    from toon3d.io.gltf_morph import MorphAnimation, frames_to_animation

    animations, record, outputs = [], {}, {}
    if work.done("drive"):
        folder = work.folder("drive")
        drive = json.loads((folder / DRIVE_RECORD).read_text())
        weights = np.load(folder / DRIVE_WEIGHTS)
        animations.append(frames_to_animation(weights, drive["fps"], names=keys, name="drive"))
        shutil.copy2(work.folder("drive_video") / DRIVE_VIDEO, tmp / DRIVE_VIDEO)
        shutil.copy2(folder / DRIVE_RECORD, tmp / DRIVE_RECORD)
        record["drive"] = {k: v for k, v in drive.items() if k != "per_frame"}
        outputs["drive"] = {"video": DRIVE_VIDEO, "record": DRIVE_RECORD, "animation": "avatar.glb: drive"}
    if work.done("expression"):
        folder = work.folder("expression")
        expression = json.loads((folder / EXPRESSION_RECORD).read_text())
        record["expression_from"] = expression
        if keys:
            # neutral at 0 s, the photo's expression (every edit at its measured strength) at 1 s
            animations.append(MorphAnimation(times=[0.0, 1.0], weights=[[0.0] * len(keys), [1.0] * len(keys)],
                                             names=keys, name="expression_from"))
            outputs["expression_from"] = {"animation": "avatar.glb: expression_from"}
        picture = expression_picture(work, folder, keys, device)
        from toon3d.io.images import save_png

        save_png(picture, tmp / "expression.png")
        outputs.setdefault("expression_from", {})["picture"] = "expression.png"
    return animations, record, outputs


def expression_picture(work: WorkFolder, folder: Path, keys: list[str], device: torch.device) -> torch.Tensor:
    """[3,H,W] in [-1,1]: the photo's face | the avatar neutral | the avatar wearing the photo's expression."""
    from toon3d.io.images import load_image, make_grid

    size = max(DEFAULT_DRIVE.min_render_size, 128)
    face = load_image(folder / "face.png", size)
    weights = np.ones((2, len(keys)))
    weights[0] = 0.0
    renders = _blend_render(work, keys, weights, np.zeros(2), device, DEFAULT_DRIVE, False)
    renders = torch.nn.functional.interpolate(renders, size=(size, size), mode="bilinear", align_corners=False)
    return make_grid(torch.cat([face[None], renders]), nrow=3)
