"""Closed-form factorization of a generator's style modulations: rosinality's CFF and SeFa (REFERENCE §2.6, §3).

Both variants stack the modulation weights A ([C_l, style_dim] per layer, one row per style
channel) and return the right singular vectors of A as latent directions:

  - ``rosinality``: conv1, to_rgb1 and every convs.* layer (the key filter "modulation" and
    "weight" and not "to_rgbs" of closed_form_factorization.py), state-dict order, no
    normalisation; ``V`` of the SVD of A.
  - ``sefa``: the 13 modulated convs (conv1, convs.*) and the final ToRGB only, each row
    scaled to unit L2 norm; eigenvectors of AᵀA, sorted by eigenvalue descending.

Directions are columns, sorted by singular value descending; their signs are arbitrary.
"""

from __future__ import annotations

import torch
from torch import nn

VARIANTS = ("rosinality", "sefa")


def modulation_keys(generator: nn.Module, variant: str = "rosinality") -> list[str]:
    """State-dict keys of the modulation weights a variant stacks, in stacking order."""
    keys = [k for k in generator.state_dict() if "modulation" in k and "weight" in k]
    if variant == "rosinality":
        return [k for k in keys if "to_rgbs" not in k]
    if variant == "sefa":
        last_rgb = f"to_rgbs.{len(generator.to_rgbs) - 1}."
        return [k for k in keys if k.startswith(("conv1.", "convs.", last_rgb))]
    raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")


def modulation_matrix(generator: nn.Module, variant: str = "rosinality") -> torch.Tensor:
    """The stacked modulation weights A [sum C_l, style_dim] (float64, CPU) a variant factorizes."""
    state = generator.state_dict()
    mats = [state[k].detach().to("cpu", torch.float64) for k in modulation_keys(generator, variant)]
    weight = torch.cat(mats, 0)
    if variant == "sefa":
        weight = weight / weight.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return weight


def closed_form_factorization(generator: nn.Module, variant: str = "rosinality") -> tuple[torch.Tensor, torch.Tensor]:
    """Latent directions of `generator`: (eigvec [D,D] float32, columns sorted by singular value desc; singular values [D])."""
    weight = modulation_matrix(generator, variant)
    if variant == "rosinality":
        _, singular, vh = torch.linalg.svd(weight, full_matrices=False)
        eigvec = vh.T
    else:
        eigval, vectors = torch.linalg.eigh(weight.T @ weight)
        order = torch.argsort(eigval, descending=True)
        eigvec = vectors[:, order]
        singular = eigval[order].clamp_min(0).sqrt()
    return eigvec.float().contiguous(), singular.float()
