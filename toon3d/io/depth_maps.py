"""Depth and normal maps as files: PNG previews, a lossless 16-bit PNG, and depth loading.

16-bit depth PNG mapping (toon3d's own, so depth16.png round-trips): pixel value
`p = round((d - 0.8) / 0.4 · 65535)`, i.e. 0 ↔ depth 0.8 and 65535 ↔ depth 1.2, the clamp
range of rendered depth (Unsup3d units, canonical depth in [0.9, 1.1]); resolution 6e-6.
8-bit depth PNGs are read with the Unsup3d synface convention: channel 0 x ∈ [0,1] →
depth = 0.9 + 0.2·(1 − x) (bright = near).
Normal-map PNG: the outward normal in OpenGL tangent-space colours (x right = red,
y up = green, z towards the viewer = blue), colour = n/2 + 0.5; a frontal surface is
(128, 128, 255).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from toon3d.errors import Toon3dError
from toon3d.io.images import save_png

DEPTH16_MIN = 0.8
DEPTH16_MAX = 1.2


def normals_to_gl(normal: torch.Tensor) -> torch.Tensor:
    """Unsup3d camera-space normals [...,3] (pointing away from the camera) → outward OpenGL-frame normals."""
    return torch.stack([-normal[..., 0], normal[..., 1], normal[..., 2]], dim=-1)


def save_normal_png(normal: torch.Tensor, path: str | os.PathLike) -> Path:
    """Write camera-space unit normals [H,W,3] (from `normals_from_depth`) as an RGB normal map, atomically."""
    gl = normals_to_gl(normal.detach().float().cpu())
    return save_png(gl.permute(2, 0, 1), path, value_range=(-1.0, 1.0))


def depth_preview(depth: torch.Tensor, mask: torch.Tensor | None = None) -> np.ndarray:
    """Depth [H,W] → uint8 [H,W] preview, near = bright, stretched over the (masked) depth range."""
    d = depth.detach().double().cpu()
    valid = torch.ones_like(d, dtype=torch.bool) if mask is None else mask.cpu().bool()
    if not valid.any():
        return np.zeros(d.shape, dtype=np.uint8)
    lo, hi = d[valid].min().item(), d[valid].max().item()
    x = (hi - d) / max(hi - lo, 1e-12)
    x = torch.where(valid, x, torch.zeros_like(x))
    return (x.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()


def save_depth_png(depth: torch.Tensor, path: str | os.PathLike, mask: torch.Tensor | None = None) -> Path:
    """Write an 8-bit grey preview of depth [H,W] (near = bright, range-stretched), atomically."""
    return save_png(depth_preview(depth, mask), path)


def save_depth16_png(depth: torch.Tensor, path: str | os.PathLike) -> Path:
    """Write depth [H,W] losslessly-enough as 16-bit PNG: p = round((d − 0.8)/0.4 · 65535), atomically."""
    d = depth.detach().double().cpu()
    if not torch.isfinite(d).all():
        raise Toon3dError("depth contains NaN or inf; nothing written")
    x = ((d - DEPTH16_MIN) / (DEPTH16_MAX - DEPTH16_MIN)).clamp(0, 1)
    return save_png((x * 65535 + 0.5).floor().numpy().astype(np.uint16), path)


def load_depth(path: str | os.PathLike) -> torch.Tensor:
    """Read a depth map [H,W] float32 from .npy ([H,W] float), a 16-bit PNG (toon3d mapping) or an 8-bit PNG (synface)."""
    path = Path(path)
    if not path.is_file():
        raise Toon3dError(f"depth file {path} not found; check the path")
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise Toon3dError(f"{path} is not a readable .npy array ({err}); save it with numpy.save") from None
        if array.ndim == 3 and 1 in (array.shape[0], array.shape[-1]):
            array = array.reshape(array.shape[1:] if array.shape[0] == 1 else array.shape[:-1])
        if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
            raise Toon3dError(f"{path} holds a {array.dtype} array of shape {array.shape}; "
                              f"expected a numeric [H,W] depth map")
        depth = torch.from_numpy(array.astype(np.float32))
    else:
        try:
            with Image.open(path) as im:
                im.load()
                array = np.asarray(im)
                mode = im.mode
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise Toon3dError(f"{path} is not a readable image ({type(err).__name__}); pass a .npy or PNG depth") from None
        if mode in ("I;16", "I;16B", "I;16L", "I") or array.dtype in (np.uint16, np.int32):
            x = array.astype(np.float64) / 65535.0
            depth = torch.from_numpy(DEPTH16_MIN + x * (DEPTH16_MAX - DEPTH16_MIN)).float()
        else:
            x = (array[..., 0] if array.ndim == 3 else array).astype(np.float64) / 255.0
            depth = torch.from_numpy(0.9 + 0.2 * (1.0 - x)).float()
    if not torch.isfinite(depth).all():
        raise Toon3dError(f"{path} contains NaN or inf depth values; fix the depth map")
    if depth.min() <= 0:
        raise Toon3dError(f"{path} has depth values ≤ 0; toon3d expects Unsup3d units (about 0.9-1.1)")
    if min(depth.shape) < 4:
        raise Toon3dError(f"{path} is only {tuple(depth.shape)}; a depth map needs at least 4x4 pixels")
    return depth
