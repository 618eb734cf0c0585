"""`toon3d train-decoder`: pretrain a generator as a SynFace regression decoder (the CPU recipe)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `toon3d train-decoder`."""
    parser = subparsers.add_parser(
        "train-decoder", help="pretrain a StyleGAN2 generator to decode SynFace parameters (CPU recipe)",
        description="Train G(z) to reproduce the SynFace render of the parameters that z encodes "
                    "(toon3d.synth.latent_params): random z then gives random SynFace faces. The run folder holds "
                    "config.json, state.pt (resumable), figures.jsonl, tb/ and samples/. Sharpen the result "
                    "adversarially with `toon3d train --init RUN/generator.safetensors`.")
    parser.add_argument("--out", required=True, help="run folder (created; with --resume, continued)")
    parser.add_argument("--size", type=int, default=64, help="image size: 32, 64, 128 or 256 (default 64)")
    parser.add_argument("--channel-max", type=int, default=64, help="channel cap of every layer (default 64)")
    parser.add_argument("--n-mlp", type=int, default=4, help="mapping network depth (default 4)")
    parser.add_argument("--style-dim", type=int, default=512,
                        help="z/w size: 56 dimensions carry SynFace parameters, the rest are free (default 512)")
    parser.add_argument("--iters", type=int, default=20000, help="iterations to train to (default 20000)")
    parser.add_argument("--batch", type=int, default=16, help="batch size (default 16)")
    parser.add_argument("--lr", type=float, default=0.002, help="Adam learning rate (default 0.002)")
    parser.add_argument("--mapping-lr-mult", type=float, default=100.0,
                        help="learning-rate multiplier of the mapping network (default 100)")
    parser.add_argument("--region-weight", type=float, default=6.0,
                        help="extra pixel weight on eyes, brows, nose, mouth, glasses (default 6)")
    parser.add_argument("--edge-weight", type=float, default=1.0,
                        help="weight of the L1 on image gradients, which counters the pixel loss's bias to low "
                             "frequencies (default 1; probe: 5 sharpens eyes faster)")
    parser.add_argument("--balance", choices=("pixel", "class"), default="pixel",
                        help="pixel: every pixel counts once (parts x(1+region-weight)); class: the mean error of "
                             "each segmentation class, averaged over classes, so eyes count as much as the "
                             "background (the shipped base's later runs use class)")
    parser.add_argument("--adv-weight", type=float, default=0.0,
                        help="weight of the adversarial term (0 = pure regression; the sharpening phase uses ~0.05). "
                             "Also writes RUN/discriminator.safetensors")
    parser.add_argument("--anchor-eyes", action="store_true",
                        help="train on SynFace's anchored views: eyes and mouth stay at fixed pixels under pose "
                             "(docs/synface.md; the shipped base's last phase used it)")
    parser.add_argument("--r1", type=float, default=0.1, help="R1 gamma of the discriminator (default 0.1)")
    parser.add_argument("--d-channel-max", type=int, default=64, help="discriminator channel cap (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and of every batch")
    parser.add_argument("--ckpt-every", type=int, default=250, help="checkpoint every N iterations")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--init", default=None, metavar="GENERATOR",
                        help="start G and G_ema from this generator (e.g. the shipped 'base' to keep training it; "
                             "its architecture must match the flags)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train (or resume), then export the EMA generator as RUN/generator.safetensors."""
    import json
    import shlex
    import sys
    from dataclasses import asdict
    from pathlib import Path

    import torch

    from toon3d.devices import resolve_device
    from toon3d.errors import Toon3dError
    from toon3d.train.decoder import DecoderConfig, DecoderRun, export_generator
    from toon3d.train.run_log import RunLog

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = DecoderConfig(size=args.size, iters=args.iters, batch=args.batch, lr=args.lr,
                        mapping_lr_mult=args.mapping_lr_mult, region_weight=args.region_weight,
                        balance=args.balance, edge_weight=args.edge_weight, seed=args.seed,
                        ckpt_every=args.ckpt_every, adv_weight=args.adv_weight, r1=args.r1, anchor_eyes=args.anchor_eyes,
                        d_channel_max=args.d_channel_max,
                        generator={"style_dim": args.style_dim, "n_mlp": args.n_mlp, "channel_multiplier": 2,
                                   "channel_max": args.channel_max})
    out = Path(args.out)
    run_ = DecoderRun(out, cfg, resolve_device(args.device))
    lead = run_.rank == 0
    if args.resume:
        if not run_.state_path().is_file():
            raise Toon3dError(f"nothing to resume in {out} (no state.pt); drop --resume to start a new run")
        run_.load()
    elif out.exists() and any(out.iterdir()) and lead:
        raise Toon3dError(f"{out} is not empty; pass --resume to continue that run or choose a new --out")
    if args.init and not args.resume:
        from toon3d.models import resolve_generator

        loaded = resolve_generator(args.init)
        mine = {"size": cfg.size, **cfg.generator}
        differ = [k for k in mine if loaded.config.get(k) != mine[k]]
        if differ:
            shown = ", ".join(f"{k} {loaded.config.get(k)} vs {mine[k]}" for k in differ)
            raise Toon3dError(f"--init {args.init} has another architecture ({shown}); pass matching flags")
        state = {k: v.float() for k, v in loaded.generator.state_dict().items()}
        run_.g.load_state_dict(state)
        run_.g_ema.load_state_dict(state)
    command = "toon3d " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if run_.world > 1:
        command = f"torchrun --nproc-per-node {run_.world} -m {command}"
    if lead:
        out.mkdir(parents=True, exist_ok=True)
        record_path = out / "config.json"
        # every start and resume of the run, in order (the model card lists them)
        commands = json.loads(record_path.read_text()).get("commands", []) if args.resume and record_path.is_file() else []
        record_path.write_text(json.dumps({"config": asdict(cfg), "command": command, "processes": run_.world,
                                           "commands": [*commands, command]}, indent=2))
    log = RunLog(out, enabled=lead)
    try:
        run_.train(log=log, progress=not args.no_progress)
    finally:
        log.close()
    if not lead:
        return 0
    path = export_generator(run_, out / "generator.safetensors", command)
    last = run_.history[-1] if run_.history else {}
    print(f"trained to iteration {run_.iteration}; held-out L1 {last.get('l1', float('nan')):.4f}; wrote {path}")
    return 0
