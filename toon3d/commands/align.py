"""`toon3d align`: cut the face of a photo to the layout a generator was trained on.

The layout and size follow the generator (--ckpt): rosinality FFHQ checkpoints get FFHQ's
alignment at their size, toon3d's built-in models the SynFace layout at 64 px
(`toon3d.faces.align.layout_for_generator`); --layout and --size override. With several faces
the largest is used unless --face K picks another; --list prints them and writes nothing.

Outputs (all in --out, all-or-nothing): `aligned.png`; `align.json` (the layout, the crop
square and the affine from aligned to photo pixels, the 68 landmarks in both, every detected
face, conversions applied to the photo); `detections.png` (the photo with every face's box and
index, the chosen face's landmarks and crop square; its top edge in magenta).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

LAYOUT_CHOICES = ("auto", "ffhq", "synface")


def add_layout_arguments(parser: argparse.ArgumentParser, size: bool = True) -> None:
    """--face, --layout, --no-padding and (with `size`) --size; shared with `toon3d invert`."""
    parser.add_argument("--face", type=int, default=None, metavar="K",
                        help="which face to use when the photo holds several: 0 = largest (default), 1 = next, ...")
    parser.add_argument("--layout", choices=list(LAYOUT_CHOICES), default="auto",
                        help="auto: the generator's (ffhq for rosinality checkpoints, synface for toon3d's models; "
                             "default); ffhq: FFHQ's alignment; synface: toon3d's SynFace layout")
    if size:
        parser.add_argument("--size", type=int, default=None,
                            help="side of the aligned image in pixels (default: the generator's size)")
    parser.add_argument("--no-padding", action="store_true",
                        help="do not pad crops that leave the photo (FFHQ's --no-padding: black outside)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `toon3d align`."""
    parser = subparsers.add_parser(
        "align", help="find the faces in a photo and cut one to a generator's layout (FFHQ or SynFace)",
        description="Detect faces with dlib (HOG detector + 68 landmarks) and cut one to the layout the generator "
                    "was trained on: FFHQ's alignment for rosinality checkpoints, the SynFace layout for toon3d's "
                    "built-in models. Writes aligned.png, align.json and detections.png.")
    parser.add_argument("photo", help="the photo (JPEG, PNG, ...; EXIF orientation is honoured)")
    parser.add_argument("--ckpt", default="base",
                        help="the generator the face is for: base | cartoon | toon | ffhq256 | PATH (default base); "
                             "it sets the layout and size")
    add_layout_arguments(parser)
    parser.add_argument("--list", action="store_true", help="print the faces found (index, box, width) and exit")
    parser.add_argument("--out", default=None, help="output folder (must be new or empty unless --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder toon3d wrote")
    parser.set_defaults(func=run)


def resolve_layout(args: argparse.Namespace) -> tuple[str, int]:
    """(layout name, size) from --layout/--size, loading --ckpt only for what they leave open."""
    from toon3d.errors import Toon3dError

    if args.size is not None and not 8 <= args.size <= 4096:
        raise Toon3dError(f"--size must be between 8 and 4096 pixels, got {args.size}")
    if args.layout != "auto" and args.size is not None:
        return args.layout, args.size
    from toon3d.faces.align import layout_for_generator
    from toon3d.models import resolve_generator

    loaded = resolve_generator(args.ckpt)
    layout = layout_for_generator(loaded) if args.layout == "auto" else args.layout
    return layout, args.size if args.size is not None else int(loaded.config["size"])


def list_faces(photo, faces) -> str:
    """The --list text: one line for the photo, one per face."""
    w, h = photo.size
    lines = [f"{photo.source} ({w}x{h}): {len(faces)} face{'s' if len(faces) != 1 else ''} (0 = largest)"]
    for i, face in enumerate(faces):
        l, t, r, b = face.box
        lines.append(f"  face {i}: box ({l:.0f},{t:.0f})-({r:.0f},{b:.0f}), {face.width:.0f} px wide, "
                     f"score {face.score:.2f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Detect, list or align, write."""
    import contextlib

    from toon3d.errors import Toon3dError
    from toon3d.faces.align import FaceDetector, align_photo, detect_faces, draw_detections
    from toon3d.io.atomic import atomic_dir, atomic_file, check_output_dir
    from toon3d.io.images import save_png
    from toon3d.io.photos import read_photo

    if args.face is not None and args.face < 0:
        raise Toon3dError(f"--face must be 0 (largest) or more, got {args.face}")
    if not args.list and args.out is None:
        raise Toon3dError("pass --out DIR for the aligned face (or --list to only list the faces)")
    photo = read_photo(args.photo)
    if args.list:
        photo, faces = detect_faces(photo)
        print(list_faces(photo, faces))
        return 0
    check_output_dir(args.out, args.overwrite, inputs=[args.photo])
    layout, size = resolve_layout(args)
    detector = FaceDetector()
    aligned = align_photo(photo, layout, size, args.face, detector, padding=not args.no_padding)
    out = Path(args.out)
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(atomic_dir(out, overwrite=args.overwrite, inputs=[args.photo]))
        save_png(aligned.image, tmp / "aligned.png")
        save_png(draw_detections(photo.pixels, aligned.faces, aligned.face_index, aligned.quad),
                 tmp / "detections.png")
        record = {"command": "toon3d align", "ckpt": args.ckpt, **aligned.to_json()}
        with atomic_file(tmp / "align.json") as tmp_json:
            tmp_json.write_text(json.dumps(record, indent=2) + "\n")
    n = len(aligned.faces)
    print(f"wrote aligned.png ({size} px, {layout} layout; face {aligned.face_index} of {n}), align.json, "
          f"detections.png to {out}")
    for note in aligned.notes:
        print(f"toon3d align: note: {note}")
    return 0
