"""Rosinality StyleGAN2 checkpoints and toon3d generator files → our Generator/Discriminator.

Accepted inputs:
  - a rosinality training checkpoint: a dict with any subset of `g_ema`, `g`, `d`,
    `latent_avg`, `args`, `g_optim`, `d_optim`, `ada_aug_p` (`g_ema` is preferred over `g`);
  - a bare generator state dict (keys `style.1.weight`, ...);
  - either of these saved from `nn.DataParallel` (keys prefixed `module.`);
  - a toon3d generator file (`.safetensors`, written by `save_generator`), or a toon3d
    feature-injection file (kind `feature-injection`: both generators of a seed-code model
    interpolation, see `toon3d.stylegan2.blend`), loaded as a `FeatureInjectionGenerator` whose
    `LoadedGenerator.config` is the shared architecture plus `"kind": "feature-injection"`.

The architecture is read from the tensor shapes (size from the number of ToRGB layers,
n_mlp from the mapping layers, style_dim from `style.1.weight`, channel multiplier and cap
from the per-resolution conv widths), so no flags are needed; flags the user does pass are
checked against the file, and a mismatch names the value the file needs.

Loading is strict on parameters. Missing blur-kernel buffers are filled with the ones the
architecture defines, missing noise buffers with N(0,1) from `torch.Generator` seeded
`NOISE_FILL_SEED`, drawn in layer order. The truncation mean is the file's `latent_avg`
when present, else `mean_latent(MEAN_LATENT_SAMPLES)` from a generator seeded
`MEAN_LATENT_SEED`.
"""

from __future__ import annotations

import inspect
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from toon3d.errors import Toon3dError
from toon3d.io.checkpoint import ModelFile, load_model_file, load_torch_checkpoint, save_model
from toon3d.stylegan2.generator import stylegan2_channels

MEAN_LATENT_SEED = 0
MEAN_LATENT_SAMPLES = 4096
NOISE_FILL_SEED = 0
GENERATOR_KIND = "stylegan2-generator"
DISCRIMINATOR_KIND = "stylegan2-discriminator"
FEATURE_INJECTION_KIND = "feature-injection"

_MAX_SIZE = 1024

# Flag names used in messages, so the fix can be typed as printed.
_FLAGS = {"size": "--size", "channel_multiplier": "--channel-multiplier", "channel_max": "--channel-max",
          "n_mlp": "--n-mlp", "style_dim": "--style-dim"}


@dataclass
class ArchOverrides:
    """Architecture values a user asserts (None = read from the file)."""

    size: int | None = None
    channel_multiplier: int | None = None
    channel_max: int | None = None
    n_mlp: int | None = None
    style_dim: int | None = None


@dataclass
class LoadedGenerator:
    """A ready generator with its truncation mean and where both came from."""

    generator: nn.Module
    mean_latent: torch.Tensor  # [1,style_dim]
    config: dict
    source: str
    mean_source: str  # "latent_avg", "mean_latent(4096, seed 0)", ...
    entry: str  # which checkpoint entry the weights came from: g_ema, g, state_dict, file
    meta: dict = field(default_factory=dict)


def _check_str_keys(state: Mapping[Any, Any], name: str) -> None:
    """A state dict is keyed by parameter names; anything else is not a StyleGAN2 checkpoint."""
    for key in state:
        if not isinstance(key, str):
            raise Toon3dError(f"{name} is not a StyleGAN2 checkpoint (key {key!r} is a {type(key).__name__}, not a "
                              "parameter name); pass a rosinality checkpoint such as 550000.pt")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fits(value: Any, annotation: Any) -> bool:
    """Whether a JSON config value fits a constructor annotation (int, float or Sequence[float])."""
    kind = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return _is_number(value)
    if kind.startswith("Sequence"):
        return isinstance(value, (list, tuple)) and len(value) > 0 and all(_is_number(v) for v in value)
    return True


