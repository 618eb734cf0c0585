"""`toon3d edit`: an expression edit of one face, SeFa vs refined, on the human and the cartoon generator.

The paper's order (III-C): the direction comes from G_base (--ckpt), the refinement runs on
G_base with a face recognition network, and the same edited W code then drives the cartoon
generator (--style). Outputs (all in --out, all-or-nothing):

  - one PNG per image, `{domain}_{method}_{sign}.png`: `human_neutral.png`, `human_sefa_plus.png`,
    `human_sefa_minus.png`, `human_refined_plus.png`, ..., `cartoon_refined_minus.png`;
  - `grid.png`, like the paper's Figure 8: rows human SeFa, human refined, cartoon SeFa,
    cartoon refined; columns w − Δw, w, w + Δw;
  - `edits.pt`: the W codes ([D], or [n_latent,D] W+ codes with --layers or a W+ face) by name, and all of them
    stacked under 'latents' (so `toon3d generate --latents edits.pt --space w` renders them);
  - `edits.json`: what each latent holds, the direction, settings, the refinement's per-step
    losses, identity distances and landmark measures of the human images.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

REFINE_CHOICES = ("paper", "code", "off")
DEFAULT_REFINE = "code"
DEFAULT_STRENGTH = 3.0
LOW_BLOCKS = 4
# Kept here so `toon3d --help` imports no torch; tests check they equal toon3d.edit.naming.NAMES / VARIANTS.
DIRECTION_NAMES = ("smile", "mouth_open", "eyes_closed", "brows_up", "yaw", "pitch")
VARIANT_CHOICES = ("sefa", "rosinality")
MASK_CHOICES = ("auto", "bisenet", "synface", "ellipse", "none")  # = toon3d.edit.masks.MASK_SOURCES


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `toon3d edit`."""
    parser = subparsers.add_parser(
        "edit", help="edit one face's expression along a SeFa direction, with identity-preserving refinement",
        description="Edit one latent along a SeFa direction of the human generator (--ckpt), refine the edit so "
                    "the face keeps its identity (paper III-C), and render both on the human and the cartoon "
                    "generator. Writes each image as a PNG, a Figure-8-like grid, edits.pt and edits.json.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--seed", type=int, default=None, help="seed of the face (z → W, truncated)")
    source.add_argument("--latent", default=None, metavar="W.pt",
                        help="a latent file: W ([D] or [N,D]) or W+ ([N,n_latent,D], toon3d invert --wplus), "
                             ".pt or .npy, e.g. toon3d generate's latents.pt")
    parser.add_argument("--latent-index", type=int, default=0, help="row of --latent to edit (default 0)")
    parser.add_argument("--direction", required=True,
                        help=f"a direction index (0 = strongest) or a name: {', '.join(DIRECTION_NAMES)}")
    parser.add_argument("--strength", type=float, default=DEFAULT_STRENGTH,
                        help=f"edit strength alpha in W (default {DEFAULT_STRENGTH:g}); negative flips the sign")
    parser.add_argument("--refine", choices=list(REFINE_CHOICES), default=DEFAULT_REFINE,
                        help="code: the released code's symmetric ± loss with the -log low-level term (default); "
                             "paper: Eq. 9, L_id - 0.2 L_low, refined per sign; off: SeFa only")
    parser.add_argument("--ckpt", default="base", help="the human generator G_base: base | ffhq256 | PATH")
    parser.add_argument("--style", default="cartoon",
                        help="the cartoon generator: cartoon | toon | PATH | none (default cartoon)")
    parser.add_argument("--no-blend", action="store_true",
                        help="with --style cartoon|toon: the raw fine-tuned generator, not its blend with base")
    parser.add_argument("--factor", default=None, metavar="factor.pt",
                        help="directions from toon3d directions (names are read from the directions.json beside "
                             "it) or the seed code; default: factorise --ckpt now")
    parser.add_argument("--variant", choices=list(VARIANT_CHOICES), default=None,
                        help="factorisation variant when no --factor is given (default sefa)")
    parser.add_argument("--layers", default=None,
                        help="W+ layers to factorise and edit when no --factor is given (default all)")
    parser.add_argument("--truncation", type=float, default=None,
                        help="psi toward G_base's mean latent; default 0.7 with --seed, 1.0 with --latent")
    parser.add_argument("--steps", type=int, default=10, help="refinement steps (default 10)")
    parser.add_argument("--lr", type=float, default=0.1, help="refinement initial learning rate (default 0.1)")
    parser.add_argument("--synthesis-size", default="full", metavar="N|full",
                        help="compute the refinement's losses on G_base stopped at N px plus the full image's "
                             "residual at w (toon3d.stylegan2.early_exit): 128 halves a 256 px edit's time; "
                             "default full (the paper)")
    parser.add_argument("--identity", default="auto",
                        help="identity network of L_id and f_low: auto (default: synface on the built-in base "
                             "without --identity-weights, else dlib), dlib (dlib's face ResNet), synface (the "
                             "built-in world's, trained on SynFace identities) or lresnet (the paper's, user-supplied)")
    parser.add_argument("--identity-weights", default=None, metavar="PATH",
                        help="weights of the identity network (default: found in the models folder or package)")
    parser.add_argument("--mask", default="auto",
                        help="face mask of the low-level loss: auto (default: BiSeNet with --bisenet, else the "
                             "SynFace parser on the built-in base, else BiSeNet from the models folder, else the "
                             "fixed ellipse), bisenet, synface, ellipse or none")
    parser.add_argument("--bisenet", default=None, metavar="79999_iter.pth",
                        help="BiSeNet face-parsing weights for --mask auto|bisenet (default: the models folder)")
    parser.add_argument("--name-samples", type=int, default=64,
                        help="latents measured to name directions when no directions.json is at hand (default 64)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    parser.add_argument("--out", required=True, help="output folder (must be new or empty unless --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder toon3d wrote")
    parser.set_defaults(func=run)


def _check_settings(args: argparse.Namespace):
    """Everything checkable before a model is loaded: → (direction spec, truncation)."""
    from toon3d.edit.naming import parse_direction
    from toon3d.errors import Toon3dError

    direction = parse_direction(args.direction)
    if not math.isfinite(args.strength) or args.strength == 0:
        raise Toon3dError(f"--strength must be a finite, non-zero number, got {args.strength}")
    truncation = args.truncation if args.truncation is not None else (0.7 if args.seed is not None else 1.0)
    if not math.isfinite(truncation):
        raise Toon3dError(f"--truncation must be a finite number, got {args.truncation}")
    if args.seed is not None and not 0 <= args.seed < 2**32:
        raise Toon3dError(f"--seed must be in 0..{2**32 - 1}, got {args.seed}")
    if args.steps < 1:
        raise Toon3dError(f"--steps must be at least 1, got {args.steps}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise Toon3dError(f"--lr must be a positive number, got {args.lr}")
    if args.name_samples < 2:
        raise Toon3dError(f"--name-samples must be at least 2, got {args.name_samples}")
    if args.factor is not None and (args.variant is not None or args.layers is not None):
        raise Toon3dError("--factor brings its own variant and layers; drop --variant/--layers or drop --factor")
    if args.latent_index < 0:
        raise Toon3dError(f"--latent-index must be non-negative, got {args.latent_index}")
    if args.mask not in MASK_CHOICES:
        raise Toon3dError(f"unknown --mask {args.mask!r}; choose one of {', '.join(MASK_CHOICES)}")
    return direction, float(truncation)


def _load_latent(args: argparse.Namespace):
    from toon3d.errors import Toon3dError
    from toon3d.io.latents import load_latents

    codes = load_latents(args.latent, dim=None, flag="--latent", wplus=True)
    if args.latent_index >= codes.shape[0]:
        raise Toon3dError(f"--latent-index {args.latent_index} is out of range: {args.latent} holds "
                          f"{codes.shape[0]} latent(s)")
    return codes[args.latent_index:args.latent_index + 1]


def _style_spec(args: argparse.Namespace) -> str | None:
    return None if args.style == "none" else args.style


def run(args: argparse.Namespace) -> int:
    """Resolve the direction, refine, render, write."""
    import contextlib

    from toon3d.commands.generate import _ckpt_inputs
    from toon3d.devices import resolve_device
    from toon3d.io.atomic import atomic_dir

    direction_spec, truncation = _check_settings(args)
    _synthesis_size(args)  # a bad value fails before any model loads
    from toon3d.faces.identity import choose_identity

    args.identity = choose_identity(args.identity, args.ckpt, args.identity_weights)
    latent = _load_latent(args) if args.latent is not None else None
    device = resolve_device(args.device)
    out = Path(args.out)
    style = _style_spec(args)
    inputs = [*_ckpt_inputs(args.ckpt), *(_ckpt_inputs(style) if style else []), args.latent, args.factor]
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(atomic_dir(out, overwrite=args.overwrite, inputs=inputs))
        summary = _edit_into(tmp, args, direction_spec, truncation, latent, device)
    print(f"wrote {len(summary['images'])} images, grid.png, edits.pt, edits.json to {out} "
          f"(direction {summary['direction']['index']}{'+' if summary['direction']['sign'] > 0 else '-'}, "
          f"refine {args.refine})")
    for note in summary["notes"]:
        print(f"toon3d edit: note: {note}", file=sys.stderr)
    return 0


def _models(args: argparse.Namespace, device):
    """(human LoadedGenerator, cartoon LoadedGenerator or None), checked to share one latent space layout."""
    from toon3d.errors import Toon3dError
    from toon3d.models import resolve_generator

    human = resolve_generator(args.ckpt)
    human.generator.to(device).eval()
    style = _style_spec(args)
    cartoon = None
    if style is not None:
        cartoon = resolve_generator(style, blend=not args.no_blend)
        cartoon.generator.to(device).eval()
        h, c = human.generator, cartoon.generator
        if (h.style_dim, h.n_latent, h.size) != (c.style_dim, c.n_latent, c.size):
            raise Toon3dError(f"--style {style} ({c.size} px, W {c.style_dim}-d, {c.n_latent} layers) does not "
                              f"match --ckpt {args.ckpt} ({h.size} px, W {h.style_dim}-d, {h.n_latent} layers); "
                              "pass a style fine-tuned from --ckpt, or --style none")
    return human, cartoon


def _factor(args: argparse.Namespace, human):
    """(Factorization, where it came from); a factor of another generator is an error or a warning."""
    from toon3d.edit.directions import DEFAULT_VARIANT, DIAGONAL_TOLERANCE, factorize, load_factor, off_diagonal_ratio
    from toon3d.edit.directions import parse_layers

    g = human.generator
    if args.factor is None:
        layers = parse_layers(args.layers, g.n_latent)
        return factorize(g, args.variant or DEFAULT_VARIANT, layers, ckpt=human.source), "computed"
    factor = load_factor(args.factor, g.style_dim, g.n_latent)
    ratio = off_diagonal_ratio(factor.eigvec, g, factor.variant, factor.layers, top=32)
    if ratio > DIAGONAL_TOLERANCE:
        print(f"toon3d edit: warning: {args.factor} does not diagonalise {human.source}'s modulations "
              f"(off-diagonal ratio {ratio:.2g}): its directions come from another generator "
              f"({factor.ckpt or 'unrecorded'})", file=sys.stderr)
    return factor, args.factor


def _names_table(args: argparse.Namespace, human, factor, device):
    """The name table: directions.json beside --factor when it matches, else measured now."""
    from toon3d.edit.name_by import naming_oracle
    from toon3d.edit.naming import DirectionTable, factor_checksum, measure_directions

    if args.factor is not None:
        path = Path(args.factor).with_name("directions.json")
        if path.is_file():
            try:
                table = DirectionTable.from_json(json.loads(path.read_text()))
            except (OSError, ValueError, KeyError, TypeError, IndexError):
                table = None
            if table is not None and table.checksum == factor_checksum(factor, len(table.indices)):
                return table, str(path)
            print(f"toon3d edit: note: {path} does not belong to {args.factor}; measuring the directions again",
                  file=sys.stderr)
    print(f"toon3d edit: measuring the top directions on {args.name_samples} latents to name them (run toon3d "
          "directions once and pass --factor DIR/factor.pt to skip this)", file=sys.stderr)
    oracle, note = naming_oracle("auto", args.ckpt, device)
    table = measure_directions(human.generator, human.mean_latent.to(device), factor, samples=args.name_samples,
                               oracle=oracle)
    return table, f"measured; {note}"


def _edit_into(folder: Path, args: argparse.Namespace, direction_spec, truncation: float, latent, device) -> dict:
    import torch

    import toon3d
    from toon3d.edit.directions import apply_direction
    from toon3d.errors import Toon3dError
    from toon3d.io.checkpoint import save_training_state
    from toon3d.io.images import make_grid, save_png
    from toon3d.io.latents import check_latents_fit
    from toon3d.seeds import z_from_seed

    human, cartoon = _models(args, device)
    g = human.generator
    embedder = _identity(args, device) if args.refine != "off" else _identity_if_available(args, device)
    factor, factor_source = _factor(args, human)
    if isinstance(direction_spec, int):
        index, sign, how = direction_spec, 1, "index"
        factor.direction(index)  # range check
        table_source = None
    else:
        table, table_source = _names_table(args, human, factor, device)
        index, sign, decided = table.resolved(direction_spec)
        how = f"name {direction_spec!r} ({table_source}; decided by {decided})"
    n = (sign * factor.direction(index)).to(device)
    mean = human.mean_latent.to(device)
    if latent is not None:
        w = check_latents_fit(latent, g.style_dim, g.n_latent, args.latent, human.source).to(device)
    else:
        z, _ = z_from_seed(args.seed, g.style_dim)
        with torch.no_grad():
            w = g.mapping(z.to(device))
    w = mean + truncation * (w - mean)
    alpha = float(args.strength)
    deltas = {"sefa_plus": alpha * n[None], "sefa_minus": -alpha * n[None]}
    refine_record, notes = None, []
    if args.refine != "off":
        mask = _mask(args, device)
        notes.append(mask.note)
        deltas_refined, refine_record = _refine(args, g, w, n, alpha, factor.layers, embedder, mask)
        deltas.update(deltas_refined)
    codes = {"neutral": apply_direction(w, torch.zeros_like(n), g.n_latent)}
    for name, delta in deltas.items():
        codes[name] = apply_direction(w, delta, g.n_latent, factor.layers)
    if not all(torch.isfinite(c).all() for c in codes.values()):
        raise Toon3dError("the refinement produced NaN/inf latents; try --refine code or a smaller --lr")
    domains = {"human": g} | ({"cartoon": cartoon.generator} if cartoon is not None else {})
    images: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for domain, gen in domains.items():
            batch = gen.synthesis(torch.cat(list(codes.values())), noise_mode="const").float().cpu()
            for name, image in zip(codes, batch):
                images[f"{domain}_{name}"] = image
    names = []
    for key, image in images.items():
        save_png(image, folder / f"{key}.png")
        names.append(f"{key}.png")
    methods = ["sefa"] + (["refined"] if args.refine != "off" else [])
    rows = [[images[f"{d}_{m}_minus"], images[f"{d}_neutral"], images[f"{d}_{m}_plus"]]
            for d in domains for m in methods]
    save_png(make_grid(torch.stack([x for row in rows for x in row]), nrow=3), folder / "grid.png")
    # W codes: [D] for a plain W edit of a W code, [n_latent, D] when the edit touches chosen W+
    # layers only or the face was a W+ code.
    wplus = factor.layers is not None or w.dim() == 3
    stored = {k: (v[0] if wplus else v[0, 0]).detach().float().cpu().contiguous() for k, v in codes.items()}
    save_training_state(folder / "edits.pt", {**stored, "latents": torch.stack(list(stored.values())),
                                              "order": list(stored)})
    human_batch = torch.stack([images[f"human_{k}"] for k in codes])
    summary = {
        "command": "toon3d edit", "toon3d_version": toon3d.__version__,
        "settings": {"seed": args.seed, "latent": args.latent, "latent_index": args.latent_index if args.latent
                     else None, "strength": alpha, "refine": args.refine, "truncation": truncation,
                     "steps": args.steps, "lr": args.lr, "identity": args.identity, "mask": args.mask,
                     "bisenet": args.bisenet, "device": str(device)},
        "direction": {"spec": args.direction, "index": index, "sign": sign, "resolved_by": how,
                      "factor": factor_source, "variant": factor.variant, "layers": factor.layers},
        "models": {"human": {"source": human.source, "config": human.config, "truncation_mean": human.mean_source},
                   "cartoon": None if cartoon is None else {"source": cartoon.source, "config": cartoon.config}},
        "latents": {"file": "edits.pt", "order": list(stored), "stacked": "latents",
                    "shape": list(stored["neutral"].shape),
                    "space": "W (same code for every layer)" if not wplus else
                             "W+ (" + ("a W+ face" if w.dim() == 3 else "a W face")
                             + (f", edit on layers {factor.layers})" if factor.layers is not None else ")"),
                    "truncated": f"psi {truncation:g} toward G_base's mean before editing",
                    "holds": {k: _describe(k) for k in stored}},
        "images": names,
        "grid": {"file": "grid.png", "rows": [f"{d} {m}" for d in domains for m in methods],
                 "columns": ["w - dw", "w", "w + dw"]},
        "refinement": refine_record,
        "human_measures": _measures(human_batch, list(codes)),
        "identity_distance": _identity_distances(embedder, human_batch, list(codes), device),
        "notes": notes,
    }
    with open(folder / "edits.json", "w") as handle:
        handle.write(json.dumps(summary, indent=2) + "\n")
    return summary


def _describe(key: str) -> str:
    if key == "neutral":
        return "w, the unedited code"
    method, sign = key.split("_")
    op = "+" if sign == "plus" else "-"
    if method == "sefa":
        return f"w {op} strength*n (SeFa, Eq. 5)"
    return f"w {op} refined dw (identity-preserving refinement)"


def _identity(args: argparse.Namespace, device):
    from toon3d.errors import Toon3dError

    try:
        from toon3d.faces.identity import load_identity_embedder
    except ImportError as err:
        raise Toon3dError(f"the identity network cannot be loaded ({err}); reinstall toon3d with its dlib "
                          "dependencies (pip install dlib-bin face-recognition-models) or pass --refine off") from None
    return load_identity_embedder(args.identity, args.identity_weights).to(device).eval()


def _identity_if_available(args: argparse.Namespace, device):
    """The identity network for the identity distances of --refine off, or None when it cannot be loaded."""
    from toon3d.errors import Toon3dError

    try:
        return _identity(args, device)
    except Toon3dError:
        return None


def _mask(args: argparse.Namespace, device):
    """The face mask of the low-level loss (`toon3d.edit.masks.choose_mask`): a MaskSource."""
    from toon3d.edit.masks import choose_mask
    from toon3d.edit.name_by import is_builtin_base

    return choose_mask(args.mask, builtin_generator=is_builtin_base(args.ckpt), bisenet_path=args.bisenet,
                       device=device)


def _synthesis_size(args: argparse.Namespace) -> int | None:
    """--synthesis-size: None for 'full', else a power of two ≥ 16 (one-line error otherwise)."""
    from toon3d.errors import Toon3dError

    text = str(args.synthesis_size).strip().lower()
    if text == "full":
        return None
    if not text.isdigit() or int(text) < 16 or int(text) & (int(text) - 1):
        raise Toon3dError(f"--synthesis-size {args.synthesis_size!r}: give a power of two ≥ 16 (e.g. 128) or 'full'")
    return int(text)


def _refine(args: argparse.Namespace, g, w, n, alpha: float, layers, embedder, mask_source):
    """Refined deltas {'refined_plus': [1,D], 'refined_minus': [1,D]} and the record for edits.json."""
    import time

    import torch

    from toon3d.edit.refine import refine_direction

    def low(images):
        return embedder.features(images, LOW_BLOCKS)[-1]

    mask = mask_source.fn
    start = time.perf_counter()
    if args.refine == "paper":
        result = refine_direction(g, w.expand(2, *w.shape[1:]), n, torch.tensor([alpha, -alpha]), embedder.embed,
                                  low, mask, "paper", args.steps, args.lr, layers=layers,
                                  synthesis_size=_synthesis_size(args))
        deltas = {"refined_plus": result.delta_w[0:1], "refined_minus": result.delta_w[1:2]}
        samples = ["plus", "minus"]
    else:
        result = refine_direction(g, w, n, alpha, embedder.embed, low, mask, "code", args.steps, args.lr,
                                  layers=layers, synthesis_size=_synthesis_size(args))
        deltas = {"refined_plus": result.delta_w, "refined_minus": -result.delta_w}
        samples = ["symmetric"]
    seconds = time.perf_counter() - start
    record = {"mode": result.mode, "lambda_low": result.lambda_low, "steps": args.steps, "lrs": result.lrs,
              "synthesis_size": _synthesis_size(args),
              "seconds": round(seconds, 3), "identity": args.identity, "low_features": f"first {LOW_BLOCKS} blocks",
              "mask": mask_source.describe(), "runs": samples,
              "losses": result.losses.T.tolist(), "id_losses": result.id_losses.T.tolist(),
              "low_losses": result.low_losses.T.tolist(),
              "delta_norm": {"sefa": abs(alpha), **{k: float(v.norm()) for k, v in deltas.items()}}}
    return deltas, record


def _measures(images, keys: list[str]) -> dict | None:
    """dlib landmark measures of the human images (None when dlib's landmark model is missing)."""
    from toon3d.edit.landmarks import MEASURES, FaceLandmarks, face_measures
    from toon3d.errors import Toon3dError

    try:
        landmarks = FaceLandmarks()
    except Toon3dError:
        return None
    values = face_measures(landmarks.landmarks(images))
    found = landmarks.confirmed(images)
    return {k: {"face_confirmed": bool(found[i]), **dict(zip(MEASURES, map(float, values[i])))}
            for i, k in enumerate(keys)}


def _identity_distances(embedder, images, keys: list[str], device) -> dict | None:
    """L2 between the identity embeddings of the neutral human image and each edit (None without an embedder)."""
    import torch

    if embedder is None:
        return None
    with torch.no_grad():
        e = embedder.embed(images.to(device)).cpu()
    return {k: float((e[i] - e[0]).norm()) for i, k in enumerate(keys) if k != "neutral"}
