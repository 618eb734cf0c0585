"""What the commands that train one network of a shipped 3D reconstructor share.

`train-shape-encoder` (E) and `train-shape-depth` (D) each take a generator and a reconstructor,
train one of its networks over a stream of the generator's images in a resumable run folder,
and report the loss at the start and the end. This module holds their common arguments, the
setup (threads, run folder, device, generator, reconstructor, size check) and the figures.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path


def add_shape_run_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """The arguments every shape-network trainer takes; `what` names the network for the help texts."""
    parser.add_argument("--ckpt", required=True, help=f"the generator whose images {what} learns from: base, cartoon, "
                                                      "toon or a file")
    parser.add_argument("--reconstructor", required=True,
                        help="a shape model (base, cartoon, toon or a shape_*.safetensors / model.safetensors)")
    parser.add_argument("--out", required=True, help="run folder (created; with --resume, continued)")
    parser.add_argument("--iters", type=int, default=1000, help="iterations (default 1000)")
    parser.add_argument("--no-blend", action="store_true", help="a built-in style raw, not blended with base")
    parser.add_argument("--seed", type=int, default=0, help="seed of every draw")
    parser.add_argument("--ckpt-every", type=int, default=100, help="checkpoint every N iterations (default 100)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


@dataclass
class ShapeRun:
    """An opened run: its folder, device, the generator (LoadedGenerator) and the reconstructor's parts."""

    out: Path
    device: object
    loaded: object
    nets: object
    geometry: object
    meta: dict


def open_shape_run(args: argparse.Namespace, state_file: str, encoder_sizes: dict | None = None) -> ShapeRun:
    """Set threads, check the run folder, load the generator and the reconstructor (E sized by
    `encoder_sizes` + the generator's W width); one-line errors when they do not fit."""
    import torch

    from toon3d.devices import resolve_device
    from toon3d.errors import Toon3dError
    from toon3d.models import resolve_generator
    from toon3d.shape.instant import resolve_shape_model
    from toon3d.train.run_folder import check_run_folder

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    check_run_folder(out, args.resume, state_file)
    device = resolve_device(args.device)
    loaded = resolve_generator(args.ckpt, blend=not args.no_blend)
    generator = loaded.generator
    nets, geometry, meta = resolve_shape_model(args.reconstructor,
                                               {**(encoder_sizes or {}), "latent_dim": generator.style_dim})
    if geometry.size > generator.size:
        raise Toon3dError(f"the reconstructor works at {geometry.size} px but the generator draws {generator.size} "
                          "px; pass a reconstructor of the generator's size or smaller")
    return ShapeRun(out, device, loaded, nets, geometry, meta)


def loss_window(history: list[dict], key: str, seconds: float, name: str | None = None, size: int = 50) -> dict:
    """Figures of a run: the mean of `key` over the first and the last `size` iterations (reported as
    `{name}_first_{size}`, `{name}_last_{size}`; name defaults to key) and the wall time."""
    name = name or key
    first = [h[key] for h in history[: min(size, len(history))]]
    last = [h[key] for h in history[-min(size, len(history)):]]
    return {f"{name}_first_{size}": sum(first) / len(first), f"{name}_last_{size}": sum(last) / len(last),
            "seconds_this_call": round(seconds, 1)}


__all__ = ["add_shape_run_arguments", "open_shape_run", "ShapeRun", "loss_window"]
