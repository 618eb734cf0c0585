"""Ship a pretrained latent encoder E inside a built-in reconstructor: toon3d/weights/shape_<world>.safetensors.

    .venv/bin/python tools/ship_shape_encoder.py --run /work/runs/enc_toon --world toon \
        --notes "Table II toon full row, 3 images: ..."

Reads the `toon3d train-shape-encoder` run's model.safetensors (the shipped D, A, V, L plus the
trained E), checks that its D, A, V, L are the shipped file's bit for bit (E was trained against
them), writes it back in fp16 with E, and appends a "Latent encoder" section to the card
(command, iterations, wall time, machine, the step-2 loss at the start and the end, notes).
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    from toon3d.shape.instant import save_shape_model
    from toon3d.train.ship import open_shape_shipping

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a toon3d train-shape-encoder run folder")
    parser.add_argument("--world", required=True, choices=["base", "cartoon", "toon"])
    parser.add_argument("--notes", default="", help="figures measured with the encoder (markdown, one paragraph)")
    args = parser.parse_args(argv)
    # E was trained against the shipped D, A, V and L: they must be the same
    record, nets, geometry, meta, target, shipped_meta = open_shape_shipping(args.run, args.world,
                                                                             ("depth", "albedo", "view", "light"))
    if not meta.get("encoder_loaded"):
        raise SystemExit(f"{Path(args.run) / 'model.safetensors'} holds no latent encoder")
    keep = {k: v for k, v in shipped_meta.items() if k != "encoder_loaded"}
    keep["encoder"] = meta.get("encoder")
    save_shape_model(target, nets, geometry, keep, dtype=torch.float16, with_encoder=True)
    card = target.with_suffix(".md")
    figures = record["figures"]
    cpu = platform.processor() or platform.machine()
    text = card.read_text().rstrip() + f"""

## Latent encoder

The file also holds GAN2Shape's latent encoder E for the `{record['generator']}` generator
({'blended with base' if record['blend'] else 'raw'}), trained by `toon3d train-shape-encoder`:
step 2 over a stream of generator images (one image per iteration, {record['config']['batch']} pseudo samples
at random views and lights, L1 + L_dis ({record['dis_features']}) + 0.01·‖Δw‖², Adam lr
{record['config']['lr']}), D, A, V and L frozen at the weights above. Every per-image reconstruction
(`toon3d reconstruct`, `avatar`, `eval shape`) starts E from it instead of from random weights.

- command: `{record['command']}`
- iterations: {record['config']['iters']}; wall time {figures['seconds_this_call'] / 60:.1f} min on {cpu}, 1 thread
  (the other core busy), torch {torch.__version__}
- step-2 loss, mean of the first / last 50 iterations: {figures['step2_loss_first_50']:.4f} → {figures['step2_loss_last_50']:.4f}
"""
    if args.notes:
        text += f"- {args.notes}\n"
    card.write_text(text)
    print(f"wrote {target} ({target.stat().st_size / 1e6:.1f} MB) and {card}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
