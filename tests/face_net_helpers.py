"""Shared by the face-network tests: random weights with non-trivial batch-norm statistics."""

from __future__ import annotations

import torch


def randomise(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random BN statistics, biases and per-channel scales (a fresh net's BN is the identity and would hide
    the layer order); conv/linear weights keep their initialisation. Returns the net in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif name.endswith(("running_mean", "bias")):
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
            elif name.endswith("weight") and t.dim() == 1:
                t.copy_(0.8 + 0.4 * torch.rand(t.shape, generator=g))  # BN gamma, PReLU slopes
    return net.eval()
