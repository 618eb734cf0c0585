"""Write the model cards of the shipped discriminators (cartoon_d, toon_d) with a measured figure.

    .venv/bin/python tools/discriminator_cards.py --data cartoon=data/cartoons64 --data toon=data/toon64a

The figure: the discriminator's logits on the last 256 images of the data folder its style was
trained on against 256 raw samples of its own generator, and the real-vs-fake accuracy at logit
0 (how far it still separates them). Make the folders with `toon3d data cartoons|toon --size 64`
(`toon` with `--anchor-eyes`, as the shipped toon was trained); without `--data` a style's folder
is taken from the `data` field of its card's last training phase.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

STYLES = ("cartoon", "toon")
COUNT = 256


def _phases(path: Path) -> list[dict]:
    """The training phases recorded in a shipped discriminator's metadata."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata()["meta"])["phases"]


def measure(name: str, weights: Path, folder: str) -> dict[str, str]:
    """Logit statistics and real-vs-fake accuracy of style `name`'s discriminator on `folder` vs its samples."""
    from toon3d.data.dataset import FaceDataset
    from toon3d.models import resolve_generator
    from toon3d.stylegan2.checkpoints import load_discriminator

    d = load_discriminator(weights).float().eval()
    ds = FaceDataset(folder, size=64, flip=False)
    real = torch.stack([ds[len(ds) - 1 - i]["image"] for i in range(COUNT)])
    g = resolve_generator(name, blend=False).generator.float().eval()
    with torch.no_grad():
        fake = torch.cat([g([torch.randn(COUNT // 4, g.style_dim, generator=torch.Generator().manual_seed(100 + i))])[0]
                          for i in range(4)])
        lr, lf = d(real).squeeze(1), d(fake).squeeze(1)
    acc = ((lr > 0).float().mean() + (lf < 0).float().mean()).item() / 2
    key = (f"D logit, {COUNT} data images (the last of the folder) vs {COUNT} raw samples of its generator "
           "(re-measure: python tools/discriminator_cards.py)")
    return {key: f"real {lr.mean():.3f} ± {lr.std():.3f}, fake {lf.mean():.3f} ± {lf.std():.3f}; "
                 f"real-vs-fake accuracy at 0: {acc:.3f}",
            "data": f"{folder} (images only)"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", default=[], metavar="STYLE=FOLDER",
                        help="the data folder of a style (default: the card's last training phase)")
    parser.add_argument("--weights-dir", default=str(REPO / "toon3d" / "weights"))
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    from toon3d.errors import Toon3dError
    from toon3d.train.ship import write_discriminator_card

    folders = {}
    for item in args.data:
        style, _, folder = item.partition("=")
        if style not in STYLES or not folder:
            print(f"discriminator_cards: error: --data {item!r}: write STYLE=FOLDER with STYLE in "
                  f"{', '.join(STYLES)}", file=sys.stderr)
            return 2
        folders[style] = folder
    weights = Path(args.weights_dir)
    try:
        for name in STYLES:
            path = weights / f"{name}_d.safetensors"
            phases = _phases(path)
            folder = folders.get(name) or phases[-1].get("data")
            if not folder or not Path(folder).is_dir():
                raise Toon3dError(f"{name}: data folder {folder!r} not found; pass --data {name}=FOLDER "
                                  f"(toon3d data {'cartoons' if name == 'cartoon' else 'toon --anchor-eyes'} --size 64)")
            figures = measure(name, path, folder)
            print(name, figures)
            write_discriminator_card(path, name, phases, figures)
    except Toon3dError as err:
        print(f"discriminator_cards: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
