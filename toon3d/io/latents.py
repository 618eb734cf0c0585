"""Latent-code files: `[N,D]` float tensors in `.pt` (loaded safely) or `.npy` (no pickles)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from toon3d.errors import Toon3dError
from toon3d.io.atomic import atomic_file
from toon3d.io.checkpoint import load_torch_file

LATENT_SUFFIXES = (".pt", ".pth", ".npy")
NPY_MAGIC = b"\x93NUMPY"


def _read(path: Path) -> torch.Tensor:
    if path.suffix == ".npy":
        if path.stat().st_size == 0:
            raise Toon3dError(f"{path} is empty (0 bytes); pass a saved [N,D] latent file")
        try:
            with open(path, "rb") as handle:
                magic = handle.read(len(NPY_MAGIC))
        except OSError as err:
            raise Toon3dError(f"cannot read {path}: {err.strerror or err}; check the file and its permissions") from None
        if magic != NPY_MAGIC:
            raise Toon3dError(f"{path} is not a .npy file (corrupt or truncated); save it again with numpy.save")
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as err:
            if "pickle" in str(err):
                raise Toon3dError(f"{path} holds pickled Python objects, which toon3d does not load; "
                                  "save a plain float array with numpy.save") from None
            raise Toon3dError(f"{path} is not a readable .npy array (corrupt or truncated); save it again") from None
        except (OSError, EOFError):
            raise Toon3dError(f"{path} is not a readable .npy array (corrupt or truncated); save it again") from None
        if not isinstance(array, np.ndarray) or array.dtype.kind not in "fiu":
            raise Toon3dError(f"{path} holds {getattr(array, 'dtype', type(array).__name__)} data, not numbers; "
                              "pass a float array")
        if array.ndim == 0:  # ascontiguousarray would turn a scalar into [1]
            return torch.tensor(array.item())
        return torch.from_numpy(np.ascontiguousarray(array))
    obj = load_torch_file(path)
    if isinstance(obj, dict) and isinstance(obj.get("latents"), torch.Tensor):
        obj = obj["latents"]
    if not isinstance(obj, torch.Tensor):
        raise Toon3dError(f"{path} holds a {type(obj).__name__}, not a latent tensor; "
                          "save a [N,D] tensor with torch.save (or a dict with key 'latents')")
    return obj


def check_latent_dim(latents: torch.Tensor, dim: int, path: str | os.PathLike) -> torch.Tensor:
    """Latents [N,D] from `path` must have D == dim (the generator's style_dim)."""
    if latents.shape[1] != dim:
        raise Toon3dError(f"{path}: latents of shape {list(latents.shape)} given, [N,{dim}] expected by this "
                          f"generator; pass [N,{dim}]")
    return latents


def load_latents(path: str | os.PathLike, dim: int | None = 512, flag: str = "--latents") -> torch.Tensor:
    """Read a latent file as finite float32 [N,dim] on the CPU ([dim] becomes [1,dim]; dim=None: any D)."""
    path = Path(path)
    if not path.is_file():
        raise Toon3dError(f"latent file {path} not found; check the path" if not path.exists()
                          else f"{path} is not a file; pass a .pt or .npy latent file")
    if path.suffix not in LATENT_SUFFIXES:
        raise Toon3dError(f"{path}: unknown latent file type {path.suffix!r}; pass a .pt or .npy file")
    latents = _read(path)
    if latents.is_complex() or latents.dtype == torch.bool:
        raise Toon3dError(f"{path} holds {latents.dtype} values; pass float latents")
    shape = list(latents.shape)
    if not shape:
        raise Toon3dError(f"{path} holds a single number (a 0-d scalar), not latents; "
                          f"pass an [N,{dim if dim is not None else 'D'}] array")
    width = dim if dim is not None else shape[-1]
    if latents.dim() == 1:
        latents = latents.unsqueeze(0)
    elif latents.dim() == 3:
        raise Toon3dError(f"{path}: {shape} W+ latents are not supported by {flag}; pass [N,{width}]")
    elif latents.dim() != 2:
        raise Toon3dError(f"{path}: latents of shape {shape} given, [N,{width}] expected; pass [N,{width}]")
    if latents.shape[0] == 0 or latents.shape[1] == 0:
        raise Toon3dError(f"{path} holds no latents (shape {shape}); pass at least one row")
    if dim is not None:
        check_latent_dim(latents, dim, path)
    latents = latents.detach().to(torch.float32)
    finite = torch.isfinite(latents).all(dim=1)
    if not finite.all():
        bad = int((~finite).nonzero()[0, 0])
        raise Toon3dError(f"{path}: row {bad} contains NaN or inf ({int((~finite).sum())} bad rows); "
                          "pass finite latents")
    return latents.contiguous()


def save_latents(directory: str | os.PathLike, latents: torch.Tensor, stem: str = "latents") -> list[Path]:
    """Write [N,D] latents as `<stem>.pt` (a float32 tensor) and `<stem>.npy`, each atomically."""
    directory = Path(directory)
    data = latents.detach().to("cpu", torch.float32).contiguous().clone()
    pt, npy = directory / f"{stem}.pt", directory / f"{stem}.npy"
    with atomic_file(pt) as tmp:
        torch.save(data, tmp)
    with atomic_file(npy) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, data.numpy())
    return [pt, npy]