def model_config(cls: type, config: Any, name: str, what: str) -> dict:
    """Check a saved constructor config of `cls` (a dict of its arguments, right types); defaults filled in."""
    if not isinstance(config, dict):
        raise Toon3dError(f"{name}: the {what} config is a {type(config).__name__}, not a JSON object; "
                          "save the model again with toon3d")
    params = {k: p for k, p in inspect.signature(cls.__init__).parameters.items() if k != "self"}
    unknown = sorted(set(config) - set(params))
    if unknown:
        raise Toon3dError(f"{name}: the {what} config has field {unknown[0]!r}, which {cls.__name__} does not take "
                          f"(it takes {', '.join(params)}); save the model again with toon3d")
    complete = {}
    for key, param in params.items():
        if key not in config:
            if param.default is inspect.Parameter.empty:
                raise Toon3dError(f"{name}: the {what} config lacks the field {key!r}; save the model again with toon3d")
            continue
        if not _fits(config[key], param.annotation):
            raise Toon3dError(f"{name}: the {what} config field {key!r} is {config[key]!r}, not a valid "
                              f"{param.annotation}; save the model again with toon3d")
        complete[key] = tuple(config[key]) if isinstance(config[key], list) else config[key]
    for key, param in params.items():
        if key not in complete and param.default is not inspect.Parameter.empty:
            complete[key] = param.default
    return complete


def strip_module_prefix(state: Mapping[str, Any]) -> dict[str, Any]:
    """Drop the `module.` prefix nn.DataParallel adds to every key (when all keys have it)."""
    keys = list(state)
    if keys and all(k.startswith("module.") for k in keys):
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def _indices(state: Mapping[str, Any], pattern: str) -> list[int]:
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for k in state if (m := regex.fullmatch(k))})


def _fit_multiplier_and_cap(widths: dict[int, int], name: str) -> tuple[int, int]:
    """Smallest (channel_multiplier, channel_max) whose table gives `widths`."""
    cap = max(widths.values())
    for multiplier in range(1, 65):
        table = stylegan2_channels(_MAX_SIZE, multiplier, cap)
        if all(table.get(r) == c for r, c in widths.items()):
            return multiplier, cap
    shown = ", ".join(f"{r}px:{c}" for r, c in sorted(widths.items()))
    raise Toon3dError(f"{name}: channel widths ({shown}) do not follow the StyleGAN2 layout; "
                      "pass a rosinality checkpoint")


def infer_generator_config(state: Mapping[str, torch.Tensor], name: str = "checkpoint") -> dict:
    """Architecture of a rosinality generator state dict, read from its tensor shapes."""
    try:
        mlp = _indices(state, r"style\.(\d+)\.weight")
        style_dim = int(state["style.1.weight"].shape[1])
        rgbs = _indices(state, r"to_rgbs\.(\d+)\.conv\.weight")
        convs = _indices(state, r"convs\.(\d+)\.conv\.weight")
        widths = {4: int(state["input.input"].shape[1])}
        for k in rgbs:
            widths[2 ** (k + 3)] = int(state[f"convs.{2 * k}.conv.weight"].shape[1])
    except (KeyError, IndexError, AttributeError):
        raise Toon3dError(f"{name}: generator weights are incomplete (mapping, input or conv layers missing); "
                          "pass a full rosinality checkpoint") from None
    if mlp != list(range(1, len(mlp) + 1)) or rgbs != list(range(len(rgbs))) or convs != list(range(2 * len(rgbs))):
        raise Toon3dError(f"{name}: generator layers are not numbered like a StyleGAN2 generator "
                          f"(style {mlp}, convs {len(convs)}, to_rgbs {len(rgbs)}); pass a rosinality checkpoint")
    size = 2 ** (len(rgbs) + 2)
    if size < 16:
        raise Toon3dError(f"{name}: generator weights stop at {size} px (only {len(rgbs)} ToRGB layers); "
                          "the file is incomplete, pass a full rosinality checkpoint")
    if size > _MAX_SIZE:
        raise Toon3dError(f"{name}: {len(rgbs)} upsampling blocks give size {size}, which is not supported")
    multiplier, cap = _fit_multiplier_and_cap(widths, name)
    return {"size": size, "style_dim": style_dim, "n_mlp": len(mlp), "channel_multiplier": multiplier,
            "channel_max": cap}


