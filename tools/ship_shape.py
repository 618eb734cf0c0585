"""Ship a pretrained 3D reconstructor as a built-in: toon3d/weights/shape_<world>.safetensors (fp16) + card.

    .venv/bin/python tools/ship_shape.py --run /work/runs/shape_toon --world toon \
        --eval toon=/work/data/toon64_test --eval synface=/work/data/synface64_test --n 256

Measures, on each held-out ground-truth folder, SIDE (×100) and MAD of the instant (feed-forward)
prediction with Unsup3d's protocol (`toon3d.shape.depth_eval`), next to the layout's ellipsoid
prior alone (what `--instant` falls back to without a reconstructor) and a flat card at the
predicted view for scale, and the CPU time per image; writes the weights, the card
(`toon3d.train.ship.write_card`) and a preview sheet `docs/images/shape_<world>.png`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from toon3d.errors import Toon3dError  # noqa: E402


def measure(nets, geometry, folder: str, n: int) -> dict:
    """Figures of the instant prediction on the first n images of a ground-truth folder."""
    from toon3d.shape.depth_eval import load_ground_truth, score_view_depth, summarise
    from toon3d.shape.instant import instant_reconstruct
    from toon3d.shape.photo_geometry import Decomposition
    from toon3d.shape.pretrain import prior_decomposition

    gt = load_ground_truth(folder, n, geometry.size)
    t0 = time.perf_counter()
    dec = instant_reconstruct(nets, gt.images, geometry, batch=1)
    per_image = (time.perf_counter() - t0) / gt.images.shape[0]
    instant = summarise(score_view_depth(dec, gt, geometry))
    flat = torch.full_like(dec.depth, 1.0)
    card = summarise(score_view_depth(Decomposition(flat, flat, dec.albedo, dec.view, dec.light), gt, geometry))
    prior = summarise(score_view_depth(prior_decomposition(gt.images, geometry), gt, geometry))
    beats = instant["side_x100"] <= prior["side_x100"] and instant["mad_deg"] <= prior["mad_deg"]
    return {"instant": instant, "prior": prior, "instant_beats_prior": beats,
            "flat_card_at_predicted_view": card, "seconds_per_image": round(per_image, 4), "folder": folder}


def describe(fig: dict, n: int) -> str:
    """One card line for a folder's figures."""
    i, c, p = fig["instant"], fig["flat_card_at_predicted_view"], fig["prior"]
    return (f"`{fig['folder']}` (first {i['n']} images): instant SIDE×100 {i['side_x100']:.3f} ± {i['side_x100_std']:.3f}, "
            f"MAD {i['mad_deg']:.2f} ± {i['mad_deg_std']:.2f}°; the layout's ellipsoid prior alone (frontal) "
            f"{p['side_x100']:.3f} / {p['mad_deg']:.2f}°; flat card at the predicted view "
            f"{c['side_x100']:.3f} / {c['mad_deg']:.2f}°; {fig['seconds_per_image']:.3f} s per image "
            "(CPU, 1 thread, batch 1)")


def sheet(nets, geometry, folder: str, path: Path) -> Path:
    """Preview sheet of the first 6 held-out images (input, recon, mirror, albedo, depth, shading, rotations)."""
    from toon3d.io.images import save_png
    from toon3d.shape.depth_eval import load_ground_truth
    from toon3d.shape.instant import instant_reconstruct
    from toon3d.shape.preview import preview_grid
    from toon3d.shape.renderer import Renderer

    images = load_ground_truth(folder, 6, geometry.size).images
    dec = instant_reconstruct(nets, images, geometry)
    return save_png(preview_grid(images, dec, Renderer(geometry.renderer_settings())), path)


