"""Time the StyleGAN2 generator (256 px, channel multiplier 2) on CPU (and CUDA when present).

Prints ms/image and peak memory for batch 1 and 8, for toon3d's fast path, its reference
formula path, and optionally rosinality/stylegan2-pytorch side by side:

    .venv/bin/python benchmarks/bench_generator.py
    .venv/bin/python benchmarks/bench_generator.py --reference-dir ~/src/stylegan2-pytorch

rosinality's ``op`` package compiles CUDA code when imported; the benchmark stubs out
``torch.utils.cpp_extension.load`` during that import so its own native CPU code path
(``upfirdn2d_native``, bias + leaky ReLU) runs unchanged. Both generators get the same
formula-filled weights (REFERENCE §13), and the benchmark checks their images agree.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import math
import resource
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

from toon3d.stylegan2.generator import Generator


def formula_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """REFERENCE §13 weights for every entry except blur kernels (deterministic, no files)."""
    out = {}
    for key, v in model.state_dict().items():
        if key.endswith(".kernel"):
            out[key] = v
            continue
        c = sum(ord(ch) for ch in key) % 997
        i = np.arange(v.numel(), dtype=np.float64)
        x = np.sin(i * 12.9898 + c * 78.233) * 43758.5453
        out[key] = torch.from_numpy(((2 * (x - np.floor(x)) - 1) * math.sqrt(3)).astype(np.float32)).view(v.shape)
    return out


@contextlib.contextmanager
def _no_extension_build():
    import torch.utils.cpp_extension as cpp

    original = cpp.load
    cpp.load = lambda *a, **k: types.SimpleNamespace()
    try:
        yield
    finally:
        cpp.load = original


def load_reference_generator(reference_dir: Path) -> torch.nn.Module:
    """rosinality's Generator(256, 512, 8, 2) from a checkout, without building its CUDA ops."""
    if not (reference_dir / "model.py").is_file() or not (reference_dir / "op").is_dir():
        raise SystemExit(f"{reference_dir}: not a rosinality/stylegan2-pytorch checkout (model.py and op/ expected)")
    sys.path.insert(0, str(reference_dir))
    with _no_extension_build():
        model = importlib.import_module("model")
    return model.Generator(256, 512, 8, channel_multiplier=2)


def rss_peak_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_round_robin(paths: dict, ws: torch.Tensor, repeats: int, device: torch.device,
                     clock=time.perf_counter) -> dict[str, float]:
    """Best-of-``repeats`` seconds per call for each path, after one warm-up call each.

    The paths take turns within every repeat, so a burst of load from other processes
    slows all of them alike instead of one.
    """
    best = {name: math.inf for name in paths}
    with torch.inference_mode():
        for run in paths.values():
            run(ws)
        for _ in range(repeats):
            for name, run in paths.items():
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t0 = clock()
                run(ws)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                best[name] = min(best[name], clock() - t0)
    return best


def main() -> None:
    """Parse arguments, build the generators and print one line per (device, path, batch)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference-dir", type=Path, help="a rosinality/stylegan2-pytorch checkout to time side by side")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    ap.add_argument("--cpu-time", action="store_true",
                    help="time with the process CPU clock instead of the wall clock (with --threads 1 this "
                         "is robust to other processes sharing the cores)")
    ap.add_argument("--no-cuda", action="store_true")
    ap.add_argument("--skip-reference-path", action="store_true", help="do not time toon3d's reference path")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")]
    if torch.cuda.is_available() and not args.no_cuda:
        devices.append(torch.device("cuda", 0))
    clock = time.process_time if args.cpu_time else time.perf_counter
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"devices: {', '.join(str(d) for d in devices)}, clock: {'process CPU time' if args.cpu_time else 'wall'}")

    ours = Generator(256).eval()
    sd = formula_state_dict(ours)
    ours.load_state_dict(sd, strict=True)
    ref = None
    if args.reference_dir:
        ref = load_reference_generator(args.reference_dir.expanduser()).eval()
        ref.load_state_dict(sd, strict=True)

    for device in devices:
        ours.to(device)
        if ref is not None:
            ref.to(device)
        noise = [n.to(device) for n in ours.noise_buffers()]
        def fast(ws: torch.Tensor, per_sample: bool = True) -> torch.Tensor:
            ours.per_sample_cpu_inference = per_sample
            return ours.set_conv_path("fast").synthesis(ws, noise=noise)

        paths = {"toon3d fast": fast}
        if device.type == "cpu":
            # The batched shared-weight path that CPU inference skips (kept for the comparison).
            paths["toon3d fast, batched"] = lambda ws: fast(ws, per_sample=False)
        if not args.skip_reference_path:
            paths["toon3d reference-formula"] = lambda ws: ours.set_conv_path("reference").synthesis(ws, noise=noise)
        if ref is not None:
            paths["rosinality"] = lambda ws: ref([ws], input_is_latent=True, noise=noise)[0]
        gen = torch.Generator().manual_seed(0)
        results: dict[tuple[str, int], float] = {}
        for batch in args.batches:
            ws = torch.randn(batch, ours.n_latent, 512, generator=gen).to(device)
            active = {k: v for k, v in paths.items() if batch > 1 or k != "toon3d fast, batched"}
            with torch.inference_mode():
                outputs = {name: run(ws).float().cpu() for name, run in active.items()}
            base = next(iter(outputs.values()))
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            times = time_round_robin(active, ws, args.repeats, device, clock)
            mem = f"RSS peak {rss_peak_mib():.0f} MiB"
            if device.type == "cuda":
                mem += f", CUDA peak {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB"
            for name, sec in times.items():
                results[(name, batch)] = sec
                rel = ((outputs[name] - base).abs().max() / base.abs().max()).item()
                print(f"{device.type:4s} batch {batch:2d}  {name:26s} {1000 * sec / batch:9.1f} ms/image  "
                      f"(max rel diff vs toon3d fast {rel:.1e})", flush=True)
            print(f"{device.type:4s} batch {batch:2d}  memory: {mem} (process-wide peak so far)", flush=True)
            if ref is not None:
                ratio = results[("toon3d fast", batch)] / results[("rosinality", batch)]
                print(f"{device.type:4s} batch {batch:2d}  toon3d fast / rosinality time ratio: {ratio:.2f}", flush=True)


if __name__ == "__main__":
    main()
