"""`toon3d data synface`: render the built-in SynFace world (procedural 3D faces with ground truth)."""

from __future__ import annotations

import argparse
import shlex
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `toon3d data synface` to the `toon3d data` sub-parsers."""
    parser = subparsers.add_parser(
        "synface", help="render SynFace: procedural 3D faces with depth/normal/seg ground truth",
        description="Render N seeded SynFace faces (random identity, expression, pose, light and background) "
                    "into the toon3d folder format: images/, gt/*.npz (canon_depth, depth, normal, seg, mask, "
                    "albedo, ...), labels.jsonl with every parameter, meta.json, contact_sheet.png.")
    add_render_arguments(parser)
    parser.set_defaults(func=run)


def add_render_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags shared by `data synface` and `data toon`."""
    # Numbers are parsed here rather than by argparse so a bad value is one toon3d error line.
    parser.add_argument("--n", default="20000", help="number of faces (default 20000)")
    parser.add_argument("--size", default="128", help="image size in pixels, 64-256 (default 128)")
    parser.add_argument("--out", required=True, help="output folder (must be empty or absent)")
    parser.add_argument("--seed", default="0", help="data set seed: face i of seed s is always the same face")
    parser.add_argument("--batch", default="64", help="faces rendered together (default 64)")
    parser.add_argument("--workers", default="2", help="threads writing PNG/npz files (default 2)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    parser.add_argument("--anchor-eyes", action="store_true",
                        help="anchored views: each posed head is shifted so the point between its eyes keeps its "
                             "frontal pixel, as FFHQ's alignment does (docs/synface.md)")


def _int(name: str, text: str) -> int:
    from toon3d.errors import Toon3dError

    try:
        return int(text)
    except (TypeError, ValueError):
        raise Toon3dError(f"--{name} must be an integer, got {text!r}") from None


def write_from_args(args: argparse.Namespace, style=None) -> tuple:
    """Parse the shared flags and write the data set (a toon one when `style` is a `ToonStyle`).

    Returns (folder, number of images, size).
    """
    from toon3d.devices import resolve_device
    from toon3d.errors import Toon3dError
    from toon3d.synth.synface import SynFaceSettings
    from toon3d.synth.synface_dataset import write_synface_dataset

    n, size, seed = _int("n", args.n), _int("size", args.size), _int("seed", args.seed)
    batch, workers = _int("batch", args.batch), _int("workers", args.workers)
    if workers < 1:
        raise Toon3dError(f"--workers must be at least 1, got {workers}")
    device = resolve_device(args.device)
    created_by = "toon3d " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    out = write_synface_dataset(args.out, n=n, size=size, seed=seed, batch=batch, overwrite=args.overwrite,
                                device=device, workers=workers, created_by=created_by, style=style,
                                settings=SynFaceSettings(anchor_eyes=args.anchor_eyes))
    return out, n, size


def run(args: argparse.Namespace) -> int:
    """Build the data set and print where it went."""
    out, n, size = write_from_args(args)
    print(f"wrote {n} SynFace images ({size}px) with ground truth to {out}; look at {out / 'contact_sheet.png'}")
    return 0
