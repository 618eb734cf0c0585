"""Image files: reading with validation, saving tensors as PNG, and grids."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from toon3d.errors import Toon3dError
from toon3d.io.atomic import atomic_file


def to_uint8(image: torch.Tensor, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """[3,H,W] or [1,H,W] float in `value_range` → [H,W,3] or [H,W] uint8 (clamped, rounded)."""
    if image.dim() != 3:
        raise ValueError(f"expected [C,H,W], got shape {tuple(image.shape)}")
    lo, hi = value_range
    x = (image.detach().float().cpu() - lo) / (hi - lo)
    x = (x.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()
    return x[..., 0] if x.shape[-1] == 1 else x


def save_png(image: torch.Tensor | np.ndarray, path: str | os.PathLike,
             value_range: tuple[float, float] = (-1.0, 1.0)) -> Path:
    """Write a [C,H,W] tensor in `value_range` (or an HxW[x3|4] uint8/uint16 array) as PNG, atomically."""
    array = to_uint8(image, value_range) if isinstance(image, torch.Tensor) else np.asarray(image)
    path = Path(path)
    with atomic_file(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
    return path


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2,
              pad_value: float = 1.0) -> torch.Tensor:
    """[N,C,H,W] → [C,H',W'] grid with `nrow` images per row (default ≈ sqrt(N))."""
    n, c, h, w = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    ncol = math.ceil(n / nrow)
    grid = images.new_full((c, ncol * (h + padding) + padding, nrow * (w + padding) + padding), pad_value)
    for i in range(n):
        r, col = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, y:y + h, x:x + w] = images[i]
    return grid


def load_image(path: str | os.PathLike, size: int | None = None) -> torch.Tensor:
    """Read an image file as RGB [3,H,W] float in [-1,1], optionally resized to size×size (LANCZOS).

    A missing, unreadable or corrupt file raises a one-line `Toon3dError`.
    """
    path = Path(path)
    if not path.is_file():
        raise Toon3dError(f"image {path} not found; check the path")
    try:
        with Image.open(path) as im:
            im.load()
            im = im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise Toon3dError(f"{path} is not a readable image ({type(err).__name__}); pass a PNG or JPEG file") from None
    if size is not None and im.size != (size, size):
        im = im.resize((size, size), Image.LANCZOS)
    x = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).float()
    return x / 127.5 - 1.0
