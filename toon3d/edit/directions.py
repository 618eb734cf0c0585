"""Latent directions from the closed-form factorisation of the style modulations, and the `factor.pt` file.

Two variants (`toon3d.stylegan2.factorize`, REFERENCE §2.6, §3):

  - ``sefa`` (default, the SPEC's choice): the modulated convs and the final ToRGB, each row
    of A scaled to unit norm, eigenvectors of AᵀA by eigenvalue;
  - ``rosinality``: conv1, to_rgb1 and the convs, unnormalised, V of the SVD of A. This is
    what the seed code's `factor.pt` holds (`closed_form_factorization.py`).

A layer range restricts A to the rows of the modulations that read the chosen W+ layers,
and the edit is then added to those W+ layers only (SeFa's `-L 0-1`). Default: every
layer, as in rosinality's script and SeFa's `layer_idx='all'`; the edit is then a plain W
offset, the same for all layers.

W+ index of each modulation (as `Generator.synthesis` reads ws): conv1 → 0, to_rgb1 → 1,
convs.j → j + 1, to_rgbs.j → 2j + 3 (a ToRGB shares its code with the next block's first conv).

`factor.pt` is the seed code's layout, ``{'ckpt': str, 'eigvec': [D,D]}`` with directions as
columns (signs arbitrary); toon3d adds ``variant``, ``layers``, ``singular`` and ``config``,
which the seed code ignores. It is read with ``weights_only=True``; a seed file without the
extra keys is taken as rosinality / all layers.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from toon3d.errors import Toon3dError
from toon3d.seeds import parse_range
from toon3d.io.checkpoint import load_torch_file, save_training_state
from toon3d.stylegan2.factorize import VARIANTS, modulation_keys

DEFAULT_VARIANT = "sefa"
# Vᵀ AᵀA V of the generator a factor came from is diagonal to float32 rounding (~1e-7 relative);
# directions of another generator leave most of the energy off the diagonal.
DIAGONAL_TOLERANCE = 1e-3


@dataclass
class Factorization:
    """Directions eigvec [D,D] (columns, by singular value desc), singular values [D], how they were made."""

    eigvec: torch.Tensor
    singular: torch.Tensor | None
    variant: str
    layers: list[int] | None  # W+ layers A was restricted to (and edits go to); None = all
    ckpt: str = ""

    @property
    def dim(self) -> int:
        return int(self.eigvec.shape[0])

    def direction(self, index: int) -> torch.Tensor:
        """Unit direction `index` (0 = strongest): [D]."""
        if not 0 <= index < self.dim:
            raise Toon3dError(f"direction index {index} is out of range; this factorisation has directions "
                              f"0-{self.dim - 1} (0 = strongest)")
        return self.eigvec[:, index].clone()


def wplus_index(key: str) -> int:
    """The W+ layer a modulation weight `key` reads (conv1 0, to_rgb1 1, convs.j j+1, to_rgbs.j 2j+3)."""
    if key.startswith("conv1."):
        return 0
    if key.startswith("to_rgb1."):
        return 1
    match = re.match(r"(convs|to_rgbs)\.(\d+)\.", key)
    if match is None:
        raise ValueError(f"{key!r} is not a modulation weight of a StyleGAN2 generator")
    j = int(match.group(2))
    return j + 1 if match.group(1) == "convs" else 2 * j + 3


def parse_layers(spec: str | None, n_latent: int) -> list[int] | None:
    """'0-5' / '0,2,4' / '0-3,8' → sorted W+ layers, checked against n_latent; None or 'all' → None."""
    if spec is None or str(spec).strip().lower() == "all":
        return None
    layers: set[int] = set()
    for part in str(spec).split(","):
        try:
            lo, hi = parse_range(part)
        except ValueError:
            raise Toon3dError(f"bad layer {part.strip()!r} in --layers {spec!r}; pass W+ layers like 0-5 or "
                              "0,2,4 (or all)") from None
        if lo < 0 or hi >= n_latent or hi < lo:
            raise Toon3dError(f"--layers {spec!r}: layer range {part.strip()!r} is outside 0-{n_latent - 1} "
                              f"(this generator has {n_latent} W+ layers) or runs backwards")
        layers.update(range(lo, hi + 1))
    result = sorted(layers)
    return None if result == list(range(n_latent)) else result


def _check_generator(generator: nn.Module) -> None:
    if not hasattr(generator, "to_rgbs") or not hasattr(generator, "conv1"):
        raise Toon3dError(f"directions are computed on one StyleGAN2 generator, not a {type(generator).__name__} "
                          "(a feature-injection blend); pass the base generator to --ckpt")


def factor_keys(generator: nn.Module, variant: str = DEFAULT_VARIANT, layers: list[int] | None = None) -> list[str]:
    """Modulation weights a variant stacks, restricted to those reading `layers` (None: all)."""
    _check_generator(generator)
    if variant not in VARIANTS:
        raise Toon3dError(f"unknown factorisation variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    keys = modulation_keys(generator, variant)
    if layers is not None:
        keys = [k for k in keys if wplus_index(k) in set(layers)]
        if not keys:
            raise Toon3dError(f"the {variant} variant stacks no modulation of W+ layers {layers} (it leaves out "
                              "most ToRGBs); choose other layers or the other variant")
    return keys


def factor_matrix(generator: nn.Module, variant: str = DEFAULT_VARIANT,
                  layers: list[int] | None = None) -> torch.Tensor:
    """A [rows, D] (float64, CPU): the stacked modulation weights, rows unit-normalised for sefa."""
    state = generator.state_dict()
    weight = torch.cat([state[k].detach().to("cpu", torch.float64) for k in factor_keys(generator, variant, layers)])
    if variant == "sefa":
        weight = weight / weight.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return weight


def factorize(generator: nn.Module, variant: str = DEFAULT_VARIANT, layers: list[int] | None = None,
              ckpt: str = "") -> Factorization:
    """Directions of `generator`: with layers None this is `closed_form_factorization(generator, variant)`."""
    weight = factor_matrix(generator, variant, layers)
    if variant == "rosinality":
        _, singular, vh = torch.linalg.svd(weight, full_matrices=False)
        eigvec = vh.T
        if eigvec.shape[1] < weight.shape[1]:  # fewer rows than D (a narrow layer range)
            eigvec, singular = _complete_basis(weight)
    else:
        eigvec, singular = _complete_basis(weight)
    return Factorization(eigvec.float().contiguous(), singular.float(), variant, layers, ckpt)


def _complete_basis(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # eigh of AᵀA gives all D directions even when A has fewer rows than columns.
    eigval, vectors = torch.linalg.eigh(weight.T @ weight)
    order = torch.argsort(eigval, descending=True)
    return vectors[:, order], eigval[order].clamp_min(0).sqrt()


def off_diagonal_ratio(eigvec: torch.Tensor, generator: nn.Module, variant: str, layers: list[int] | None,
                       top: int | None = None) -> float:
    """‖offdiag(VᵀAᵀAV)‖/‖VᵀAᵀAV‖ over the first `top` directions: ~1e-7 for the generator V came from."""
    weight = factor_matrix(generator, variant, layers)
    v = eigvec.to(torch.float64)[:, :top]
    gram = (weight @ v).T @ (weight @ v)
    off = gram - torch.diag(torch.diag(gram))
    return float(off.norm() / gram.norm().clamp_min(1e-300))


def save_factor(path: str | os.PathLike, factor: Factorization, config: dict | None = None) -> Path:
    """Write the seed code's `factor.pt` ({'ckpt', 'eigvec'} + toon3d's extras), atomically."""
    state = {"ckpt": str(factor.ckpt), "eigvec": factor.eigvec.detach().cpu().float().contiguous(),
             "variant": factor.variant, "layers": list(factor.layers) if factor.layers is not None else None}
    if factor.singular is not None:
        state["singular"] = factor.singular.detach().cpu().float()
    if config is not None:
        state["config"] = dict(config)
    return save_training_state(path, state)


def load_factor(path: str | os.PathLike, style_dim: int | None = None, n_latent: int | None = None) -> Factorization:
    """Read a `factor.pt` safely; [D,D] eigvec with D == style_dim (when given), else a one-line error."""
    path = Path(path)
    obj = load_torch_file(path)
    if not isinstance(obj, dict) or not isinstance(obj.get("eigvec"), torch.Tensor):
        raise Toon3dError(f"{path} is not a factor file: expected a dict with an 'eigvec' tensor (as written by "
                          "toon3d directions or closed_form_factorization.py)")
    eigvec = obj["eigvec"]
    if eigvec.dim() != 2 or eigvec.shape[0] != eigvec.shape[1] or not eigvec.is_floating_point():
        raise Toon3dError(f"{path}: 'eigvec' has shape {list(eigvec.shape)} ({eigvec.dtype}); a square float "
                          "[D,D] matrix of directions is expected")
    if style_dim is not None and eigvec.shape[0] != style_dim:
        raise Toon3dError(f"{path} holds {eigvec.shape[0]}-d directions but the generator's W has {style_dim} "
                          "dimensions: the factor comes from another generator; run toon3d directions on this one")
    if not torch.isfinite(eigvec).all():
        raise Toon3dError(f"{path}: 'eigvec' contains NaN or inf; compute the factor again")
    variant = obj.get("variant", "rosinality")
    if variant not in VARIANTS:
        raise Toon3dError(f"{path}: unknown variant {variant!r} (known: {', '.join(VARIANTS)}); compute it again")
    layers = obj.get("layers")
    if layers is not None:
        if (not isinstance(layers, (list, tuple)) or not layers
                or not all(isinstance(i, int) and i >= 0 for i in layers)):
            raise Toon3dError(f"{path}: 'layers' must be a list of W+ layer indices, got {layers!r}")
        if n_latent is not None and max(layers) >= n_latent:
            raise Toon3dError(f"{path} edits W+ layers up to {max(layers)} but the generator has {n_latent}: "
                              "the factor comes from another generator; run toon3d directions on this one")
        layers = sorted(int(i) for i in layers)
    singular = obj.get("singular")
    if not isinstance(singular, torch.Tensor) or singular.shape != (eigvec.shape[0],):
        singular = None
    return Factorization(eigvec.float().contiguous(), None if singular is None else singular.float(),
                         variant, layers, str(obj.get("ckpt", "")))


def apply_direction(w: torch.Tensor, offset: torch.Tensor, n_latent: int,
                    layers: list[int] | None = None) -> torch.Tensor:
    """W+ codes of an edit: w [B,D] or [B,n_latent,D] plus offset [D] or [B,D] on `layers` (None: all).

    → ws [B,n_latent,D]. Differentiable in both arguments.
    """
    ws = w.unsqueeze(1).expand(-1, n_latent, -1) if w.dim() == 2 else w
    if ws.dim() != 3 or ws.shape[1] != n_latent:
        raise ValueError(f"w must be [B,D] or [B,{n_latent},D], got {tuple(w.shape)}")
    offset = offset.expand(ws.shape[0], -1) if offset.dim() == 1 else offset
    if layers is None:
        return ws + offset.unsqueeze(1)
    mask = torch.zeros(1, n_latent, 1, dtype=ws.dtype, device=ws.device)
    mask[:, layers] = 1
    return ws + mask * offset.unsqueeze(1)
