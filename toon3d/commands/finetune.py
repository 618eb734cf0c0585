"""`toon3d finetune`: cartoon transfer of a generator (adversarial + structure loss, FreezeD/G/Style)."""

from __future__ import annotations

import argparse

from toon3d.commands.train_args import add_shared

# Named settings. "seed": the paper's released code (Cartoon-StyleGAN as its README runs it: k=1,
# FreezeD=2, batch 2, ~2000 iterations, ADA, the code's summed mse). "paper": Eq. 2-3 as written
# (k=2, 1/k mean). "builtin": what trains toon3d's built-in cartoon/toon models on 2 CPU cores.
PRESETS: dict[str, dict] = {
    "paper": {"structure_k": 2, "structure_mode": "paper", "freeze_d": -1, "batch": 16, "iters": 2000,
              "augment": True},
    "seed": {"structure_k": 1, "structure_mode": "code", "freeze_d": 2, "batch": 2, "iters": 2000,
             "augment": True},
    # builtin: k=3 (Cartoon-StyleGAN's author's own setting, REFERENCE §5.1). With k=2 the first
    # built-in cartoon kept base's variety for ~400 iterations and then drew one face for every w:
    # at 64 px the free 32 px block collapsed.
    "builtin": {"structure_k": 3, "structure_mode": "paper", "freeze_d": -1, "batch": 8, "iters": 1500,
                "augment": False, "ckpt_every": 100, "sample_every": 100, "path_regularize": 0.0,
                "freeze_noise": True},
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `toon3d finetune`."""
    parser = subparsers.add_parser(
        "finetune", help="fine-tune a generator on a cartoon dataset with the structure loss (paper stage 1)",
        description="Transfer a face generator to a cartoon style: adversarial loss + structure loss (paper Eq. 2: "
                    "a frozen copy of the source generator, fed the same W+, mixing index and noise, keeps the first "
                    "k block outputs), with FreezeD / FreezeG / FreezeStyle. Starts from a rosinality .pt holding "
                    "g/d/g_ema (e.g. 550000.pt) or a toon3d generator with --d-ckpt.")
    add_shared(parser)
    parser.add_argument("--ckpt", required=True, help="source generator: base | a rosinality .pt | a .safetensors file")
    parser.add_argument("--d-ckpt", default=None,
                        help="discriminator (a toon3d discriminator.safetensors or a rosinality .pt with 'd'); "
                             "default: the --ckpt file's own 'd', or the built-in base's")
    parser.add_argument("--fresh-d", action="store_true", help="start D from random weights (no source D)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="paper", help="named settings (default paper)")
    parser.add_argument("--structure-k", type=int, default=None, help="blocks 8..2^(k+2) in the structure loss; 0 = off")
    parser.add_argument("--structure-mode", choices=["paper", "code"], default=None,
                        help="paper: 1/k sum of means; code: the released code's summed mse_loss")
    parser.add_argument("--structure-weight", type=float, default=None, help="weight of the structure loss (default 1)")
    parser.add_argument("--freeze-d", type=int, default=None, help="train only the last N D blocks (-1: all)")
    parser.add_argument("--freeze-g", type=int, default=None, help="train only the last N G blocks (-1: all)")
    parser.add_argument("--freeze-noise", action=argparse.BooleanOptionalAction, default=None,
                        help="keep G's noise strengths at the source's (the builtin preset does: a fresh D otherwise "
                             "turns the last layer's noise into grain)")
    parser.add_argument("--freeze-style", type=int, default=None, help="W+ rows [:N] from the source generator")
    parser.set_defaults(func=run)


def load_source_discriminator(ckpt: str, d_ckpt: str | None):
    """The fine-tune's starting D: --d-ckpt, else the --ckpt file's own 'd', else the built-in base's."""
    from pathlib import Path

    from toon3d.errors import Toon3dError
    from toon3d.models import builtin_discriminator_path
    from toon3d.stylegan2.checkpoints import load_discriminator

    if d_ckpt:
        return load_discriminator(d_ckpt)
    if ckpt in ("base", "default"):
        path = builtin_discriminator_path("base")
        if path.is_file():
            return load_discriminator(path)
    elif Path(ckpt).suffix == ".pt":
        return load_discriminator(ckpt)
    else:
        beside = Path(ckpt).with_name("discriminator.safetensors")
        if beside.is_file():
            return load_discriminator(beside)
    raise Toon3dError(f"no discriminator for {ckpt}; pass --d-ckpt FILE (a discriminator.safetensors or a rosinality "
                      ".pt with 'd') or --fresh-d")


def run(args: argparse.Namespace) -> int:
    """Load the source models, fine-tune, export."""
    import copy

    from toon3d.commands.train_args import apply_shared, device_for
    from toon3d.errors import Toon3dError
    from toon3d.io.checkpoint import load_torch_checkpoint
    from toon3d.models import resolve_generator
    from toon3d.stylegan2.checkpoints import generator_from_state, strip_module_prefix
    from toon3d.train.gan import GanConfig
    from toon3d.train.session import run_training

    device = device_for(args)
    loaded = resolve_generator(args.ckpt)
    if loaded.config.get("kind") == "feature-injection":
        raise Toon3dError(f"{args.ckpt} is a feature-injection blend; fine-tune a plain generator")
    g_ema = loaded.generator
    g_state = g_ema.state_dict()
    if loaded.entry == "g_ema" and str(loaded.source).endswith(".pt"):
        ckpt = load_torch_checkpoint(loaded.source)
        if isinstance(ckpt.get("g"), dict):
            g_state = generator_from_state(strip_module_prefix(ckpt["g"]), None, args.ckpt).state_dict()
    d = None if args.fresh_d else load_source_discriminator(args.ckpt, args.d_ckpt)
    size = loaded.config["size"]
    if d is not None and d.size != size:
        raise Toon3dError(f"the discriminator is {d.size} px but the generator {size} px; pass a matching --d-ckpt")
    gcfg = {k: loaded.config[k] for k in ("style_dim", "n_mlp", "channel_multiplier", "channel_max", "lr_mlp")}
    dcfg = ({k: d.config[k] for k in ("channel_multiplier", "channel_max")} if d is not None
            else {"channel_multiplier": gcfg["channel_multiplier"], "channel_max": gcfg["channel_max"]})
    values = {"size": size, "generator": gcfg, "discriminator": dcfg, **PRESETS[args.preset]}
    values = apply_shared(args, values)
    for flag in ("structure_k", "structure_mode", "structure_weight", "freeze_d", "freeze_g", "freeze_style",
                 "freeze_noise"):
        if getattr(args, flag) is not None:
            values[flag] = getattr(args, flag)
    cfg = GanConfig(**values)
    init = {"g": g_state, "g_ema": g_ema.state_dict(), "g_base": copy.deepcopy(g_ema)}
    if d is not None:
        init["d"] = d.state_dict()
    provenance = {"source": loaded.source, "preset": args.preset}
    out = run_training(cfg, args.out, args.data, args.resume, device, init, resize=args.resize,
                       progress=not args.no_progress, provenance=provenance)
    print(f"fine-tuned to iteration {cfg.iters}; models in {out}")
    return 0
