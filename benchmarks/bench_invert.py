"""Inversion quality against steps: each start (mean W, encoder) and loss (face, pixel, lpips) on generator samples
and on aligned real photos, with per-photo alignment and inversion times.

    OMP_NUM_THREADS=1 python benchmarks/bench_invert.py [--ckpt base] [--steps 0,25,50,100,200] [--samples 3]

Targets: `--samples` held-out samples of the generator (z from seeds 900000+i, random noise,
no truncation: the true W is known) and the packaged photos (skimage's astronaut,
matplotlib's Grace Hopper, insightface's t1.jpg face 0; those whose package is missing are
skipped), aligned to the generator's layout. Every (loss, start, steps) is its own projector
run (the schedule depends on the step count): the samples side by side in one run (the
projector treats them independently), each photo in a run of its own so its inversion time
is its own. `--configs auto` (default) is every offline loss (face, pixel) with each start
(mean W, encoder), plus lpips when the user's VGG16 and the LPIPS heads are found.

Printed: (1) per photo, its alignment time (detection + landmarks + cut; dlib's models are
loaded once before, that time printed apart) and for every (loss, start, steps) the PSNR (dB,
[-1,1] images), dlib identity distance (L2 of the 128-D descriptor, chip at the layout's face
position; the same person is below 0.6 on real photos) and the inversion's CPU seconds
(process time: loss set-up, encoder, projector); (2) per kind, the means of PSNR and identity
distance, the standardised W error for the samples, and CPU seconds per step (all targets: the samples' run plus
every photo's).
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


def photo_targets(layout: str, size: int) -> tuple[torch.Tensor | None, list[str], dict]:
    """The packaged photos aligned to `layout` at `size` px: [N,3,S,S] in [-1,1], their names, and timings
    {"load_s", "align_cpu_s" [N], "align_wall_s" [N], "photo_size" [N] (w, h)} (dlib's models loaded once, apart)."""
    from toon3d.faces.align import FaceDetector, align_photo

    detector, images, names = None, [], []
    timing: dict = {"load_s": 0.0, "align_cpu_s": [], "align_wall_s": [], "photo_size": []}
    for package, relative, face in PHOTOS:
        path = packaged(package, relative)
        if path is None:
            continue
        if detector is None:
            t0 = time.process_time()
            detector = FaceDetector()
            timing["load_s"] = time.process_time() - t0
        t0, w0 = time.process_time(), time.perf_counter()
        aligned = align_photo(path, layout, size, face, detector)
        timing["align_cpu_s"].append(time.process_time() - t0)
        timing["align_wall_s"].append(time.perf_counter() - w0)
        timing["photo_size"].append(list(aligned.photo_size))
        images.append(aligned.tensor())
        names.append(f"{Path(relative).name}:{face}")
    return (torch.cat(images) if images else None), names, timing


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
    each_psnr, each_id = psnr(image, targets), (e[:n] - e[n:]).norm(dim=1)
    figures = {"psnr_db": float(each_psnr.mean()), "identity": float(each_id.mean()),
               "cpu_s": seconds, "cpu_s_per_step": seconds / steps if steps else 0.0,
               "each_psnr_db": [float(v) for v in each_psnr], "each_identity": [float(v) for v in each_id]}
    if w_true is not None:
        figures["w_error"] = float((((result.latent - w_true) / w_std) ** 2).mean(1).mean())
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default="base")
    parser.add_argument("--encoder", default="auto", help="encoder file for the 'encoder' start (default: the "
                                                          "shipped one that matches --ckpt)")
    parser.add_argument("--steps", default="0,25,50,100,200")
    parser.add_argument("--configs", default="auto",
                        help="loss:start pairs (loss: face | pixel | lpips; start: mean | encoder), or auto: "
                             "face and pixel with both starts, and lpips when its files are found")
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
    if args.samples > 0:
        samples, w_true = sample_targets(loaded, args.samples)
        kinds["samples"] = (samples, w_true, [f"seed {SAMPLE_SEED + i}" for i in range(args.samples)])
    timing = None
    if not args.no_photos:
        photos, names, timing = photo_targets(layout, size)
        if photos is not None:
            kinds["photos"] = (photos, None, names)
    if not kinds:
        raise SystemExit("nothing to measure: --samples 0, and no photos (--no-photos, or no photo package)")
    steps = [int(s) for s in args.steps.split(",")]
    from toon3d.faces.lpips import lpips_available
    from toon3d.invert.inversion import AUTO_LATENT_PRIOR

    configs = args.configs
    if configs == "auto":
        configs = "face:mean,face:encoder,pixel:mean,pixel:encoder"
        if lpips_available():
            configs += ",lpips:mean,lpips:encoder"
        else:
            print("lpips: left out (VGG16 / the LPIPS heads not found; see docs/photos.md)", flush=True)
    prior = AUTO_LATENT_PRIOR.get(layout, 0.0) if args.latent_prior is None else args.latent_prior
    rows = []
    for config in configs.split(","):
        loss, start = config.split(":")
        encoder = "none" if start == "mean" else args.encoder
        for n in steps:
            row = {"loss": loss, "start": start, "steps": n, "latent_prior": prior}
            for kind, (targets, w, names) in kinds.items():
                if kind == "photos":  # one run per photo: its own inversion time
                    each = [measure(loaded, targets[i:i + 1], loss, encoder, n, layout, embedder, None, w_std,
                                    prior) for i in range(len(targets))]
                    row[kind] = {"psnr_db": sum(f["psnr_db"] for f in each) / len(each),
                                 "identity": sum(f["identity"] for f in each) / len(each),
                                 "cpu_s": sum(f["cpu_s"] for f in each),
                                 "cpu_s_per_step": sum(f["cpu_s_per_step"] for f in each),  # all photos
                                 "each": {name: {k: f[k] for k in ("psnr_db", "identity", "cpu_s")}
                                          for name, f in zip(names, each)}}
                else:
                    row[kind] = measure(loaded, targets, loss, encoder, n, layout, embedder, w, w_std, prior)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\n{loaded.source} ({size} px, {layout} layout, latent_prior {prior:g}, "
          f"{torch.get_num_threads()} thread(s)); targets: "
          + "; ".join(f"{k}: {', '.join(v[2])}" for k, v in kinds.items()))
    if "photos" in kinds:
        names = kinds["photos"][2]
        print(f"\nPer photo. Alignment (CPU s; dlib's detector and landmark model loaded once before: "
              f"{timing['load_s']:.1f} s): " + ", ".join(f"{name} ({w}x{h}) {cpu:.2f} s" for name, cpu, (w, h) in
                                                      zip(names, timing["align_cpu_s"], timing["photo_size"])))
        print("Cells: PSNR dB / dlib identity distance / inversion CPU s\n")
        print("| loss | start | steps | " + " | ".join(names) + " |")
        print("|---|---|---:|" + "---:|" * len(names))
        for row in rows:
            cells = [f"{e['psnr_db']:.2f} / {e['identity']:.3f} / {e['cpu_s']:.1f}"
                     for e in (row["photos"]["each"][name] for name in names)]
            print(f"| {row['loss']} | {row['start']} | {row['steps']} | " + " | ".join(cells) + " |")
    print("\nMeans")
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
        Path(args.json).write_text(json.dumps({"source": str(loaded.source), "rows": rows, "alignment": timing,
                                               "targets": {k: v[2] for k, v in kinds.items()}}, indent=2))


if __name__ == "__main__":
    main()
