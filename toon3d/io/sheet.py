"""Labelled contact sheets: rows of same-size images with a title column and a header row."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from toon3d.io.images import to_uint8

LABEL_HEIGHT = 14
LABEL_WIDTH = 78
PAD = 2


def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default()


def labelled_sheet(rows: list[tuple[str, list[torch.Tensor]]], columns: list[str], cell: int | None = None
                   ) -> np.ndarray:
    """rows [(label, [image [3,h,w] in [-1,1], ...])], column labels → [H,W,3] uint8 sheet on white.

    Every image is resized to `cell`×`cell` (default: the first image's size, at least 96 px, so
    64 px results stay readable; nearest-neighbour when enlarging by a whole factor).
    """
    if not rows:
        raise ValueError("a sheet needs at least one row")
    first = rows[0][1][0]
    size = cell or max(first.shape[-1], 96)
    ncol = max(len(images) for _, images in rows)
    width = LABEL_WIDTH + ncol * (size + PAD) + PAD
    height = LABEL_HEIGHT + len(rows) * (size + PAD) + PAD
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = _font()
    for c, label in enumerate(columns[:ncol]):
        draw.text((LABEL_WIDTH + c * (size + PAD) + PAD + 2, 1), label, fill=(0, 0, 0), font=font)
    for r, (label, images) in enumerate(rows):
        y = LABEL_HEIGHT + r * (size + PAD) + PAD
        draw.text((3, y + size // 2 - 5), label, fill=(0, 0, 0), font=font)
        for c, image in enumerate(images):
            x = image.detach().float().cpu()
            if x.shape[0] == 1:
                x = x.expand(3, -1, -1)
            if x.shape[-1] != size:
                scale = size / x.shape[-1]
                mode = "nearest" if scale == int(scale) else "bilinear"
                kwargs = {} if mode == "nearest" else {"align_corners": False}
                x = F.interpolate(x[None], size=(size, size), mode=mode, **kwargs)[0]
            sheet.paste(Image.fromarray(to_uint8(x)), (LABEL_WIDTH + c * (size + PAD) + PAD, y))
    return np.asarray(sheet)
