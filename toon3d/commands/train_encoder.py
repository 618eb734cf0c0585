"""`toon3d train-encoder`: train the small CNN that gives `toon3d invert` its starting W (generator samples only)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `toon3d train-encoder`."""
    parser = subparsers.add_parser(
        "train-encoder", help="train a W encoder on a generator's own samples (the projector's start)",
        description="Train a small CNN to predict W from images the generator draws itself (z ~ N(0,1), random "
                    "noise; no photos). `toon3d invert --encoder FILE` starts its optimisation from the "
                    "prediction. The run folder holds config.json, state.pt (resumable: a killed run continues "
                    "exactly) and encoder.safetensors.")
    parser.add_argument("--ckpt", default="base", help="the generator: base | ffhq256 | PATH (default base)")
    parser.add_argument("--out", required=True, help="run folder (created; with --resume, continued)")
    parser.add_argument("--iters", type=int, default=500, help="iterations to train to (default 500)")
    parser.add_argument("--batch", type=int, default=32, help="samples per iteration (default 32)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate, cosine-decayed to 10%% "
                                                               "(default 0.001)")
    parser.add_argument("--size", type=int, default=None,
                        help="encoder input size in px (default: min(64, generator size))")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and of every batch (default 0)")
    parser.add_argument("--ckpt-every", type=int, default=50, help="save state.pt every N iterations (default 50)")
    parser.add_argument("--eval-every", type=int, default=100, help="held-out figures every N iterations "
                                                                    "(default 100)")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop (state saved, resumable) once training has used this many CPU minutes")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train (or resume), then export RUN/encoder.safetensors (also when --max-minutes stops it early)."""
    import json
    import shlex
    import sys
    from dataclasses import asdict
    from pathlib import Path

    import torch

    from toon3d.devices import resolve_device
    from toon3d.train.run_folder import check_run_folder
    from toon3d.errors import Toon3dError
    from toon3d.invert.encoder import EncoderRun, EncoderTrainConfig, export_encoder
    from toon3d.models import resolve_generator

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.max_minutes is not None and not args.max_minutes > 0:
        raise Toon3dError(f"--max-minutes must be positive, got {args.max_minutes}")
    encoder_args = {} if args.size is None else {"size": args.size}
    cfg = EncoderTrainConfig(batch=args.batch, iters=args.iters, lr=args.lr, seed=args.seed,
                             ckpt_every=args.ckpt_every, eval_every=args.eval_every, encoder=encoder_args)
    cfg.check()
    out = Path(args.out)
    check_run_folder(out, args.resume)
    loaded = resolve_generator(args.ckpt)
    run_ = EncoderRun(out, loaded, cfg, resolve_device(args.device))
    if args.resume:
        run_.load()
    command = "toon3d " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    out.mkdir(parents=True, exist_ok=True)
    record_path = out / "config.json"
    commands = json.loads(record_path.read_text()).get("commands", []) if args.resume and record_path.is_file() else []
    record_path.write_text(json.dumps({"config": asdict(cfg), "ckpt": args.ckpt, "generator": str(loaded.source),
                                       "command": command, "commands": [*commands, command]}, indent=2))
    finished = run_.train(max_minutes=args.max_minutes, progress=not args.no_progress)
    last = run_.history[-1] if run_.history else {}
    path = export_encoder(run_, out / "encoder.safetensors", command)
    done = (f"trained to iteration {run_.iteration}" if finished else
            f"stopped at iteration {run_.iteration} of {cfg.iters} (--max-minutes; --resume continues)")
    print(f"{done} in {run_.train_seconds / 60:.1f} CPU minutes; held-out W error "
          f"{last.get('w_error', float('nan')):.4f}, re-render PSNR {last.get('psnr_db', float('nan')):.2f} dB; "
          f"wrote {path}")
    return 0
