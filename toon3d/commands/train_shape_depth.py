"""`toon3d train-shape-depth`: distil the per-image ellipsoid prior into a reconstructor's depth net."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `toon3d train-shape-depth`."""
    parser = subparsers.add_parser(
        "train-shape-depth", help="train a 3D reconstructor's depth net to predict each image's ellipsoid prior",
        description="The paper's depth prior is an ellipsoid fitted to the face parser's mask of each image "
                    "(REFERENCE 6.6). This trains the depth net D of --reconstructor alone to predict it from the "
                    "image, over a stream of generator images (MSE before the border clamp, rate decayed to 0), so "
                    "that the instant prediction and every per-image reconstruction start from this image's prior. "
                    "No ground truth is used. Writes OUT/model.safetensors (the reconstructor with the new D; A, V, "
                    "L and E unchanged). State is checkpointed (--resume after a kill).")
    from toon3d.train.shape_run import add_shape_run_arguments

    add_shape_run_arguments(parser, "D")
    parser.add_argument("--batch", type=int, default=8, help="generator images per iteration (default 8)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate, decayed to 0 (default 1e-3)")
    parser.add_argument("--truncation", type=float, default=1.0, help="psi of the drawn latents (default 1)")
    parser.add_argument("--mask", default="auto", choices=["auto", "synface", "bisenet"],
                        help="the face parser of the prior (toon3d.edit.masks.choose_mask; auto: the SynFace parser "
                             "for the built-ins, else BiSeNet)")
    parser.add_argument("--bisenet", default=None, help="BiSeNet's 79999_iter.pth for --mask bisenet")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train (or resume) D and write OUT/model.safetensors and OUT/config.json."""
    import json
    import time
    from dataclasses import replace

    from toon3d.edit.masks import choose_mask
    from toon3d.errors import Toon3dError
    from toon3d.models import BUILTIN_STYLES, UNTRAINED_SEEDS
    from toon3d.pipeline_shape import ShapeOptions, shape_settings
    from toon3d.shape.instant import save_shape_model
    from toon3d.shape.pretrain_depth import STATE_FILE, DepthPriorConfig, distill_depth_prior
    from toon3d.train.run_folder import command_history
    from toon3d.train.shape_run import loss_window, open_shape_run

    config = DepthPriorConfig(iters=args.iters, batch=args.batch, lr=args.lr, truncation=args.truncation,
                              seed=args.seed, checkpoint_every=args.ckpt_every).check()
    opened = open_shape_run(args, STATE_FILE)
    out, device, loaded, meta = opened.out, opened.device, opened.loaded, opened.meta
    nets, geometry = opened.nets, opened.geometry
    builtin = args.ckpt in UNTRAINED_SEEDS or args.ckpt in BUILTIN_STYLES or args.ckpt == "default"
    source = choose_mask(args.mask, builtin_generator=builtin, bisenet_path=args.bisenet, device=device)
    if source.fn is None or source.name == "ellipse":
        raise Toon3dError("distilling the prior needs a face parser (the SynFace parser or BiSeNet); " + source.note)
    settings = shape_settings(ShapeOptions(preset="cpu"), (nets, geometry, meta, args.reconstructor), False)
    settings = replace(settings, pixel_offset=geometry.pixel_offset).check()
    out.mkdir(parents=True, exist_ok=True)
    command, commands = command_history(out, args.resume)
    nets = nets.to(device)
    started = time.perf_counter()
    history = distill_depth_prior(nets, loaded.generator, loaded.mean_latent, settings, source.fn, config,
                                  checkpoint_dir=out, progress=not args.no_progress)
    figures = loss_window(history, "mse", time.perf_counter() - started)
    record = {"command": command, "commands": commands, "config": config.__dict__, "generator": args.ckpt,
              "blend": not args.no_blend, "reconstructor": args.reconstructor, "mask": source.describe(),
              "prior": {k: getattr(settings, k) for k in ("prior_kind", "prior_mask_threshold", "prior_near",
                                                          "prior_far", "prior_radius", "prior_centre")},
              "figures": figures}
    (out / "config.json").write_text(json.dumps(record, indent=2))
    meta_out = {**{k: v for k, v in meta.items() if k != "encoder_loaded"},
                "depth": {"generator": args.ckpt, "blend": not args.no_blend, "iters": config.iters,
                          "command": command, "target": "per-image ellipsoid prior of the face parser's mask"}}
    path = save_shape_model(out / "model.safetensors", nets.cpu(), geometry, meta_out,
                            with_encoder=bool(meta.get("encoder_loaded")))
    print(f"trained D to iteration {config.iters}; prior MSE {figures['mse_first_50']:.2e} (first 50) → "
          f"{figures['mse_last_50']:.2e} (last 50); wrote {path}")
    return 0
