"""Change a shipped style's stored blend settings and figures without retraining it.

    python tools/restamp_style.py --name cartoon --blend '{"level": 1}' \
        --figure "pairing accuracy with base, ...=raw 0.184 / 0.660, blended 0.930 / 0.992" \
        [--notes notes.md]

The weights are re-saved bit for bit (fp16 in, fp16 out); the meta's "blend" is updated with the
given keys, the named figures are replaced or added, and the model card is written again (its top
paragraph kept unless --notes gives a new one). Files beside it (`<name>_d.*`) stay listed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from toon3d.models import WEIGHTS_DIR
from toon3d.stylegan2.blend import BlendSettings
from toon3d.train.ship import write_card


def card_notes(card: Path) -> str:
    """The paragraph(s) between a card's title and its '## Architecture' heading."""
    text = card.read_text()
    body = text.split("\n", 1)[1] if "\n" in text else ""
    return body.split("## Architecture", 1)[0].strip()


def main() -> None:
    from toon3d.io.checkpoint import load_model_file
    from toon3d.stylegan2.checkpoints import load_generator, save_generator

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="a shipped style: cartoon or toon")
    parser.add_argument("--blend", default="{}", help="JSON keys of BlendSettings to change")
    parser.add_argument("--figure", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--notes", default=None, help="Markdown file replacing the card's top paragraph")
    parser.add_argument("--weights-dir", type=Path, default=WEIGHTS_DIR)
    args = parser.parse_args()
    path = args.weights_dir / f"{args.name}.safetensors"
    meta = dict(load_model_file(path).meta)
    blend = {**meta.get("blend", {}), **json.loads(args.blend)}
    BlendSettings(**blend)  # validates the keys and values
    meta["blend"] = blend
    figures = dict(meta.get("figures", {}))
    for item in args.figure:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--figure needs KEY=VALUE, got {item!r}")
        figures[key] = value
    meta["figures"] = figures
    loaded = load_generator(path)
    before = {k: v.clone() for k, v in loaded.generator.half().state_dict().items()}
    save_generator(path, loaded.generator.half(), loaded.mean_latent.half(), meta)
    after = load_generator(path).generator.half().state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "weights changed while re-saving"
    card = args.weights_dir / f"{args.name}.md"
    notes = Path(args.notes).read_text() if args.notes else card_notes(card)
    files = [path] + sorted(p for p in args.weights_dir.glob(f"{args.name}_d.*"))
    write_card(card, args.name, loaded.config, meta, files, notes)
    print(f"wrote {path} (blend {blend}) and {card}")


if __name__ == "__main__":
    main()
