"""Table I on toon3d's worlds: how good a cartoon style's images are, and how much of their human they keep.

For each style and each row (`STYLE_ROWS`: the full method = the fine-tune blended with base,
the fine-tune without the structure loss (blended the same way), and the raw fine-tune without
model interpolation) the same seeds 0..N-1 go through the generator:

- **FD-dlib** of the N images against N images of the human data the style pairs with (the
  built-ins: SynFace renders at the generator's size; user weights: an FFHQ folder). It is FID's
  formula on dlib's 128-D face descriptors (`toon3d.metrics.generator_quality`), our offline
  stand-in for FID against FFHQ: its values are not comparable with FID. The data's split-half
  floor (N/2 vs N/2) is the lowest value reachable with that many samples, so the table also
  gives each row's FD at N/2 vs N/2 beside it.
- **Instance distance**: the perceptual distance between the cartoon image and the human image
  of the SAME w (the paper's "perceptual loss" column). LPIPS-VGG (`toon3d.faces.lpips`) when the
  user supplies VGG16; else the documented substitute `dlib`: mean |Δ| of the first three
  residual units' activations of dlib's face ResNet on the whole image (the low-level features
  the 3D stage's offline perceptual loss uses, `toon3d.shape.losses.DlibPerceptual`).

Every image of seed i is synthesised from w_i = mapping_base(z_i) (ψ = 1, z_i from seed i as
`toon3d generate` draws it) with seed i's random noise maps, identical in every generator: the
rows differ only by the synthesis network.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from toon3d.errors import Toon3dError
from toon3d.metrics.frechet import feature_fd
from toon3d.metrics.generator_quality import split_half_feature_fd, split_halves
from toon3d.metrics.tables import Cell, Column, Row, Table

STYLE_ROWS = ("full", "nostruct", "noblend")
ROW_LABELS = {"full": "full (blended)", "nostruct": "w/o structure loss", "noblend": "w/o model interpolation"}
SHEET_LABELS = {"full": "full", "nostruct": "no structure", "noblend": "no interp."}
INSTANCE_DISTANCES = ("vgg", "dlib")
DESCRIPTORS = ("port", "dlib")
DLIB_FEATURE_UNITS = 3

Describe = Callable[[torch.Tensor], torch.Tensor]
Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class StyleEvalSettings:
    """How Table I is measured: N seeds, batch size, noise, data sample seed, seeds on the picture."""

    n: int = 256
    batch: int = 32
    noise: str = "random"
    data_seed: int = 0
    sheet_count: int = 8

    def check(self) -> StyleEvalSettings:
        """One-line errors on impossible settings; returns self."""
        if self.n < 4:
            raise Toon3dError(f"--n must be at least 4 (the split-half floor needs two halves of 2), got {self.n}")
        if self.batch < 1:
            raise Toon3dError(f"--batch must be at least 1, got {self.batch}")
        if self.noise not in ("random", "const", "none"):
            raise Toon3dError(f"--noise must be random, const or none, got {self.noise!r}")
        return self


@dataclass
class StyleVariants:
    """One style's rows: generator (a LoadedGenerator) per row key, or a note why the row is missing."""

    name: str
    generators: dict[str, object] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)


@dataclass
class StyleResult:
    """Table I, the first seeds' images per row for the picture ({label: [N',3,S,S]}), and raw numbers."""

    table: Table
    sheet: dict[str, torch.Tensor]
    figures: dict


def _short(name: str) -> str:
    """A style's name short enough for the picture's label column (a file's stem, 12 characters)."""
    from pathlib import Path

    return Path(name).stem[:12]


def seed_latents(mapping_generator: torch.nn.Module, seeds: Sequence[int]) -> torch.Tensor:
    """w [N,D] = mapping(z_seed) for each seed (ψ = 1), z drawn as `toon3d generate` draws it."""
    from toon3d.seeds import z_from_seed

    z = torch.cat([z_from_seed(s, mapping_generator.style_dim)[0] for s in seeds])
    with torch.no_grad():
        return mapping_generator.mapping(z.to(next(mapping_generator.parameters()).device))