def infer_discriminator_config(state: Mapping[str, torch.Tensor], name: str = "checkpoint") -> dict:
    """Architecture of a rosinality discriminator state dict, read from its tensor shapes."""
    try:
        blocks = _indices(state, r"convs\.(\d+)\.conv2\.1\.weight")
        size = 2 ** (len(blocks) + 2)
        widths = {size: int(state["convs.0.0.weight"].shape[0])}
        for i in blocks:
            widths[size >> i] = int(state[f"convs.{i}.conv2.1.weight"].shape[0])
    except (KeyError, IndexError, AttributeError):
        raise Toon3dError(f"{name}: discriminator weights are incomplete; pass a full rosinality checkpoint") from None
    if blocks != list(range(1, len(blocks) + 1)) or size > _MAX_SIZE:
        raise Toon3dError(f"{name}: discriminator blocks are not numbered like a StyleGAN2 discriminator; "
                          "pass a rosinality checkpoint")
    multiplier, cap = _fit_multiplier_and_cap(widths, name)
    return {"size": size, "channel_multiplier": multiplier, "channel_max": cap}


def check_overrides(found: dict, overrides: ArchOverrides | None, name: str, what: str) -> dict:
    """Check user-asserted values against the file; equivalent values (same shapes) are accepted."""
    config = dict(found)
    if overrides is None:
        return config
    for key in ("size", "n_mlp", "style_dim"):
        given = getattr(overrides, key, None)
        if key in found and given is not None and given != found[key]:
            raise Toon3dError(f"{name}: {what} weights for {key}={found[key]} expected by the file, "
                              f"{_FLAGS[key]} {given} given; pass {_FLAGS[key]} {found[key]}")
    file_table = stylegan2_channels(found["size"], found["channel_multiplier"], found["channel_max"])
    for key in ("channel_multiplier", "channel_max"):
        given = getattr(overrides, key, None)
        if given is None:
            continue
        trial = dict(config, **{key: given})
        if stylegan2_channels(found["size"], trial["channel_multiplier"], trial["channel_max"]) != file_table:
            raise Toon3dError(f"{name}: {what} weights for {key}={found[key]} expected by the file, "
                              f"{_FLAGS[key]} {given} given; pass {_FLAGS[key]} {found[key]}")
        config = trial
    return config


def _complete_state(model: nn.Module, state: Mapping[str, torch.Tensor], name: str, what: str) -> dict:
    """Check keys/shapes strictly for parameters; fill missing blur-kernel and noise buffers."""
    expected = model.state_dict()
    params = {n for n, _ in model.named_parameters()}
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise Toon3dError(f"{name}: {len(unexpected)} {what} entries this architecture does not have "
                          f"(e.g. {', '.join(unexpected[:3])}); pass a rosinality StyleGAN2 checkpoint")
    missing_params = sorted(params - set(state))
    if missing_params:
        raise Toon3dError(f"{name}: {len(missing_params)} {what} parameters missing "
                          f"(e.g. {', '.join(missing_params[:3])}); the file is incomplete, use a full checkpoint")
    noise_rng = torch.Generator().manual_seed(NOISE_FILL_SEED)
    complete = {}
    for key, ours in expected.items():
        value = state.get(key)
        if value is None:
            if key.startswith("noises."):
                value = torch.randn(ours.shape, generator=noise_rng, dtype=ours.dtype)
            elif key.endswith("kernel"):
                value = ours
            else:
                raise Toon3dError(f"{name}: {what} buffer {key} missing; use a full checkpoint")
        elif not isinstance(value, torch.Tensor):
            raise Toon3dError(f"{name}: {what} entry {key} is a {type(value).__name__}, not a tensor; "
                              "the file is damaged")
        if tuple(value.shape) != tuple(ours.shape):
            raise Toon3dError(f"{name}: {what} entry {key} has shape {list(value.shape)}, the architecture "
                              f"read from the file needs {list(ours.shape)}; the file is inconsistent")
        if key.endswith("kernel") and not torch.allclose(value.float(), ours.float(), atol=1e-6):
            raise Toon3dError(f"{name}: {what} blur kernel {key} differs from the [1,3,3,1] kernel toon3d builds; "
                              "this checkpoint used a custom blur_kernel, which is not supported")
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise Toon3dError(f"{name}: {what} entry {key} contains NaN or inf; the checkpoint is damaged")
        complete[key] = value.to(ours.dtype)
    return complete


