"""Flags shared by `toon3d train` and `toon3d finetune` (rosinality train.py's, with its defaults)."""

from __future__ import annotations

import argparse

from toon3d.train.gan import GanConfig

# flag -> GanConfig field, for the settings both commands share.
SHARED = {"iters": "iters", "batch": "batch", "lr": "lr", "r1": "r1", "path_regularize": "path_regularize",
          "path_batch_shrink": "path_batch_shrink", "d_reg_every": "d_reg_every", "g_reg_every": "g_reg_every",
          "mixing": "mixing", "augment_p": "augment_p", "ada_target": "ada_target", "ada_length": "ada_length",
          "ada_every": "ada_every", "seed": "seed", "ckpt_every": "ckpt_every", "sample_every": "sample_every",
          "ema_decay": "ema_decay"}


def add_shared(parser: argparse.ArgumentParser) -> None:
    """Data, run folder, schedule, losses, ADA, device flags (defaults None: the command or preset decides)."""
    d = GanConfig()
    parser.add_argument("--data", required=True, help="dataset folder (toon3d folder format or rosinality LMDB)")
    parser.add_argument("--out", required=True, help="run folder: checkpoints, samples, TensorBoard, exports")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--iters", type=int, default=None, help=f"iterations to train to (default {d.iters})")
    parser.add_argument("--batch", type=int, default=None, help=f"batch per process (default {d.batch})")
    parser.add_argument("--lr", type=float, default=None, help=f"learning rate (default {d.lr})")
    parser.add_argument("--r1", type=float, default=None, help=f"R1 weight (default {d.r1})")
    parser.add_argument("--path-regularize", type=float, default=None, help=f"path-length weight (default {d.path_regularize})")
    parser.add_argument("--path-batch-shrink", type=int, default=None, help=f"default {d.path_batch_shrink}")
    parser.add_argument("--d-reg-every", type=int, default=None, help=f"lazy R1 interval (default {d.d_reg_every})")
    parser.add_argument("--g-reg-every", type=int, default=None, help=f"lazy path-length interval (default {d.g_reg_every})")
    parser.add_argument("--mixing", type=float, default=None, help=f"style-mixing probability (default {d.mixing})")
    parser.add_argument("--augment", action="store_true", default=None, help="ADA augmentation")
    parser.add_argument("--augment-p", type=float, default=None, help="fixed augmentation p; 0 = adaptive (default)")
    parser.add_argument("--ada-target", type=float, default=None, help=f"default {d.ada_target}")
    parser.add_argument("--ada-length", type=int, default=None, help=f"default {d.ada_length}")
    parser.add_argument("--ada-every", type=int, default=None, help=f"default {d.ada_every}")
    parser.add_argument("--ema-decay", type=float, default=None, help=f"G_ema decay (default {d.ema_decay:.6f})")
    parser.add_argument("--seed", type=int, default=None, help="seed of weights, latents, noise and data order")
    parser.add_argument("--ckpt-every", type=int, default=None, help=f"checkpoint interval (default {d.ckpt_every})")
    parser.add_argument("--sample-every", type=int, default=None, help=f"sample-grid interval (default {d.sample_every})")
    parser.add_argument("--resize", action="store_true", help="resample a dataset stored at another size")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (under torchrun: one GPU per process)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per process")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def apply_shared(args: argparse.Namespace, values: dict) -> dict:
    """`values` (a GanConfig kwargs dict) with every flag the user passed applied."""
    out = dict(values)
    for flag, name in SHARED.items():
        v = getattr(args, flag, None)
        if v is not None:
            out[name] = v
    if args.augment:
        out["augment"] = True
    return out


def device_for(args: argparse.Namespace):
    """The process's device: under torchrun with CUDA, cuda:LOCAL_RANK."""
    import torch

    from toon3d.devices import resolve_device
    from toon3d.train.gan import distributed_context

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    _, world, local = distributed_context()
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    return device
