"""`toon3d directions`: SeFa directions of a generator, named by what they change.

Outputs (all in --out, written all-or-nothing like `toon3d generate`):

  - `factor.pt`: the seed code's layout {'ckpt', 'eigvec' [D,D]} (+ variant, layers, singular
    values, the generator's config), usable by `toon3d edit --factor` and by the seed code;
  - `directions.md` / `directions.json`: what each of the top directions changes (dlib's 68
    landmarks on G_base edits at ± strength) and the names resolved from it;
  - `directions.png`: one row per top direction (0 first), 2 latents × 7 strengths from
    −strength to +strength each.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

# Kept here so `toon3d --help` imports no torch; tests check they equal the library's defaults.
VARIANT_CHOICES = ("sefa", "rosinality")
DEFAULT_VARIANT = "sefa"
NAME_BY_CHOICES = ("auto", "landmarks", "oracle")  # = toon3d.edit.name_by.NAME_BY
DEFAULT_TOP, DEFAULT_SAMPLES, DEFAULT_STRENGTH, DEFAULT_TRUNCATION = 10, 64, 3.0, 0.7
SHEET_LATENTS = 2
SHEET_STRENGTHS = 7
SHEET_MAX_PX = 128


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `toon3d directions`."""
    parser = subparsers.add_parser(
        "directions", help="SeFa latent directions of a generator, named by what they change (smile, yaw, ...)",
        description="Closed-form factorisation of a generator's style modulations (SeFa), then, for each of the "
                    "top directions, what it changes on the generator's faces (dlib's 68 landmarks at "
                    "± --strength over --samples latents): mouth width and opening, eye opening, brow height, "
                    "yaw, pitch. Writes factor.pt, directions.md/.json and a picture sheet.")
    parser.add_argument("--ckpt", default="base",
                        help="generator to factorise (G_base): base | ffhq256 | PATH (default base)")
    parser.add_argument("--variant", choices=list(VARIANT_CHOICES), default=DEFAULT_VARIANT,
                        help="sefa: modulated convs + last ToRGB, rows normalised (default); rosinality: conv1, "
                             "to_rgb1 and convs, unnormalised (the seed code's factor.pt)")
    parser.add_argument("--layers", default=None,
                        help="W+ layers to factorise and edit, e.g. 0-5 or 0,2,4 (default all: a plain W edit)")
    parser.add_argument("--top", type=int, default=DEFAULT_TOP, help=f"directions to measure (default {DEFAULT_TOP})")
    parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES,
                        help=f"latents to measure each direction on (default {DEFAULT_SAMPLES})")
    parser.add_argument("--strength", type=float, default=DEFAULT_STRENGTH,
                        help=f"edit strength in W, both signs (default {DEFAULT_STRENGTH:g})")
    parser.add_argument("--truncation", type=float, default=DEFAULT_TRUNCATION,
                        help=f"psi applied to the sampled latents before editing (default {DEFAULT_TRUNCATION:g})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the measured latents (default 0)")
    parser.add_argument("--batch", type=int, default=16, help="latents per forward pass (default 16)")
    parser.add_argument("--name-by", default="auto",
                        help="what names the directions: auto (default: the SynFace attribute oracle on the "
                             "built-in base, dlib's landmarks elsewhere and for parameters the oracle reads "
                             "badly), landmarks, or oracle")
    parser.add_argument("--out", required=True, help="output folder (must be new or empty unless --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder toon3d wrote")
    parser.set_defaults(func=run)


def check_settings(args: argparse.Namespace) -> None:
    """Numbers a user can get wrong, before anything is loaded or written."""
    from toon3d.errors import Toon3dError

    if args.top < 1:
        raise Toon3dError(f"--top must be at least 1, got {args.top}")
    if args.samples < 2:
        raise Toon3dError(f"--samples must be at least 2, got {args.samples}")
    if not (math.isfinite(args.strength) and args.strength > 0):
        raise Toon3dError(f"--strength must be a positive number, got {args.strength}")
    if not math.isfinite(args.truncation):
        raise Toon3dError(f"--truncation must be a finite number, got {args.truncation}")
    if args.batch < 1:
        raise Toon3dError(f"--batch must be at least 1, got {args.batch}")
    if args.seed < 0:
        raise Toon3dError(f"--seed must be non-negative, got {args.seed}")
    if args.name_by not in NAME_BY_CHOICES:
        raise Toon3dError(f"unknown --name-by {args.name_by!r}; choose one of {', '.join(NAME_BY_CHOICES)}")


