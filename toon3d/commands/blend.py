"""`toon3d blend`: model interpolation of two StyleGAN2 generators (Pinkney layer swap or feature injection).

Outputs: the blended model, one toon3d `.safetensors` file every `--ckpt` accepts (a plain
generator for `--mode swap`, a feature-injection file holding both generators for
`--mode inject`), with the settings and the sources (path, sha256) in its meta; and
`<out stem>.preview.png` beside it: one row per preview seed, columns low | high | blended,
all three fed the same w.

Both files are written under temporary names and renamed into place when complete.
"""

from __future__ import annotations

import argparse
from pathlib import Path

PREVIEW_SEEDS = (0, 1, 2, 3)
PREVIEW_TRUNCATION = 0.7


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `toon3d blend`."""
    parser = subparsers.add_parser(
        "blend", help="combine two generators: low resolutions from one, high from the other (toonify)",
        description="Model interpolation (docs/blend.md). --mode swap (default) is Pinkney & Adler's layer "
                    "swapping: the layers up to --resolution come from --low, the rest from --high, in one "
                    "plain generator. --mode inject is the seed code's feature injection: --low runs to its "
                    "--resolution block output, which replaces --high's there. The seed code uses --low the base "
                    "(FFHQ) generator, --high the fine-tuned cartoon one; toonify the other way round.")
    parser.add_argument("--low", required=True, metavar="CKPT",
                        help="generator for the low resolutions (structure): anything --ckpt of toon3d generate "
                             "accepts (default | base | cartoon | ffhq256 | PATH)")
    parser.add_argument("--high", required=True, metavar="CKPT",
                        help="generator for the high resolutions (texture, style); same architecture as --low")
    parser.add_argument("--resolution", type=int, default=16,
                        help="swap resolution in px: with level 0, the layers at this resolution and below come "
                             "from --low (default 16, the seed code's)")
    parser.add_argument("--level", type=int, choices=[0, 1], default=None,
                        help="Pinkney's level: 0 (default) splits after block --resolution, 1 also takes the next "
                             "block's upsampling conv from --low (swap only)")
    parser.add_argument("--width", type=float, default=None,
                        help="logistic blend width in layer positions instead of a hard swap (swap only; "
                             "default: hard swap)")
    parser.add_argument("--mapping-from", choices=["low", "high"], default="low",
                        help="whose mapping network and truncation mean the result uses (default low, as toonify)")
    parser.add_argument("--noise-from", choices=["low", "high"], default="low",
                        help="whose stored noise maps the result uses (default low, as toonify)")
    parser.add_argument("--mode", choices=["swap", "inject"], default="swap",
                        help="swap: Pinkney weight swapping (default, the paper); inject: feature injection "
                             "(the seed code)")
    parser.add_argument("--out", required=True, metavar="FILE.safetensors", help="the blended model file")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --out file (and its preview PNG)")
    parser.set_defaults(func=run)


def preview_path(out: Path) -> Path:
    """The preview grid written beside `out`: blended.safetensors -> blended.preview.png."""
    return out.with_name(out.stem + ".preview.png")


def _settings(args: argparse.Namespace):
    from toon3d.stylegan2.blend import BlendSettings

    level = 0 if args.level is None else args.level
    if args.mode == "inject" and (args.level is not None or args.width is not None):
        from toon3d.errors import Toon3dError

        raise Toon3dError("--level and --width apply to --mode swap only; feature injection replaces one block "
                          "output whole")
    return BlendSettings(swap_resolution=args.resolution, level=level, width=args.width,
                         mapping_from=args.mapping_from, noise_from=args.noise_from, mode=args.mode)


def _check_out(out: Path, overwrite: bool, specs: list[str]) -> None:
    """Refuse an --out that is not a .safetensors file name, exists (without --overwrite) or is an input."""
    from toon3d.errors import Toon3dError

    if out.suffix != ".safetensors":
        raise Toon3dError(f"--out {out}: the blended model is a toon3d .safetensors file; pass a name ending "
                          "in .safetensors")
    for target in (out, preview_path(out)):
        if target.is_dir():
            raise Toon3dError(f"{target} is a folder; pass a file name for --out")
        if target.exists() and not overwrite:
            raise Toon3dError(f"{target} exists; choose another --out or pass --overwrite")
        for spec in specs:
            if Path(spec).expanduser().exists() and Path(spec).expanduser().resolve() == target.resolve():
                raise Toon3dError(f"--out {out} would overwrite the input {spec}; choose another --out")


def _source_record(spec: str, loaded) -> dict:
    import hashlib

    record = {"spec": spec, "source": loaded.source, "entry": loaded.entry, "config": loaded.config,
              "truncation_mean": loaded.mean_source}
    path = Path(loaded.source)
    if path.is_file():
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        record.update(file=str(path.resolve()), sha256=digest.hexdigest())
    else:
        record.update(file=None, sha256=None, untrained=bool(loaded.meta.get("untrained")))
    return record


def _preview(low, high, blended):
    """Grid [3,H,W]: one row per preview seed, columns low | high | blended, all fed the blended model's w."""
    import torch

    from toon3d.io.images import make_grid
    from toon3d.seeds import z_from_seed
    from toon3d.stylegan2.sampling import synthesize, truncate

    z = torch.cat([z_from_seed(s, blended.config["style_dim"])[0] for s in PREVIEW_SEEDS], 0)
    with torch.no_grad():
        w = truncate(blended.generator.mapping(z), blended.mean_latent, PREVIEW_TRUNCATION)
        columns = [synthesize(g.generator, w, "const").float() for g in (low, high, blended)]
    rows = torch.stack(columns, 1).flatten(0, 1)  # seed-major: low, high, blended per seed
    return make_grid(rows, nrow=3)


