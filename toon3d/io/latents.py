"""Latent-code files: W `[N,D]` or W+ `[N,L,D]` float tensors in `.pt` (loaded safely) or `.npy` (no pickles).

A 2-D array is always read as N W codes: `[L,D]` (one W+ code) cannot be told from `[N,D]`
(`toon3d generate -n 10` writes [10,D]; a 64 px generator has L = 10), so a single W+ code is
stored, and read, as `[1,L,D]`, which is what `toon3d invert --wplus` writes.
"""

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


def check_latents_fit(latents: torch.Tensor, style_dim: int, n_latent: int, path: str | os.PathLike,
                      source: str = "this generator") -> torch.Tensor:
    """W [N,D] or W+ [N,L,D] latents must have D == style_dim and L == n_latent; else a one-line error."""
    if latents.dim() == 2:
        return check_latent_dim(latents, style_dim, path)
    if latents.shape[-1] != style_dim:
        raise Toon3dError(f"{path}: W+ codes of width {latents.shape[-1]} given (shape {list(latents.shape)}), "
                          f"{style_dim} expected by {source}; pass [N,{n_latent},{style_dim}]")
    if latents.dim() == 3 and latents.shape[1] != n_latent:
        raise Toon3dError(f"{path}: W+ codes with {latents.shape[1]} layers given (shape {list(latents.shape)}), "
                          f"{source} reads {n_latent}; pass W+ codes of that generator")
    return latents


def load_latents(path: str | os.PathLike, dim: int | None = 512, flag: str = "--latents",
                 wplus: bool = False) -> torch.Tensor:
    """Read a latent file as finite float32 [N,dim] on the CPU ([dim] becomes [1,dim]; dim=None: any D).

    wplus=True (a command that can feed one code per layer): W+ codes [N,L,dim] are returned as
    they are (check L against the generator with `check_latents_fit`); otherwise they are a
    one-line error naming `flag`.
    """
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
    elif latents.dim() == 3 and not wplus:
        raise Toon3dError(f"{path}: {shape} W+ latents are not supported by {flag}, which reads W codes only; "
                          f"pass [N,{width}] W codes (toon3d invert without --wplus)")
    elif latents.dim() not in (2, 3):
        raise Toon3dError(f"{path}: latents of shape {shape} given, [N,{width}]"
                          + (f" or W+ [N,L,{width}]" if wplus else "") + f" expected; pass [N,{width}]")
    if 0 in latents.shape:
        raise Toon3dError(f"{path} holds no latents (shape {shape}); pass at least one row")
    if dim is not None:
        if latents.dim() == 3 and latents.shape[-1] != dim:
            raise Toon3dError(f"{path}: W+ latents of shape {shape} given, [N,L,{dim}] expected by this "
                              f"generator; pass [N,L,{dim}]")
        if latents.dim() == 2:
            check_latent_dim(latents, dim, path)
    latents = latents.detach().to(torch.float32)
    finite = torch.isfinite(latents.reshape(latents.shape[0], -1)).all(dim=1)
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
