"""Ship a distilled depth net D inside a built-in reconstructor: toon3d/weights/shape_<world>.safetensors.

    .venv/bin/python tools/ship_shape_depth.py --run /work/runs/depth_toon --world toon \
        --notes "Table II toon instant row, 256 anchored renders: ..."

Reads the `toon3d train-shape-depth` run's model.safetensors (the shipped A, V, L and E plus the
trained D), checks that A, V, L (and E) are the shipped file's bit for bit, writes it back in fp16,
and appends a "Depth net" section to the card (command, iterations, wall time, machine, the prior
MSE at the start and the end, notes). The figures in the card's earlier sections describe the
depth net it replaces.
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
    parser.add_argument("--run", required=True, help="a toon3d train-shape-depth run folder")
    parser.add_argument("--world", required=True, choices=["base", "cartoon", "toon"])
    parser.add_argument("--notes", default="", help="figures measured with the new D (markdown, one paragraph)")
    args = parser.parse_args(argv)
    record, nets, geometry, meta, target, shipped_meta = open_shape_shipping(args.run, args.world,
                                                                             ("albedo", "view", "light", "encoder"))
    keep = {k: v for k, v in shipped_meta.items() if k != "encoder_loaded"}
    keep["depth"] = meta.get("depth")
    save_shape_model(target, nets, geometry, keep, dtype=torch.float16,
                     with_encoder=bool(shipped_meta.get("encoder_loaded")))
    card = target.with_suffix(".md")
    figures = record["figures"]
    prior = record["prior"]
    cpu = platform.processor() or platform.machine()
    text = card.read_text().rstrip() + f"""

## Depth net: the per-image prior, distilled

The depth net D was replaced after the sections above were measured: `toon3d train-shape-depth`
trained it alone to predict each image's ellipsoid prior (the paper's prior: the ellipsoid in the
bounding box of the face parser's mask, kind {prior['prior_kind']}, mask ≥ {prior['prior_mask_threshold']},
near {prior['prior_near']}, far {prior['prior_far']}, shifted to be representable: {prior['prior_centre']}),
on images of the `{record['generator']}` generator ({'blended with base' if record['blend'] else 'raw'}), MSE before
the border clamp, Adam lr {record['config']['lr']} decayed to 0, batch {record['config']['batch']}. Mask:
{record['mask']['note']}. A, V, L and E are unchanged. The figures in the sections above belong to the
D it replaces (the layout's fixed ellipsoid).

- command: `{record['command']}`
- iterations: {record['config']['iters']}; wall time {figures['seconds_this_call'] / 60:.1f} min on {cpu}, 1 thread
  (the other core busy), torch {torch.__version__}
- prior MSE, mean of the first / last 50 iterations: {figures['mse_first_50']:.2e} → {figures['mse_last_50']:.2e}
"""
    if args.notes:
        text += f"- {args.notes}\n"
    card.write_text(text)
    print(f"wrote {target} ({target.stat().st_size / 1e6:.1f} MB) and {card}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