@torch.no_grad()
def synthesize_seeds(generator: torch.nn.Module, w: torch.Tensor, seeds: Sequence[int], noise: str,
                     batch: int) -> torch.Tensor:
    """Images [N,3,S,S] in [-1,1] of W codes w [N,D]; seed i's random noise comes after its z in stream i."""
    from toon3d.seeds import z_from_seed
    from toon3d.stylegan2.sampling import synthesize

    out = []
    for start in range(0, len(seeds), batch):
        chunk = list(seeds[start:start + batch])
        streams = [z_from_seed(s, w.shape[1])[1] for s in chunk] if noise == "random" else None
        images = synthesize(generator, w[start:start + len(chunk)], noise, streams).float()
        if not torch.isfinite(images).all():
            raise Toon3dError("a generator produced NaN/inf images; the checkpoint is broken")
        out.append(images.clamp(-1, 1).cpu())
    return torch.cat(out)


def describe_in_batches(describe: Describe, images: torch.Tensor, batch: int) -> torch.Tensor:
    """Descriptors [N,128] of images [N,3,S,S], `batch` at a time."""
    return torch.cat([describe(images[i:i + batch]).double() for i in range(0, images.shape[0], batch)])


def distances_in_batches(distance: Distance, a: torch.Tensor, b: torch.Tensor, batch: int) -> torch.Tensor:
    """distance(a_i, b_i) [N] for image sets a, b [N,3,S,S], `batch` at a time."""
    with torch.no_grad():
        return torch.cat([distance(a[i:i + batch], b[i:i + batch]).double().reshape(-1)
                          for i in range(0, a.shape[0], batch)])