def _generator_state(ckpt: Mapping[str, Any], name: str) -> tuple[dict, str]:
    _check_str_keys(ckpt, name)
    for entry in ("g_ema", "g"):
        if entry in ckpt:
            if not isinstance(ckpt[entry], Mapping):
                raise Toon3dError(f"{name}: entry {entry!r} is a {type(ckpt[entry]).__name__}, not a state dict; "
                                  "pass a rosinality checkpoint")
            _check_str_keys(ckpt[entry], name)
            return strip_module_prefix(ckpt[entry]), entry
    bare = strip_module_prefix(ckpt)
    if "style.1.weight" in bare:
        return bare, "state_dict"
    raise Toon3dError(f"{name} is not a StyleGAN2 checkpoint (no g_ema/g/style.* keys found); "
                      "pass a rosinality checkpoint such as 550000.pt")


def _mean_latent(generator: nn.Module, style_dim: int, latent_avg: Any, samples: int | None,
                 name: str) -> tuple[torch.Tensor, str]:
    if samples is None and latent_avg is not None:
        if not isinstance(latent_avg, torch.Tensor) or latent_avg.numel() != style_dim:
            shape = list(latent_avg.shape) if isinstance(latent_avg, torch.Tensor) else type(latent_avg).__name__
            raise Toon3dError(f"{name}: latent_avg is {shape}, expected {style_dim} values; "
                              "pass --truncation-mean N to compute the mean instead")
        if not torch.isfinite(latent_avg).all():
            raise Toon3dError(f"{name}: latent_avg contains NaN or inf; pass --truncation-mean N to compute it")
        return latent_avg.detach().float().reshape(1, style_dim), "latent_avg"
    samples = samples or MEAN_LATENT_SAMPLES
    if samples < 1:
        raise Toon3dError(f"--truncation-mean must be at least 1, got {samples}")
    with torch.no_grad():
        mean = generator.mean_latent(samples, generator=torch.Generator().manual_seed(MEAN_LATENT_SEED))
    return mean.detach().reshape(1, style_dim), f"mean_latent({samples}, seed {MEAN_LATENT_SEED})"


def generator_from_state(state: Mapping[str, torch.Tensor], overrides: ArchOverrides | None = None,
                         name: str = "checkpoint", config: dict | None = None) -> nn.Module:
    """Build our Generator from a rosinality-layout state dict (architecture read from shapes), on the CPU."""
    from toon3d.stylegan2.generator import Generator

    _check_str_keys(state, name)
    state = strip_module_prefix(state)
    if config is None:
        config = check_overrides(infer_generator_config(state, name), overrides, name, "generator")
    generator = Generator(**config)
    generator.load_state_dict(_complete_state(generator, state, name, "generator"), strict=True)
    return generator.eval()


