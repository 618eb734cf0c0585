"""Where models come from: built-in generators, and a registry of weight files users supply.

toon3d downloads nothing. Third-party weights are looked up, in order, at an explicit
path (a CLI flag), then in the models folder: `$TOON3D_MODELS` if set, else
`~/.cache/toon3d/models`. A missing file is a one-line error that says what the file is,
where to get it and where to put it.

Built-in generators live in `toon3d/weights/<name>.safetensors` (written with
`toon3d.stylegan2.checkpoints.save_generator`, each with a model card `<name>.md`).
Until trained weights are shipped there, `default_generator(name)` builds the small
architecture `DEFAULT_GENERATOR_CONFIG` with UNTRAINED random weights from a fixed seed
(`UNTRAINED_SEEDS`; noise strengths set to `UNTRAINED_NOISE_STRENGTH`): it is for smoke
tests and pipeline checks, its images are not faces. Dropping a trained
`<name>.safetensors` into `toon3d/weights/` makes every caller use it instead.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from toon3d.errors import Toon3dError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MODELS_ENV = "TOON3D_MODELS"

# The built-in architecture: 64 px, 4 mapping layers, at most 64 channels, 64-dimensional z/w
# (0.6M parameters). z/w are 64-d, not FFHQ's 512: the base is a SynFace decoder whose first 56
# latent dimensions carry SynFace's parameters, and 456 parameter-free dimensions slowed its
# training ~3.5x (docs/train.md). Untrained stand-ins use the same architecture.
DEFAULT_GENERATOR_CONFIG = {"size": 64, "style_dim": 64, "n_mlp": 4, "channel_multiplier": 2,
                            "channel_max": 64}
# Seeds of the untrained stand-ins, one per built-in name.
UNTRAINED_SEEDS = {"base": 0, "cartoon": 1, "toon": 2}
# The built-in styles: fine-tuned from base, used as the paper uses them, i.e. blended with base
# (base gives the low resolutions, the style the high ones) at the swap settings in each file's
# meta ("blend"); `blend=False` (--no-blend) gives the raw fine-tuned generator.
BUILTIN_STYLES = ("cartoon", "toon")
# Used when a style file carries no blend settings (and for the untrained stand-ins).
DEFAULT_STYLE_BLEND = {"swap_resolution": 16, "level": 0, "mapping_from": "low", "noise_from": "low", "mode": "swap"}
DEFAULT_GENERATOR = "base"
UNTRAINED_NOISE_STRENGTH = 0.1


@dataclass(frozen=True)
class ModelEntry:
    """A third-party weight file toon3d can use but does not ship."""

    name: str
    filename: str
    what: str
    source: str
    flag: str
    aliases: tuple[str, ...] = ()
    kind: str = "weights"  # "generator" entries are accepted by `--ckpt NAME`
    # (package, path inside it) when an installed PyPI package ships the file.
    in_package: tuple[str, str] | None = None


REGISTRY: dict[str, ModelEntry] = {e.name: e for e in [
    ModelEntry(
        "ffhq256", "550000.pt",
        "rosinality StyleGAN2 FFHQ 256 px, channel_multiplier 2, 550k iterations, FID ~4.5",
        "the 'Pretrained Checkpoints' Google Drive link in the README of github.com/rosinality/stylegan2-pytorch "
        "(https://drive.google.com/open?id=1PQutd-JboOCOZqmd95XWxWrO8gGEvRcO)",
        "--ckpt", aliases=("ffhq256.pt",), kind="generator"),
    ModelEntry(
        "lresnet", "lresnet_casia.pth.tar",
        "LiftedGAN LResNet-18 face embedding trained on CASIA-WebFace (identity loss)",
        "the 'pre-trained StyleGAN and face embedding network' Google Drive bundle in the README of "
        "github.com/seasonSH/LiftedGAN (https://drive.google.com/file/d/1qVoWu_fps17iTzYptwuN3ptgYeCpIl2e), "
        "file pretrained/lresnet_casia.pth.tar",
        "--lresnet"),
    ModelEntry(
        "bisenet", "79999_iter.pth",
        "BiSeNet face parsing, 19 classes, trained on CelebAMask-HQ",
        "the pre-trained model Google Drive link in the README of github.com/zllrunning/face-parsing.PyTorch "
        "(https://drive.google.com/open?id=154JgKpzCPW82qINcVieuPH3fZ2e0P812)",
        "--bisenet", aliases=("bisenet.pth",)),
    ModelEntry(
        "vgg16", "vgg16-397923af.pth",
        "torchvision VGG16 ImageNet weights (perceptual loss and the LPIPS backbone)",
        "https://download.pytorch.org/models/vgg16-397923af.pth",
        "--vgg16"),
    ModelEntry(
        "lpips_vgg", "vgg.pth",
        "LPIPS v0.1 linear heads for VGG (7 KB, BSD-2)",
        "the lpips PyPI wheel (`pip download lpips==0.1.4 --no-deps`, then unzip lpips/weights/v0.1/vgg.pth) or "
        "github.com/richzhang/PerceptualSimilarity lpips/weights/v0.1/vgg.pth",
        "--lpips-vgg", aliases=("lpips_vgg.pth",), in_package=("lpips", "weights/v0.1/vgg.pth")),
    ModelEntry(
        "inception", "pt_inception-2015-12-05-6726825d.pth",
        "FID Inception-v3 (the 2015-12-05 TF graph ported by pytorch-fid)",
        "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
        "--inception"),
    ModelEntry(
        "view_mvn", "view_mvn.pth",
        "GAN2Shape viewpoint prior: 6-d Gaussian {'mean','cov'}",
        "checkpoints/view_light/view_mvn.pth in the checkpoints archive of github.com/XingangPan/GAN2Shape "
        "(release v1.0 parts x00-x03, concatenated, see scripts/download.sh)",
        "--view-mvn"),
    ModelEntry(
        "light_mvn", "light_mvn.pth",
        "GAN2Shape lighting prior: 4-d Gaussian {'mean','cov'}",
        "checkpoints/view_light/light_mvn.pth in the checkpoints archive of github.com/XingangPan/GAN2Shape "
        "(release v1.0 parts x00-x03, concatenated, see scripts/download.sh)",
        "--light-mvn"),
]}


def models_dir() -> Path:
    """The folder searched for third-party weights: $TOON3D_MODELS, else ~/.cache/toon3d/models."""
    env = os.environ.get(MODELS_ENV)
    return Path(env).expanduser() if env else Path("~/.cache/toon3d/models").expanduser()


def entry(name: str) -> ModelEntry:
    """The registry entry called `name`; unknown names list the known ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise Toon3dError(f"unknown model {name!r}; known models: {', '.join(sorted(REGISTRY))}") from None


