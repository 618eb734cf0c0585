"""`toon3d data cartoons`: build the cartoon face set (seeded facesjs faces in the SynFace layout)."""

from __future__ import annotations

import argparse
import shlex
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `toon3d data cartoons` to the `toon3d data` sub-parsers."""
    parser = subparsers.add_parser(
        "cartoons", help="render seeded facesjs cartoon faces into a folder dataset",
        description="Render N seeded facesjs cartoon faces, aligned like SynFace heads, into the toon3d "
                    "folder format (images/, labels.jsonl, meta.json, contact_sheet.png). Needs Node.js "
                    "and 'npm ci --prefix tools/facesjs' (done by install.sh).")
    parser.add_argument("--n", type=int, default=5000, help="number of faces (default 5000)")
    parser.add_argument("--size", type=int, default=128, help="image size in pixels (default 128)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="face i of seed s is always the same face (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    parser.add_argument("--workers", type=int, default=2, help="threads rasterising faces (default 2)")
    parser.add_argument("--node", default=None, help="node executable (default: $TOON3D_NODE, then PATH)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the dataset and print where it went."""
    from toon3d.synth.cartoons import CartoonSettings, make_cartoons

    settings = CartoonSettings(n=args.n, size=args.size, seed=args.seed, workers=args.workers)
    created_by = "toon3d " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    out = make_cartoons(args.out, settings, overwrite=args.overwrite, node=args.node, created_by=created_by)
    print(f"wrote {settings.n} cartoon faces ({settings.size}px) to {out}; look at {out / 'contact_sheet.png'}")
    return 0
