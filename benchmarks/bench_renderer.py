"""Time the CPU/CUDA renderer: `render_depth` and one full reconstruction, forward and forward+backward.

    .venv/bin/python benchmarks/bench_renderer.py --threads 2 [--sizes 64 128 256] [--repeats 5]

Prints the median and best wall time per call and the median process CPU time (all
threads together; on a shared machine it is steadier than wall time). The shape is a head-like ellipsoid seen from a
moderate random view (about the reference's pseudo-sample views), so triangle sizes are
realistic. Also prints batched no-grad throughput of `render_view` (images/s), the path the
SynFace generator uses.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from toon3d.shape.camera import view_to_rt
from toon3d.shape.rasterise import render_depth
from toon3d.shape.renderer import Renderer, RenderSettings


def head(batch: int, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Ellipsoidal head depth [B,S,S] on a 1.04 background, and its mask."""
    v, u = torch.meshgrid(torch.linspace(-1, 1, size, device=device), torch.linspace(-1, 1, size, device=device),
                          indexing="ij")
    rho = (u / 0.6) ** 2 + (v / 0.8) ** 2
    depth = torch.where(rho < 1, 1.0 - 0.05 * (1 - rho).clamp_min(0).sqrt(), torch.full_like(u, 1.04))
    depth = depth - 0.012 * torch.exp(-(u ** 2 + (v + 0.05) ** 2) / 0.01)
    return depth.expand(batch, size, size).contiguous(), (rho < 1).expand(batch, size, size)


def timeit(fn, repeats: int, device: torch.device) -> tuple[float, float, float]:
    """Median and best wall time, and median process CPU time (less sensitive to other load)."""
    fn()  # warm-up
    times, cpu = [], []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(times), min(times), statistics.median(cpu)


def bench_device(device: torch.device, sizes: list[int], repeats: int, batches: list[int]) -> None:
    gen = torch.Generator().manual_seed(0)
    print(f"\n== {device} (threads={torch.get_num_threads()}) ==")
    print(f"{'what':44s} {'size':>5s} {'median s':>9s} {'best s':>9s} {'cpu s':>9s}")
    for size in sizes:
        renderer = Renderer(RenderSettings(size), device=device)
        depth, _ = head(1, size, device)
        view = ((torch.rand(1, 6, generator=gen) * 2 - 1) * 0.3).to(device)
        R, t = view_to_rt(view)
        verts = renderer.warped_vertices(depth, R, t).detach()
        albedo = (torch.rand(1, 3, size, size, generator=gen) * 2 - 1).to(device)
        light = torch.tensor([[0.5, 0.5, 0.3, -0.2]], device=device)

        def depth_fwd():
            with torch.no_grad():
                render_depth(verts, renderer.faces, renderer.K, size)

        def depth_fwd_bwd():
            v = verts.clone().requires_grad_()
            render_depth(v, renderer.faces, renderer.K, size).sum().backward()

        def recon(backward: bool):
            d = depth.clone().requires_grad_(backward)
            a = albedo.clone().requires_grad_(backward)
            vw = view.clone().requires_grad_(backward)
            lt = light.clone().requires_grad_(backward)
            with torch.set_grad_enabled(backward):
                Rv, tv = view_to_rt(vw)
                image, mask, _ = renderer.reconstruct(d, a, Rv, tv, lt)
                if backward:
                    (image * mask).abs().mean().backward()

        for name, fn in (("render_depth forward (no grad)", depth_fwd),
                         ("render_depth forward+backward", depth_fwd_bwd),
                         ("reconstruction forward (no grad)", lambda: recon(False)),
                         ("reconstruction forward+backward", lambda: recon(True))):
            med, best, cpu = timeit(fn, repeats, device)
            print(f"{name:44s} {size:5d} {med:9.4f} {best:9.4f} {cpu:9.4f}")
    for batch in batches:
        size = 128
        renderer = Renderer(RenderSettings(size), device=device)
        depth, mask = head(batch, size, device)
        texture = (torch.rand(batch, 3, size, size, generator=gen) * 2 - 1).to(device)
        R, t = view_to_rt(((torch.rand(batch, 6, generator=gen) * 2 - 1) * 0.5).to(device))

        def many():
            with torch.no_grad():
                renderer.render_view(texture, depth, R, t, canon_mask=mask)

        med, best, cpu = timeit(many, max(2, repeats // 2), device)
        print(f"{'render_view no grad, B=' + str(batch) + ', masked':44s} {size:5d} {med:9.4f} {best:9.4f} "
              f"{cpu:9.4f}   → {batch / med:6.1f} images/s (median wall)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--batches", type=int, nargs="*", default=[32, 64])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cpu-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")]
    if torch.cuda.is_available() and not args.cpu_only:
        devices.append(torch.device("cuda:0"))
    for device in devices:
        bench_device(device, args.sizes, args.repeats, args.batches)


if __name__ == "__main__":
    main()