def _package_file(spec: tuple[str, str]) -> Path | None:
    # find_spec locates an installed package without importing it (lpips imports torchvision).
    try:
        found = importlib.util.find_spec(spec[0])
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    for root in found.submodule_search_locations:
        candidate = Path(root) / spec[1]
        if candidate.is_file():
            return candidate
    return None


def find(name: str) -> Path | None:
    """Where the registry file `name` is on this machine (models folder, then an installed package), or None."""
    item = entry(name)
    folder = models_dir()
    for filename in (item.filename, *item.aliases):
        candidate = folder / filename
        if candidate.is_file():
            return candidate
    return _package_file(item.in_package) if item.in_package else None


def find_packaged_file(filename: str, what: str, hint: str, path: str | os.PathLike | None = None,
                       package: str = "face_recognition_models") -> Path:
    """A weight file shipped inside a PyPI package (dlib's models in face-recognition-models).

    Looked up at `path` if given, else in the models folder, else in `package`'s `models/`,
    found without importing it (face_recognition_models' import needs pkg_resources).
    A miss is a one-line Toon3dError ending in `hint`.
    """
    if path is not None:
        path = Path(path).expanduser()
        if path.is_file():
            return path
        raise Toon3dError(f"{what} not found at {path}; {hint}")
    candidate = models_dir() / filename
    if candidate.is_file():
        return candidate
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    for root in (spec.submodule_search_locations or []) if spec is not None else []:
        candidate = Path(root) / "models" / filename
        if candidate.is_file():
            return candidate
    raise Toon3dError(f"{what} {filename} not found; {hint}")


def how_to_get(name: str) -> str:
    """One line: what the file is, where to get it, where to put it."""
    item = entry(name)
    return (f"get it from {item.source} ({item.what}), then pass {item.flag} PATH "
            f"or put it in {models_dir()}/{item.filename}")


def require(name: str, path: str | os.PathLike | None = None) -> Path:
    """The registry file `name` at `path` (if given) or in the models folder; else a one-line Toon3dError."""
    item = entry(name)
    if path is not None:
        path = Path(path).expanduser()
        if path.is_file():
            return path
        where = f"{path} (a folder, not a file)" if path.is_dir() else str(path)
        raise Toon3dError(f"{item.name} weights {item.filename} not found at {where}; {how_to_get(name)}")
    found = find(name)
    if found is None:
        raise Toon3dError(f"{item.name} weights {item.filename} not found at {models_dir()}; {how_to_get(name)}")
    return found


def builtin_generator_path(name: str) -> Path:
    """Where the shipped weights of built-in generator `name` go: toon3d/weights/<name>.safetensors."""
    return WEIGHTS_DIR / f"{name}.safetensors"


def builtin_directions_path(name: str) -> Path:
    """Where the shipped direction table of built-in generator `name` goes (`tools/ship_directions.py`).

    Measuring what each SeFa direction changes takes about a minute on 2 cores; the table is
    tied to the exact weights by the checksum of their factorisation, so a retrained model
    with a stale table is measured afresh instead of misnamed.
    """
    return WEIGHTS_DIR / f"{name}_directions.json"


