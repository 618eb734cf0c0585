"""`toon3d avatar`: one command from a face to an animatable 3D cartoon avatar (toon3d/pipeline.py).

Examples:
    toon3d avatar --seed 0 --out out/avatar
    toon3d avatar --seed 3 --style toon --expression smile=+3 --expression eyes_closed=+2 --out out/toon3
    toon3d avatar --photo me.jpg --out out/me
    toon3d avatar --seed 0 --expression-from friend.jpg --out out/friend     # wear another face's expression
    toon3d avatar --seed 0 --drive me_talking.mp4 --out out/driven           # GLB animation + drive.mp4
    torchrun --nproc-per-node 4 -m toon3d avatar --seeds 0-99 --out out/many    # one shard of the seeds per process
"""

from __future__ import annotations

import argparse
import os
import sys

PRESETS = ("cpu", "paper", "tiny", "released")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `toon3d avatar`."""
    p = subparsers.add_parser(
        "avatar", help="a face → cartoon, expression edits, 3D meshes, an animatable GLB, viewer.html and a sheet",
        description="The whole toon3d pipeline for one face (or many seeds): the human face and its cartoon from "
                    "the same w, refined expression edits (Stage 2), a 3D reconstruction of the neutral cartoon "
                    "and of every edit (Stage 3), one GLB whose morph targets are the expressions, a self-contained "
                    "viewer.html and a summary sheet. With no model flags it runs on the built-in models.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--seed", help="seed of the face (a whole number)")
    src.add_argument("--seeds", help="many avatars, e.g. 0-99 or 0-3,7: one folder per seed in --out; under "
                                     "torchrun each process takes its own share")
    src.add_argument("--latent", metavar="W.pt", help="a W latent file ([D] or [N,D]; not W+: the expression and 3D "
                                                   "stages take one W), e.g. from toon3d invert")
    src.add_argument("--photo", metavar="IMAGE", help="a photo: aligned, inverted into G_base, then the pipeline")
    p.add_argument("--latent-index", type=int, default=0, help="row of --latent (default 0)")
    p.add_argument("--face", type=int, default=None, help="with --photo: which face (toon3d align --list); "
                                                          "default the largest")
    p.add_argument("--ckpt", default="base", help="human generator G_base: base (built-in) | ffhq256 | FILE")
    p.add_argument("--style", default="cartoon", help="cartoon generator: cartoon | toon (built-in) | FILE")
    p.add_argument("--no-blend", action="store_true", help="built-in style without its layer-swap blend with base")
    p.add_argument("--expression", action="append", default=None, metavar="NAME=STRENGTH",
                   help="an expression edit, repeatable: smile, mouth_open, eyes_closed, brows_up, yaw, pitch or a "
                        "SeFa index, with a strength in W (default: smile=+3 and mouth_open=+3)")
    p.add_argument("--expression-from", default=None, metavar="PHOTO",
                   help="wear the expression of the face in PHOTO: its mouth, eyes and brows (dlib's 68 landmarks) "
                        "set the strengths of the named expression edits (replaces --expression)")
    p.add_argument("--drive", default=None, metavar="VIDEO",
                   help="animate the avatar from a face video: per-frame morph weights as a glTF animation in "
                        "avatar.glb, and drive.mp4 (the video beside the avatar); default targets smile, "
                        "mouth_open and eyes_closed")
    p.add_argument("--neutral", default=None, metavar="PHOTO",
                   help="the driving person's neutral face (default: the video's first face; for "
                        "--expression-from the generator's average face)")
    p.add_argument("--drive-frames", type=int, default=300,
                   help="with --drive: at most this many frames, read at up to 30 fps (default 300)")
    p.add_argument("--factor", default=None, metavar="factor.pt", help="directions from toon3d directions "
                                                                       "(default: factorise G_base now)")
    p.add_argument("--refine", choices=["code", "paper", "off"], default="code",
                   help="Stage 2 refinement: code (released code's ±, default), paper (Eq. 9), off (SeFa only)")
    p.add_argument("--edit-identity", choices=["auto", "dlib", "synface", "lresnet"], default="auto",
                   help="identity network of the Stage 2 refinement: auto (default: synface, trained on SynFace "
                        "identities, on the built-in base; dlib otherwise), dlib, synface, lresnet (user-supplied)")
    p.add_argument("--edit-mask", choices=["auto", "bisenet", "synface", "ellipse", "none"], default="auto",
                   help="face mask of the refinement's low-level loss, as toon3d edit --mask (auto: the SynFace "
                        "parser on the built-in base, else BiSeNet from the models folder, else the ellipse)")
    p.add_argument("--edit-size", default="full", metavar="N|full",
                   help="compute the refinement's losses on G_base stopped at N px plus the full image's residual "
                        "at w (toon3d.stylegan2.early_exit): 128 takes a 256 px generator's edit in about 60%% of "
                        "the time, an approximation (docs/edit.md); default full (the paper)")
    p.add_argument("--edit-encoder", choices=["train", "neutral"], default=None,
                   help="each edit's 3D starts from the neutral's networks; neutral (the cpu and tiny presets' "
                        "default) reuses the neutral's latent encoder and skips GAN2Shape's step 2, train (the "
                        "paper presets' default) runs it again: with a 256 px generator that step is most of an "
                        "edit's 3D time")
    p.add_argument("--truncation", type=float, default=0.7, help="psi for --seed faces (default 0.7)")
    p.add_argument("--preset", choices=list(PRESETS), default="cpu",
                   help="Stage 3 settings: cpu (minutes on 2 cores; default), paper (256 px schedule, GPU), "
                        "released (the released code's: no symmetry, no L_id), tiny (tests)")
    p.add_argument("--instant", action="store_true", help="3D from the pretrained reconstructor only (≈1 s), no "
                                                          "per-image GAN2Shape training")
    p.add_argument("--reconstructor", default=None, metavar="FILE",
                   help="pretrained 3D reconstructor weights (default: the built-in one of the style's world)")
    p.add_argument("--no-head-mask", action="store_true",
                   help="keep the whole frame (the backdrop card) in the meshes and turntables, not only the head")
    p.add_argument("--frames", type=int, default=36, help="turntable frames (default 36)")
    p.add_argument("--fps", type=float, default=18.0, help="turntable frames per second (default 18)")
    p.add_argument("--format", default="gif,mp4", help="turntable formats: gif, mp4 or both (default)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--out", required=True, help="output folder (new or empty unless --overwrite)")
    p.add_argument("--resume", action="store_true", help="continue a run that was killed, from its last finished stage")
    p.add_argument("--overwrite", action="store_true", help="replace an output folder toon3d wrote")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def parse_edit_size(value: str) -> int | None:
    """--edit-size: None (the full generator) for 'full', else a power of two ≥ 16 (one-line error otherwise)."""
    from toon3d.errors import Toon3dError

    text = str(value).strip().lower()
    if text == "full":
        return None
    if not text.isdigit() or int(text) < 16 or int(text) & (int(text) - 1):
        raise Toon3dError(f"--edit-size {value!r}: give a power of two ≥ 16 (e.g. 128) or 'full'")
    return int(text)


def settings_from_args(args: argparse.Namespace):
    """(AvatarSettings, list of AvatarSource) from the parsed flags; one-line errors for bad values."""
    from toon3d.errors import Toon3dError
    from toon3d.pipeline import DEFAULT_EXPRESSIONS, AvatarSettings, AvatarSource, parse_expression
    from toon3d.seeds import parse_seeds

    from toon3d.pipeline_drive import DRIVE_EXPRESSIONS

    if args.expression and args.expression_from:
        raise Toon3dError("--expression-from sets the expressions from the photo; drop --expression, or drop "
                          "--expression-from")
    defaults = DRIVE_EXPRESSIONS if args.drive and not args.expression_from else DEFAULT_EXPRESSIONS
    expressions = tuple(parse_expression(e) for e in args.expression) if args.expression else defaults
    formats = tuple(f.strip().lower() for f in args.format.split(",") if f.strip())
    settings = AvatarSettings(ckpt=args.ckpt, style=args.style, blend=not args.no_blend, expressions=expressions,
                              truncation=args.truncation, refine=args.refine, edit_identity=args.edit_identity,
                              edit_mask=args.edit_mask, factor=args.factor,
                              preset=args.preset, instant=args.instant, reconstructor=args.reconstructor,
                              frames=args.frames, fps=args.fps, formats=formats,
                              expression_from=args.expression_from, drive=args.drive, neutral=args.neutral,
                              drive_frames=args.drive_frames, head_mask=not args.no_head_mask,
                              edit_size=parse_edit_size(args.edit_size), edit_encoder=args.edit_encoder)
    if args.seed is not None:
        text = str(args.seed).strip()
        if not text.isdigit() or int(text) >= 2**32:
            raise Toon3dError(f"--seed {args.seed!r} is not a whole number in 0..{2**32 - 1}; e.g. --seed 0")
        sources = [AvatarSource(seed=int(text))]
    elif args.seeds is not None:
        sources = [AvatarSource(seed=s) for s in parse_seeds(args.seeds)]
    elif args.latent is not None:
        from toon3d.io.latents import load_latents

        load_latents(args.latent, dim=None, flag="toon3d avatar --latent")  # bad files fail before any model loads
        sources = [AvatarSource(latent=args.latent, latent_index=args.latent_index)]
    else:
        sources = [AvatarSource(photo=args.photo, face=args.face)]
    return settings, sources


def run(args: argparse.Namespace) -> int:
    """Make one avatar, or this process's share of --seeds."""
    import time
    from pathlib import Path

    from toon3d.devices import resolve_device
    from toon3d.pipeline import make_avatar

    settings, sources = settings_from_args(args)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    device_name = args.device
    if world > 1 and args.device == "auto":
        import torch

        if torch.cuda.is_available():  # one GPU per process, as torchrun assigns them
            device_name = f"cuda:{int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count()}"
    device = resolve_device(device_name)
    many = args.seeds is not None
    mine = sources[rank::world] if many else sources
    out = Path(args.out)
    for source in mine:
        target = out / f"seed{source.seed:04d}" if many else out
        start = time.perf_counter()
        record = make_avatar(source, settings, target, device=device, resume=args.resume,
                             overwrite=args.overwrite, progress=not args.no_progress)
        _summary(target, record, time.perf_counter() - start)
    if many:
        print(f"rank {rank}/{world}: wrote {len(mine)} avatars under {out}", file=sys.stderr)
    return 0


