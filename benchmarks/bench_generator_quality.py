"""Generator quality: FD-dlib against data with the data's split-half floor, and cross-domain pairing accuracy.

    # n generated images (seeds 0..n-1, truncation 1.0, random noise) vs data images
    .venv/bin/python benchmarks/bench_generator_quality.py --ckpt base --synface [N] --n 1000
    .venv/bin/python benchmarks/bench_generator_quality.py --ckpt cartoon --cartoons [N] --n 1000
    .venv/bin/python benchmarks/bench_generator_quality.py --ckpt ffhq256 --data DIR --n 1000
    # the same seeds through a human and a cartoon generator
    .venv/bin/python benchmarks/bench_generator_quality.py --pair HUMAN_CKPT CARTOON_CKPT --n 256

Data images (N, default n) are rendered at the generator's size on the fly (SynFace, or
facesjs cartoons, which need Node) or read from a dataset folder (a seeded random subset,
no flips). Prints FD-dlib (n vs N), FD-dlib at the floor's sample size (n/2 generated vs one
data half), the data's split-half floor (N/2 vs N/2), and seconds per image for each stage.
FD-dlib is FID's formula on dlib's 128-D face descriptors: not comparable with FID values.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from toon3d.errors import Toon3dError
from toon3d.metrics.face_descriptor import DlibDescriptor
from toon3d.metrics.frechet import feature_fd
from toon3d.metrics.generator_quality import (PAIRING_DISTANCES, pairing_accuracy, split_half_feature_fd,
                                              split_halves)
from toon3d.models import resolve_generator
from toon3d.seeds import seed_stream, z_from_seed
from toon3d.stylegan2.sampling import synthesize, truncate

PAIR_NOISE_SEED_OFFSET = 1_000_000_007


class Timer:
    """Seconds spent per stage, summed over calls."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, stage: str, start: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


def generated_batches(loaded, n: int, batch: int, noise: str, truncation: float = 1.0,
                      noise_seed_offset: int | None = None):
    """Images [b,3,S,S] from seeds 0..n-1 of a LoadedGenerator, `batch` at a time (as `toon3d generate`).

    Random noise of seed i comes after its z in stream i, or, with `noise_seed_offset`, from the
    separate stream of seed i + offset (same z, independent noise).
    """
    generator = loaded.generator.eval()
    style_dim = int(loaded.config["style_dim"])
    for start in range(0, n, batch):
        seeds = range(start, min(n, start + batch))
        drawn = [z_from_seed(seed, style_dim) for seed in seeds]
        streams = [stream for _, stream in drawn]
        if noise_seed_offset is not None:
            streams = [seed_stream(seed + noise_seed_offset) for seed in seeds]
        with torch.no_grad():
            w = truncate(generator.mapping(torch.cat([z for z, _ in drawn])), loaded.mean_latent, truncation)
            images = synthesize(generator, w, noise, streams).float()
        if not torch.isfinite(images).all():
            raise Toon3dError(f"{loaded.source} produced NaN/inf images; the checkpoint is broken")
        yield images.clamp(-1, 1)


def synface_batches(n: int, size: int, batch: int, seed: int, anchored: bool = False):
    from toon3d.synth.face_params import SynFaceParams
    from toon3d.synth.synface import SynFaceSettings, render_synface

    params = SynFaceParams.sample(n, seed=seed)
    settings = SynFaceSettings(anchor_eyes=anchored)
    for start in range(0, n, batch):
        yield render_synface(params[start:start + batch], size, settings=settings)["image"]


def cartoon_batches(n: int, size: int, batch: int, seed: int):
    from toon3d.synth.cartoons import cartoon_images

    chunk = []
    for image, _ in cartoon_images(seed, range(n), size):
        chunk.append(torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1)
        if len(chunk) == batch:
            yield torch.stack(chunk)
            chunk = []
    if chunk:
        yield torch.stack(chunk)


def folder_batches(path: str, n: int, size: int, batch: int, seed: int):
    from toon3d.data.dataset import FaceDataset

    dataset = FaceDataset(path, size=size, flip=False, load_gt=False)
    if len(dataset) < n:
        raise Toon3dError(f"{path} holds {len(dataset)} images, fewer than the {n} asked for; pass a smaller --n")
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    for start in range(0, n, batch):
        yield torch.stack([dataset[i]["image"] for i in order[start:start + batch]])


def describe_all(batches, descriptor: DlibDescriptor, timer: Timer, stage: str) -> torch.Tensor:
    """Descriptors [N,128] of every batch, timing the image source as `stage` and dlib as 'dlib'."""
    feats = []
    start = time.perf_counter()
    for images in batches:
        timer.add(stage, start)
        start = time.perf_counter()
        feats.append(descriptor(images))
        timer.add("dlib", start)
        start = time.perf_counter()
    return torch.cat(feats)


class PortDescriptor:
    """toon3d's PyTorch port of dlib's descriptor net, called like DlibDescriptor: images [B,3,S,S] -> [B,128]."""

    def __init__(self) -> None:
        from toon3d.faces.identity import load_dlib_embedder

        self.embedder = load_dlib_embedder().eval()

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.embedder.embed(images.clamp(-1, 1)).float()


def make_descriptor(name: str):
    """The descriptor --descriptor names."""
    return PortDescriptor() if name == "port" else DlibDescriptor()