def builtin_discriminator_path(name: str) -> Path:
    """Where the shipped discriminator of built-in generator `name` goes (fine-tuning starts from it)."""
    return WEIGHTS_DIR / f"{name}_d.safetensors"


def untrained_generator(name: str = DEFAULT_GENERATOR, truncation_mean_samples: int | None = None):
    """The seeded random stand-in for built-in generator `name` (architecture DEFAULT_GENERATOR_CONFIG, CPU)."""
    from toon3d.stylegan2.checkpoints import MEAN_LATENT_SAMPLES, MEAN_LATENT_SEED, LoadedGenerator
    from toon3d.stylegan2.generator import Generator

    samples = MEAN_LATENT_SAMPLES if truncation_mean_samples is None else truncation_mean_samples
    if samples < 1:
        raise Toon3dError(f"--truncation-mean must be at least 1, got {samples}")
    seed = UNTRAINED_SEEDS[name]
    # Module constructors draw from the global RNG; fork_rng restores it afterwards, so the
    # weights depend only on `seed` and no caller's random state changes.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = Generator(**DEFAULT_GENERATOR_CONFIG)
    # Noise strengths start at 0 in StyleGAN2 and grow in training; a non-zero value makes the
    # stand-in respond to --noise like a trained generator does.
    with torch.no_grad():
        for key, param in generator.named_parameters():
            if key.endswith("noise.weight"):
                param.fill_(UNTRAINED_NOISE_STRENGTH)
    generator.eval()
    mean = generator.mean_latent(samples, generator=torch.Generator().manual_seed(MEAN_LATENT_SEED))
    meta = {"untrained": True, "seed": seed,
            "note": "random weights from a fixed seed; images are not faces until trained weights ship"}
    return LoadedGenerator(generator, mean, dict(generator.config), f"builtin:{name} (untrained, seed {seed})",
                           f"mean_latent({samples}, seed {MEAN_LATENT_SEED})", "untrained", meta)


def default_generator(name: str = DEFAULT_GENERATOR, truncation_mean_samples: int | None = None,
                      blend: bool = True):
    """Built-in generator `name`: shipped weights when present, else the seeded untrained stand-in (CPU).

    A style (cartoon, toon) is blended with base at its stored swap settings unless `blend` is False.
    """
    from toon3d.stylegan2.checkpoints import load_generator

    if name not in UNTRAINED_SEEDS:
        raise Toon3dError(f"unknown built-in generator {name!r}; choose one of {', '.join(UNTRAINED_SEEDS)}")
    path = builtin_generator_path(name)
    if path.is_file():
        loaded = load_generator(path, truncation_mean_samples=truncation_mean_samples)
    else:
        loaded = untrained_generator(name, truncation_mean_samples)
    if name in BUILTIN_STYLES and blend:
        from toon3d.stylegan2.blend import BlendSettings, blend_loaded

        settings = BlendSettings(**dict(DEFAULT_STYLE_BLEND, **loaded.meta.get("blend", {})))
        base = default_generator("base", truncation_mean_samples)
        blended = blend_loaded(base, loaded, settings, "builtin base", f"builtin {name}")
        blended.meta.update({"style": name, "untrained": bool(loaded.meta.get("untrained")
                                                                or base.meta.get("untrained"))})
        blended.source = f"builtin:{name} (blended with base at {settings.swap_resolution} px)"
        return blended
    return loaded


def resolve_generator(spec: str, overrides=None, truncation_mean_samples: int | None = None, blend: bool = True):
    """`default`/`base`/`cartoon`/`toon`, a registry name (`ffhq256`) or a file path → LoadedGenerator on the CPU.

    `blend=False` gives a built-in style's raw fine-tuned generator instead of its blend with base.
    """
    from toon3d.stylegan2.checkpoints import check_overrides, load_generator

    if spec == "default":
        spec = DEFAULT_GENERATOR
    if spec in UNTRAINED_SEEDS and not Path(spec).is_file():
        loaded = default_generator(spec, truncation_mean_samples, blend=blend)
        if overrides is not None:
            check_overrides({k: loaded.config[k] for k in ("size", "style_dim", "n_mlp", "channel_multiplier",
                                                           "channel_max")}, overrides, spec, "generator")
        return loaded
    if spec in REGISTRY:
        if REGISTRY[spec].kind != "generator":
            raise Toon3dError(f"{spec} is not a generator; pass a StyleGAN2 checkpoint to --ckpt")
        return load_generator(require(spec), overrides, truncation_mean_samples)
    path = Path(spec).expanduser()
    if not path.exists():
        for item in REGISTRY.values():
            if item.kind == "generator" and path.name in (item.filename, *item.aliases):
                require(item.name, path)
    return load_generator(path, overrides, truncation_mean_samples)
