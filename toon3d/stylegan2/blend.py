"""Model interpolation of two StyleGAN2 generators: Pinkney layer swapping and the seed code's feature injection.

Both combine a *low* generator, which gives the coarse resolutions (pose, face shape), with
a *high* generator, which gives the fine ones (texture, colour). The seed paper's code uses
low = the base (FFHQ) generator, high = the fine-tuned cartoon one; toonify the other way
round (low = toon, high = FFHQ).

Layer swapping (Pinkney & Adler 2020, ``blend_models.py``; REFERENCE §4.2) mixes the
weights and gives one plain :class:`Generator`. The synthesis layers sit at positions
``pos(r, level) = 2·log2(r/4) + level`` on rosinality keys:

  ==================  =========================  ============
  rosinality key      Pinkney layer              position
  ==================  =========================  ============
  ``input.input``     4x4 Const (level 0)        0
  ``to_rgb1``         4x4 ToRGB (level 1)        1
  ``convs.{2k}``      Conv0_up at r (level 0)    2k+2
  ``convs.{2k+1}``    Conv1 at r (level 1)       2k+3
  ``to_rgbs.{k}``     ToRGB at r (level 1)       2k+3
  ``conv1``           4x4 Conv: no position      stays with the low model
  ==================  =========================  ============

with r = 2^(k+3). Each parameter (noise strengths included: they belong to their conv) is
``y·high + (1−y)·low`` with ``x = pos − pos(swap_resolution, level)`` and ``y = [x > 1]``, or
``y = 1/(1+exp(−x/width))`` with a width. The mapping network ``style.*`` (and so the
truncation mean) and the ``noises.*`` maps come from one side, the low model by default as
in toonify (``mapping_from``, ``noise_from``).

Feature injection (the seed code, REFERENCE §4.3) keeps both generators: the low one runs
up to its block output at ``resolution``, which replaces the high one's block output there,
before the high one's ToRGB and the following blocks. The high generator's own lower blocks
still add their ToRGB skip images.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from toon3d.errors import Toon3dError
from toon3d.stylegan2.checkpoints import LoadedGenerator
from toon3d.stylegan2.generator import NOISE_MODES, Generator, stylegan2_channels

BLEND_MODES = ("swap", "inject")
SIDES = ("low", "high")
LEVELS = (0, 1)

_CONVS = re.compile(r"convs\.(\d+)\.")
_TO_RGBS = re.compile(r"to_rgbs\.(\d+)\.")


@dataclass
class BlendSettings:
    """How two generators are combined (recorded in the output file's meta).

    swap_resolution: last resolution (px) taken from the low model with level 0; for
        ``mode="inject"``, the block whose output is injected.
    level: Pinkney's level 0 (the split lies after block ``swap_resolution``) or 1 (also the
        first, upsampling conv of the next block comes from the low model). Swap only.
    width: None for a hard swap, else the logistic width (in positions) of a smooth blend. Swap only.
    mapping_from, noise_from: "low" (default, as toonify) or "high": whose mapping network
        (and truncation mean) and whose stored noise maps the result uses.
    mode: "swap" (Pinkney weight swapping, default) or "inject" (seed-code feature injection).
    """

    swap_resolution: int = 16
    level: int = 0
    width: float | None = None
    mapping_from: str = "low"
    noise_from: str = "low"
    mode: str = "swap"

    def __post_init__(self) -> None:
        if self.mode not in BLEND_MODES:
            raise Toon3dError(f"blend mode must be one of {', '.join(BLEND_MODES)}, got {self.mode!r}")
        if (not isinstance(self.swap_resolution, int) or self.swap_resolution < 4
                or self.swap_resolution & (self.swap_resolution - 1)):
            raise Toon3dError(f"--resolution must be a power of 2 from 4 up (a block resolution), "
                              f"got {self.swap_resolution!r}")
        if self.level not in LEVELS:
            raise Toon3dError(f"--level must be 0 or 1 (Pinkney's level), got {self.level!r}")
        if self.width is not None and not (isinstance(self.width, (int, float)) and math.isfinite(self.width)
                                           and self.width > 0):
            raise Toon3dError(f"--width must be a positive number (in layer positions), got {self.width!r}")
        for name in ("mapping_from", "noise_from"):
            if getattr(self, name) not in SIDES:
                raise Toon3dError(f"--{name.replace('_', '-')} must be low or high, got {getattr(self, name)!r}")
        if self.mode == "inject" and (self.level != 0 or self.width is not None):
            raise Toon3dError("--level and --width apply to --mode swap only; feature injection replaces one "
                              "block output whole")

    def as_dict(self) -> dict:
        """JSON-ready copy."""
        return asdict(self)


def position(resolution: int, level: int) -> int:
    """Pinkney's position of (resolution, level): (4,0)=0, (4,1)=1, (8,0)=2, ..."""
    return 2 * (int(math.log2(resolution)) - 2) + level


