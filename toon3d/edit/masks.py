"""Face masks for the low-level feature loss L_low (paper Eq. 8: low-level features of the face region).

The paper masks the face with BiSeNet (CelebAMask-HQ classes; the seed code keeps every class
but background and cloth, REFERENCE §1.3). toon3d masks with a face parser through that rule
(`toon3d.faces.mask_rule`): BiSeNet when its weights are given, the shipped SynFace parser on the
built-in generators (`choose_mask`, below). The last resort, `face_ellipse_mask`, is one fixed
ellipse over the face of toon3d's layout (`toon3d.synth.layout`), from the forehead to the chin
and cheek to cheek, the same for every image: the parser's face-only mask for a frontal, average
face; unlike the seed code's mask it leaves out hair and neck, and it does not follow a turned head.

A mask function maps images [B,3,S,S] in [-1,1] to a mask [B or 1,1,S,S] in [0,1]; masked
images are `images * mask` (outside the face: 0, the seed code's `torch.where(mask, img, 0)`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from toon3d.faces.mask_rule import DEFAULT_RULE, check_rule
from toon3d.synth import layout

# Semi-axes and centre, fractions of the image: cheek to cheek with a 2%-of-image margin;
# from 0.6 eye-to-chin distances above the eye line (the forehead below the hairline) to the chin.
ELLIPSE_HALF_WIDTH = layout.FACE_HALF_WIDTH + 0.02
ELLIPSE_TOP = layout.EYE_Y - 0.6 * (layout.CHIN_Y - layout.EYE_Y)
ELLIPSE_BOTTOM = layout.CHIN_Y
ELLIPSE_CENTER = (layout.FACE_CENTER_X, (ELLIPSE_TOP + ELLIPSE_BOTTOM) / 2)
ELLIPSE_HALF_HEIGHT = (ELLIPSE_BOTTOM - ELLIPSE_TOP) / 2


def ellipse_mask(size: int, device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The fixed face ellipse of an S×S toon3d image: [1,1,S,S] with 1 inside (pixel centres), 0 outside."""
    c = (torch.arange(size, device=device, dtype=torch.float64) + 0.5) / size
    y, x = torch.meshgrid(c, c, indexing="ij")
    inside = ((x - ELLIPSE_CENTER[0]) / ELLIPSE_HALF_WIDTH) ** 2 + ((y - ELLIPSE_CENTER[1]) / ELLIPSE_HALF_HEIGHT) ** 2
    return (inside <= 1).to(dtype)[None, None]


def face_ellipse_mask(images: torch.Tensor) -> torch.Tensor:
    """Mask function: images [B,3,S,S] → the fixed face ellipse [1,1,S,S] (see `ellipse_mask`)."""
    return ellipse_mask(images.shape[-1], images.device, images.dtype)


# ---- mask sources ---------------------------------------------------------------------------------
#
# Which parser masks the low-level loss, in the order `choose_mask(source="auto")` tries them:
#   1. BiSeNet (`toon3d.faces.bisenet`) when its `79999_iter.pth` is given: the paper's parser,
#      trained on real faces (CelebAMask-HQ);
#   2. the SynFace parser (`toon3d.faces.synface_parser`, shipped) when G_base is a built-in
#      generator: trained on the world those generators draw;
#   3. BiSeNet found in the models folder, for any other generator;
#   4. the fixed ellipse above, the last resort: it does not follow the face.
# The choice is never silent: `MaskSource.note` says which source is used and why, for the caller
# to print and record.

MASK_SOURCES = ("auto", "bisenet", "synface", "ellipse", "none")


class ParserMask(nn.Module):
    """Mask function of a face parser: images [B,3,S,S] in [-1,1] → [B,1,S,S] in [0,1] by a mask rule."""

    def __init__(self, parser: nn.Module, rule: str = DEFAULT_RULE) -> None:
        super().__init__()
        self.parser = parser
        self.rule = check_rule(rule)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.parser.face_mask(images, self.rule)


@dataclass
class MaskSource:
    """A chosen face mask: `fn(images)` (None = no mask), its name and a one-line note on why it was chosen."""

    name: str
    fn: Callable[[torch.Tensor], torch.Tensor] | None
    note: str
    rule: str | None = None

    def describe(self) -> dict:
        """JSON-ready record of the choice."""
        return {"source": self.name, "rule": self.rule, "note": self.note}


def _bisenet_mask(path, rule: str, device, why: str) -> MaskSource:
    from toon3d.faces.bisenet import load_bisenet_parser

    parser = load_bisenet_parser(path).to(device)
    return MaskSource("bisenet", ParserMask(parser, rule), f"face mask: BiSeNet ({why}), rule {rule!r}", rule)


def _synface_mask(rule: str, device, why: str) -> MaskSource:
    from toon3d.faces.synface_parser import load_synface_parser

    parser = load_synface_parser().to(device)
    return MaskSource("synface", ParserMask(parser, rule), f"face mask: the built-in SynFace parser ({why}), "
                      f"rule {rule!r}", rule)


def _synface_parser_shipped() -> bool:
    from toon3d.faces.synface_parser import WEIGHTS_NAME
    from toon3d.models import WEIGHTS_DIR

    return (WEIGHTS_DIR / f"{WEIGHTS_NAME}.safetensors").is_file()


def choose_mask(source: str = "auto", builtin_generator: bool = True, bisenet_path: str | os.PathLike | None = None,
                rule: str = DEFAULT_RULE, device: torch.device | str | None = None) -> MaskSource:
    """The face mask of the low-level loss: `source` auto|bisenet|synface|ellipse|none → MaskSource.

    auto: BiSeNet when `bisenet_path` is given, else the SynFace parser for a built-in G_base
    (`builtin_generator`; when its weights are installed), else BiSeNet from the models folder,
    else the ellipse (with a note saying how to get BiSeNet). Asking for a parser whose weights
    are missing is a one-line error.
    """
    from toon3d.errors import Toon3dError
    from toon3d.models import find, how_to_get

    check_rule(rule)
    if source not in MASK_SOURCES:
        raise Toon3dError(f"unknown face mask source {source!r}; choose one of {', '.join(MASK_SOURCES)}")
    if source == "none":
        return MaskSource("none", None, "face mask: none (low-level features of the whole image)")
    if source == "ellipse":
        return MaskSource("ellipse", face_ellipse_mask, "face mask: the fixed face ellipse (as asked)")
    if source == "bisenet":
        return _bisenet_mask(bisenet_path, rule, device, "as asked")
    if source == "synface":
        return _synface_mask(rule, device, "as asked")
    if bisenet_path is not None:
        return _bisenet_mask(bisenet_path, rule, device, f"weights {bisenet_path}")
    if builtin_generator and _synface_parser_shipped():
        return _synface_mask(rule, device, "built-in generator")
    found = find("bisenet")
    if found is not None:
        return _bisenet_mask(found, rule, device, f"weights found at {found}")
    why = ("the built-in SynFace parser is not installed" if builtin_generator else
           "no face parser for this generator: the SynFace parser is for the built-in world only")
    return MaskSource("ellipse", face_ellipse_mask,
                      f"face mask: the fixed face ellipse ({why}; for BiSeNet {how_to_get('bisenet')})")
