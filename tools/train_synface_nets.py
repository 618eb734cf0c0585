"""Train, score and ship the built-in world's SynFace parser and attribute oracle.

    OMP_NUM_THREADS=1 python tools/train_synface_nets.py --out /work/runs/synface_nets [--which parser|oracle|both]
        [--train-n 16000] [--parser-steps 600] [--oracle-steps 2500] [--ship]

Renders (or reuses, from --out) a pool of SynFace faces at 64 px (data-set seed --data-seed), trains
the chosen networks at 1 thread for a fixed number of steps (a CPU-time cap stops a slower run
early), scores them on held-out faces of another data-set seed (SynFace, the toon style of the same
faces, and samples of the built-in base generator against the SynFace renders of their latents), and
writes `<net>.safetensors` + `<net>_figures.json` into --out. --ship also writes the fp16 weights and
a model card into toon3d/weights (parser_synface.*, oracle_synface.*). --eval-only scores the files in
--out again.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from toon3d.faces.attribute_oracle import (WEIGHTS_NAME as ORACLE_NAME, AttributeOracle, OracleConfig,
                                           load_attribute_oracle, oracle_config_dict)
from toon3d.faces.mask_rule import face_mask_from_parsing
from toon3d.faces.synface_parser import (PARSER_CLASSES, PARSER_TO_CELEBAMASK, PARSER_TO_SYNFACE,
                                         WEIGHTS_NAME as PARSER_NAME, ParserConfig, SynFaceParser,
                                         load_synface_parser, parser_config_dict)
from toon3d.faces.synface_training import (TrainSettings, from_uint8, mask_iou, r2_scores, render_labelled,
                                           render_pool, segmentation_scores, train_oracle, train_parser,
                                           unit_targets)
from toon3d.io.checkpoint import load_training_state, save_model, save_training_state
from toon3d.synth.face_albedo import SEG_NAMES
from toon3d.synth.latent_params import params_from_latent

COMMAND = "python tools/train_synface_nets.py " + " ".join(sys.argv[1:])


def pool(out: Path, n: int, seed: int, style: str = "synface") -> dict:
    path = out / f"pool_{style}_{seed}_{n}.pt"
    if path.is_file():
        return load_training_state(path)
    start = time.process_time()
    data = render_pool(n, seed, 64, style)
    data["render_cpu_seconds"] = round(time.process_time() - start, 1)
    save_training_state(path, data)
    return data


def half_state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}


def base_samples(n: int, seed: int) -> tuple[torch.Tensor, dict, str, torch.Tensor]:
    """Built-in base generator samples G(z), the labelled SynFace renders of params_from_latent(z), source, z."""
    from toon3d.edit.directions import apply_direction
    from toon3d.models import default_generator

    loaded = default_generator("base")
    g = loaded.generator.eval()
    z = torch.randn(n, g.style_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        w = g.mapping(z)
        images = g.synthesis(apply_direction(w, torch.zeros(g.style_dim), g.n_latent), noise_mode="const").clamp(-1, 1)
    return images.float(), render_labelled(params_from_latent(z), g.size), loaded.source, z


def parser_figures(parser: SynFaceParser, heldout: dict, toon: dict, base: tuple) -> dict:
    to_celeb = torch.tensor(PARSER_TO_CELEBAMASK)
    to_syn = torch.tensor(PARSER_TO_SYNFACE)

    def score(images: torch.Tensor, labels: torch.Tensor) -> dict:
        pred = torch.cat([parser.parse(images[i:i + 256]) for i in range(0, len(images), 256)])
        full = segmentation_scores(pred, labels.long(), PARSER_CLASSES)
        syn = segmentation_scores(to_syn[pred], to_syn[labels.long()], SEG_NAMES)
        masks = {rule: mask_iou(face_mask_from_parsing(to_celeb[pred], rule),
                                face_mask_from_parsing(to_celeb[labels.long()], rule)) for rule in ("seed", "face")}
        return {"classes10": full, "synface8": syn, "mask_iou": masks}

    images, labelled, source, _ = base
    return {"heldout_synface": score(from_uint8(heldout["images"]), heldout["labels"]),
            "heldout_toon": score(from_uint8(toon["images"]), toon["labels"]),
            "base_generator": {"source": source,
                               **score(images, labelled["labels"])}}


def oracle_figures(oracle: AttributeOracle, heldout: dict, toon: dict, base: tuple) -> dict:
    def score(images: torch.Tensor, table: torch.Tensor) -> dict:
        pred = torch.cat([oracle.predict_unit(images[i:i + 256]) for i in range(0, len(images), 256)])
        return r2_scores(pred, unit_targets(table, oracle.params), oracle.params)

    images, _, source, z = base
    return {"heldout_synface": score(from_uint8(heldout["images"]), heldout["params"]),
            "heldout_toon": score(from_uint8(toon["images"]), toon["params"]),
            "base_generator": {"source": source,
                               **score(images, params_from_latent(z).to_tensor())}}


BASE_SEED = 7
# Colours of the parser classes in the sheet (bg, skin, brows, eyes, nose, mouth, hair, glasses, ears, neck).
PALETTE = torch.tensor([[0, 0, 0], [230, 190, 150], [90, 50, 20], [40, 120, 255], [255, 120, 40], [220, 30, 60],
                        [150, 80, 200], [40, 220, 220], [250, 240, 60], [120, 200, 90]]) / 127.5 - 1


def parser_sheet(parser: SynFaceParser, sets: list[torch.Tensor], path: Path, n: int = 8, scale: int = 3) -> None:
    """PNG: per image set, rows of images, predicted classes, and the image under the seed-rule mask."""
    from toon3d.io.images import make_grid, save_png

    rows = []
    for images in sets:
        x = images[:n]
        labels = parser.parse(x)
        colours = PALETTE[labels].permute(0, 3, 1, 2)
        masked = torch.where(parser.face_mask(x, "seed") > 0, x, torch.full_like(x, -0.6))
        rows += [x, colours, masked]
    grid = make_grid(torch.cat(rows).clamp(-1, 1), nrow=n)
    save_png(torch.nn.functional.interpolate(grid[None], scale_factor=scale, mode="nearest")[0], path)


def card(path: Path, name: str, what: str, config: dict, record: dict, figures: dict, files: list[Path],
         notes: str, provenance: dict) -> None:
    from toon3d.train.ship import machine_description, write_card

    command = provenance["command"]
    if command != COMMAND:
        command += f"   # scored and shipped by: {COMMAND}"
    phase = {"what": what, "command": command, "iterations": record["steps_done"],
             "minutes": round(record["cpu_seconds"] / 60, 1), "data": provenance["data"]}
    write_card(path, name, config, {"phases": [phase], "machine": machine_description() + ", 1 thread",
                                    "figures": figures}, files, notes)


def summary_lines(figures: dict, kind: str) -> dict:
    """The card's short figures (the full JSON sits beside the weights in the run folder)."""
    out = {}
    for where, f in figures.items():
        if kind == "parser":
            out[f"{where}: pixel accuracy / mIoU (10 classes)"] = (
                f"{f['classes10']['pixel_accuracy']:.4f} / {f['classes10']['miou']:.4f}")
            out[f"{where}: mIoU (SynFace's 8 classes)"] = f"{f['synface8']['miou']:.4f}"
            out[f"{where}: per-class IoU"] = json.dumps(f["classes10"]["iou"])
            out[f"{where}: face-mask IoU, rules seed / face"] = (
                f"{f['mask_iou']['seed']:.4f} / {f['mask_iou']['face']:.4f}")
        else:
            out[f"{where}: R² by group"] = json.dumps(f["r2_group"])
            out[f"{where}: R² per parameter"] = json.dumps(f["r2"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--which", choices=["parser", "oracle", "both"], default="both")
    ap.add_argument("--train-n", type=int, default=16000)
    ap.add_argument("--heldout-n", type=int, default=1024)
    ap.add_argument("--data-seed", type=int, default=1000)
    ap.add_argument("--heldout-seed", type=int, default=2000)
    ap.add_argument("--parser-steps", type=int, default=600)
    ap.add_argument("--oracle-steps", type=int, default=2500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--cpu-budget", type=float, default=600.0, help="CPU seconds per network (early stop)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-only", action="store_true")
    ap.add_argument("--ship", action="store_true")
    ap.add_argument("--sheet", type=Path, default=None, help="write the parser's PNG sheet here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    from toon3d.models import WEIGHTS_DIR

    heldout = pool(args.out, args.heldout_n, args.heldout_seed)
    toon = pool(args.out, args.heldout_n, args.heldout_seed, "toon")
    base = base_samples(256, BASE_SEED)
    train = None if args.eval_only else pool(args.out, args.train_n, args.data_seed)
    data = (f"{args.train_n} SynFace faces at 64 px (data-set seed {args.data_seed}), rendered once "
            f"({train.get('render_cpu_seconds', '?') if train else '?'} CPU s); held-out: {args.heldout_n} faces of seed "
            f"{args.heldout_seed}")
    for kind in (["parser", "oracle"] if args.which == "both" else [args.which]):
        run_file = args.out / f"{kind}.safetensors"
        settings = TrainSettings(steps=args.parser_steps if kind == "parser" else args.oracle_steps,
                                 batch=args.batch, seed=args.seed, cpu_budget_s=args.cpu_budget)
        provenance = {"command": COMMAND, "data": data}
        if args.eval_only:
            from toon3d.io.checkpoint import load_model_file

            stored = load_model_file(run_file).meta
            record = stored["training"]
            provenance = {"command": stored.get("command", "unrecorded"), "data": stored.get("data", data)}
        elif kind == "parser":
            net, record = train_parser(train, settings, ParserConfig())
            save_model(run_file, net.state_dict(), parser_config_dict(net.config), {"training": record, **provenance})
        else:
            parser = load_synface_parser(args.out / "parser.safetensors").net
            net, record = train_oracle(train, settings, OracleConfig(), parser=parser)
            r2 = oracle_figures(AttributeOracle(net), heldout, toon, base)["heldout_synface"]["r2"]
            save_model(run_file, net.state_dict(), oracle_config_dict(net.config),
                       {"training": record, "heldout_r2": r2, **provenance})
        model = load_synface_parser(run_file) if kind == "parser" else load_attribute_oracle(run_file)
        figures = (parser_figures if kind == "parser" else oracle_figures)(model, heldout, toon, base)
        (args.out / f"{kind}_figures.json").write_text(json.dumps({"training": record, "figures": figures},
                                                                   indent=1) + "\n")
        print(kind, json.dumps(summary_lines(figures, kind), indent=1))
        print(kind, "training", json.dumps(record))
        if kind == "parser" and args.sheet is not None:
            parser_sheet(model, [from_uint8(heldout["images"]), from_uint8(toon["images"]), base[0]], args.sheet)
        if args.ship:
            name = PARSER_NAME if kind == "parser" else ORACLE_NAME
            config = parser_config_dict(model.net.config) if kind == "parser" else oracle_config_dict(model.net.config)
            meta = {"training": record, **provenance}
            if kind == "oracle":
                meta["heldout_r2"] = figures["heldout_synface"]["r2"]
            weights = save_model(WEIGHTS_DIR / f"{name}.safetensors", half_state(model.net), config, meta)
            notes = NOTES[kind]
            what = ("SynFace parser: weighted cross-entropy on SynFace ground truth (ears/neck split from skin)"
                    if kind == "parser" else "attribute oracle: MSE on range-scaled SynFace parameters")
            card(WEIGHTS_DIR / f"{name}.md", name, what, config, record, summary_lines(figures, kind),
                 [weights], notes, provenance)
            print("shipped", weights)


NOTES = {
    "parser": ("The built-in world's face parser (`toon3d.faces.synface_parser`): a 4-level U-Net trained on "
               "SynFace's ground-truth segmentation, 10 classes (SynFace's 8 with skin split into face, ears, "
               "neck) mapped onto CelebAMask-HQ ids for the mask rules of `toon3d.faces.mask_rule`. It masks "
               "the low-level feature loss of `toon3d edit` on the built-in generators. Figures: held-out "
               "SynFace faces (another data-set seed), the same faces drawn in the toon style (out of domain), "
               "and built-in base generator samples scored against the SynFace renders of their latents (the "
               "images the decoder was trained to reproduce). Training minutes are process CPU time at 1 thread "
               "(the machine was shared); the full figures JSON is written beside the run's weights."),
    "oracle": ("The built-in world's attribute oracle (`toon3d.faces.attribute_oracle`): a small CNN trained on "
               "SynFace renders to predict the identity, expression and pose parameters SynFace drew, each "
               "rescaled to its range. It names SeFa directions and measures edits; it is never used inside an "
               "optimisation. Figures: R² on held-out SynFace faces (another data-set seed), the same faces in "
               "the toon style (out of domain), and built-in base generator samples against params_from_latent(z). "
               "Training minutes are process CPU time at 1 thread (the machine was shared)."),
}


if __name__ == "__main__":
    main()
