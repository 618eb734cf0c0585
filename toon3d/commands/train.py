"""`toon3d train`: adversarial StyleGAN2 training (rosinality train.py), resumable, multi-process."""

from __future__ import annotations

import argparse

from toon3d.commands.train_args import add_shared


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `toon3d train`."""
    parser = subparsers.add_parser(
        "train", help="train a StyleGAN2 generator adversarially (rosinality train.py; torchrun for many processes)",
        description="Adversarial StyleGAN2 training with rosinality's losses, lazy R1 / path-length regularisation, "
                    "EMA, style mixing and ADA. The run folder holds state.pt (resume with --resume), tb/, samples/, "
                    "and at the end generator.safetensors, discriminator.safetensors and rosinality.pt. "
                    "Many processes: torchrun --nproc-per-node K -m toon3d train ... (batch is per process).")
    add_shared(parser)
    parser.add_argument("--size", type=int, default=None, help="image size (default: the dataset's)")
    parser.add_argument("--init", default=None, metavar="GENERATOR",
                        help="start G (and G_ema) from this generator (e.g. a train-decoder export); D starts fresh")
    parser.add_argument("--channel-multiplier", type=int, default=2, help="default 2")
    parser.add_argument("--channel-max", type=int, default=512, help="channel cap of G (default 512)")
    parser.add_argument("--d-channel-max", type=int, default=None, help="channel cap of D (default: G's)")
    parser.add_argument("--n-mlp", type=int, default=8, help="mapping depth (default 8)")
    parser.add_argument("--style-dim", type=int, default=512, help="default 512")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the config, train, export."""
    from toon3d.commands.train_args import apply_shared, device_for
    from toon3d.data.dataset import FaceDataset
    from toon3d.train.gan import GanConfig
    from toon3d.train.session import run_training

    device = device_for(args)
    init, provenance = None, {}
    if args.init:
        from toon3d.models import resolve_generator

        loaded = resolve_generator(args.init)
        if loaded.config.get("kind") == "feature-injection":
            from toon3d.errors import Toon3dError

            raise Toon3dError(f"{args.init} is a feature-injection blend; --init takes a plain generator")
        gcfg = {k: loaded.config[k] for k in ("style_dim", "n_mlp", "channel_multiplier", "channel_max", "lr_mlp")}
        size = loaded.config["size"]
        state = loaded.generator.state_dict()
        init = {"g": state, "g_ema": state}
        provenance["init"] = loaded.source
    else:
        size = args.size or FaceDataset(args.data, load_gt=False).stored_size
        gcfg = {"style_dim": args.style_dim, "n_mlp": args.n_mlp, "channel_multiplier": args.channel_multiplier,
                "channel_max": args.channel_max}
    if args.size and args.size != size:
        from toon3d.errors import Toon3dError

        raise Toon3dError(f"--size {args.size} differs from the --init generator's {size} px; drop --size")
    dcfg = {"channel_multiplier": gcfg["channel_multiplier"], "channel_max": args.d_channel_max or gcfg["channel_max"]}
    values = apply_shared(args, {"size": size, "generator": gcfg, "discriminator": dcfg})
    cfg = GanConfig(**values)
    out = run_training(cfg, args.out, args.data, args.resume, device, init, resize=args.resize,
                       progress=not args.no_progress, provenance=provenance)
    print(f"trained to iteration {cfg.iters}; models in {out} (generator.safetensors, discriminator.safetensors, "
          "rosinality.pt)")
    return 0
