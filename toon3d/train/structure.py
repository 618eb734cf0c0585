"""Structure loss (paper Eq. 2, after Back 2021): keep G_trans's low-resolution block outputs on G_base's.

Both generators see the same W+ codes, the same mixing index (it is inside the W+ codes) and
the same noise tensors; the reference code's bugs (a never-loaded source generator, independent
noise and mixing per generator, REFERENCE §5.1) are not reproduced.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

STRUCTURE_MODES = ("paper", "code")


def structure_resolutions(k: int) -> list[int]:
    """The k block resolutions the loss compares: 8, 16, ..., 2^(k+2)."""
    return [2 ** (i + 3) for i in range(k)]


def structure_loss(trans_features: dict[int, torch.Tensor], base_features: dict[int, torch.Tensor], k: int,
                   mode: str = "paper") -> torch.Tensor:
    """Loss over the k blocks 8..2^(k+2) of block outputs {res: [B,C,r,r]} -> scalar.

    mode "paper": ``1/k * sum_i mean((G_base^i - G_trans^i)^2)``; mode "code": the released
    code's ``sum_i F.mse_loss`` (no 1/k). The base features are detached: no gradient reaches G_base.
    """
    if mode not in STRUCTURE_MODES:
        raise ValueError(f"structure mode must be one of {STRUCTURE_MODES}, got {mode!r}")
    if k < 1:
        raise ValueError(f"structure loss needs k >= 1 blocks, got {k}")
    terms = [F.mse_loss(trans_features[r], base_features[r].detach()) for r in structure_resolutions(k)]
    total = torch.stack(terms).sum()
    return total / k if mode == "paper" else total


def base_features(g_base: torch.nn.Module, ws: torch.Tensor, noise: Sequence[torch.Tensor], k: int
                  ) -> dict[int, torch.Tensor]:
    """G_base's block outputs {res: [B,C,r,r]} for W+ codes ws [B,n_latent,D] and explicit noise maps.

    Runs only the blocks the loss needs (the synthesis stops after block 2^(k+2)). It runs with
    autograd enabled, like G_trans, so both take the same numerical path (the no-grad inference
    path folds gains differently, ~1e-7 apart) and identical generators give exactly 0; the
    outputs are detached, and the trainer's G_base has requires_grad off, so no graph is kept.
    """
    with torch.enable_grad():
        feats = g_base.block_features(ws.detach(), noise, structure_resolutions(k)[-1])
    return {r: f.detach() for r, f in feats.items()}
