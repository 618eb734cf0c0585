"""`toon3d train-shape`: pretrain the depth/albedo/view/light networks on many images (the instant reconstructor)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `toon3d train-shape`."""
    from toon3d.shape.prior import PRIOR_SCHEDULES

    parser = subparsers.add_parser(
        "train-shape", help="pretrain a 3D reconstructor (Unsup3d-style, unsupervised) on a folder or a generator",
        description="Jointly train the depth, albedo, view and light networks to reconstruct images through the "
                    "photo-geometric renderer, with the flip-symmetry loss and confidence maps of Unsup3d. The "
                    "images come from --data FOLDER or from samples of --ckpt GENERATOR; no ground truth is used. "
                    "The run folder holds config.json, state.pt (resumable), figures.jsonl, tb/, samples/ and at the "
                    "end model.safetensors. With --instant, print the feed-forward prediction's figures instead.")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="a toon3d data folder (e.g. from 'toon3d data toon')")
    src.add_argument("--ckpt", help="train on samples of this generator: base, cartoon, toon or a file")
    parser.add_argument("--out", required=True, help="run folder (created; with --resume, continued)")
    parser.add_argument("--size", type=int, default=64, help="image size of the 3D model (default 64)")
    parser.add_argument("--nf", type=int, default=16, help="width of the depth and albedo nets (default 16)")
    parser.add_argument("--nf-vl", type=int, default=8, help="width of the view and light nets (default 8)")
    parser.add_argument("--zdim", type=int, default=128, help="bottleneck size of depth/albedo (default 128)")
    parser.add_argument("--iters", type=int, default=3000, help="iterations to train to (default 3000)")
    parser.add_argument("--batch", type=int, default=8, help="batch size (default 8)")
    parser.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default 1e-4)")
    parser.add_argument("--lr-mults", type=float, nargs=5, default=[1.0] * 5, metavar=("D", "A", "V", "L", "C"),
                        help="learning-rate multipliers of the depth, albedo, view, light and confidence nets "
                             "(default 1 1 1 1 1, Unsup3d)")
    parser.add_argument("--lam-perc", type=float, default=1.0, help="perceptual weight λ_p (default 1, Unsup3d)")
    parser.add_argument("--lam-flip", type=float, default=0.5, help="mirrored-reconstruction weight λ_f (default 0.5)")
    parser.add_argument("--lam-smooth", type=float, default=0.01,
                        help="second-order smoothness weight on depth and diffuse shading (default 0.01, GAN2Shape; 0 = Unsup3d)")
    parser.add_argument("--lam-pseudo", type=float, default=0.0,
                        help="weight of reconstructing each image's factors re-posed and re-lit at random, through V and L "
                             "of the rendered image (default 0 = Unsup3d)")
    parser.add_argument("--face-region", action="store_true",
                        help="score only the toon3d layout's face box (the built-in worlds' backdrops do not turn "
                             "with the head)")
    parser.add_argument("--warmup-iters", type=int, default=0,
                        help="first N iterations train only the albedo, light and confidence nets, depth held at its "
                             "prior fit and the view frontal (GAN2Shape's step 1; default 0)")
    parser.add_argument("--no-confidence", action="store_true", help="no confidence maps (plain L1 / perceptual)")
    parser.add_argument("--perceptual", choices=("dlib", "vgg"), default="dlib",
                        help="perceptual features: dlib (offline substitute, default) or vgg (needs VGG16)")
    parser.add_argument("--vgg16", default=None, metavar="PATH", help="vgg16-397923af.pth for --perceptual vgg")
    parser.add_argument("--truncation", type=float, default=1.0, help="truncation psi of --ckpt samples (default 1)")
    parser.add_argument("--pixel-offset", type=float, default=0.0,
                        help="renderer pixel convention: 0 = pixel centres (the built-in worlds), 0.5 = neural_renderer")
    parser.add_argument("--prior-steps", type=int, default=600,
                        help="steps fitting the depth net to the layout's ellipsoid prior before training (default 600; 0 = none)")
    parser.add_argument("--prior-lr", type=float, default=1e-3, help="learning rate of the prior fit (default 1e-3)")
    parser.add_argument("--prior-schedule", choices=PRIOR_SCHEDULES, default="cosine",
                        help="learning-rate schedule of the prior fit: cosine decay to 0 (default; a constant "
                             "rate leaves stripes in the depth) or constant (GAN2Shape)")
    parser.add_argument("--prior-centre", action=argparse.BooleanOptionalAction, default=True,
                        help="fit the prior shifted in depth so the mean-centred depth net can hold it exactly "
                             "(default; --no-prior-centre fits GAN2Shape's unshifted prior)")
    parser.add_argument("--eval-data", default=None, help="held-out folder with depth ground truth scored while training")
    parser.add_argument("--eval-count", type=int, default=64, help="held-out images scored (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and of every batch")
    parser.add_argument("--ckpt-every", type=int, default=100, help="checkpoint every N iterations")
    parser.add_argument("--sample-every", type=int, default=250, help="preview sheet every N iterations")
    parser.add_argument("--eval-every", type=int, default=250, help="held-out figures every N iterations")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--instant", action="store_true",
                        help="no training: score the --out run's model.safetensors (or state) on --eval-data")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train (or resume) and export RUN/model.safetensors; or, with --instant, score a trained run."""
    import json
    import shlex
    import sys
    from dataclasses import asdict
    from pathlib import Path

    import torch

    from toon3d.devices import resolve_device
    from toon3d.train.run_folder import check_run_folder
    from toon3d.shape.losses import load_perceptual
    from toon3d.shape.pretrain import PretrainConfig, PretrainRun
    from toon3d.train.run_log import RunLog

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    if args.instant:
        return _instant(args, out)
    cfg = PretrainConfig(source="folder" if args.data else "generator", data=args.data or args.ckpt,
                         size=args.size, nf=args.nf, nf_vl=args.nf_vl, zdim=args.zdim, batch=args.batch,
                         iters=args.iters, lr=args.lr, lr_mults=tuple(args.lr_mults), lam_perc=args.lam_perc,
                         lam_flip=args.lam_flip, lam_smooth=args.lam_smooth,
                         lam_pseudo=args.lam_pseudo, face_region=args.face_region,
                         warmup_iters=args.warmup_iters, confidence=not args.no_confidence,
                         perceptual=args.perceptual, truncation=args.truncation,
                         pixel_offset=args.pixel_offset, seed=args.seed, ckpt_every=args.ckpt_every,
                         sample_every=args.sample_every, eval_every=args.eval_every, eval_data=args.eval_data,
                         eval_count=args.eval_count, prior_steps=args.prior_steps, prior_lr=args.prior_lr,
                         prior_schedule=args.prior_schedule, prior_centre=args.prior_centre)
    cfg.check()
    check_run_folder(out, args.resume)
    perceptual = load_perceptual(cfg.perceptual, args.vgg16) if cfg.lam_perc else None
    run_ = PretrainRun(out, cfg, perceptual, resolve_device(args.device))
    if args.resume:
        run_.load()
    command = "toon3d " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    out.mkdir(parents=True, exist_ok=True)
    record_path = out / "config.json"
    # every start and resume of the run, in order (the model card lists them)
    commands = json.loads(record_path.read_text()).get("commands", []) if args.resume and record_path.is_file() else []
    record_path.write_text(json.dumps({"config": asdict(cfg), "command": command, "commands": [*commands, command],
                                       "data": run_.source.description}, indent=2))
    log = RunLog(out)
    try:
        run_.train(log=log, progress=not args.no_progress)
    finally:
        log.close()
    path = run_.export(out / "model.safetensors", command)
    last = run_.history[-1] if run_.history else {}
    figures = f"; held-out SIDE×100 {last['side_x100']:.3f}, MAD {last['mad_deg']:.2f}°" if last else ""
    print(f"trained to iteration {run_.iteration}{figures}; wrote {path}")
    return 0


def _instant(args: argparse.Namespace, out) -> int:
    """Score the feed-forward prediction of a trained run (or a shape model file) on --eval-data."""
    import json
    import time

    from toon3d.errors import Toon3dError
    from toon3d.shape.depth_eval import load_ground_truth, score_view_depth, summarise
    from toon3d.shape.instant import instant_reconstruct, load_shape_model

    if not args.eval_data:
        raise Toon3dError("--instant scores a trained model: pass --eval-data FOLDER with depth ground truth")
    model = out / "model.safetensors" if out.is_dir() else out
    if not model.is_file():
        raise Toon3dError(f"no trained model at {model}; train it first (or pass a shape_*.safetensors as --out)")
    nets, geometry, _ = load_shape_model(model)
    gt = load_ground_truth(args.eval_data, args.eval_count, geometry.size)
    t0 = time.perf_counter()
    dec = instant_reconstruct(nets, gt.images, geometry)
    seconds = time.perf_counter() - t0
    figures = summarise(score_view_depth(dec, gt, geometry))
    figures["seconds_per_image"] = round(seconds / gt.images.shape[0], 4)
    print(json.dumps(figures))
    return 0
