"""Attribute oracle for the built-in world: image → SynFace's identity, expression and pose parameters.

A small CNN trained on SynFace renders (`toon3d.faces.synface_training`) to regress the parameters
SynFace drew for each face (`toon3d.synth.face_params.PARAM_SPECS`, groups identity, expression and
pose; light and background are left out). It is a measuring instrument, never a loss: it names
SeFa directions by the parameter they move (`toon3d.edit.naming`) and scores edits (how much the
targeted expression changed against how far the identity parameters drifted, `edit_change`).

Outputs are each parameter's value rescaled to its range, (v − low)/(high − low), so every
parameter weighs the same in training; `predict` maps them back to parameter units (smile in
0..1, yaw in degrees, ...). Shipped as `toon3d/weights/oracle_synface.safetensors` with a card
holding its held-out R² per parameter and group.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from toon3d.errors import Toon3dError
from toon3d.faces.synface_parser import resize_square
from toon3d.synth.face_params import PARAM_NAMES, PARAM_SPECS

ORACLE_GROUPS = ("identity", "expression", "pose")
ORACLE_PARAMS: tuple[str, ...] = tuple(n for n in PARAM_NAMES if PARAM_SPECS[n][0] in ORACLE_GROUPS)
WEIGHTS_NAME = "oracle_synface"
# A parameter counts as readable when the oracle's held-out R² for it reaches this: only those
# name directions (`toon3d.edit.naming`) and enter the identity drift of `edit_change`.
READABLE_R2 = 0.5
MODEL_KIND = "toon3d-attribute-oracle"


@dataclass(frozen=True)
class OracleConfig:
    """Architecture of the attribute oracle."""

    widths: tuple[int, ...] = (32, 48, 64, 96)
    depth: int = 1            # 3×3 convs per stage (the first of a stage strides 2, except in stage 0)
    reduce: int = 24          # 1×1 conv to this many channels before the flatten keeps the final map's layout
    hidden: int = 128
    input_size: int = 64
    params: tuple[str, ...] = ORACLE_PARAMS
    # A frozen SynFace parser (its weights stored with the oracle) adds its 10 class probabilities
    # to the input: dense part masks make eye closure, mouth opening and pose far easier to read.
    parser_widths: tuple[int, ...] | None = (16, 32, 48, 64)
    # Crops (top, bottom, left, right as fractions of the input) read by their own small branches at
    # full resolution: the eye band and the mouth, where expressions live in toon3d's layout.
    regions: tuple[tuple[float, float, float, float], ...] = ((20 / 64, 38 / 64, 8 / 64, 56 / 64),
                                                             (38 / 64, 60 / 64, 12 / 64, 52 / 64))
    region_channels: int = 6
    region_hidden: int = 96

    def __post_init__(self) -> None:
        unknown = [p for p in self.params if p not in PARAM_SPECS]
        if unknown:
            raise Toon3dError(f"unknown SynFace parameters {unknown}; see toon3d.synth.face_params.PARAM_SPECS")
        if self.input_size % 2 ** (len(self.widths) - 1):
            raise Toon3dError(f"oracle input_size {self.input_size} must be divisible by {2 ** (len(self.widths) - 1)}")


def _conv(cin: int, cout: int, k: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _stage(cin: int, cout: int, stride: int, depth: int) -> nn.Sequential:
    layers = _conv(cin, cout, 3, stride)
    for _ in range(depth - 1):
        layers += _conv(cout, cout, 3, 1)
    return nn.Sequential(*layers)


def region_pixels(region: tuple[float, float, float, float], size: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) fractions → pixel bounds in a size×size input."""
    return tuple(round(v * size) for v in region)


