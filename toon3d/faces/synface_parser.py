"""A small face parser for the built-in world, trained on SynFace's ground-truth segmentation.

No face-parsing weights ship with any installed package (docs/faces.md), and the built-in
generators draw SynFace-like faces, so toon3d trains its own parser on freshly rendered SynFace
faces (`toon3d.faces.synface_training`, `tools/train_synface_nets.py`) and ships it as
`toon3d/weights/parser_synface.safetensors` with a model card.

Classes (`PARSER_CLASSES`): SynFace's 8 ground-truth classes, with its skin split by the head
layer it lies on (`toon3d.synth.toon_style.canonical_layers`) into face skin, ears and neck, so
the CelebAMask-HQ mask rules (`toon3d.faces.mask_rule`) mean the same as on BiSeNet's output:

    parser class   0 bg  1 skin  2 brows  3 eyes  4 nose  5 lips/mouth  6 hair  7 glasses  8 ears  9 neck
    CelebAMask-HQ  0     1       2        4       10      11            17      6          7       14

The network is a 4-level U-Net (3×3 conv-BN-ReLU pairs, max-pool down, bilinear up with skip
concatenation) on 64 px images in [-1,1]; other sizes are resized to 64 (area down, bilinear
up) and the class probabilities resized back before the argmax.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from toon3d.errors import Toon3dError
from toon3d.faces.mask_rule import DEFAULT_RULE, face_mask_from_parsing

PARSER_CLASSES = ("background", "skin", "brows", "eyes", "nose", "lips/mouth", "hair", "glasses", "ears", "neck")
PARSER_TO_CELEBAMASK = (0, 1, 2, 4, 10, 11, 17, 6, 7, 14)
# Parser class → SynFace ground-truth class (ears and neck are skin there).
PARSER_TO_SYNFACE = (0, 1, 2, 3, 4, 5, 6, 7, 1, 1)
EARS, NECK = 8, 9
WEIGHTS_NAME = "parser_synface"
MODEL_KIND = "toon3d-synface-parser"


@dataclass(frozen=True)
class ParserConfig:
    """Architecture of the SynFace parser."""

    widths: tuple[int, ...] = (16, 32, 48, 64)
    n_classes: int = len(PARSER_CLASSES)
    input_size: int = 64

    def __post_init__(self) -> None:
        if len(self.widths) < 2 or min(self.widths) < 1:
            raise Toon3dError(f"parser widths must list at least 2 positive channel counts, got {self.widths}")
        if self.input_size % 2 ** (len(self.widths) - 1):
            raise Toon3dError(f"parser input_size {self.input_size} must be divisible by "
                              f"{2 ** (len(self.widths) - 1)} for {len(self.widths)} levels")


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SynFaceParserNet(nn.Module):
    """U-Net: images [B,3,N,N] in [-1,1] (N = config.input_size) → class logits [B,n_classes,N,N]."""

    def __init__(self, config: ParserConfig | None = None) -> None:
        super().__init__()
        self.config = config or ParserConfig()
        w = self.config.widths
        self.down = nn.ModuleList([_block(3 if i == 0 else w[i - 1], w[i]) for i in range(len(w))])
        self.up = nn.ModuleList([_block(w[i + 1] + w[i], w[i]) for i in reversed(range(len(w) - 1))])
        self.head = nn.Conv2d(w[0], self.config.n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], 1))
        return self.head(x)


def resize_square(x: torch.Tensor, size: int) -> torch.Tensor:
    """[B,C,S,S] → [B,C,size,size]: area averaging down, bilinear up (align_corners=False)."""
    s = x.shape[-1]
    if s == size:
        return x
    if s > size:
        return F.interpolate(x, size=(size, size), mode="area")
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


class SynFaceParser(nn.Module):
    """toon3d images → parser classes, CelebAMask-HQ labels and the face mask. Frozen, eval mode."""

    def __init__(self, net: SynFaceParserNet) -> None:
        super().__init__()
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.register_buffer("to_celebamask", torch.tensor(PARSER_TO_CELEBAMASK), persistent=False)

    def train(self, mode: bool = True) -> SynFaceParser:
        super().train(mode)
        self.net.eval()
        return self

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """images [B,3,S,S] in [-1,1] → parser-class probabilities [B,10,S,S]."""
        size = images.shape[-1]
        weight = self.net.head.weight
        x = resize_square(images.to(device=weight.device, dtype=weight.dtype), self.net.config.input_size)
        return resize_square(self.net(x).softmax(1), size)

    @torch.no_grad()
    def parse(self, images: torch.Tensor) -> torch.Tensor:
        """images [B,3,S,S] in [-1,1] → parser classes [B,S,S] int64 in 0..9 (`PARSER_CLASSES`)."""
        return self.probabilities(images).argmax(1)

    @torch.no_grad()
    def parse_celebamask(self, images: torch.Tensor) -> torch.Tensor:
        """images [B,3,S,S] in [-1,1] → CelebAMask-HQ labels [B,S,S] int64 (`PARSER_TO_CELEBAMASK`)."""
        return self.to_celebamask[self.parse(images)]

    @torch.no_grad()
    def face_mask(self, images: torch.Tensor, rule: str = DEFAULT_RULE) -> torch.Tensor:
        """images [B,3,S,S] in [-1,1] → face mask [B,1,S,S] in [0,1] (`toon3d.faces.mask_rule`)."""
        return face_mask_from_parsing(self.parse_celebamask(images), rule).to(images.dtype)


def parser_from_state(state: dict[str, torch.Tensor], config: dict, source: str) -> SynFaceParser:
    """A SynFaceParser from saved tensors and config; a mismatch is a one-line error."""
    try:
        cfg = ParserConfig(widths=tuple(int(v) for v in config["widths"]), n_classes=int(config["n_classes"]),
                           input_size=int(config["input_size"]))
    except (KeyError, TypeError, ValueError):
        raise Toon3dError(f"{source} has no valid SynFace parser config; ship the parser again "
                          "(tools/train_synface_nets.py)") from None
    if cfg.n_classes != len(PARSER_CLASSES):
        raise Toon3dError(f"{source} predicts {cfg.n_classes} classes, this toon3d expects {len(PARSER_CLASSES)}; "
                          "retrain it with tools/train_synface_nets.py")
    from toon3d.io.checkpoint import load_float_state

    net = load_float_state(SynFaceParserNet(cfg), state, source, "SynFace parser",
                           "retrain it with tools/train_synface_nets.py")
    return SynFaceParser(net)


def parser_config_dict(config: ParserConfig) -> dict:
    """JSON-ready config stored beside the weights."""
    return {**asdict(config), "widths": list(config.widths), "kind": MODEL_KIND, "classes": list(PARSER_CLASSES),
            "to_celebamask": list(PARSER_TO_CELEBAMASK)}


def load_synface_parser(path: str | os.PathLike | None = None) -> SynFaceParser:
    """The shipped SynFace parser (toon3d/weights/parser_synface.safetensors), or the file at `path`."""
    from toon3d.io.checkpoint import load_model_file
    from toon3d.models import WEIGHTS_DIR

    found = WEIGHTS_DIR / f"{WEIGHTS_NAME}.safetensors" if path is None else path
    if path is None and not found.is_file():
        raise Toon3dError(f"the built-in SynFace parser {found} is missing; reinstall toon3d, or train it with "
                          "tools/train_synface_nets.py")
    model = load_model_file(found)
    if model.config.get("kind") != MODEL_KIND:
        raise Toon3dError(f"{found} is a toon3d model but not a SynFace parser (kind {model.config.get('kind')!r}); "
                          "pass parser_synface.safetensors")
    return parser_from_state(model.state_dict, model.config, str(found))
