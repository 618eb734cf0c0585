"""Inversion quality against steps: each start (mean W, encoder) and loss (face, pixel, lpips) on generator samples
and on aligned real photos.

    python benchmarks/bench_invert.py --ckpt base --encoder toon3d/weights/encoder_base.safetensors

Targets: `--samples` held-out samples of the generator (z from seeds 900000+i, random noise,
no truncation: the true W is known) and the packaged photos (skimage's astronaut,
matplotlib's Grace Hopper, insightface's t1.jpg face 0; those whose package is missing are
skipped), aligned to the generator's layout. Every (loss, start, steps) is its own projector
run (the schedule depends on the step count), all targets of a kind side by side (the
projector treats them independently). Printed per kind: mean PSNR (dB, [-1,1] images) and
mean dlib identity distance (L2 of the 128-D descriptor, chip at the layout's face position;
the same person is below 0.6 on real photos) between target and projection, the standardised
W error for the samples, and CPU seconds per step (process time, all threads).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import torch

PHOTOS = (("skimage", "data/astronaut.png", 0), ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg", 0),
          ("insightface", "data/images/t1.jpg", 0))
SAMPLE_SEED = 900_000


def packaged(package: str, relative: str) -> Path | None:
    """A file shipped inside an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    for root in (spec.submodule_search_locations or []) if spec else []:
        if (Path(root) / relative).is_file():
            return Path(root) / relative
    return None


def sample_targets(loaded, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(images [N,3,S,S] in [-1,1], their W [N,D]) for seeds SAMPLE_SEED+i, random noise, psi = 1."""
    g = loaded.generator
    images, ws = [], []
    with torch.no_grad():
        for i in range(count):
            rng = torch.Generator().manual_seed(SAMPLE_SEED + i)
            w = g.style(torch.randn(1, g.style_dim, generator=rng))
            noise = [torch.randn(1, 1, *b.shape[2:], generator=rng) for b in g.noise_buffers()]
            images.append(g([w], input_is_latent=True, noise=noise)[0].clamp(-1, 1))
            ws.append(w)
    return torch.cat(images), torch.cat(ws)


def photo_targets(layout: str, size: int) -> tuple[torch.Tensor | None, list[str]]:
    """The packaged photos aligned to `layout` at `size` px: [N,3,S,S] in [-1,1] and their names."""
    from toon3d.faces.align import FaceDetector, align_photo

    detector, images, names = None, [], []
    for package, relative, face in PHOTOS:
        path = packaged(package, relative)
        if path is None:
            continue
        detector = detector or FaceDetector()
        images.append(align_photo(path, layout, size, face, detector).tensor())
        names.append(f"{Path(relative).name}:{face}")
    return (torch.cat(images) if images else None), names


def measure(loaded, targets: torch.Tensor, loss: str, start: str, steps: int, layout: str, embedder,
            w_true: torch.Tensor | None, w_std: torch.Tensor, latent_prior: float = 0.0) -> dict:
    """One projector run on all targets → mean figures."""
    from toon3d.invert.encoder import psnr
    from toon3d.invert.inversion import invert

    t0 = time.process_time()
    result = invert(loaded, targets, steps=steps, loss=loss, encoder=start, layout=layout, embedder=embedder,
                    latent_prior=latent_prior, progress=False)
    seconds = time.process_time() - t0
    if (start == "none") != (result.start == "mean"):
        raise SystemExit(f"asked for start {start!r} but the run started from {result.start!r}: pass --encoder FILE")
    image = result.image.clamp(-1, 1)
    with torch.no_grad():
        e = embedder.embed(torch.cat([image, targets]))
    n = len(targets)
    figures = {"psnr_db": float(psnr(image, targets).mean()),
               "identity": float((e[:n] - e[n:]).norm(dim=1).mean()),
               "cpu_s_per_step": seconds / steps if steps else 0.0}
    if w_true is not None:
        figures["w_error"] = float((((result.latent - w_true) / w_std) ** 2).mean(1).mean())
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default="base")
    parser.add_argument("--encoder", default="auto", help="encoder file for the 'encoder' start (default: the "
                                                          "shipped one that matches --ckpt)")
    parser.add_argument("--steps", default="0,25,50,100,200")
    parser.add_argument("--configs", default="face:mean,face:encoder,pixel:mean",
                        help="loss:start pairs (loss: face | pixel | lpips; start: mean | encoder)")
    parser.add_argument("--samples", type=int, default=3, help="held-out generator samples (default 3)")
    parser.add_argument("--latent-prior", type=float, default=None,
                        help="the projector's latent_prior (default: toon3d invert's auto, by layout)")
    parser.add_argument("--no-photos", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from toon3d.faces.align import layout_for_generator
    from toon3d.faces.identity import load_dlib_embedder
    from toon3d.invert.losses import embedder_for_layout
    from toon3d.models import resolve_generator

    loaded = resolve_generator(args.ckpt)
    layout, size = layout_for_generator(loaded), int(loaded.config["size"])
    embedder = embedder_for_layout(load_dlib_embedder(), layout)
    with torch.no_grad():
        w_all = loaded.generator.style(torch.randn(10000, loaded.generator.style_dim,
                                                   generator=torch.Generator().manual_seed(1)))
    w_std = w_all.std(0)
    kinds = {}
    samples, w_true = sample_targets(loaded, args.samples)
    kinds["samples"] = (samples, w_true, [f"seed {SAMPLE_SEED + i}" for i in range(args.samples)])
    if not args.no_photos:
        photos, names = photo_targets(layout, size)
        if photos is not None:
            kinds["photos"] = (photos, None, names)
    steps = [int(s) for s in args.steps.split(",")]
    from toon3d.invert.inversion import AUTO_LATENT_PRIOR

    prior = AUTO_LATENT_PRIOR.get(layout, 0.0) if args.latent_prior is None else args.latent_prior
    rows = []
    for config in args.configs.split(","):
        loss, start = config.split(":")
        encoder = "none" if start == "mean" else args.encoder
        for n in steps:
            row = {"loss": loss, "start": start, "steps": n, "latent_prior": prior}
            for kind, (targets, w, _) in kinds.items():
                row[kind] = measure(loaded, targets, loss, encoder, n, layout, embedder, w, w_std, prior)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\n{loaded.source} ({size} px, {layout} layout, latent_prior {prior:g}); targets: "
          + "; ".join(f"{k}: {', '.join(v[2])}" for k, v in kinds.items()))
    header = f"{'loss':<6} {'start':<8} {'steps':>5}"
    for kind in kinds:
        header += f" | {kind + ' PSNR':>13} {'ID dist':>7}" + (f" {'W err':>6}" if kind == "samples" else "")
    print(header + " | CPU s/step")
    for row in rows:
        line = f"{row['loss']:<6} {row['start']:<8} {row['steps']:>5}"
        for kind in kinds:
            f = row[kind]
            line += f" | {f['psnr_db']:>13.2f} {f['identity']:>7.3f}"
            if kind == "samples":
                line += f" {f['w_error']:>6.3f}"
        line += f" | {sum(row[k]['cpu_s_per_step'] for k in kinds):.2f}"
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps({"source": str(loaded.source), "rows": rows,
                                               "targets": {k: v[2] for k, v in kinds.items()}}, indent=2))


if __name__ == "__main__":
    main()
