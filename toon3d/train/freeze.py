"""FreezeD / FreezeG (Cartoon-StyleGAN, FreezeG): which parameters a fine-tune trains.

Modules are matched by their exact index in the state-dict name (``convs.1.`` is block 1, never
``convs.10``): the reference's substring matching (REFERENCE §5.1, quirk 4) is not reproduced.
"""

from __future__ import annotations

import re

from torch import nn

_INDEX = re.compile(r"^(convs|to_rgbs)\.(\d+)\.")


def discriminator_trainable(name: str, log_size: int, freeze_d: int) -> bool:
    """Whether D parameter `name` trains under FreezeD=freeze_d (< 0: all train).

    FreezeD=n trains only the n residual blocks nearest the output, ``convs.{log_size-2-l}`` for
    l < n, and the final layers.
    """
    if freeze_d < 0:
        return True
    if name.startswith(("final_conv.", "final_linear.")):
        return True
    m = _INDEX.match(name)
    if m is None or m.group(1) != "convs":
        return False
    return int(m.group(2)) in {log_size - 2 - l for l in range(freeze_d)}


def generator_trainable(name: str, log_size: int, freeze_g: int) -> bool:
    """Whether G parameter `name` trains under FreezeG=freeze_g (< 0: all train).

    FreezeG=n trains only the last n resolution blocks: ``convs.{num_layers-2-2l}``,
    ``convs.{num_layers-3-2l}`` and ``to_rgbs.{log_size-3-l}`` for l < n; the mapping is frozen.
    """
    if freeze_g < 0:
        return True
    num_layers = (log_size - 2) * 2 + 1
    m = _INDEX.match(name)
    if m is None:
        return False
    index = int(m.group(2))
    if m.group(1) == "convs":
        return index in {num_layers - 2 - 2 * l for l in range(freeze_g)} | {num_layers - 3 - 2 * l
                                                                              for l in range(freeze_g)}
    return index in {log_size - 3 - l for l in range(freeze_g)}


def apply_freeze(module: nn.Module, rule, log_size: int, n: int) -> list[str]:
    """Set requires_grad per `rule(name, log_size, n)`; returns the names left trainable."""
    trainable = []
    for name, p in module.named_parameters():
        p.requires_grad_(rule(name, log_size, n))
        if p.requires_grad:
            trainable.append(name)
    return trainable