def run(args: argparse.Namespace) -> int:
    """Load both generators, blend, write the model and its preview (all or nothing)."""
    import contextlib

    import toon3d
    from toon3d.errors import Toon3dError
    from toon3d.io.atomic import atomic_file
    from toon3d.io.images import save_png
    from toon3d.models import resolve_generator
    from toon3d.stylegan2.blend import blend_loaded
    from toon3d.stylegan2.checkpoints import save_generator

    settings = _settings(args)
    out = Path(args.out)
    _check_out(out, args.overwrite, [args.low, args.high])
    with contextlib.ExitStack() as stack:
        # Both places are claimed (folder checked writable) before the models are read.
        tmp_model = stack.enter_context(atomic_file(out))
        tmp_preview = stack.enter_context(atomic_file(preview_path(out)))
        low = resolve_generator(args.low)
        high = resolve_generator(args.high)
        for loaded, spec in ((low, args.low), (high, args.high)):
            if Path(loaded.source).resolve() == out.resolve():
                raise Toon3dError(f"--out {out} would overwrite the input {spec}; choose another --out")
        blended = blend_loaded(low, high, settings, f"--low {args.low}", f"--high {args.high}")
        grid = _preview(low, high, blended)
        meta = {"command": "toon3d blend", "toon3d_version": toon3d.__version__, "blend": settings.as_dict(),
                "sources": {"low": _source_record(args.low, low), "high": _source_record(args.high, high)},
                "truncation_mean": blended.mean_source,
                "preview": {"file": preview_path(out).name, "seeds": list(PREVIEW_SEEDS),
                            "truncation": PREVIEW_TRUNCATION, "columns": ["low", "high", "blended"]}}
        if low.meta.get("untrained") or high.meta.get("untrained"):
            meta["untrained"] = True  # so `toon3d generate` says its images are not faces
        save_generator(tmp_model, blended.generator, blended.mean_latent, meta)
        save_png(grid, tmp_preview)
    if settings.mode == "swap":
        how = (f"layer swap at {settings.swap_resolution} px, level {settings.level}"
               + (f", width {settings.width:g}" if settings.width is not None else ""))
    else:
        how = f"feature injection at {settings.swap_resolution} px"
    print(f"wrote {out} ({how}; low {args.low}, high {args.high}; mapping from {settings.mapping_from}, "
          f"noise from {settings.noise_from}) and {preview_path(out)} (rows: seeds "
          f"{PREVIEW_SEEDS[0]}-{PREVIEW_SEEDS[-1]}; columns: low | high | blended)")
    return 0