def run_fd(args: argparse.Namespace) -> None:
    loaded = resolve_generator(args.ckpt, blend=not args.no_blend)
    size = int(loaded.config["size"])
    count = args.n if args.count is None or args.count < 0 else args.count
    if args.data is not None:
        source, data = f"folder {args.data}", folder_batches(args.data, count, size, args.batch, args.seed)
    elif args.cartoons is not None:
        source, data = "facesjs cartoons", cartoon_batches(count, size, args.batch, args.seed)
    else:
        # compare with the views the decoder learned (anchored or plain, from the file's metadata)
        from toon3d.train.decoder import trained_on_anchored_views

        anchored = trained_on_anchored_views(loaded.meta)
        source = "SynFace (anchored views)" if anchored else "SynFace"
        data = synface_batches(count, size, args.batch, args.seed, anchored)
    descriptor = make_descriptor(args.descriptor)
    timer = Timer()
    fake = describe_all(generated_batches(loaded, args.n, args.batch, args.noise), descriptor, timer, "generate")
    real = describe_all(data, descriptor, timer, "data")
    first, second = split_halves(count, args.seed)
    half_n = args.n // 2
    print(f"descriptor: {args.descriptor}")
    print(f"generator {args.ckpt} ({size} px, seeds 0-{args.n - 1}, truncation 1.0, noise {args.noise}) "
          f"vs {count} {source} images at {size} px")
    rows = [(f"FD-dlib generated vs data ({args.n} vs {count})", feature_fd(fake, real)),
            (f"FD-dlib generated vs data half ({half_n} vs {len(second)})", feature_fd(fake[:half_n], real[second])),
            (f"data split-half floor ({len(first)} vs {len(second)})", split_half_feature_fd(real, args.seed)),
            (f"generator split-half ({half_n} vs {half_n})", feature_fd(fake[:half_n], fake[half_n:2 * half_n]))]
    for label, value in rows:
        print(f"{label:<46s}{value:10.4f}")
    per = {"generate": args.n, "data": count, "dlib": args.n + count}
    print("seconds per image: " + ", ".join(f"{stage} {timer.seconds[stage] / per[stage]:.4f}"
                                            for stage in ("generate", "data", "dlib")))


def run_pair(args: argparse.Namespace) -> None:
    human_spec, cartoon_spec = args.pair
    start = time.perf_counter()
    # Shared noise maps alone make images alike (in an untrained pair they decide the whole
    # layout), so by default the cartoon's random noise comes from other streams than the human's.
    offset = None if args.shared_noise else PAIR_NOISE_SEED_OFFSET
    human = torch.cat(list(generated_batches(resolve_generator(human_spec), args.n, args.batch, args.noise)))
    cartoon_gen = resolve_generator(cartoon_spec, blend=not args.no_blend)
    cartoon = torch.cat(list(generated_batches(cartoon_gen, args.n, args.batch, args.noise,
                                               noise_seed_offset=offset)))
    seconds = time.perf_counter() - start
    shared = "shared" if args.shared_noise or args.noise != "random" else "independent"
    print(f"{args.n} seeds through {human_spec} and {cartoon_gen.source} ({human.shape[-1]} px, truncation 1.0, "
          f"{shared} {args.noise} noise): {seconds / (2 * args.n):.4f} s per image; chance ≈ {1 / args.n:.4f}")
    descriptor = make_descriptor(args.descriptor) if "dlib" in args.distances else None
    for distance in args.distances:
        start = time.perf_counter()
        accuracy = pairing_accuracy(human, cartoon, distance=distance, descriptor=descriptor)
        print(f"pairing accuracy ({distance}): {accuracy:.4f}  ({time.perf_counter() - start:.1f} s)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", help="generator: base, cartoon, a registry name or a checkpoint path")
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--data", metavar="DIR", help="a toon3d dataset folder or LMDB folder")
    data.add_argument("--synface", dest="count", nargs="?", const=-1, type=int, metavar="N",
                      help="render N SynFace faces (default --n)")
    data.add_argument("--cartoons", nargs="?", const=-1, type=int, metavar="N",
                      help="render N facesjs cartoons (default --n; needs Node)")
    parser.add_argument("--pair", nargs=2, metavar=("HUMAN_CKPT", "CARTOON_CKPT"),
                        help="pairing accuracy of the same seeds through two generators")
    parser.add_argument("--distances", default="structure,pixel",
                        help=f"pairing distances, comma-separated, of {','.join(PAIRING_DISTANCES)}")
    parser.add_argument("--n", type=int, default=1000, help="generated images (and data images by default)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--noise", choices=["random", "const", "none"], default="random")
    parser.add_argument("--shared-noise", action="store_true",
                        help="--pair: give the cartoon the human's random noise maps (default: independent ones)")
    parser.add_argument("--no-blend", action="store_true",
                        help="a built-in style (cartoon, toon) raw, not blended with base (which shares its "
                             "low resolutions, and so its layout, with base)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data sample and of the split halves")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--descriptor", choices=["dlib", "port"], default="dlib",
                        help="dlib: dlib's own C++ net (~0.14 s/image); port: toon3d's PyTorch port of the same net "
                             "(toon3d.faces, ~10x faster, within 0.006 L2 of dlib on aligned images)")
    args = parser.parse_args(argv)
    if args.cartoons is not None:
        args.count = args.cartoons
    args.distances = [d.strip() for d in args.distances.split(",") if d.strip()]
    torch.set_num_threads(args.threads)
    if args.pair:
        run_pair(args)
    elif args.ckpt:
        run_fd(args)
    else:
        parser.error("pass --ckpt (with --data, --synface or --cartoons) or --pair HUMAN_CKPT CARTOON_CKPT")


if __name__ == "__main__":
    try:
        main()
    except Toon3dError as err:
        raise SystemExit(f"error: {err}") from None