def make_descriptor(kind: str = "port") -> Describe:
    """dlib's face descriptor: 'port' (toon3d's PyTorch port, fast) or 'dlib' (dlib's own C++ net)."""
    if kind == "port":
        from toon3d.faces.identity import load_dlib_embedder

        embedder = load_dlib_embedder().eval()

        def port(images: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return embedder.embed(images.clamp(-1, 1)).float()

        return port
    if kind == "dlib":
        from toon3d.metrics.face_descriptor import DlibDescriptor

        return DlibDescriptor()
    raise Toon3dError(f"unknown descriptor {kind!r}; choose one of {', '.join(DESCRIPTORS)}")


class FeatureL1Distance(torch.nn.Module):
    """Per-image distance of a `PerceptualDistance`'s features.

    (a, b) [B,3,S,S] in [-1,1] → Σ over feature maps of mean |F(a) − F(b)| [B].
    """

    def __init__(self, perceptual: torch.nn.Module) -> None:
        super().__init__()
        self.perceptual = perceptual.eval().requires_grad_(False)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        total = a.new_zeros(a.shape[0])
        for fa, fb in zip(self.perceptual.features(a), self.perceptual.features(b)):
            total = total + (fa - fb).abs().flatten(1).mean(1)
        return total


def make_instance_distance(kind: str, vgg_path: str | None = None,
                           lpips_heads_path: str | None = None) -> tuple[Distance, str]:
    """(distance(a, b) → [B], its description): 'vgg' = LPIPS-VGG (user's VGG16), 'dlib' = the substitute."""
    if kind == "vgg":
        from toon3d.faces.lpips import load_lpips_vgg

        lpips = load_lpips_vgg(vgg_path, lpips_heads_path)
        return lpips, "LPIPS-VGG (v0.1 net-lin) between the cartoon and the human image of the same w"
    if kind == "dlib":
        from toon3d.faces.dlib_resnet import load_dlib_resnet
        from toon3d.shape.losses import DlibPerceptual

        perceptual = DlibPerceptual(load_dlib_resnet(), n_units=DLIB_FEATURE_UNITS)
        return FeatureL1Distance(perceptual), (
            "offline substitute for LPIPS-VGG (no VGG16 supplied): mean |Δ| of dlib's face-ResNet stem + first "
            f"{DLIB_FEATURE_UNITS} residual units on the whole image, cartoon vs human image of the same w")
    raise Toon3dError(f"unknown perceptual distance {kind!r}; choose one of {', '.join(INSTANCE_DISTANCES)}")


def style_table(base, styles: Sequence[StyleVariants], data_images: torch.Tensor, data_label: str,
                describe: Describe, distance: Distance, distance_label: str,
                settings: StyleEvalSettings, progress: bool = False) -> StyleResult:
    """Table I: FD-dlib vs the data and instance distance to the human image for every style row.

    base: the human LoadedGenerator (its mapping gives every w); styles: each style's row
    generators; data_images [N,3,S,S] in [-1,1] (N = settings.n); describe: images → [B,128];
    distance: (human, cartoon) [B,3,S,S] → [B].
    """
    from tqdm import tqdm

    settings.check()
    n = settings.n
    if data_images.shape[0] != n:
        raise Toon3dError(f"the data sample holds {data_images.shape[0]} images, {n} are needed; pass a smaller --n")
    seeds = list(range(n))
    w = seed_latents(base.generator, seeds)
    jobs = [(s, key) for s in styles for key in STYLE_ROWS if key in s.generators]
    bar = tqdm(total=2 + len(jobs), desc="eval style", disable=not progress, dynamic_ncols=True)

    data_feats = describe_in_batches(describe, data_images, settings.batch)
    first, second = split_halves(n, settings.data_seed)
    floor = split_half_feature_fd(data_feats, settings.data_seed)
    half = n // 2
    bar.update(1)

    human = synthesize_seeds(base.generator, w, seeds, settings.noise, settings.batch)
    human_feats = describe_in_batches(describe, human, settings.batch)
    bar.update(1)

    columns = [Column("fd", f"FD-dlib vs data ({n} vs {n})", 4),
               Column("fd_half", f"FD-dlib ({half} vs {len(second)}; floor comparable)", 4),
               Column("perc", "perceptual distance to the human image of the same w (↓)", 4)]
    table = Table("Table I: style quality (FD-dlib vs human data) and instance similarity", columns)
    table.add(Row(f"data split-half floor ({data_label})", {"fd_half": Cell.single(floor)}, key="floor",
                  note=f"floor: FD-dlib between two disjoint halves of the {n} data images ({len(first)} vs "
                       f"{len(second)}); no generator can reliably score below it at that sample size"))
    table.add(Row("human generator (reference)",
                  {"fd": Cell.single(feature_fd(human_feats, data_feats)),
                   "fd_half": Cell.single(feature_fd(human_feats[:half], data_feats[second]))}, key="human"))
    sheet = {"human": human[:settings.sheet_count]}
    figures: dict = {"floor": floor, "human_fd": table.rows[-1].cells["fd"].mean, "styles": {}}

    for style in styles:
        figures["styles"][style.name] = {}
        for key in STYLE_ROWS:
            label = f"{style.name} · {ROW_LABELS[key]}"
            if key not in style.generators:
                table.add(Row(label, {c.key: Cell.missing(style.missing.get(key, "not measured")) for c in columns},
                              key=f"{style.name}/{key}"))
                continue
            images = synthesize_seeds(style.generators[key].generator, w, seeds, settings.noise, settings.batch)
            feats = describe_in_batches(describe, images, settings.batch)
            dist = distances_in_batches(distance, human, images, settings.batch)
            row = table.add(Row(label, {"fd": Cell.single(feature_fd(feats, data_feats)),
                                        "fd_half": Cell.single(feature_fd(feats[:half], data_feats[second])),
                                        "perc": Cell.of(dist)}, key=f"{style.name}/{key}"))
            figures["styles"][style.name][key] = {k: c.as_dict() for k, c in row.cells.items()}
            sheet[f"{_short(style.name)}\n{SHEET_LABELS[key]}"] = images[:settings.sheet_count]
            bar.update(1)
    bar.close()
    table.notes += [
        "FD-dlib: Fréchet distance of dlib face descriptors (FID's formula, dlib's 128-D face ResNet in place of "
        "Inception-v3, which is not available offline); not comparable with FID values.",
        f"perceptual distance: {distance_label}.",
        f"seeds 0-{n - 1}, w = mapping of the human generator (ψ = 1), {settings.noise} noise shared by every row; "
        f"data: {data_label}.",
    ]
    return StyleResult(table, sheet, figures)
