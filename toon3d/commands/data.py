"""`toon3d data`: build the built-in data worlds and prepare user image folders.

Each data sub-command lives in its own module (`data_synface`, `data_toon`, `data_cartoons`,
`data_prepare`) exposing `register(subparsers)`.
"""

from __future__ import annotations

import argparse
import importlib

SUBCOMMANDS = ["data_synface", "data_toon", "data_cartoons", "data_prepare"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `toon3d data {synface,toon,cartoons,prepare}`."""
    parser = subparsers.add_parser("data", help="make SynFace / toon / cartoon datasets, prepare image folders")
    sub = parser.add_subparsers(dest="data_command", metavar="DATASET")
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"toon3d.commands.{name}")
        module.register(sub)
    parser.set_defaults(func=lambda args: parser.print_help() or 1)