def keep_encoder(nets, shipped_path: Path, meta: dict):
    """(nets with the shipped file's latent encoder E, meta with its record, the card's E section) for --keep-encoder."""
    from toon3d.shape.instant import load_shape_model
    from toon3d.shape.networks import ShapeNetConfig, ShapeNets

    if not shipped_path.is_file():
        raise Toon3dError(f"--keep-encoder needs a shipped {shipped_path.name} to take E from; it is missing")
    old, _, old_meta = load_shape_model(shipped_path)
    if not old_meta.get("encoder_loaded"):
        raise Toon3dError(f"{shipped_path} holds no latent encoder to keep; ship without --keep-encoder")
    config = dict(nets.config.as_dict(), nf_encoder=old.config.nf_encoder, latent_dim=old.config.latent_dim)
    merged = ShapeNets(ShapeNetConfig(**config))
    for part in ("depth", "albedo", "view", "light"):
        getattr(merged, part).load_state_dict(getattr(nets, part).state_dict())
    merged.encoder.load_state_dict(old.encoder.state_dict())
    card = shipped_path.with_suffix(".md")
    text = card.read_text() if card.is_file() else ""
    section = "## Latent encoder"
    if section in text:
        start = text.index(section)
        end = text.find("\n## ", start + len(section))
        section = text[start:end if end >= 0 else len(text)].rstrip()
    kept = ("- Kept from the previous `" + shipped_path.name + "` by `tools/ship_shape.py --keep-encoder`: it was "
            "trained against that file's D, A, V and L (its pseudo samples were rendered from them); E itself "
            "maps images to W offsets.")
    if kept not in section:  # once, however often the file is re-shipped
        section += "\n" + kept
    section += "\n"
    return merged, dict(meta, encoder=old_meta.get("encoder")), section


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a finished train-shape run folder (model.safetensors)")
    parser.add_argument("--world", required=True, choices=("base", "cartoon", "toon"))
    parser.add_argument("--eval", action="append", default=[], metavar="NAME=FOLDER",
                        help="held-out ground-truth folder to score (repeatable)")
    parser.add_argument("--n", type=int, default=256, help="held-out images per folder (default 256)")
    parser.add_argument("--weights-dir", default=str(REPO / "toon3d" / "weights"))
    parser.add_argument("--sheet-dir", default=str(REPO / "docs" / "images"))
    parser.add_argument("--notes", default="", help="free text for the card")
    parser.add_argument("--allow-worse", action="store_true",
                        help="ship even where the instant prediction scores worse than the ellipsoid prior alone")
    parser.add_argument("--keep-encoder", action="store_true",
                        help="carry the latent encoder E of the shipped shape_<world> file (and its card section) "
                             "into the new file: E maps images to W offsets, so it does not depend on D, A, V, L")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    from toon3d.shape.instant import load_shape_model, save_shape_model
    from toon3d.train.ship import machine_description, write_card

    run = Path(args.run)
    try:
        nets, geometry, meta = load_shape_model(run / "model.safetensors")
        record = json.loads((run / "config.json").read_text())
        figures = {}
        for item in args.eval:
            name, _, folder = item.partition("=")
            if not folder:
                raise Toon3dError(f"--eval takes NAME=FOLDER, got {item!r}")
            figures[name] = measure(nets, geometry, folder, args.n)
        worse = [name for name, fig in figures.items() if not fig["instant_beats_prior"]]
        if worse and not args.allow_worse:
            fig = figures[worse[0]]
            raise Toon3dError(
                f"the instant prediction is worse than the ellipsoid prior alone on {', '.join(worse)} (SIDE×100 "
                f"{fig['instant']['side_x100']:.3f} vs {fig['prior']['side_x100']:.3f}, MAD {fig['instant']['mad_deg']:.2f} "
                f"vs {fig['prior']['mad_deg']:.2f}°); nothing written: train longer or pass --allow-worse")
        weights = Path(args.weights_dir)
        name = f"shape_{args.world}"
        cfg = meta.get("config", {})
        warm_only = cfg.get("warmup_iters", 0) >= (meta.get("iteration") or 0) > 0
        what = ("warm-up only (GAN2Shape's step 1 over many images): D fitted to the layout's ellipsoid prior "
                "and held, A, L and the confidence net trained (flip symmetry, confidence maps), V untrained "
                "(frontal)" if warm_only else
                "Unsup3d-style joint pretraining of D, A, V, L (flip symmetry, confidence maps)")
        phases = [{"what": what,
                   "command": " && ".join(record.get("commands", [meta.get("command", "?")])),
                   "iterations": meta.get("iteration"), "minutes": meta.get("train_minutes"),
                   "data": meta.get("data")}]
        card_meta = {"phases": phases, "figures": {k: describe(v, args.n) for k, v in figures.items()},
                     "machine": machine_description(), "seed": meta.get("config", {}).get("seed"),
                     "train_config": meta.get("config")}
        shipped = dict(meta, phases=phases, figures=figures, machine=card_meta["machine"])
        encoder_section = ""
        if args.keep_encoder:
            nets, shipped, encoder_section = keep_encoder(nets, weights / f"{name}.safetensors", shipped)
        path = save_shape_model(weights / f"{name}.safetensors", nets, geometry, shipped, dtype=torch.float16,
                                with_encoder=args.keep_encoder)
        seed = meta.get("config", {}).get("seed")
        notes = (args.notes + "\n\n" if args.notes else "") + f"Seed {seed}. " + (
            "Feed-forward 3D reconstructor (depth, albedo, view, light networks; `toon3d.shape.instant`). "
            "Figures: SIDE (×100) and MAD (degrees) of the instant prediction's depth in the input view against "
            "the held-out ground truth, Unsup3d's protocol (`toon3d.shape.depth_eval`); the flat card is a "
            "constant depth rendered at the same predicted view, for scale.")
        config = {"nets": nets.config.as_dict(), "geometry": geometry.as_dict()}
        written = [path]
        if args.eval:
            folder = args.eval[0].partition("=")[2]
            written.append(sheet(nets, geometry, folder, Path(args.sheet_dir) / f"{name}.png"))
        write_card(weights / f"{name}.md", name, config, card_meta, [path], notes)
        if encoder_section:
            card = weights / f"{name}.md"
            card.write_text(card.read_text().rstrip() + "\n\n" + encoder_section)
    except Toon3dError as err:
        print(f"ship_shape: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(figures, indent=2))
    print(f"wrote {', '.join(str(p) for p in written)} and {weights / (name + '.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
