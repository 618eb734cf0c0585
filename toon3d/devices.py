"""Choosing a torch device from a user string, with one-line errors."""

from __future__ import annotations

import torch

from toon3d.errors import Toon3dError


def resolve_device(name: str | None = "auto") -> torch.device:
    """'auto' → CUDA when present else CPU; 'cpu', 'cuda', 'cuda:N' are checked to exist."""
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise Toon3dError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise Toon3dError(f"device {name!r} asked for but CUDA is not available here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise Toon3dError(
                f"device {name!r} does not exist: {torch.cuda.device_count()} CUDA device(s) found"
            )
    elif device.type != "cpu":
        raise Toon3dError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    return device
