"""`toon3d data prepare`: turn a folder of face images into a training set (folder format + LMDB)."""

from __future__ import annotations

import argparse
import shlex
import sys

SHOW_SKIPPED = 20  # skipped files printed; all of them go to skipped.txt


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `toon3d data prepare` to the `toon3d data` sub-parsers."""
    parser = subparsers.add_parser(
        "prepare", help="resize + centre-crop an image folder into a training set (folder format + LMDB)",
        description="Resize (shorter side, LANCZOS) and centre-crop every image under FOLDER (recursively, "
                    "sorted by path) to SIZE x SIZE, and write them in the toon3d folder format and in "
                    "rosinality's LMDB layout (DIR/lmdb). Unreadable files are skipped and listed in "
                    "DIR/skipped.txt.")
    parser.add_argument("folder", help="folder of images (PNG, JPEG, ...), searched recursively")
    parser.add_argument("--size", type=int, default=256, help="output size in pixels (default 256)")
    parser.add_argument("--out", required=True, help="output dataset folder")
    parser.add_argument("--lmdb", action=argparse.BooleanOptionalAction, default=True,
                        help="also write rosinality's LMDB layout in DIR/lmdb (default: yes)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Prepare the folder and report what was written and skipped."""
    from toon3d.data.prepare import SKIPPED_FILE, PrepareSettings, prepare_folder
    from toon3d.io.atomic import check_inputs

    # --out may not be the image folder, hold it (a parent: --overwrite would delete it) or lie inside it.
    check_inputs(args.out, [args.folder])
    settings = PrepareSettings(size=args.size, lmdb=args.lmdb)
    created_by = "toon3d " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    report = prepare_folder(args.folder, args.out, settings, overwrite=args.overwrite, created_by=created_by)
    if report.skipped:
        print(f"skipped {len(report.skipped)} file(s) that are not readable images "
              f"(all listed in {report.out / SKIPPED_FILE}):")
        for rel, why in report.skipped[:SHOW_SKIPPED]:
            print(f"  {rel}: {why}")
        if len(report.skipped) > SHOW_SKIPPED:
            print(f"  ... and {len(report.skipped) - SHOW_SKIPPED} more")
    lmdb_note = f" and {report.out / 'lmdb'} (rosinality LMDB)" if args.lmdb else ""
    print(f"wrote {report.count} images ({args.size}px) to {report.out}{lmdb_note}")
    return 0