class AttributeOracleNet(nn.Module):
    """CNN: images [B,3,N,N] in [-1,1] → parameters rescaled to their ranges [B,P] (≈ [0,1]).

    Input channels: the image and, with a parser, its 10 class probabilities (scaled to [-1,1]).
    A trunk (one full-resolution stage, then a stride-2 stage per width, a 1×1 reduction and a
    flatten, so the fc sees where things are) and one branch per region crop feed the head.
    """

    def __init__(self, config: OracleConfig | None = None) -> None:
        super().__init__()
        from toon3d.faces.synface_parser import ParserConfig, SynFaceParserNet

        self.config = c = config or OracleConfig()
        self.parser = None if c.parser_widths is None else SynFaceParserNet(ParserConfig(widths=c.parser_widths))
        cin = 3 + (0 if self.parser is None else self.parser.config.n_classes)
        w, d = c.widths, c.depth
        layers = [_stage(cin, w[0], 1, d)] + [_stage(w[i - 1], w[i], 2, d) for i in range(1, len(w))]
        self.features = nn.Sequential(*layers, *_conv(w[-1], c.reduce, 1, 1))
        side = c.input_size // 2 ** (len(w) - 1)
        self.fc1 = nn.Linear(c.reduce * side * side, c.hidden)
        self.branches = nn.ModuleList([nn.Sequential(*_conv(cin, 32, 3, 1), *_conv(32, 32, 3, 1), *_conv(32, 48, 3, 2),
                                                     *_conv(48, c.region_channels, 1, 1)) for _ in c.regions])
        cells = 0
        for region in c.regions:
            top, bottom, left, right = region_pixels(region, c.input_size)
            cells += ((bottom - top + 1) // 2) * ((right - left + 1) // 2)
        self.fc_regions = nn.Linear(cells * c.region_channels, c.region_hidden) if c.regions else None
        self.fc2 = nn.Linear(c.hidden + (c.region_hidden if c.regions else 0), len(c.params))
        if self.parser is not None:
            for p in self.parser.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> AttributeOracleNet:
        # The parser is a fixed instrument: its batch norms keep their statistics while the oracle trains.
        super().train(mode)
        if self.parser is not None:
            self.parser.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.parser is not None:
            with torch.no_grad():
                x = torch.cat([x, self.parser(x).softmax(1) * 2 - 1], 1)
        h = [F.relu(self.fc1(self.features(x).flatten(1)))]
        if self.branches:
            crops = []
            for branch, region in zip(self.branches, self.config.regions):
                top, bottom, left, right = region_pixels(region, x.shape[-1])
                crops.append(branch(x[:, :, top:bottom, left:right]).flatten(1))
            h.append(F.relu(self.fc_regions(torch.cat(crops, 1))))
        return self.fc2(torch.cat(h, 1))


def param_ranges(params: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """(low [P], high [P]) of the named SynFace parameters, float32."""
    lo = torch.tensor([PARAM_SPECS[n][1] for n in params], dtype=torch.float32)
    hi = torch.tensor([PARAM_SPECS[n][2] for n in params], dtype=torch.float32)
    return lo, hi


class AttributeOracle(nn.Module):
    """toon3d images → SynFace parameters (identity, expression, pose), frozen, eval mode.

    `r2`: held-out R² per parameter as measured when it shipped (None when unknown); direction
    naming trusts only parameters read well (`toon3d.edit.naming.ORACLE_MIN_R2`).
    """

    def __init__(self, net: AttributeOracleNet, r2: dict[str, float] | None = None) -> None:
        super().__init__()
        self.r2 = dict(r2) if r2 else None
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        lo, hi = param_ranges(net.config.params)
        self.register_buffer("low", lo, persistent=False)
        self.register_buffer("high", hi, persistent=False)

    @property
    def params(self) -> tuple[str, ...]:
        """Names of the predicted parameters, in output order."""
        return self.net.config.params

    def train(self, mode: bool = True) -> AttributeOracle:
        super().train(mode)
        self.net.eval()
        return self

    def index(self, name: str) -> int:
        """Output column of parameter `name`."""
        try:
            return self.params.index(name)
        except ValueError:
            raise Toon3dError(f"the attribute oracle does not predict {name!r}; it predicts "
                              f"{', '.join(self.params)}") from None

    @torch.no_grad()
    def predict_unit(self, images: torch.Tensor) -> torch.Tensor:
        """images [B,3,S,S] in [-1,1] → parameters rescaled to their ranges [B,P], clipped to [0,1]."""
        weight = self.net.fc2.weight
        x = resize_square(images.to(device=weight.device, dtype=weight.dtype), self.net.config.input_size)
        return self.net(x).clamp(0, 1)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """images [B,3,S,S] in [-1,1] → parameters in their own units [B,P] (columns `params`)."""
        return self.low + (self.high - self.low) * self.predict_unit(images)


def edit_change(oracle: AttributeOracle, neutral: torch.Tensor, edited: torch.Tensor,
                target: str | None = None) -> dict:
    """What an edit changed, per the oracle: neutral/edited images [B,3,S,S] in [-1,1] → a dict of [B] tensors.

    "change": {param: edited − neutral in parameter units}; "identity_drift": RMS of the change of
    the identity parameters in units of each range, over those the oracle reads (held-out R² ≥
    READABLE_R2; all of them when `oracle.r2` is unknown), listed under "drift_params";
    "target_change": the change of `target` (when given) in its units.
    """
    a, b = oracle.predict_unit(neutral), oracle.predict_unit(edited)
    delta_unit = b - a
    delta = delta_unit * (oracle.high - oracle.low)
    ident = [i for i, n in enumerate(oracle.params) if PARAM_SPECS[n][0] == "identity"
             and (oracle.r2 is None or oracle.r2.get(n, 0.0) >= READABLE_R2)]
    out = {"change": {n: delta[:, i] for i, n in enumerate(oracle.params)},
           "identity_drift": delta_unit[:, ident].pow(2).mean(1).sqrt(),
           "drift_params": [oracle.params[i] for i in ident]}
    if target is not None:
        out["target_change"] = delta[:, oracle.index(target)]
    return out


def oracle_config_dict(config: OracleConfig) -> dict:
    """JSON-ready config stored beside the weights."""
    return {**asdict(config), "widths": list(config.widths), "params": list(config.params), "kind": MODEL_KIND,
            "parser_widths": None if config.parser_widths is None else list(config.parser_widths),
            "regions": [list(r) for r in config.regions]}


def oracle_from_state(state: dict[str, torch.Tensor], config: dict, source: str,
                      r2: dict[str, float] | None = None) -> AttributeOracle:
    """An AttributeOracle from saved tensors and config; a mismatch is a one-line error."""
    try:
        widths = config["parser_widths"]
        cfg = OracleConfig(widths=tuple(int(v) for v in config["widths"]), depth=int(config["depth"]),
                           reduce=int(config["reduce"]), hidden=int(config["hidden"]),
                           input_size=int(config["input_size"]), params=tuple(str(p) for p in config["params"]),
                           parser_widths=None if widths is None else tuple(int(v) for v in widths),
                           regions=tuple(tuple(float(v) for v in r) for r in config["regions"]),
                           region_channels=int(config["region_channels"]),
                           region_hidden=int(config["region_hidden"]))
    except (KeyError, TypeError, ValueError):
        raise Toon3dError(f"{source} has no valid attribute-oracle config; retrain it with "
                          "tools/train_synface_nets.py") from None
    from toon3d.io.checkpoint import load_float_state

    net = load_float_state(AttributeOracleNet(cfg), state, source, "attribute-oracle",
                           "retrain it with tools/train_synface_nets.py")
    return AttributeOracle(net, r2)


def load_attribute_oracle(path: str | os.PathLike | None = None) -> AttributeOracle:
    """The shipped oracle (toon3d/weights/oracle_synface.safetensors), or the file at `path`."""
    from toon3d.io.checkpoint import load_model_file
    from toon3d.models import WEIGHTS_DIR

    found = WEIGHTS_DIR / f"{WEIGHTS_NAME}.safetensors" if path is None else path
    if path is None and not found.is_file():
        raise Toon3dError(f"the built-in attribute oracle {found} is missing; reinstall toon3d, or train it with "
                          "tools/train_synface_nets.py")
    model = load_model_file(found)
    if model.config.get("kind") != MODEL_KIND:
        raise Toon3dError(f"{found} is a toon3d model but not an attribute oracle (kind "
                          f"{model.config.get('kind')!r}); pass oracle_synface.safetensors")
    r2 = model.meta.get("heldout_r2")
    return oracle_from_state(model.state_dict, model.config, str(found), r2 if isinstance(r2, dict) else None)