def run(args: argparse.Namespace) -> int:
    """Factorise, measure, write."""
    import toon3d
    from toon3d.commands.generate import _ckpt_inputs
    from toon3d.edit.directions import factorize, parse_layers, save_factor
    from toon3d.edit.landmarks import FaceLandmarks
    from toon3d.edit.name_by import naming_oracle
    from toon3d.edit.naming import measure_directions
    from toon3d.errors import Toon3dError
    from toon3d.io.atomic import atomic_dir, atomic_file
    from toon3d.io.images import save_png
    from toon3d.models import resolve_generator

    check_settings(args)
    out = Path(args.out)
    with atomic_dir(out, overwrite=args.overwrite, inputs=_ckpt_inputs(args.ckpt)) as tmp:
        loaded = resolve_generator(args.ckpt)
        generator = loaded.generator.eval()
        layers = parse_layers(args.layers, generator.n_latent)
        factor = factorize(generator, args.variant, layers, ckpt=loaded.source)
        if args.top > factor.dim:
            raise Toon3dError(f"--top {args.top} exceeds the {factor.dim} directions of this generator")
        landmarks = FaceLandmarks()
        oracle, name_note = naming_oracle(args.name_by, args.ckpt)
        table = measure_directions(generator, loaded.mean_latent, factor, args.top, args.samples, args.strength,
                                   args.truncation, args.seed, args.batch, landmarks, oracle=oracle)
        save_factor(tmp / "factor.pt", factor, loaded.config)
        save_png(direction_sheet(generator, loaded.mean_latent, factor, args), tmp / "directions.png")
        title = f"Directions of {loaded.source} ({args.variant}, layers {layers_text(layers)})"
        with atomic_file(tmp / "directions.md") as md:
            md.write_text(table.to_markdown(title) + SHEET_NOTE.format(strength=args.strength))
        summary = {
            "command": "toon3d directions", "toon3d_version": toon3d.__version__,
            "settings": {k: getattr(args, k) for k in ("ckpt", "variant", "layers", "top", "samples", "strength",
                                                       "truncation", "seed", "name_by")},
            "naming": {"name_by": args.name_by, "oracle": oracle is not None, "note": name_note},
            "model": {"source": loaded.source, "config": loaded.config, "truncation_mean": loaded.mean_source,
                      "meta": loaded.meta},
            "factor": {"file": "factor.pt", "variant": factor.variant, "layers": layers,
                       "edits": "W (all layers)" if layers is None else f"W+ layers {layers}"},
            "landmarks": str(landmarks.predictor_path.name),
            "sheet": {"file": "directions.png", "rows": f"directions 0..{args.top - 1}",
                      "columns": f"{SHEET_LATENTS} latents x {SHEET_STRENGTHS} strengths "
                                 f"{-args.strength:g}..{args.strength:g}"},
            **table.to_json(),
        }
        with atomic_file(tmp / "directions.json") as js:
            js.write_text(json.dumps(summary, indent=2) + "\n")
    named = ", ".join(_resolved_names(table))
    print(f"wrote factor.pt, directions.md, directions.json, directions.png to {out}; "
          + (f"names: {named}" if named else f"directions not named: {table.reason}") + f" ({name_note})")
    return 0


def _resolved_names(table) -> list[str]:
    """'smile=3+ (oracle)', ... for every name the table resolves (the rule of `DirectionTable.resolved`)."""
    from toon3d.errors import Toon3dError

    out = []
    for name in table.names:
        try:
            index, sign, how = table.resolved(name)
        except Toon3dError:
            continue
        out.append(f"{name}={index}{'+' if sign > 0 else '-'} ({'weak oracle' if how.startswith('oracle,') else how})")
    return out


SHEET_NOTE = ("\n`directions.png`: one row per direction (0 at the top); in each row two latents, each at "
              "7 strengths from −{strength:g} to +{strength:g}.\n")


def layers_text(layers: list[int] | None) -> str:
    return "all" if layers is None else ",".join(map(str, layers))


def direction_sheet(generator, mean_latent, factor, args: argparse.Namespace):
    """[3,H,W] sheet: row k = direction k on SHEET_LATENTS latents × SHEET_STRENGTHS strengths."""
    import torch
    import torch.nn.functional as F

    from toon3d.edit.directions import apply_direction
    from toon3d.edit.naming import sample_w
    from toon3d.io.images import make_grid

    w = sample_w(generator, mean_latent, args.samples, args.seed, args.truncation)[:SHEET_LATENTS]
    strengths = torch.linspace(-args.strength, args.strength, SHEET_STRENGTHS)
    rows = []
    with torch.no_grad():
        for k in range(args.top):
            n = factor.eigvec[:, k].to(w)
            ws = torch.cat([apply_direction(w[i:i + 1].expand(SHEET_STRENGTHS, -1), strengths[:, None].to(w) * n,
                                            generator.n_latent, factor.layers) for i in range(len(w))])
            images = generator.synthesis(ws, noise_mode="const").float().cpu()
            if images.shape[-1] > SHEET_MAX_PX:
                images = F.interpolate(images, size=(SHEET_MAX_PX, SHEET_MAX_PX), mode="area")
            rows.append(images)
    return make_grid(torch.cat(rows), nrow=len(w) * SHEET_STRENGTHS)
