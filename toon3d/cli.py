"""The `toon3d` command: one sub-command per stage, each in `toon3d/commands/<name>.py`.

Every command module exposes `register(subparsers)`, which adds its parser and sets
`func=run` on it. Modules import heavy dependencies inside `run`, so `toon3d --help` is fast.
A `Toon3dError` becomes one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from toon3d.errors import Toon3dError

COMMANDS = ["generate", "render", "data", "train-decoder", "train", "finetune", "blend", "directions", "edit", "avatar", "reconstruct", "align", "invert", "train-shape", "train-shape-encoder", "train-shape-depth", "train-encoder", "eval"]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every registered sub-command."""
    parser = argparse.ArgumentParser(
        prog="toon3d", description="3D cartoon face avatars with controllable expressions."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"toon3d.commands.{name.replace('-', '_')}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        result = args.func(args)
    except Toon3dError as err:
        print(f"toon3d {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"toon3d {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
