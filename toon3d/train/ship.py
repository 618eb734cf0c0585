"""Ship a trained model as a built-in: fp16 safetensors in toon3d/weights plus its model card.

The card (`<name>.md`) records what a reader needs to trust and reproduce the file: the data,
seed, iterations, wall time, machine, the exact commands of every training phase, and the
measured figures. `toon3d ship-model` calls `ship_generator`.
"""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path

import torch

from toon3d.errors import Toon3dError


def machine_description() -> str:
    """One line: CPU model, core count, torch version (and the GPU when present)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    text = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}"
    if torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name(0)}"
    return text


def sha256(path: str | Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def ship_generator(source: str | Path, name: str, weights_dir: str | Path, phases: list[dict],
                   figures: dict, extra_meta: dict | None = None, discriminator: str | Path | None = None,
                   notes: str = "") -> list[Path]:
    """Write `<name>.safetensors` (fp16 generator), optional `<name>_d.safetensors` and `<name>.md`.

    `phases` lists the training phases in order, each {"what", "command", "iterations", "minutes", "data"}.
    """
    from toon3d.stylegan2.checkpoints import load_discriminator, load_generator, save_discriminator, save_generator

    weights_dir = Path(weights_dir)
    if not weights_dir.is_dir():
        raise Toon3dError(f"{weights_dir} is not a folder; pass the package's toon3d/weights")
    loaded = load_generator(source)
    g = loaded.generator.half()
    meta = {"name": name, "phases": phases, "figures": figures, "machine": machine_description(),
            **(extra_meta or {})}
    written = [save_generator(weights_dir / f"{name}.safetensors", g, loaded.mean_latent.half(), meta)]
    if discriminator is not None:
        d = load_discriminator(discriminator).half()
        d_path = save_discriminator(weights_dir / f"{name}_d.safetensors", d, {"name": f"{name}_d", "phases": phases})
        written.append(d_path)
        written.append(write_discriminator_card(d_path, name, phases, {}))
    written.append(write_card(weights_dir / f"{name}.md", name, loaded.config, meta, written, notes))
    return written


def write_discriminator_card(d_path: Path, generator_name: str, phases: list[dict], figures: dict) -> Path:
    """`<name>_d.md` beside a shipped discriminator: how it was trained (the generator's phases) and its figures."""
    from toon3d.stylegan2.checkpoints import load_discriminator

    d = load_discriminator(d_path)
    meta = {"phases": phases, "machine": machine_description(),
            "figures": {"seed": "0 (the trainer's default; weights, latents, noise and data order)", **figures}}
    notes = (f"The discriminator trained alongside `{generator_name}` (same run, same phases). It is not used to "
             f"make images: `toon3d finetune --ckpt {generator_name}` starts from it instead of a fresh one. "
             f"Quality figures of the pair are in `{generator_name}.md`.")
    return write_card(Path(d_path).with_suffix(".md"), f"{generator_name}_d", d.config, meta, [Path(d_path)], notes)


def write_card(path: Path, name: str, config: dict, meta: dict, files: list[Path], notes: str) -> Path:
    """The model card as Markdown."""
    from toon3d.io.atomic import atomic_file

    lines = [f"# Built-in model `{name}`", ""]
    if notes:
        lines += [notes.strip(), ""]
    lines += ["## Architecture", "", "```json", json.dumps(config, indent=2), "```", "",
              "## Training", ""]
    total = 0.0
    for i, phase in enumerate(meta["phases"], 1):
        total += float(phase.get("minutes", 0))
        lines += [f"{i}. **{phase['what']}** — {phase.get('iterations', '?')} iterations, "
                  f"{phase.get('minutes', '?')} min, data: {phase.get('data', '?')}",
                  "", "   ```bash", f"   {phase['command']}", "   ```", ""]
    lines += [f"Total training time: {total:.0f} min on {meta['machine']}.", "", "## Figures", ""]
    for key, value in meta["figures"].items():
        lines.append(f"- {key}: {value}")
    lines += ["", "## Files", ""]
    for f in files:
        lines.append(f"- `{f.name}`: {f.stat().st_size / 1e6:.2f} MB, sha256 `{sha256(f)[:16]}…`")
    with atomic_file(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return path


def open_shape_shipping(run: str | Path, world: str, kept: tuple[str, ...]):
    """A shape-network run and the shipped reconstructor it goes into, checked to differ only in its network.

    Returns (run record dict, run nets, geometry, run meta, shipped file path, shipped meta). The
    networks named in `kept` (e.g. "depth", "albedo", ...) must equal the shipped file's in fp16,
    and the geometry must be the same ("encoder" is skipped when the shipped file holds none);
    otherwise one-line errors (SystemExit) say so.
    """
    from toon3d.shape.instant import builtin_shape_path, load_shape_model

    run = Path(run)
    record = json.loads((run / "config.json").read_text())
    nets, geometry, meta = load_shape_model(run / "model.safetensors")
    target = builtin_shape_path(world)
    shipped, shipped_geometry, shipped_meta = load_shape_model(target)
    if geometry != shipped_geometry:
        raise SystemExit(f"the run's geometry differs from the shipped {target.name}'s")
    for part in kept:
        if part == "encoder" and not shipped_meta.get("encoder_loaded"):
            continue
        ours, theirs = getattr(nets, part).state_dict(), getattr(shipped, part).state_dict()
        if any(not torch.equal(ours[k].half(), theirs[k].half()) for k in theirs):
            raise SystemExit(f"the run's {part} net is not the shipped {target.name}'s; train against the shipped file")
    return record, nets, geometry, meta, target, shipped_meta