def discriminator_from_state(state: Mapping[str, torch.Tensor], overrides: ArchOverrides | None = None,
                             name: str = "checkpoint") -> nn.Module:
    """Build our Discriminator from a rosinality-layout state dict (architecture read from shapes), on the CPU."""
    from toon3d.stylegan2.discriminator import Discriminator

    _check_str_keys(state, name)
    state = strip_module_prefix(state)
    found = infer_discriminator_config(state, name)
    config = check_overrides(found, overrides, name, "discriminator")
    discriminator = Discriminator(**config)
    discriminator.load_state_dict(_complete_state(discriminator, state, name, "discriminator"), strict=True)
    return discriminator


def load_generator(path: str | os.PathLike, overrides: ArchOverrides | None = None,
                   truncation_mean_samples: int | None = None) -> LoadedGenerator:
    """Load a generator + truncation mean from a rosinality `.pt` or a toon3d `.safetensors` file (CPU)."""
    path = Path(path)
    name = path.name
    if path.suffix == ".safetensors":
        return _load_generator_file(path, overrides, truncation_mean_samples)
    ckpt = load_torch_checkpoint(path)
    state, entry = _generator_state(ckpt, name)
    generator = generator_from_state(state, overrides, name)
    config = dict(generator.config)
    mean, mean_source = _mean_latent(generator, config["style_dim"], ckpt.get("latent_avg") if entry != "state_dict"
                                     else None, truncation_mean_samples, name)
    meta = {"format": "rosinality", "entry": entry}
    if entry != "state_dict":
        meta["keys"] = sorted(str(k) for k in ckpt)
    args = ckpt.get("args")
    if args is not None and hasattr(args, "__dict__"):
        meta["args"] = {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool, type(None)))}
    return LoadedGenerator(generator, mean, config, str(path), mean_source, entry, meta)


def _toon3d_model(path: Path, kind: str, what: str, cls: type, overrides: ArchOverrides | None,
                  model: ModelFile | None = None):
    """A toon3d .safetensors file of `kind` (read unless `model` is given), with its `what` config checked
    against `cls` and the user's flags."""
    model = model if model is not None else load_model_file(path)
    if model.config.get("kind") != kind or not isinstance(model.config.get(what), dict):
        raise Toon3dError(f"{path.name} is a toon3d model of kind {model.config.get('kind')!r}, not a {what}; "
                          f"pass a {what} file")
    config = model_config(cls, model.config[what], path.name, what)
    if overrides is not None:
        check_overrides({k: config[k] for k in _FLAGS if k in config}, overrides, path.name, what)
    return model, config


