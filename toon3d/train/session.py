"""Run a `GanTrainer` from the command line: data checks, run folder, resume, export.

Shared by `toon3d train` and `toon3d finetune`. A run folder holds config.json (settings and
the command), state.pt (atomic, resumable), figures.jsonl, tb/ (TensorBoard), samples/, and
after the last iteration the exports: generator.safetensors (G_ema + latent_avg),
discriminator.safetensors, and rosinality.pt (rosinality's checkpoint keys).
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from toon3d.errors import Toon3dError
from toon3d.train.gan import GanConfig, GanTrainer


def open_dataset(path: str, size: int, resize: bool, seed: int):
    """FaceDataset at `path` for a `size` px model; another stored size is an error unless `resize`."""
    from toon3d.data.dataset import FaceDataset

    probe = FaceDataset(path, load_gt=False, flip=True, seed=seed)
    if len(probe) == 0:
        raise Toon3dError(f"dataset {path} holds no images; build it with 'toon3d data ...'")
    if probe.stored_size != size and not resize:
        raise Toon3dError(f"dataset {path} is {probe.stored_size} px but the model is {size} px; prepare it at {size} "
                          f"('toon3d data prepare SRC --size {size}') or pass --resize")
    return FaceDataset(path, size=size, load_gt=False, flip=True, seed=seed)


def run_training(cfg: GanConfig, out: str, data: str, resume: bool, device: torch.device, init: dict | None,
                 resize: bool = False, progress: bool = True, provenance: dict | None = None) -> Path:
    """Train (or resume) a run in `out`, then export its models; returns the run folder."""
    from toon3d.train.data_stream import ImageStream
    from toon3d.train.gan import distributed_context
    from toon3d.train.run_log import RunLog

    rank, world, _ = distributed_context()
    out_dir = Path(out)
    # Rank 0 alone checks (another rank could see rank 0's first files); if it fails, torchrun stops the rest.
    if rank == 0 and not resume and out_dir.exists() and any(out_dir.iterdir()):
        raise Toon3dError(f"{out_dir} is not empty; pass --resume to continue that run or choose a new --out")
    dataset = open_dataset(data, cfg.size, resize, cfg.seed)
    stream = ImageStream(dataset, cfg.batch, seed=cfg.seed, rank=rank, world=world)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
    log = RunLog(out_dir, enabled=rank == 0)
    trainer = GanTrainer(cfg, out_dir, stream, device, init=init, log=log)
    if resume:
        trainer.load()
    command = "toon3d " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if rank == 0:
        record_path = out_dir / "config.json"
        # every start and resume of the run, in order (model cards list them)
        commands = (json.loads(record_path.read_text()).get("commands", [])
                    if resume and record_path.is_file() else [])
        record = {"config": asdict(cfg), "command": command, "commands": [*commands, command], "data": str(data),
                  "processes": world, **(provenance or {})}
        record_path.write_text(json.dumps(record, indent=2))
    try:
        trainer.train(progress=progress)
    finally:
        log.close()
    if rank == 0:
        export_run(trainer, out_dir, command, provenance or {})
    return out_dir


def export_run(trainer: GanTrainer, out_dir: Path, command: str, provenance: dict) -> None:
    """generator.safetensors (G_ema), discriminator.safetensors and rosinality.pt in `out_dir`."""
    from toon3d.stylegan2.checkpoints import MEAN_LATENT_SAMPLES, MEAN_LATENT_SEED, save_discriminator, save_generator
    from toon3d.train.gan import export_rosinality

    g = trainer.g_ema.cpu().eval()
    mean = g.mean_latent(MEAN_LATENT_SAMPLES, generator=torch.Generator().manual_seed(MEAN_LATENT_SEED))
    meta = {"iteration": trainer.iteration, "command": command, "train_minutes": round(trainer.train_seconds / 60, 2),
            "config": asdict(trainer.cfg), **provenance}
    save_generator(out_dir / "generator.safetensors", g, mean, meta)
    save_discriminator(out_dir / "discriminator.safetensors", trainer.d.cpu(), meta)
    export_rosinality(trainer, out_dir / "rosinality.pt", mean)
    trainer.g_ema.to(trainer.device)
    trainer.d.to(trainer.device)