def _summary(out, record: dict, seconds: float) -> None:
    """The closing summary: where every output went and how long each stage took."""
    lines = [f"avatar written to {out} in {seconds:.1f} s"]
    for stage, secs in record["timings_seconds"].items():
        lines.append(f"  {stage:<20} {secs:8.1f} s")
    o = record["outputs"]
    lines += [f"  sheet       {out}/{o['sheet']}", f"  GLB         {out}/{o['glb']} (morph targets: "
              f"{', '.join(record['expressions'])})",
              f"  viewer      {out}/{o['viewer']} (open in a browser)",
              f"  turntable   {', '.join(f'{out}/{t}' for t in o['turntable'])}",
              f"  3D results  {out}/3d/<neutral|expression>/ (depth.npy, mesh.obj/.glb, normal.png, relight.png, ...)",
              f"  record      {out}/avatar.json"]
    if "drive" in record:
        d = record["drive"]
        lines.append(f"  drive       {out}/{o['drive']['video']} ({d['frames']} frames at {d['fps']:g} fps, face "
                     f"found in {d['faces_found']}, {d['frames_held']} held; GLB animation 'drive')")
    if "expression_from" in record:
        edits = ", ".join(f"{n}={s:+.2f}" for n, s in record["expression_from"]["edits"]) or "none (neutral)"
        lines.append(f"  expression  from {record['expression_from']['photo']}: {edits} ({out}/expression.png)")
    print("\n".join(lines))