def layer_position(key: str) -> int | None:
    """Pinkney position of a rosinality synthesis key, None for ``conv1.*`` (no position: always low).

    Raises KeyError for keys outside the synthesis layers (``style.*``, ``noises.*``).
    """
    if key == "input.input":
        return 0
    if key.startswith("conv1."):
        return None
    if key.startswith("to_rgb1."):
        return 1
    if m := _CONVS.match(key):
        i = int(m.group(1))
        return 2 * (i // 2 + 1) + i % 2
    if m := _TO_RGBS.match(key):
        return 2 * (int(m.group(1)) + 1) + 1
    raise KeyError(key)


def blend_weight(pos: int | None, settings: BlendSettings) -> float:
    """The share y of the high model at Pinkney position ``pos`` (None = conv1: 0)."""
    if pos is None:
        return 0.0
    # Checked against REFERENCE §4.2 and §12.9. With level 0, positions up to pos(r, 1) have
    # x <= 1: every layer at r and below comes from the low model, the high one starts at 2r,
    # and a swap at the generator's size reproduces the low model bit for bit (§12.9, first test).
    # The hard rule never gives position 0 to the high model, so the 4x4 const `input.input`
    # (Pinkney's Const, level 0 at 4x4) always comes from the low model. §12.9's second test
    # ("swap at 4 = B except conv1, to_rgb1 and mapping") leaves the const out of its list; only
    # a position of 2 or more (8x8 and up) would satisfy both §12.9 tests literally, which
    # contradicts Pinkney's grouping and §4.2 ("all layers at `resolution` and below come from
    # model_1"). We keep Pinkney's rule and read that list as "the 4x4 layers": the tests check
    # that a swap at 4 equals B except input, conv1, to_rgb1 and the mapping/noise side.
    x = pos - position(settings.swap_resolution, settings.level)
    if settings.width is None:
        return 1.0 if x > 1 else 0.0
    # As Pinkney wrote it: centred on the swap position itself (y = 0.5 at x = 0), not between
    # x = 1 and x = 2 where the hard rule switches.
    return 1.0 / (1.0 + math.exp(-x / settings.width))


def _side_weight(side: str) -> float:
    return 1.0 if side == "high" else 0.0


def key_weight(key: str, settings: BlendSettings) -> float:
    """The share of the high model in state-dict entry ``key``."""
    if key.startswith("style."):
        return _side_weight(settings.mapping_from)
    if key.startswith("noises."):
        return _side_weight(settings.noise_from)
    if key.endswith("kernel"):
        return 0.0  # blur kernels: fixed buffers, the same in both models
    return blend_weight(layer_position(key), settings)


def _state_size(state: Mapping[str, torch.Tensor]) -> int:
    return 2 ** (len({m.group(1) for k in state if (m := _TO_RGBS.match(k))}) + 2)


def _check_resolution(resolution: int, size: int) -> None:
    choices = [2**i for i in range(2, int(math.log2(size)) + 1)]
    if resolution not in choices:
        raise Toon3dError(f"--resolution {resolution} is not a block resolution of these {size} px generators; "
                          f"choose one of {', '.join(map(str, choices))}")


def blend_state_dicts(low_sd: Mapping[str, torch.Tensor], high_sd: Mapping[str, torch.Tensor],
                      settings: BlendSettings) -> dict[str, torch.Tensor]:
    """Pinkney's layer swap of two rosinality generator state dicts with the same keys and shapes.

    Entries whose weight is exactly 0 or 1 are copies (bit-exact); others are y·high + (1−y)·low.
    """
    if settings.mode != "swap":
        raise ValueError("blend_state_dicts swaps weights; feature injection is FeatureInjectionGenerator")
    if set(low_sd) != set(high_sd):
        only = sorted(set(low_sd) ^ set(high_sd))
        raise Toon3dError(f"the two generators have different layers (e.g. {', '.join(only[:3])}); "
                          "blend two generators of the same architecture")
    _check_resolution(settings.swap_resolution, _state_size(low_sd))
    out = {}
    for key, low in low_sd.items():
        high = high_sd[key]
        if low.shape != high.shape:
            raise Toon3dError(f"{key} has shape {list(low.shape)} in the low generator and {list(high.shape)} in "
                              "the high one; blend two generators of the same architecture")
        y = key_weight(key, settings)
        if y == 0.0:
            out[key] = low.detach().clone()
        elif y == 1.0:
            out[key] = high.detach().clone()
        else:
            out[key] = (y * high.detach() + (1.0 - y) * low.detach()).to(low.dtype)
    return out


def _describe(g: nn.Module) -> str:
    c = g.config
    return f"{c['size']} px (style_dim {c['style_dim']}, n_mlp {c['n_mlp']}, channels {list(g.channels.values())})"


def check_same_architecture(low: nn.Module, high: nn.Module, low_name: str = "the low generator",
                            high_name: str = "the high generator") -> None:
    """One-line Toon3dError unless both generators have the same architecture (same shapes and scales)."""
    a, b = low.config, high.config
    if a["size"] != b["size"]:
        raise Toon3dError(f"cannot blend {low_name} ({a['size']} px) with {high_name} ({b['size']} px): both must "
                          "have the same resolution and architecture; pass two generators of the same size "
                          "(e.g. the cartoon generator fine-tuned from the base one)")
    same = (all(a[k] == b[k] for k in ("style_dim", "n_mlp", "lr_mlp", "blur_kernel"))
            and stylegan2_channels(a["size"], a["channel_multiplier"], a["channel_max"])
            == stylegan2_channels(b["size"], b["channel_multiplier"], b["channel_max"]))
    if not same:
        raise Toon3dError(f"cannot blend {low_name}, {_describe(low)}, with {high_name}, {_describe(high)}: both "
                          "must have the same architecture; pass two generators of the same architecture (e.g. the "
                          "cartoon generator fine-tuned from the base one)")


def blend_generators(low: Generator, high: Generator, settings: BlendSettings,
                     low_name: str = "the low generator", high_name: str = "the high generator") -> Generator:
    """Pinkney's layer swap of two generators of the same architecture -> a new Generator (eval mode, low's device)."""
    check_same_architecture(low, high, low_name, high_name)
    _check_resolution(settings.swap_resolution, low.size)
    blended = Generator(**low.config).to(low.input.input.device)
    blended.load_state_dict(blend_state_dicts(low.state_dict(), high.state_dict(), settings), strict=True)
    return blended.eval()


class FeatureInjectionGenerator(nn.Module):
    """The seed code's model interpolation: ``low`` (the base) up to ``resolution``, ``high`` (the style) above.

    Both generators get the same W+ codes and the same noise maps (the stored maps of the
    ``noise_from`` side, or one set of random maps); the mapping network and truncation mean
    are the ``mapping_from`` side's. It offers the Generator interface callers use:
    ``mapping``/``get_latent``/``style``, ``mean_latent``, ``synthesis``, the rosinality
    ``forward``, ``noise_buffers``/``make_noise``, ``size``, ``style_dim``, ``n_latent``,
    ``num_layers``, ``resolutions`` and ``config`` (the shared architecture).
    """

    def __init__(self, low: Generator, high: Generator, resolution: int = 16, mapping_from: str = "low",
                 noise_from: str = "low"):
        super().__init__()
        settings = BlendSettings(swap_resolution=resolution, mapping_from=mapping_from, noise_from=noise_from,
                                 mode="inject")
        check_same_architecture(low, high, "the base generator", "the style generator")
        _check_resolution(resolution, low.size)
        self.low = low
        self.high = high
        self.resolution = settings.swap_resolution
        self.mapping_from = settings.mapping_from
        self.noise_from = settings.noise_from

    # ---- what callers read from a Generator ------------------------------------------------
    @property
    def config(self) -> dict:
        """The shared architecture (``Generator(**config)`` builds either half)."""
        return self.high.config

    @property
    def injection(self) -> dict:
        """The injection settings (saved beside ``config``)."""
        return {"resolution": self.resolution, "mapping_from": self.mapping_from, "noise_from": self.noise_from}

    size = property(lambda self: self.high.size)
    style_dim = property(lambda self: self.high.style_dim)
    n_latent = property(lambda self: self.high.n_latent)
    num_layers = property(lambda self: self.high.num_layers)
    log_size = property(lambda self: self.high.log_size)
    channels = property(lambda self: self.high.channels)
    resolutions = property(lambda self: self.high.resolutions)

    def _side(self, side: str) -> Generator:
        return self.low if side == "low" else self.high

    @property
    def style(self) -> nn.Module:
        """The mapping network in use (the ``mapping_from`` side's)."""
        return self._side(self.mapping_from).style

    @property
    def per_sample_cpu_inference(self) -> bool:
        return self.high.per_sample_cpu_inference

    @per_sample_cpu_inference.setter
    def per_sample_cpu_inference(self, value: bool) -> None:
        self.low.per_sample_cpu_inference = self.high.per_sample_cpu_inference = value

    def set_conv_path(self, path: str) -> FeatureInjectionGenerator:
        """Select the modulated-conv path of both halves."""
        self.low.set_conv_path(path)
        self.high.set_conv_path(path)
        return self

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """z [B,style_dim] -> w [B,style_dim] with the ``mapping_from`` side's network."""
        return self.style(z)

    get_latent = mapping

    @torch.no_grad()
    def mean_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean of ``mapping`` over n seeded random z -> [1,style_dim]."""
        return self._side(self.mapping_from).mean_latent(n, generator=generator)

    def noise_buffers(self) -> list[torch.Tensor]:
        """The stored noise maps in use (the ``noise_from`` side's): list of [1,1,r,r]."""
        return self._side(self.noise_from).noise_buffers()

    def make_noise(self, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Fresh N(0,1) noise maps: list of num_layers [1,1,r,r]."""
        return self._side(self.noise_from).make_noise(generator)

    def styles_to_latent(self, styles: Sequence[torch.Tensor], inject_index: int | None = None,
                         generator: torch.Generator | None = None) -> torch.Tensor:
        """As :meth:`Generator.styles_to_latent`."""
        return self.high.styles_to_latent(styles, inject_index, generator)

    # The rosinality call uses only style, styles_to_latent and synthesis, which this class provides.
    forward = Generator.forward

    # ---- synthesis --------------------------------------------------------------------------
    def _shared_noise(self, ws: torch.Tensor, noise_mode: str, noise: Sequence[torch.Tensor | None] | None,
                      generator: torch.Generator | None) -> list[torch.Tensor]:
        """One explicit list of maps for both halves; random maps drawn in layer order, as Generator draws them."""
        if noise is not None:
            if len(noise) != self.num_layers:
                raise ValueError(f"noise must be a list of {self.num_layers} tensors, got {len(noise)}")
            maps = list(noise)
        elif noise_mode == "const":
            return self.noise_buffers()
        elif noise_mode == "none":
            return [torch.zeros_like(n) for n in self.noise_buffers()]
        elif noise_mode == "random":
            maps = [None] * self.num_layers
        else:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        return [n if n is not None else torch.randn(ws.shape[0], 1, *b.shape[2:], generator=generator,
                                                    device=ws.device, dtype=ws.dtype)
                for n, b in zip(maps, self.noise_buffers())]

    def synthesis(self, ws: torch.Tensor, noise_mode: str = "const",
                  noise: Sequence[torch.Tensor | None] | None = None, generator: torch.Generator | None = None,
                  return_features: bool = False, inject_features: dict[int, torch.Tensor] | None = None,
                  until: int | None = None) -> torch.Tensor | tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """W+ codes ws [B,n_latent,style_dim] -> image [B,3,size,size] (about [-1,1]).

        ``features`` holds the block outputs that feed the next block: the base's up to
        ``resolution``, the style generator's above. ``inject_features`` may replace block
        outputs at ``resolution`` (instead of the base's) and above. ``until``: the partial skip
        image after that block, as :meth:`Generator.synthesis` (below ``resolution`` the skip
        images are the style generator's own, as in the full pass).
        """
        if ws.ndim != 3 or ws.shape[1] != self.n_latent or ws.shape[2] != self.style_dim:
            raise ValueError(f"ws must be [B,{self.n_latent},{self.style_dim}], got {tuple(ws.shape)}")
        inject = dict(inject_features or {})
        below = sorted(r for r in inject if r < self.resolution)
        if below:
            raise ValueError(f"inject_features at {below} lie below the injection resolution {self.resolution}")
        noises = self._shared_noise(ws, noise_mode, noise, generator)
        base: dict[int, torch.Tensor] = {}
        if self.resolution not in inject or return_features:
            base = self.low.block_features(ws, noises, self.resolution)
            inject.setdefault(self.resolution, base[self.resolution])
        result = self.high.synthesis(ws, noise=noises, return_features=return_features, inject_features=inject,
                                     until=until)
        if not return_features:
            return result
        image, features = result
        features.update({r: f for r, f in base.items() if r < self.resolution})
        return image, features


def blend(low: Generator, high: Generator, settings: BlendSettings, low_name: str = "the low generator",
          high_name: str = "the high generator") -> Generator | FeatureInjectionGenerator:
    """Swap (a new Generator) or inject (a FeatureInjectionGenerator holding both), as ``settings.mode`` says."""
    for g, name in ((low, low_name), (high, high_name)):
        if not isinstance(g, Generator):
            raise Toon3dError(f"{name} is a {type(g).__name__}, not a plain generator (a feature-injection file "
                              "cannot be blended again); pass plain generator files")
    if settings.mode == "swap":
        return blend_generators(low, high, settings, low_name, high_name)
    check_same_architecture(low, high, low_name, high_name)
    return FeatureInjectionGenerator(low, high, settings.swap_resolution, settings.mapping_from,
                                     settings.noise_from).eval()


def blend_loaded(low: LoadedGenerator, high: LoadedGenerator, settings: BlendSettings,
                 low_name: str | None = None, high_name: str | None = None) -> LoadedGenerator:
    """Blend two loaded generators; the truncation mean is the ``mapping_from`` side's."""
    low_name, high_name = low_name or low.source, high_name or high.source
    generator = blend(low.generator, high.generator, settings, low_name, high_name)
    mapping = low if settings.mapping_from == "low" else high
    meta = {"blend": settings.as_dict(), "low": low.source, "high": high.source}
    return LoadedGenerator(generator, mapping.mean_latent.clone(), dict(generator.config),
                           f"blend({low.source}, {high.source})", f"{settings.mapping_from}: {mapping.mean_source}",
                           "blend", meta)
