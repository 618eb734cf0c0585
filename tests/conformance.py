"""Fill a state dict by REFERENCE.md §13's formula so numerics can be checked without weight files."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def formula_values(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """Deterministic pseudo-random values in [-sqrt(3), sqrt(3)] for one state-dict entry: float32 ``shape``."""
    c = sum(ord(ch) for ch in key) % 997
    i = np.arange(int(np.prod(shape, dtype=np.int64)), dtype=np.float64)
    x = np.sin(i * 12.9898 + c * 78.233) * 43758.5453
    u = x - np.floor(x)
    return torch.from_numpy(((2.0 * u - 1.0) * np.sqrt(3.0)).astype(np.float32).reshape(shape))


def fill_by_formula(module: nn.Module) -> nn.Module:
    """Overwrite every state-dict entry except blur ``.kernel`` buffers by :func:`formula_values`."""
    sd = module.state_dict()
    filled = {k: (v if k.endswith(".kernel") else formula_values(k, tuple(v.shape))) for k, v in sd.items()}
    module.load_state_dict(filled, strict=True)
    return module


def formula_w(dim: int = 512) -> torch.Tensor:
    """§13 latent input: sin(arange(dim)*0.05) as [1,dim] float32."""
    return torch.sin(torch.arange(dim, dtype=torch.float64) * 0.05).float()[None]


def formula_z(dim: int = 512) -> torch.Tensor:
    """§13 z input: cos(arange(dim)*0.05) as [1,dim] float32."""
    return torch.cos(torch.arange(dim, dtype=torch.float64) * 0.05).float()[None]


def formula_image(batch: int = 2, size: int = 256) -> torch.Tensor:
    """§13 discriminator input: sin(arange(B*3*S*S)*0.001) as [B,3,S,S] float32."""
    n = batch * 3 * size * size
    return torch.sin(torch.arange(n, dtype=torch.float64) * 0.001).float().view(batch, 3, size, size)
