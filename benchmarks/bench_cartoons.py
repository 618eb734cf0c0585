"""Throughput of the cartoon set builder and of FaceDataset (folder and LMDB), in images/s.

    .venv/bin/python benchmarks/bench_cartoons.py [--n 300] [--size 128]

Builds N cartoon faces end to end (Node → SVG → resvg → PNG files), prepares them as an
image folder (folder + LMDB), then times FaceDataset through a DataLoader with 0 and 2 workers.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from torch.utils.data import DataLoader

from toon3d.data.dataset import FaceDataset
from toon3d.data.prepare import PrepareSettings, prepare_folder
from toon3d.synth.cartoons import CartoonSettings, FacesjsServer, make_cartoons, render_face


def _rate(count: int, seconds: float) -> str:
    return f"{count / seconds:8.1f} images/s ({count} in {seconds:.2f} s)"


def bench_builder(out: Path, n: int, size: int) -> None:
    """End-to-end `make_cartoons`, and its two stages alone."""
    start = time.perf_counter()
    with FacesjsServer() as server:
        records = list(server.faces(0, range(n)))
    node_s = time.perf_counter() - start
    start = time.perf_counter()
    for record in records:
        render_face(record, size)
    render_s = time.perf_counter() - start
    print(f"cartoons {size}px, Node SVG stream only     : {_rate(n, node_s)}")
    print(f"cartoons {size}px, resvg rasterising only   : {_rate(n, render_s)}")
    for workers in (1, 2):
        start = time.perf_counter()
        make_cartoons(out, CartoonSettings(n=n, size=size, seed=0, workers=workers), overwrite=True,
                      progress=False)
        total_s = time.perf_counter() - start
        print(f"cartoons {size}px, end to end, workers={workers}   : {_rate(n, total_s)}   [target >= 20]")


def bench_loader(dataset: FaceDataset, label: str, batch_size: int = 32) -> None:
    """Images/s of one pass over `dataset`: item by item, then through a DataLoader with 0 and 2 workers."""
    start = time.perf_counter()
    for i in range(len(dataset)):
        dataset[i]
    print(f"loader {label:<22} dataset[i]: {_rate(len(dataset), time.perf_counter() - start)}")
    for workers in (0, 2):
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers)
        start = time.perf_counter()
        count = sum(batch["image"].shape[0] for batch in loader)
        print(f"loader {label:<22} workers={workers}: {_rate(count, time.perf_counter() - start)}")


def main() -> None:
    """Run the benchmarks and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    print(f"cpu cores visible: {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        cartoons = Path(tmp) / "cartoons"
        bench_builder(cartoons, args.n, args.size)
        prepared = Path(tmp) / "prepared"
        start = time.perf_counter()
        prepare_folder(cartoons / "images", prepared, PrepareSettings(size=args.size), progress=False)
        print(f"prepare (folder + LMDB) {args.size}px      : {_rate(args.n, time.perf_counter() - start)}")
        bench_loader(FaceDataset(cartoons, flip=True), "folder (PNG)")
        bench_loader(FaceDataset(prepared, flip=True, prefer_lmdb=True), "LMDB (JPEG)")


if __name__ == "__main__":
    main()
