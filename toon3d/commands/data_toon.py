"""`toon3d data toon`: SynFace's faces drawn as cartoons, with SynFace's ground truth."""

from __future__ import annotations

import argparse

from toon3d.commands.data_synface import add_render_arguments, write_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `toon3d data toon` to the `toon3d data` sub-parsers."""
    parser = subparsers.add_parser(
        "toon", help="render SynFace faces as cartoons (cel bands, outlines, big eyes) with SynFace ground truth",
        description="Render N seeded SynFace faces as toons: flat saturated colours, 3 cel-shading bands, dark "
                    "outlines and enlarged eyes. Face i of seed s is SynFace face i of seed s (same identity, "
                    "pose, light, background), and gt/*.npz holds its ground truth (canon_depth, depth, normal, "
                    "mask equal to SynFace's; seg and albedo as drawn), in the same toon3d folder format.")
    add_render_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the data set and print where it went."""
    from toon3d.synth.toon_style import ToonStyle

    out, n, size = write_from_args(args, style=ToonStyle())
    print(f"wrote {n} toon images ({size}px) with SynFace ground truth to {out}; look at {out / 'contact_sheet.png'}")
    return 0