def load_discriminator(path: str | os.PathLike, overrides: ArchOverrides | None = None) -> nn.Module:
    """Load the `d` entry of a rosinality training checkpoint (or a toon3d .safetensors D) as our Discriminator (CPU)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from toon3d.stylegan2.discriminator import Discriminator

        model, config = _toon3d_model(path, DISCRIMINATOR_KIND, "discriminator", Discriminator, overrides)
        discriminator = Discriminator(**config)
        discriminator.load_state_dict(_complete_state(discriminator, model.state_dict, path.name, "discriminator"),
                                      strict=True)
        return discriminator
    ckpt = load_torch_checkpoint(path)
    _check_str_keys(ckpt, path.name)
    if "d" not in ckpt:
        raise Toon3dError(f"{path.name} has no discriminator (no 'd' entry; found {', '.join(sorted(map(str, ckpt)))}); "
                          "pass a rosinality training checkpoint such as 550000.pt")
    if not isinstance(ckpt["d"], Mapping):
        raise Toon3dError(f"{path.name}: entry 'd' is not a state dict; pass a rosinality checkpoint")
    return discriminator_from_state(ckpt["d"], overrides, path.name)


def save_generator(path: str | os.PathLike, generator: nn.Module, mean_latent: torch.Tensor,
                   meta: dict | None = None) -> Path:
    """Write a generator (state dict + `latent_avg` [style_dim]) as one toon3d safetensors file, atomically.

    A FeatureInjectionGenerator is written as a feature-injection file (both halves)."""
    from toon3d.stylegan2.blend import FeatureInjectionGenerator

    if isinstance(generator, FeatureInjectionGenerator):
        return _save_feature_injection(path, generator, mean_latent, meta)
    state = {f"g.{k}": v for k, v in generator.state_dict().items()}
    state["latent_avg"] = mean_latent.detach().reshape(-1)
    config = {"kind": GENERATOR_KIND, "generator": dict(generator.config)}
    return save_model(path, state, config, meta)


def _load_generator_file(path: Path, overrides: ArchOverrides | None,
                         truncation_mean_samples: int | None) -> LoadedGenerator:
    from toon3d.stylegan2.generator import Generator

    model = load_model_file(path)
    if model.config.get("kind") == FEATURE_INJECTION_KIND:
        return _load_feature_injection_file(path, model, overrides, truncation_mean_samples)
    model, config = _toon3d_model(path, GENERATOR_KIND, "generator", Generator, overrides, model)
    state = {k[2:]: v for k, v in model.state_dict.items() if k.startswith("g.")}
    generator = generator_from_state(state, None, path.name, config=config)
    mean, mean_source = _mean_latent(generator, config["style_dim"], model.state_dict.get("latent_avg"),
                                     truncation_mean_samples, path.name)
    return LoadedGenerator(generator, mean, dict(generator.config), str(path), mean_source, "file", model.meta)


def _save_feature_injection(path: str | os.PathLike, generator: nn.Module, mean_latent: torch.Tensor,
                            meta: dict | None) -> Path:
    """Both halves (`low.*` = base, `high.*` = style), `latent_avg`, the architecture and the injection settings."""
    state = {f"{side}.{k}": v for side in ("low", "high") for k, v in getattr(generator, side).state_dict().items()}
    state["latent_avg"] = mean_latent.detach().reshape(-1)
    config = {"kind": FEATURE_INJECTION_KIND, "generator": dict(generator.config), "injection": generator.injection}
    return save_model(path, state, config, meta)


def _load_feature_injection_file(path: Path, model: ModelFile, overrides: ArchOverrides | None,
                                 truncation_mean_samples: int | None) -> LoadedGenerator:
    from toon3d.stylegan2.blend import FeatureInjectionGenerator
    from toon3d.stylegan2.generator import Generator

    model, config = _toon3d_model(path, FEATURE_INJECTION_KIND, "generator", Generator, overrides, model)
    injection = model.config.get("injection")
    if not isinstance(injection, dict) or set(injection) != {"resolution", "mapping_from", "noise_from"}:
        raise Toon3dError(f"{path.name}: the feature-injection settings are missing or damaged; "
                          "write the file again with toon3d blend --mode inject")
    halves = {side: generator_from_state({k[len(side) + 1:]: v for k, v in model.state_dict.items()
                                          if k.startswith(side + ".")}, None, f"{path.name} ({side})", config=config)
              for side in ("low", "high")}
    try:
        generator = FeatureInjectionGenerator(halves["low"], halves["high"], **injection).eval()
    except (Toon3dError, TypeError) as err:
        raise Toon3dError(f"{path.name}: bad feature-injection settings ({err}); "
                          "write the file again with toon3d blend --mode inject") from None
    mean, mean_source = _mean_latent(generator, config["style_dim"], model.state_dict.get("latent_avg"),
                                     truncation_mean_samples, path.name)
    return LoadedGenerator(generator, mean, dict(generator.config, kind=FEATURE_INJECTION_KIND), str(path),
                           mean_source, "file", model.meta)


def save_discriminator(path: str | os.PathLike, discriminator: nn.Module, meta: dict | None = None) -> Path:
    """Write a discriminator's state dict + config as one toon3d safetensors file, atomically."""
    config = {"kind": DISCRIMINATOR_KIND, "discriminator": dict(discriminator.config)}
    return save_model(path, discriminator.state_dict(), config, meta)
