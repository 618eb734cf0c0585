"""`toon3d train-shape-encoder`: pretrain GAN2Shape's latent encoder E of a reconstructor for one generator."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `toon3d train-shape-encoder`."""
    parser = subparsers.add_parser(
        "train-shape-encoder", help="pretrain the latent encoder E of a 3D reconstructor on a generator's images",
        description="GAN2Shape's step 2 over a stream of generator images: each iteration draws a latent, "
                    "decomposes its image with the frozen depth/albedo/view/light networks of --reconstructor, "
                    "renders pseudo samples at random views and lights and trains E so that the generator at "
                    "w + E-offset reproduces them (L1 + L_dis + the offset penalty, Eq. 16). Writes "
                    "OUT/model.safetensors: the reconstructor with E, which `toon3d reconstruct`, `avatar` and "
                    "`eval shape` then start every image from. State is checkpointed (--resume after a kill).")
    from toon3d.train.shape_run import add_shape_run_arguments

    add_shape_run_arguments(parser, "E")
    parser.add_argument("--batch", type=int, default=4, help="pseudo samples per image (default 4)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3, the cpu preset's)")
    parser.add_argument("--truncation", type=float, default=0.7, help="psi of the drawn latents (default 0.7)")
    parser.add_argument("--nf-encoder", type=int, default=16, help="E width (default 16, the cpu preset's)")
    parser.add_argument("--continue-encoder", action="store_true",
                        help="start from the reconstructor's own E (when it holds one of this size), not fresh weights")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train (or resume) E and write OUT/model.safetensors and OUT/config.json."""
    import json
    import time

    import torch

    from toon3d.errors import Toon3dError
    from toon3d.pipeline_shape import ShapeOptions, load_style_discriminator, shape_settings
    from toon3d.shape.instant import save_shape_model
    from toon3d.shape.losses import load_perceptual
    from toon3d.shape.pretrain_encoder import STATE_FILE, EncoderPretrainConfig, pretrain_encoder
    from toon3d.train.run_folder import command_history
    from toon3d.train.shape_run import loss_window, open_shape_run

    config = EncoderPretrainConfig(iters=args.iters, batch=args.batch, lr=args.lr, truncation=args.truncation,
                                   seed=args.seed, checkpoint_every=args.ckpt_every).check()
    if args.nf_encoder < 1:
        raise Toon3dError(f"--nf-encoder must be at least 1, got {args.nf_encoder}")
    opened = open_shape_run(args, STATE_FILE, {"nf_encoder": args.nf_encoder})
    out, device, loaded, meta = opened.out, opened.device, opened.loaded, opened.meta
    nets, geometry, generator = opened.nets, opened.geometry, opened.loaded.generator
    if not (args.continue_encoder and meta.get("encoder_loaded")):
        from toon3d.shape.networks import ShapeNets

        # E's fresh weights, drawn as a fresh ShapeNets draws them (the shipped files hold a trained E)
        torch.manual_seed(args.seed)
        nets.encoder = ShapeNets(nets.config).encoder
    discriminator, d_source = load_style_discriminator(args.ckpt) if not args.no_blend else (None, None)
    options = ShapeOptions(preset="cpu")
    settings = shape_settings(options, (nets, geometry, meta, args.reconstructor), discriminator is not None)
    from dataclasses import replace

    # step 2 uses neither L_id nor the reconstruction's perceptual term; L_dis needs a perceptual net
    # only as the substitute for a missing discriminator
    settings = replace(settings, identity=False, perceptual="none" if discriminator is not None else "dlib",
                       nf_encoder=args.nf_encoder, pixel_offset=geometry.pixel_offset).check()
    perceptual = None if discriminator is not None else load_perceptual("dlib")
    out.mkdir(parents=True, exist_ok=True)
    command, commands = command_history(out, args.resume)
    record_path = out / "config.json"
    nets = nets.to(device)
    started = time.perf_counter()
    history = pretrain_encoder(nets, generator, loaded.mean_latent, settings, config, discriminator=discriminator,
                               perceptual=perceptual, checkpoint_dir=out, progress=not args.no_progress)
    figures = loss_window(history, "total", time.perf_counter() - started, name="step2_loss")
    record = {"command": command, "commands": commands, "config": config.__dict__,
              "encoder_start": "the reconstructor's E" if args.continue_encoder and meta.get("encoder_loaded")
              else f"fresh (seed {args.seed})",
              "generator": args.ckpt, "blend": not args.no_blend, "reconstructor": args.reconstructor,
              "dis_features": "discriminator " + d_source if discriminator is not None else "dlib perceptual substitute",
              "figures": figures}
    record_path.write_text(json.dumps(record, indent=2))
    meta_out = {**{k: v for k, v in meta.items() if k != "encoder_loaded"},
                "encoder": {"generator": args.ckpt, "blend": not args.no_blend, "iters": config.iters,
                            "command": command}}
    path = save_shape_model(out / "model.safetensors", nets.cpu(), geometry, meta_out, with_encoder=True)
    print(f"trained E to iteration {config.iters}; step-2 loss {figures['step2_loss_first_50']:.4f} (first 50) → "
          f"{figures['step2_loss_last_50']:.4f} (last 50); wrote {path}")
    return 0
