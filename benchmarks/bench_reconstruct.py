"""Time and peak memory of one Stage 3 reconstruction per mode: instant, cpu (64 px), cpu at 128 px, paper.

    .venv/bin/python benchmarks/bench_reconstruct.py [--modes instant,cpu,cpu128] [--seeds 0-1] \
        [--ckpt cartoon] [--threads 2] [--device cpu]

Each mode runs in its own process (so its peak resident memory is its own) on generator images
of the built-in style (seeds truncated at 0.7) and prints seconds per image and the peak RSS:

- `instant`: the shipped reconstructor's feed-forward prediction (one image at a time, after one
  warm-up call);
- `cpu`: the `cpu` preset (64 px) from the shipped reconstructor, GAN2Shape's per-image start;
- `cpu128`: the `cpu` preset at 128 px (the image upsampled; no 128 px reconstructor ships, so
  it starts from the fitted prior): the issue's 128 px timing target;
- `paper`: the `paper` preset (256 px, 4 cycles; meant for a GPU: pass --device cuda).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

MODES = ("instant", "cpu", "cpu128", "paper")


def _image(ckpt: str, seed: int, device):
    """The style's image [1,3,S,S] and its W code [1,D] for `seed` (truncation 0.7)."""
    import torch

    from toon3d.models import resolve_generator
    from toon3d.seeds import z_from_seed

    loaded = resolve_generator(ckpt)
    g = loaded.generator.to(device).eval()
    z, _ = z_from_seed(seed, g.style_dim)
    with torch.no_grad():
        mean = loaded.mean_latent.to(device)
        w = mean + 0.7 * (g.mapping(z.to(device)) - mean)
        image = g.synthesis(w[:, None].expand(-1, g.n_latent, -1), noise_mode="const").clamp(-1, 1)
    return loaded, image, w


def run_one(mode: str, ckpt: str, seeds: list[int], device_name: str) -> dict:
    """Reconstruct each seed in `mode`; seconds per image and this process's peak RSS."""
    import torch

    from toon3d.devices import resolve_device
    from toon3d.faces.identity import load_identity_embedder
    from toon3d.pipeline_shape import ShapeOptions, reconstruct_generated

    device = resolve_device(device_name)
    seconds = []
    for seed in seeds:
        loaded, image, w = _image(ckpt, seed, device)
        if mode == "instant":
            options = ShapeOptions(instant=True)
            reconstruct_generated(image, w, loaded.generator, ckpt, options, device, None, None, None, False)
            start = time.perf_counter()
            reconstruct_generated(image, w, loaded.generator, ckpt, options, device, None, None, None, False)
        else:
            preset = "paper" if mode == "paper" else "cpu"
            options = ShapeOptions(preset=preset)
            start = time.perf_counter()
            if mode == "cpu128":
                from toon3d.shape.losses import load_perceptual
                from toon3d.shape.schedule import reconstruct_image
                from toon3d.shape.settings import preset as make_preset

                settings = make_preset("cpu", image_size=128, dis_features="perceptual")
                big = torch.nn.functional.interpolate(image, size=(128, 128), mode="bilinear", align_corners=False)
                reconstruct_image(big, w, loaded.generator, settings,
                                  identity_embedder=load_identity_embedder("dlib").to(device).eval(),
                                  perceptual=load_perceptual("dlib"), device=device, progress=False)
            else:
                reconstruct_generated(image, w, loaded.generator, ckpt, options, device,
                                      lambda: load_identity_embedder("dlib").to(device).eval(), None, None, False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"mode": mode, "seconds": [round(s, 2) for s in seconds], "mean_s": round(sum(seconds) / len(seconds), 2),
           "peak_rss_mb": round(peak), "threads": torch.get_num_threads(), "device": str(device)}
    if device.type == "cuda":
        out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="instant,cpu,cpu128", help=f"comma-separated: {', '.join(MODES)}")
    parser.add_argument("--seeds", default="0-1")
    parser.add_argument("--ckpt", default="cartoon", help="built-in style: base | cartoon | toon (default cartoon)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # a child process: run this mode only
    args = parser.parse_args()
    from toon3d.seeds import parse_seeds

    seeds = parse_seeds(args.seeds)
    if args.one:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(run_one(args.one, args.ckpt, seeds, args.device)))
        return
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        raise SystemExit(f"bench_reconstruct: unknown mode {unknown[0]!r}; choose from {', '.join(MODES)}")
    print(f"toon3d reconstruct, style {args.ckpt}, seeds {args.seeds}, {args.threads} thread(s), {args.device}")
    print("| mode | seconds per image | mean s | peak RSS MB |")
    print("|---|---|---|---|")
    for mode in modes:
        done = subprocess.run([sys.executable, __file__, "--one", mode, "--seeds", args.seeds, "--ckpt", args.ckpt,
                               "--threads", str(args.threads), "--device", args.device],
                              capture_output=True, text=True)
        if done.returncode != 0:
            print(f"| {mode} | failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else '?'} | | |")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        extra = f" (CUDA peak {r['peak_cuda_mb']} MB)" if "peak_cuda_mb" in r else ""
        print(f"| {mode} | {', '.join(map(str, r['seconds']))} | {r['mean_s']} | {r['peak_rss_mb']}{extra} |")


if __name__ == "__main__":
    main()
