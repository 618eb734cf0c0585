"""Load a third-party state dict into a network built on the meta device, checking every key first.

BiSeNet and LResNet-18 files come from other projects; a wrong file must fail with one line
that names what it is not and which file to pass, before any weight is copied.
"""

from __future__ import annotations

import torch

from toon3d.errors import Toon3dError


def fill_from_state(net: torch.nn.Module, state: dict[str, torch.Tensor], source: str, what: str,
                    fix: str) -> torch.nn.Module:
    """Materialise meta-device `net` on the CPU holding `state` (eval mode); key or shape mismatch → one-line error.

    `what` names the expected network ("LiftedGAN's LResNet-18"), `fix` the file to pass. Files
    saved before torch 0.4.1 have no num_batches_tracked; eval-mode BatchNorm never reads it.
    """
    expected = net.state_dict()
    required = {k for k in expected if not k.endswith("num_batches_tracked")}
    missing = sorted(required - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        detail = (f"missing {len(missing)} keys (first {missing[0]!r})" if missing else
                  f"{len(unexpected)} unexpected keys (first {unexpected[0]!r})")
        raise Toon3dError(f"{source} is not {what} ({detail}); {fix}")
    for key in sorted(required):
        if tuple(state[key].shape) != tuple(expected[key].shape):
            raise Toon3dError(f"{source} is not {what}: {key} has shape {tuple(state[key].shape)}, "
                              f"expected {tuple(expected[key].shape)}; {fix}")
    net = net.to_empty(device="cpu")
    net.load_state_dict({k: state[k].to(expected[k].dtype) if k in state else torch.zeros((), dtype=torch.long)
                         for k in expected}, strict=True)
    return net.eval()
